//! Where CRM records come from and which master they belong to.
//!
//! Every CRM record a run reads is an `inbound` row of `crm_links`
//! (provider, CRM object, CRM id -> master). An `outbound` row says leadflow
//! itself created that record in the CRM for a master (pushing comes later;
//! `leadflow crm-link add` records one by hand). The outbound rule: when a
//! run reads a record whose CRM id has an outbound link, the record is
//! linked to that master and never becomes a new person (the sync would
//! otherwise import its own leads back in a circle); the decision is a
//! `merges` row of kind `outbound_link`. A record the CRM deleted marks its
//! `records` row and its link with `deleted_at`; masters and other sources'
//! records stay.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
use datafusion::prelude::SessionContext;
use leadflow_connectors::crm::{CrmConfig, CrmDeletion};
use leadflow_sinks::{StagedTable, Warehouse, WriteMode};
use leadflow_transforms::dedupe::{LinkOutcome, RunStamp};
use leadflow_transforms::schema::{CRM_LINKS_SCHEMA, MERGES_SCHEMA, RECORDS_SCHEMA};
use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::PipelineConfig;
use crate::run::{RunError, conform, text, utf8};
use crate::stages;

/// The CRM a source reads: provider (`hubspot`, ...), account and object.
#[derive(Debug, Clone)]
pub struct CrmOrigin {
    pub provider: &'static str,
    /// The source's `account` (portal, org, environment), if it names one.
    pub account: Option<String>,
    pub object: String,
}

impl CrmOrigin {
    fn key(&self, crm_id: &str) -> LinkKey {
        LinkKey {
            provider: self.provider.to_string(),
            account: self.account.clone(),
            object: self.object.clone(),
            crm_id: crm_id.to_string(),
        }
    }
}

/// CRM sources of a pipeline by source name.
pub type CrmSources = HashMap<String, CrmOrigin>;

/// The key of `crm_links`: one CRM record. Two accounts of one CRM (two
/// HubSpot portals) number their records independently, so the account is
/// part of it; `None` is the account of a source that names none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LinkKey {
    pub provider: String,
    pub account: Option<String>,
    #[serde(rename = "crm_object")]
    pub object: String,
    pub crm_id: String,
}

/// `hubspot (account eu) contacts 900`, as messages name a CRM record.
impl std::fmt::Display for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.provider)?;
        if let Some(a) = &self.account {
            write!(f, " (account {a})")?;
        }
        write!(f, " {} {}", self.object, self.crm_id)
    }
}

pub fn crm_sources(pipeline: &PipelineConfig, base: &std::path::Path) -> CrmSources {
    pipeline
        .sources
        .iter()
        .filter_map(|s| {
            s.crm(base).filter(CrmConfig::is_crm).map(|c| {
                (
                    s.name.clone(),
                    CrmOrigin {
                        provider: c.kind(),
                        account: s.account.clone(),
                        object: c.object(),
                    },
                )
            })
        })
        .collect()
}

