//! `leadflow show`: one master with its records, projects and decisions.

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use leadflow_sinks::Warehouse;
use leadflow_transforms::normalise::{normalise_email, normalise_phone, parse_region};

/// What to look up.
#[derive(Debug, Clone)]
pub enum Lookup {
    Phone(String),
    Email(String),
    Id(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Warehouse(#[from] leadflow_sinks::WarehouseError),
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Find masters and render them as text tables; None when nothing matches.
pub async fn show(
    warehouse: &Warehouse,
    lookup: &Lookup,
    default_region: Option<&str>,
) -> Result<Option<String>, ShowError> {
    let ctx = SessionContext::new();
    warehouse
        .register(
            &ctx,
            &["masters", "records", "project_links", "merges", "crm_links"],
        )
        .await?;
    let filter = match lookup {
        Lookup::Phone(p) => {
            let r = normalise_phone(p, None, default_region.and_then(parse_region));
            let e164 = r
                .e164
                .ok_or_else(|| ShowError::Input(format!("{p:?} is not a valid phone number")))?;
            format!("array_has(phones, {})", quote(&e164))
        }
        Lookup::Email(e) => {
            let r = normalise_email(e);
            let key = r
                .key
                .ok_or_else(|| ShowError::Input(format!("{e:?} is not a valid e-mail address")))?;
            format!("array_has(email_keys, {})", quote(&key))
        }
        Lookup::Id(id) => format!("master_id = {}", quote(id)),
    };
    let masters = collect(
        &ctx,
        &format!("SELECT * FROM masters WHERE {filter} ORDER BY master_id"),
    )
    .await?;
    let ids: Vec<String> = masters
        .iter()
        .flat_map(|b| {
            let a = crate::run::utf8(b.column(0)).expect("master ids are text");
            (0..a.len())
                .map(move |i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if ids.is_empty() {
        // An id merged away: say where it went rather than "not found".
        if let Lookup::Id(id) = lookup
            && let Some((into, event)) = crate::review::merged_into(warehouse, id)
                .await
                .map_err(|e| ShowError::Input(e.to_string()))?
        {
            return Ok(Some(format!(
                "master {id} was merged into {into} (merge event {event}); show it with --id {into}\n"
            )));
        }
        return Ok(None);
    }
    let mut out = String::new();
    for id in ids {
        let q = quote(&id);
        let sections = [
            (
                "master",
                format!(
                    "SELECT master_id, full_name, phone, email, phones, emails, company, job_title, country, city, website, record_count, first_seen, last_seen FROM masters WHERE master_id = {q}"
                ),
            ),
            (
                "projects",
                format!(
                    "SELECT project, status, owner, record_count, first_seen, last_seen FROM project_links WHERE master_id = {q} ORDER BY project"
                ),
            ),
            (
                "records",
                format!(
                    "SELECT source, source_file, source_row, full_name, phone_raw, phone, email, project, status, match_rule FROM records WHERE master_id = {q} ORDER BY source_file, source_row"
                ),
            ),
            (
                "crm links",
                format!(
                    "SELECT provider, account, crm_object, crm_id, direction, source, deleted_at FROM crm_links WHERE master_id = {q} ORDER BY provider, account, crm_object, crm_id"
                ),
            ),
            (
                "decisions",
                format!(
                    "SELECT kind, rule, explanation FROM merges WHERE master_id = {q} OR other_master_id = {q} ORDER BY created_at, event_id"
                ),
            ),
        ];
        for (title, sql) in sections {
            let batches = collect(&ctx, &sql).await?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            out.push_str(&format!("{title} ({rows})\n"));
            if rows > 0 {
                out.push_str(&pretty_format_batches(&batches)?.to_string());
                out.push('\n');
            }
        }
        out.push('\n');
    }
    Ok(Some(out))
}

async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, ShowError> {
    Ok(ctx.sql(sql).await?.collect().await?)
}
