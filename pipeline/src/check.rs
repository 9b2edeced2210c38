//! `leadflow check`: does each source answer? File drops are listed; CRMs
//! get a token and one page; a Google Sheet gets a token and its header
//! row, checked against the id column and the mapping's columns. Nothing is
//! written anywhere (no warehouse, no cursor, no archive).

use leadflow_connectors::crm::{CrmError, CrmSource};
use leadflow_connectors::files::FileDrop;
use leadflow_connectors::sheets::SheetsSource;
use serde::Serialize;

use crate::config::{LoadedConfig, PipelineConfig, resolve_files};

/// The outcome for one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceCheck {
    pub pipeline: String,
    pub source: String,
    /// `files`, `hubspot`, `salesforce`, `zoho`, `dynamics` or
    /// `google_sheets`.
    pub kind: String,
    pub ok: bool,
    /// What was seen, or the error.
    pub detail: String,
}

/// Tests every source of `pipelines`, one after the other (a CRM's own
/// request budget and rate limits apply as in a run).
pub async fn check_sources(loaded: &LoadedConfig, pipelines: &[PipelineConfig]) -> Vec<SourceCheck> {
    let mut out = Vec::new();
    for p in pipelines {
        for s in &p.sources {
            let kind = s.kinds().first().copied().unwrap_or("none");
            let result = if let Some(crm) = s.crm(&loaded.base) {
                match CrmSource::new(&s.name, &crm) {
                    Ok(CrmSource::Sheets(sheet)) => check_sheet(&sheet, p).await,
                    Ok(src) => src.test().await.map(|probe| {
                        format!(
                            "authenticated; first page: {} record(s) in {} request(s)",
                            probe.records, probe.requests
                        )
                    }),
                    Err(e) => Err(e),
                }
                .map_err(|e| e.to_string())
            } else if let Some(files) = &s.files {
                let files = resolve_files(files, &loaded.base);
                match FileDrop::new(&s.name, &files) {
                    Ok(drop) => drop
                        .list()
                        .await
                        .map(|entries| format!("{} file(s) listed", entries.len()))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Err("no source kind set".to_string())
            };
            tracing::debug!(pipeline = %p.name, source = %s.name, kind, ok = result.is_ok(), "source checked");
            let ok = result.is_ok();
            out.push(SourceCheck {
                pipeline: p.name.clone(),
                source: s.name.clone(),
                kind: kind.to_string(),
                ok,
                detail: result.unwrap_or_else(|e| e),
            });
        }
    }
    out
}

/// Auth, the header row, the id column, and every header the pipeline's
/// `mapping.columns` names.
async fn check_sheet(sheet: &SheetsSource, pipeline: &PipelineConfig) -> Result<String, CrmError> {
    let header = sheet.header().await?;
    sheet.check_id_column(&header.headers)?;
    let missing = crate::run::missing_mapped_columns(&header.headers, &pipeline.mapping);
    if !missing.is_empty() {
        return Err(sheet.missing_columns(&missing, &header.headers));
    }
    Ok(format!(
        "authenticated; header row {}: {} column(s) ({}) in {} request(s)",
        header.range,
        header.headers.len(),
        header.headers.join(", "),
        sheet.requests()
    ))
}