/// A `crm_links` row as read back.
#[derive(Debug, Clone)]
pub struct ExistingLink {
    pub master_id: String,
    pub direction: String,
    pub first_seen_run: Option<String>,
    pub created_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

/// Reads the `crm_links` rows of `keys` (table `crm_links` registered).
async fn read_links(
    ctx: &SessionContext,
    keys: &[LinkKey],
) -> Result<HashMap<LinkKey, ExistingLink>, RunError> {
    let mut out = HashMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let col = |f: fn(&LinkKey) -> Option<&str>| -> ArrayRef {
        Arc::new(keys.iter().map(f).collect::<StringArray>())
    };
    let q = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("provider", DataType::Utf8, false),
            Field::new("account", DataType::Utf8, true),
            Field::new("crm_object", DataType::Utf8, false),
            Field::new("crm_id", DataType::Utf8, false),
        ])),
        vec![
            col(|k| Some(k.provider.as_str())),
            col(|k| k.account.as_deref()),
            col(|k| Some(k.object.as_str())),
            col(|k| Some(k.crm_id.as_str())),
        ],
    )?;
    stages::register_mem(ctx, "run_crm_keys", q.schema(), vec![vec![q]])?;
    // `account` is null for a source that names none: null matches null.
    let batches = ctx
        .sql(
            "SELECT l.provider, l.account, l.crm_object, l.crm_id, l.master_id, l.direction, \
             l.first_seen_run, l.created_at, l.deleted_at FROM crm_links l \
             JOIN (SELECT DISTINCT * FROM run_crm_keys) k ON l.provider = k.provider \
             AND (l.account IS NOT DISTINCT FROM k.account) AND l.crm_object = k.crm_object \
             AND l.crm_id = k.crm_id",
        )
        .await?
        .collect()
        .await?;
    ctx.deregister_table("run_crm_keys")?;
    for b in &batches {
        let s: Vec<StringArray> = (0..7).map(|i| utf8(b.column(i))).collect::<Result<_, _>>()?;
        let created = micros(b.column(7))?;
        let deleted = micros(b.column(8))?;
        for i in 0..b.num_rows() {
            let opt = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            out.insert(
                LinkKey {
                    provider: s[0].value(i).to_string(),
                    account: opt(&s[1]),
                    object: s[2].value(i).to_string(),
                    crm_id: s[3].value(i).to_string(),
                },
                ExistingLink {
                    master_id: s[4].value(i).to_string(),
                    direction: s[5].value(i).to_string(),
                    first_seen_run: opt(&s[6]),
                    created_at: (!created.is_null(i)).then(|| created.value(i)),
                    deleted_at: (!deleted.is_null(i)).then(|| deleted.value(i)),
                },
            );
        }
    }
    Ok(out)
}

/// A timestamp column read back from Delta as microseconds (UTC).
fn micros(a: &ArrayRef) -> Result<TimestampMicrosecondArray, RunError> {
    let t = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Ok(arrow::compute::cast(a, &t)?
        .as_primitive::<TimestampMicrosecondType>()
        .clone())
}

/// The link key of each lead row that came from a CRM source; empty when
/// the pipeline has no CRM source (a million `None`s are 90 MB of pages).
fn lead_keys(leads: &RecordBatch, crm: &CrmSources) -> Vec<Option<LinkKey>> {
    if crm.is_empty() {
        return Vec::new();
    }
    let source = text(leads, "source");
    let rid = text(leads, "source_record_id");
    (0..leads.num_rows())
        .map(|i| crm.get(source.value(i)).map(|o| o.key(rid.value(i))))
        .collect()
}

/// What the run knows about the `crm_links` of its CRM records.
#[derive(Default)]
pub struct RunLinks {
    existing: HashMap<LinkKey, ExistingLink>,
    /// Per lead row, or empty: no row came from a CRM.
    keys: Vec<Option<LinkKey>>,
}

impl RunLinks {
    /// Existing links of the run's CRM records (none when `crm_links` is empty).
    pub async fn load(
        ctx: &SessionContext,
        warehouse: &Warehouse,
        leads: &RecordBatch,
        crm: &CrmSources,
    ) -> Result<Self, RunError> {
        let keys = lead_keys(leads, crm);
        let existing = if !crm.is_empty() && warehouse.has_data("crm_links").await? {
            let wanted: Vec<LinkKey> = keys.iter().flatten().cloned().collect();
            read_links(ctx, &wanted).await?
        } else {
            HashMap::new()
        };
        Ok(Self { existing, keys })
    }

    /// (source, source_record_id) -> master of every run record whose CRM
    /// id leadflow created there (an outbound link). The linker gets them
    /// like records known by id: linked to that master, never a new one.
    pub fn outbound_pins(&self, leads: &RecordBatch) -> HashMap<(String, String), String> {
        let source = text(leads, "source");
        let rid = text(leads, "source_record_id");
        let mut pins = HashMap::new();
        for (i, key) in self.keys.iter().enumerate() {
            if let Some(l) = key.as_ref().and_then(|k| self.existing.get(k))
                && l.direction == "outbound"
            {
                pins.insert(
                    (source.value(i).to_string(), rid.value(i).to_string()),
                    l.master_id.clone(),
                );
            }
        }
        pins
    }
}

fn event_id(parts: &[&str]) -> String {
    format!("e-{:032x}", xxh3_128(parts.join("\u{1f}").as_bytes()))
}

/// Rows the linker put on their outbound master (`pinned`: pins the
/// warehouse did not already know as records) become `outbound_link`
/// decisions: rule renamed, a `merges` row each, counted as new records of
/// their master rather than as records seen before. Returns their count.
pub fn apply_outbound(
    leads: &RecordBatch,
    outcome: &mut LinkOutcome,
    pinned: &HashMap<(String, String), String>,
    stamp: &RunStamp,
) -> Result<u64, RunError> {
    let n = leads.num_rows();
    if pinned.is_empty() {
        return Ok(0);
    }
    let source = text(leads, "source");
    let rid = text(leads, "source_record_id");
    let mut per_master: HashMap<String, i64> = HashMap::new();
    let mut rules = StringBuilder::with_capacity(n, n * 8);
    let mut merges = MergeRows::default();
    for i in 0..n {
        let rule = outcome.match_rule.value(i);
        let key = (source.value(i).to_string(), rid.value(i).to_string());
        let mid = outcome.master_id.value(i);
        match pinned.get(&key) {
            Some(pin) if rule == "known_record" && pin == mid => {
                rules.append_value("outbound_link");
                *per_master.entry(mid.to_string()).or_default() += 1;
                merges.push(
                    event_id(&["outbound_link", &key.0, &key.1, mid]),
                    mid,
                    &key.0,
                    &key.1,
                    format!(
                        "record {}/{} is a CRM record leadflow created for master {mid} (outbound link); \
                         linked to it, not imported as a new person",
                        key.0, key.1
                    ),
                );
            }
            Some(pin) => {
                warn!(source = %key.0, record = %key.1, master = %pin, "outbound link names a master the warehouse does not hold; linked by keys instead");
                rules.append_value(rule);
            }
            None => rules.append_value(rule),
        }
    }
    let linked = per_master.values().sum::<i64>() as u64;
    if linked == 0 {
        return Ok(0);
    }
    outcome.match_rule = rules.finish();
    outcome.stats.records_known -= linked;
    // The linker counted them as records seen before (no count change).
    for m in &mut outcome.masters {
        let ids = m.column_by_name("master_id").expect("masters").as_string::<i32>();
        let counts = m
            .column_by_name("record_count")
            .expect("masters")
            .as_primitive::<arrow::datatypes::Int64Type>();
        let new_counts: Int64Array = (0..m.num_rows())
            .map(|j| Some(counts.value(j) + per_master.get(ids.value(j)).copied().unwrap_or(0)))
            .collect();
        let idx = m.schema().index_of("record_count")?;
        let mut cols = m.columns().to_vec();
        cols[idx] = Arc::new(new_counts);
        *m = RecordBatch::try_new(m.schema(), cols)?;
    }
    outcome.merges.push(merges.finish(stamp)?);
    info!(
        records = linked,
        "records linked to their master by outbound link"
    );
    Ok(linked)
}

#[derive(Default)]
struct MergeRows {
    event_id: StringBuilder,
    master_id: StringBuilder,
    source: StringBuilder,
    rid: StringBuilder,
    explanation: StringBuilder,
    len: usize,
}

impl MergeRows {
    fn push(&mut self, id: String, master: &str, source: &str, rid: &str, explanation: String) {
        self.event_id.append_value(id);
        self.master_id.append_value(master);
        self.source.append_value(source);
        self.rid.append_value(rid);
        self.explanation.append_value(explanation);
        self.len += 1;
    }

    fn finish(mut self, stamp: &RunStamp) -> Result<RecordBatch, RunError> {
        let n = self.len;
        let s = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            s("outbound_link"),
            Arc::new(self.master_id.finish()),
            Arc::new(StringArray::new_null(n)),
            Arc::new(self.source.finish()),
            Arc::new(self.rid.finish()),
            s("crm_id"),
            Arc::new(Float64Array::from(vec![1.0; n])),
            Arc::new(self.explanation.finish()),
            s(&stamp.run_id),
            Arc::new(TimestampMicrosecondArray::from(vec![stamp.now_us; n]).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(MERGES_SCHEMA.clone(), cols)?)
    }
}

/// One `crm_links` row to write.
#[derive(Debug, Clone)]
struct LinkRow {
    master_id: String,
    direction: String,
    pipeline: String,
    source: String,
    first_seen_run: Option<String>,
    last_seen_run: Option<String>,
    created_at: i64,
    deleted_at: Option<i64>,
}

/// The rows of `crm_links` a run writes, one per key.
#[derive(Default)]
pub struct LinkRows {
    rows: HashMap<LinkKey, LinkRow>,
    order: Vec<LinkKey>,
}

impl LinkRows {
    fn put(&mut self, key: LinkKey, row: LinkRow) {
        if self.rows.insert(key.clone(), row).is_none() {
            self.order.push(key);
        }
    }

    /// Inbound rows for the run's CRM records (seen alive: not deleted).
    /// An existing link keeps its direction, first run and, when outbound,
    /// its master.
    pub fn add_seen(
        &mut self,
        links: &RunLinks,
        leads: &RecordBatch,
        master_id: &StringArray,
        pipeline: &str,
        stamp: &RunStamp,
    ) {
        let source = text(leads, "source");
        for (i, key) in links.keys.iter().enumerate() {
            let Some(key) = key else { continue };
            let old = links.existing.get(key);
            let outbound = old.is_some_and(|l| l.direction == "outbound");
            let row = LinkRow {
                master_id: match old {
                    Some(l) if outbound => l.master_id.clone(),
                    _ => master_id.value(i).to_string(),
                },
                direction: if outbound { "outbound" } else { "inbound" }.to_string(),
                pipeline: pipeline.to_string(),
                source: source.value(i).to_string(),
                first_seen_run: old
                    .and_then(|l| l.first_seen_run.clone())
                    .or_else(|| Some(stamp.run_id.clone())),
                last_seen_run: Some(stamp.run_id.clone()),
                created_at: old.and_then(|l| l.created_at).unwrap_or(stamp.now_us),
                deleted_at: None,
            };
            self.put(key.clone(), row);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn finish(&self, stamp: &RunStamp) -> Result<RecordBatch, RunError> {
        let rows: Vec<(&LinkKey, &LinkRow)> = self.order.iter().map(|k| (k, &self.rows[k])).collect();
        link_batch(&rows, stamp.now_us)
    }
}

fn link_batch(rows: &[(&LinkKey, &LinkRow)], now_us: i64) -> Result<RecordBatch, RunError> {
    let n = rows.len();
    let s = |f: &dyn Fn(&LinkKey, &LinkRow) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(|(k, r)| f(k, r)).collect::<StringArray>())
    };
    let ts =
        |v: Vec<Option<i64>>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        s(&|k, _| Some(k.provider.clone())),
        s(&|k, _| Some(k.object.clone())),
        s(&|k, _| Some(k.crm_id.clone())),
        s(&|_, r| Some(r.master_id.clone())),
        s(&|_, r| Some(r.direction.clone())),
        s(&|_, r| Some(r.pipeline.clone())),
        s(&|_, r| Some(r.source.clone())),
        s(&|_, r| r.first_seen_run.clone()),
        s(&|_, r| r.last_seen_run.clone()),
        ts(rows.iter().map(|(_, r)| Some(r.created_at)).collect()),
        ts(vec![Some(now_us); n]),
        ts(rows.iter().map(|(_, r)| r.deleted_at).collect()),
        s(&|k, _| k.account.clone()),
    ];
    Ok(RecordBatch::try_new(CRM_LINKS_SCHEMA.clone(), cols)?)
}

/// A deletion a CRM or Google Sheets source reported in this run.
#[derive(Debug, Clone)]
pub struct SourceDeletion {
    pub source: String,
    pub deletion: CrmDeletion,
}

/// Marks deleted records (a CRM's deletions, rows gone from a Google
/// Sheet; keyed by source and record id): their `records` rows (read back,
/// `deleted_at` set; rows already marked are left alone, so a re-read
/// changes nothing) and, for CRM records, their links (created for records
/// read before `crm_links` existed). Sheet rows have no link.
/// Returns the records rows to upsert and how many records were marked.
pub async fn mark_deleted(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    deletions: &[SourceDeletion],
    crm: &CrmSources,
    links: &mut LinkRows,
    pipeline: &str,
    stamp: &RunStamp,
) -> Result<(Option<RecordBatch>, u64), RunError> {
    if deletions.is_empty() || !warehouse.has_data("records").await? {
        return Ok((None, 0));
    }
    let q = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("source_record_id", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.source.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                deletions.iter().map(|d| d.deletion.id.as_str()),
            )),
        ],
    )?;
    stages::register_mem(ctx, "run_deleted", q.schema(), vec![vec![q]])?;
    let batches = ctx
        .sql(
            "SELECT r.* FROM records r JOIN (SELECT DISTINCT * FROM run_deleted) d \
             ON r.source = d.source AND r.source_record_id = d.source_record_id WHERE r.deleted_at IS NULL",
        )
        .await?
        .collect()
        .await?;
    ctx.deregister_table("run_deleted")?;
    let found: Vec<RecordBatch> = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| conform(b, &RECORDS_SCHEMA))
        .collect::<Result<_, _>>()?;
    if found.is_empty() {
        return Ok((None, 0));
    }
    let records = arrow::compute::concat_batches(&RECORDS_SCHEMA, &found)?;
    let when: HashMap<(&str, &str), i64> = deletions
        .iter()
        .map(|d| {
            (
                (d.source.as_str(), d.deletion.id.as_str()),
                d.deletion.deleted_at.timestamp_micros(),
            )
        })
        .collect();
    let source = text(&records, "source");
    let rid = text(&records, "source_record_id");
    let master = text(&records, "master_id");
    let at: Vec<Option<i64>> = (0..records.num_rows())
        .map(|i| when.get(&(source.value(i), rid.value(i))).copied())
        .collect();
    let idx = records.schema().index_of("deleted_at")?;
    let mut cols = records.columns().to_vec();
    cols[idx] = Arc::new(TimestampMicrosecondArray::from(at.clone()).with_timezone("UTC"));
    let marked = RecordBatch::try_new(RECORDS_SCHEMA.clone(), cols)?;

    // Their links: existing rows keep everything but `deleted_at`.
    let keys: Vec<Option<LinkKey>> = (0..records.num_rows())
        .map(|i| crm.get(source.value(i)).map(|o| o.key(rid.value(i))))
        .collect();
    let wanted: Vec<LinkKey> = keys.iter().flatten().cloned().collect();
    let existing = if warehouse.has_data("crm_links").await? {
        read_links(ctx, &wanted).await?
    } else {
        HashMap::new()
    };
    for (i, key) in keys.into_iter().enumerate() {
        let Some(key) = key else { continue };
        if links.rows.contains_key(&key) {
            continue;
        }
        let old = existing.get(&key);
        links.put(
            key,
            LinkRow {
                master_id: old.map_or_else(|| master.value(i).to_string(), |l| l.master_id.clone()),
                direction: old.map_or_else(|| "inbound".to_string(), |l| l.direction.clone()),
                pipeline: pipeline.to_string(),
                source: source.value(i).to_string(),
                first_seen_run: old.and_then(|l| l.first_seen_run.clone()),
                last_seen_run: None,
                created_at: old.and_then(|l| l.created_at).unwrap_or(stamp.now_us),
                deleted_at: at[i],
            },
        );
    }
    let n = marked.num_rows() as u64;
    info!(records = n, "records marked deleted in their source");
    Ok((Some(marked), n))
}

/// Why `crm-link add` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmLinkError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{key} is already linked to master {existing} ({direction}); a CRM record belongs to one \
         person, so it is not relinked to {wanted}"
    )]
    Conflict {
        key: LinkKey,
        existing: String,
        direction: String,
        wanted: String,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Warehouse(#[from] leadflow_sinks::WarehouseError),
}

/// What `crm-link add` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AddedLink {
    #[serde(flatten)]
    pub key: LinkKey,
    pub master_id: String,
    /// `created`, or `unchanged` when the same outbound link was there.
    pub outcome: String,
}

/// Records that leadflow created CRM record `crm_id` (in the CRM that
/// `source` of `pipeline` reads, `origin` as [`crm_sources`] gives it) for
/// `master_id`: an outbound link. The next run that reads that record links
/// it to the master instead of making a new one.
pub async fn add_outbound(
    warehouse: &Warehouse,
    pipeline: &PipelineConfig,
    origin: &CrmOrigin,
    source: &str,
    crm_id: &str,
    master_id: &str,
) -> Result<AddedLink, CrmLinkError> {
    let crm_id = crm_id.trim();
    if crm_id.is_empty() {
        return Err(CrmLinkError::Invalid("--crm-id is empty".into()));
    }
    let key = origin.key(crm_id);
    let ctx = SessionContext::new();
    warehouse.register(&ctx, &["masters", "crm_links"]).await?;
    let masters = ctx
        .sql(&format!(
            "SELECT count(*) FROM masters WHERE master_id = '{}'",
            master_id.replace('\'', "''")
        ))
        .await
        .map_err(RunError::from)?
        .collect()
        .await
        .map_err(RunError::from)?;
    let found = masters
        .first()
        .map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0))
        .unwrap_or(0);
    if found == 0 {
        return Err(CrmLinkError::Invalid(format!(
            "no master `{master_id}` in the warehouse (see `leadflow show`); an outbound link must name an existing master"
        )));
    }
    let added = |outcome: &str| AddedLink {
        key: key.clone(),
        master_id: master_id.to_string(),
        outcome: outcome.to_string(),
    };
    let existing = read_links(&ctx, std::slice::from_ref(&key)).await?;
    if let Some(old) = existing.get(&key) {
        if old.master_id != master_id {
            return Err(CrmLinkError::Conflict {
                key,
                existing: old.master_id.clone(),
                direction: old.direction.clone(),
                wanted: master_id.to_string(),
            });
        }
        if old.direction == "outbound" {
            return Ok(added("unchanged"));
        }
    }
    let now = chrono::Utc::now().timestamp_micros();
    let old = existing.get(&key);
    let row = LinkRow {
        master_id: master_id.to_string(),
        direction: "outbound".into(),
        pipeline: pipeline.name.clone(),
        source: source.to_string(),
        first_seen_run: old.and_then(|l| l.first_seen_run.clone()),
        last_seen_run: None,
        created_at: old.and_then(|l| l.created_at).unwrap_or(now),
        deleted_at: old.and_then(|l| l.deleted_at),
    };
    let batch = link_batch(&[(&key, &row)], now)?;
    // Outside runs: its own app id, the next version of it.
    let app_id = "leadflow:crm-links";
    let version = warehouse.txn_version("crm_links", app_id).await?.unwrap_or(0) + 1;
    warehouse
        .apply(
            &StagedTable {
                table: "crm_links".into(),
                mode: WriteMode::Upsert,
                batches: vec![batch],
            },
            app_id,
            version,
        )
        .await?;
    info!(provider = %key.provider, object = %key.object, master = %master_id, "outbound crm link recorded");
    Ok(added("created"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rows_keep_one_row_per_key_and_the_schema() {
        let mut rows = LinkRows::default();
        let key = LinkKey {
            provider: "hubspot".into(),
            account: Some("eu".into()),
            object: "contacts".into(),
            crm_id: "7".into(),
        };
        let row = |m: &str| LinkRow {
            master_id: m.into(),
            direction: "inbound".into(),
            pipeline: "p".into(),
            source: "hs".into(),
            first_seen_run: Some("r1".into()),
            last_seen_run: Some("r1".into()),
            created_at: 5,
            deleted_at: None,
        };
        rows.put(key.clone(), row("m-1"));
        rows.put(key, row("m-2"));
        let stamp = RunStamp {
            run_id: "r1".into(),
            now_us: 9,
        };
        let b = rows.finish(&stamp).unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), *CRM_LINKS_SCHEMA);
        let master = b.column_by_name("master_id").unwrap().as_string::<i32>();
        assert_eq!(master.value(0), "m-2", "the last write for a key wins");
        let account = b.column_by_name("account").unwrap().as_string::<i32>();
        assert_eq!(account.value(0), "eu", "the account is written with its key");
    }
}
