//! One pipeline run, start to finish:
//! recover -> read sources -> map -> normalise -> sql -> validate -> link ->
//! stage -> commit (txn-guarded) -> archive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use leadflow_connectors::crm::{CrmConfig, CrmSource};
use leadflow_connectors::files::{FileDrop, FileEntry, parse_file};
use leadflow_sinks::{StagedCommit, StagedTable, Warehouse, WriteMode};
use leadflow_transforms::dedupe::{self, RunStamp};
use leadflow_transforms::mapping::{Mapper, MappingConfig, fold_key};
use leadflow_transforms::normalise::NormaliseOptions;
use leadflow_transforms::schema::{
    self as lschema, RECORDS_SCHEMA, REJECTS_SCHEMA, RUNS_SCHEMA, SOURCE_FILES_SCHEMA,
};
use leadflow_transforms::validate::Validator;
use serde::Serialize;
use tracing::{Instrument, info, info_span, warn};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::{LoadedConfig, PipelineConfig, resolve_files};
use crate::crm_links;
use crate::progress::{Progress, StageClock};
use crate::stages;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source `{source_name}`: {message}")]
    Source { source_name: String, message: String },
    // Boxed: these errors are large and a run returns Result everywhere.
    #[error(transparent)]
    Warehouse(Box<leadflow_sinks::WarehouseError>),
    #[error(transparent)]
    Stage(Box<stages::StageError>),
    #[error(transparent)]
    DataFusion(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("{0}")]
    Other(String),
}

impl From<leadflow_sinks::WarehouseError> for RunError {
    fn from(e: leadflow_sinks::WarehouseError) -> Self {
        Self::Warehouse(Box::new(e))
    }
}

impl From<stages::StageError> for RunError {
    fn from(e: stages::StageError) -> Self {
        Self::Stage(Box::new(e))
    }
}

impl From<datafusion::error::DataFusionError> for RunError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::DataFusion(Box::new(e))
    }
}

/// How a run was started and what it may do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `cli`, `schedule`, `api`, ...
    pub trigger: String,
    /// Show a progress bar (a terminal is attached).
    pub progress: bool,
    /// Testing aid: abort the process right after committing this table, as
    /// a crash would. Set with LEADFLOW_FAULT_AFTER_TABLE.
    pub fault_after_table: Option<String>,
    /// Use this run id instead of a new one (the daemon answers a trigger
    /// with the id before the run starts).
    pub run_id: Option<String>,
}

/// What happened to one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub source: String,
    pub path: String,
    pub status: String,
    pub rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcome of a run, for the CLI summary, `--json` and the `runs` table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub status: String,
    pub trigger: String,
    pub sequence: Option<i64>,
    pub started_at: String,
    pub duration_seconds: f64,
    pub files_seen: u64,
    pub files_imported: u64,
    pub files_unchanged: u64,
    pub files_quarantined: u64,
    pub rows_read: u64,
    pub rows_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub masters_new: u64,
    pub matched_existing: u64,
    pub merged_in_batch: u64,
    pub records_known: u64,
    pub conflicts: u64,
    pub records_written: u64,
    /// Reminders created for new project links (pipelines with `reminders:`).
    pub reminders_created: u64,
    /// CRM records linked to the master leadflow created them for (outbound links).
    pub outbound_linked: u64,
    /// Records their source reported deleted (a CRM's deletions, rows gone
    /// from a Google Sheet), marked with `deleted_at` in `records` (and
    /// `crm_links` for CRM records). Also a `runs` column.
    pub records_deleted: u64,
    /// Pairs of existing masters merged after the commit because a record
    /// of this run linked strongly to both (`linkage.merge_bridged_masters`).
    pub masters_merged: u64,
    /// The pairs (master ids), for the merge after the commit.
    #[serde(skip)]
    pub bridged: Vec<(String, String)>,
    pub recovered_run: Option<String>,
    pub files: Vec<FileReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }
}

/// A run id: time-ordered and unique enough for one warehouse.
pub fn new_run_id(pipeline: &str, at: DateTime<Utc>) -> String {
    let salt = xxh3_128(
        format!(
            "{pipeline}{}{}",
            at.timestamp_nanos_opt().unwrap_or(0),
            std::process::id()
        )
        .as_bytes(),
    );
    format!("{}-{:08x}", at.format("%Y%m%dT%H%M%SZ"), salt as u32)
}

/// Run one pipeline. Never panics on bad data: failures end up in the
/// report (and in the `runs` table when the warehouse is reachable).
pub async fn run_pipeline(
    loaded: &LoadedConfig,
    pipeline: &PipelineConfig,
    warehouse: &Warehouse,
    opts: &RunOptions,
) -> RunReport {
    let started = Utc::now();
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| new_run_id(&pipeline.name, started));
    let span = info_span!("run", run_id = %run_id, pipeline = %pipeline.name);
    let clock = Instant::now();
    let mut report = RunReport {
        run_id: run_id.clone(),
        pipeline: pipeline.name.clone(),
        status: "running".into(),
        trigger: opts.trigger.clone(),
        started_at: started.to_rfc3339(),
        ..Default::default()
    };
    // A merge of this process in progress finishes first; merges wait for
    // this run (they would otherwise be undone by its commit).
    let merges_wait = crate::review::run_turn().await;
    let outcome = execute(loaded, pipeline, warehouse, opts, started, &mut report)
        .instrument(span.clone())
        .await;
    drop(merges_wait);
    report.duration_seconds = clock.elapsed().as_secs_f64();
    let _g = span.enter();
    match outcome {
        Ok(()) => {
            report.status = "succeeded".into();
            info!(
                rows_read = report.rows_read,
                rows_rejected = report.rows_rejected,
                masters_new = report.masters_new,
                matched_existing = report.matched_existing,
                seconds = report.duration_seconds,
                "run succeeded"
            );
            merge_bridged_masters(loaded, pipeline, warehouse, &mut report).await;
            vacuum_when_due(loaded, warehouse).await;
        }
        Err(e) => {
            report.status = "failed".into();
            report.error = Some(e.to_string());
            warn!(error = %e, "run failed");
            // Best effort: the failure itself is worth a row in `runs`.
            let row = runs_row(&report, started, Utc::now());
            if let Ok(row) = row {
                let t = StagedTable {
                    table: "runs".into(),
                    mode: WriteMode::Upsert,
                    batches: vec![row],
                };
                if let Err(e2) = warehouse
                    .apply(
                        &t,
                        &format!("leadflow-failed:{}", pipeline.name),
                        started.timestamp_micros(),
                    )
                    .await
                {
                    warn!(error = %e2, "could not record the failed run");
                }
            }
        }
    }
    report
}

struct ParsedInput {
    entry: FileEntry,
    source: String,
    drop: Arc<FileDrop>,
}

async fn execute(
    loaded: &LoadedConfig,
    pipeline: &PipelineConfig,
    warehouse: &Warehouse,
    opts: &RunOptions,
    started: DateTime<Utc>,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let stamp = RunStamp {
        run_id: report.run_id.clone(),
        now_us: started.timestamp_micros(),
    };
    // A pipeline of another entity type (channel partners) works on that
    // entity's own tables; every caller of a run gets this for free.
    let warehouse = &crate::warehouse_for(warehouse, pipeline.entity.as_deref()).await?;
    let app_id = format!("leadflow:{}", pipeline.name);
    if let Some(done) = warehouse.recover(&pipeline.name).await? {
        report.recovered_run = Some(done);
    }
    let version = warehouse.last_txn_version(&app_id).await?.unwrap_or(0) + 1;
    report.sequence = Some(version);

    let norm = NormaliseOptions {
        default_region: pipeline.defaults.phone_region.clone(),
        country_overrides: pipeline.normalise.countries.clone(),
    };
    let ctx = stages::session(&norm)?;
    warehouse
        .register(
            &ctx,
            &[
                "source_files",
                "masters",
                "records",
                "project_links",
                "source_cursors",
                "crm_links",
            ],
        )
        .await?;
    let mapper = Mapper::new(&pipeline.mapping, &pipeline.defaults)
        .map_err(|e| RunError::Other(e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    let validator = Validator::new(&pipeline.validate)
        .map_err(|e| RunError::Other(e.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;

    // ---- read sources ------------------------------------------------------
    let stage_clock = StageClock::start();
    let mut raw_batches: Vec<RecordBatch> = Vec::new();
    let mut mapped: Vec<RecordBatch> = Vec::new();
    let mut rejects = RejectRows::default();
    let mut ledger_rows = LedgerRows::default();
    let mut imported: Vec<ParsedInput> = Vec::new();
    let mut cursors: Vec<(String, String)> = Vec::new();
    let crm_sources = crm_links::crm_sources(pipeline, &loaded.base);
    let mut deletions: Vec<crm_links::SourceDeletion> = Vec::new();
    for source in &pipeline.sources {
        if let Some(crm) = source.crm(&loaded.base) {
            let read = read_crm(
                &ctx,
                &pipeline.name,
                &source.name,
                &crm,
                &mapper,
                &pipeline.mapping,
                raw_batches.len(),
            )
            .await?;
            report.rows_read += read.rows;
            report.files.push(read.report);
            mapped.extend(read.mapped);
            raw_batches.extend(read.raw);
            cursors.extend(read.cursor.map(|c| (source.name.clone(), c)));
            deletions.extend(read.deleted.into_iter().map(|d| crm_links::SourceDeletion {
                source: source.name.clone(),
                deletion: d,
            }));
            continue;
        }
        let Some(files) = &source.files else { continue };
        let files = resolve_files(files, &loaded.base);
        let src_err = |e: &dyn std::fmt::Display| RunError::Source {
            source_name: source.name.clone(),
            message: e.to_string(),
        };
        let drop = Arc::new(FileDrop::new(&source.name, &files).map_err(|e| src_err(&e))?);
        let entries = drop.list().await.map_err(|e| src_err(&e))?;
        let ledger = load_ledger(&ctx, &source.name).await?;
        let progress = Progress::new(opts.progress, entries.len() as u64, &source.name);
        for entry in entries {
            report.files_seen += 1;
            progress.file(&entry.relative);
            let quick = ledger.by_stat.contains(&(
                entry.relative.clone(),
                entry.size as i64,
                entry.last_modified.timestamp_micros(),
            ));
            if quick {
                report.files_unchanged += 1;
                continue;
            }
            let fetched = drop.fetch(&entry).await.map_err(|e| src_err(&e))?;
            if ledger
                .by_hash
                .contains(&(entry.relative.clone(), fetched.content_hash.clone()))
            {
                report.files_unchanged += 1;
                continue;
            }
            let hash = fetched.content_hash.clone();
            let cfg = files.clone();
            let name = source.name.clone();
            let parsed = tokio::task::spawn_blocking(move || parse_file(&name, &fetched, &cfg))
                .await
                .map_err(|e| RunError::Other(format!("parser task failed: {e}")))?;
            let parsed =
                parsed
                    .map_err(|e| e.to_string())
                    .and_then(|p| match mapper.for_headers(&p.headers) {
                        Ok(fm) => Ok((p, fm)),
                        Err(e) => Err(format!("{}: {e}", entry.display)),
                    });
            match parsed {
                Err(reason) => {
                    warn!(file = %entry.relative, reason = %reason, "file quarantined");
                    drop.quarantine(&entry, &reason).await.map_err(|e| src_err(&e))?;
                    report.files_quarantined += 1;
                    ledger_rows.push(
                        &source.name,
                        &entry,
                        &hash,
                        "quarantined",
                        Some(&reason),
                        None,
                        0,
                        &stamp,
                    );
                    report.files.push(FileReport {
                        source: source.name.clone(),
                        path: entry.relative.clone(),
                        status: "quarantined".into(),
                        rows: 0,
                        reason: Some(reason),
                    });
                }
                Ok((parsed, mut fm)) => {
                    report.files_imported += 1;
                    report.rows_read += parsed.rows;
                    progress.rows(parsed.rows);
                    info!(file = %entry.relative, rows = parsed.rows, format = parsed.format, bad_rows = parsed.bad_rows.len(), "file read");
                    let first_index = u32::try_from(raw_batches.len())
                        .map_err(|_| RunError::Other("too many batches in one run".into()))?;
                    // CPU-bound and parallel (rayon): off the async workers.
                    let batches = parsed.batches.clone();
                    let file_key = entry.relative.clone();
                    let result =
                        tokio::task::spawn_blocking(move || fm.apply_all(&batches, first_index, &file_key))
                            .await
                            .map_err(|e| RunError::Other(format!("mapping task failed: {e}")))?;
                    mapped.extend(result.map_err(|e| RunError::Other(e.to_string()))?);
                    raw_batches.extend(parsed.batches.iter().cloned());
                    let mut bad_seen: HashMap<u128, u32> = HashMap::new();
                    for bad in &parsed.bad_rows {
                        let raw = serde_json::to_string(
                            &parsed
                                .headers
                                .iter()
                                .zip(&bad.values)
                                .map(|(h, v)| (h.clone(), v.clone()))
                                .collect::<BTreeMap<_, _>>(),
                        )
                        .unwrap_or_default();
                        let raw = if bad.values.len() > parsed.headers.len() {
                            serde_json::to_string(&bad.values).unwrap_or(raw)
                        } else {
                            raw
                        };
                        let digest = xxh3_128(
                            format!("{}\u{1f}{}", entry.relative, bad.values.join("\u{1f}")).as_bytes(),
                        );
                        // Identical bad rows in one file stay distinct rejects.
                        let seen = bad_seen.entry(digest).or_insert(0u32);
                        *seen += 1;
                        let id = if *seen == 1 {
                            format!("{digest:032x}-bad")
                        } else {
                            format!("{digest:032x}-bad-{seen}")
                        };
                        rejects.push(
                            &source.name,
                            &id,
                            &parsed.file,
                            bad.row as i64,
                            &raw,
                            &[("ragged_row".to_string(), bad.reason.clone())],
                        );
                    }
                    ledger_rows.push(
                        &source.name,
                        &entry,
                        &hash,
                        "imported",
                        None,
                        Some(parsed.format),
                        parsed.rows as i64,
                        &stamp,
                    );
                    report.files.push(FileReport {
                        source: source.name.clone(),
                        path: entry.relative.clone(),
                        status: "imported".into(),
                        rows: parsed.rows,
                        reason: None,
                    });
                    imported.push(ParsedInput {
                        entry,
                        source: source.name.clone(),
                        drop: drop.clone(),
                    });
                }
            }
        }
        progress.finish();
    }

    info!(
        rows = report.rows_read,
        files = report.files_imported,
        seconds = stage_clock.seconds(),
        cpu_seconds = stage_clock.cpu_seconds(),
        "stage read+map done"
    );

    // ---- normalise, sql, validate -----------------------------------------
    let stage_clock = StageClock::start();
    let normalised = stages::normalise(&ctx, mapped).await?;
    let normalised = stages::user_stages(&ctx, normalised, &pipeline.sql).await?;
    info!(
        seconds = stage_clock.seconds(),
        cpu_seconds = stage_clock.cpu_seconds(),
        "stage normalise done"
    );
    let stage_clock = StageClock::start();
    let mut good: Vec<(RecordBatch, Option<BooleanArray>)> = Vec::new();
    // Rules per batch on every core; rejects in order after.
    let checked: Vec<_> = {
        use rayon::prelude::*;
        normalised
            .par_iter()
            .map(|b| validator.validate(b).map_err(|e| RunError::Other(e.to_string())))
            .collect::<Result<_, _>>()?
    };
    for (b, v) in normalised.into_iter().zip(checked) {
        if !v.failures.is_empty() {
            let source = text(&b, "source");
            let rid = text(&b, "source_record_id");
            let file = text(&b, "source_file");
            let row = b
                .column_by_name("source_row")
                .expect("normalised")
                .as_primitive::<arrow::datatypes::Int64Type>();
            let pos = b
                .column_by_name(lschema::RAW_POS)
                .expect("normalised")
                .as_primitive::<arrow::datatypes::UInt64Type>();
            for (i, reasons) in &v.failures {
                let p = pos.value(*i);
                let raw = raw_json(&raw_batches[(p >> 32) as usize], (p & 0xffff_ffff) as usize);
                let rs: Vec<(String, String)> = reasons
                    .iter()
                    .map(|r| (r.code.clone(), r.message.clone()))
                    .collect();
                rejects.push(
                    source.value(*i),
                    rid.value(*i),
                    file.value(*i),
                    row.value(*i),
                    &raw,
                    &rs,
                );
            }
        }
        // Rows kept are gathered once, in arrival order, before linking.
        match v.failures.len() {
            0 => good.push((b, None)),
            f if f < b.num_rows() => good.push((b, Some(v.keep))),
            _ => {}
        }
    }
    // The raw rows served the rejects only: freed before the link's
    // allocations rather than held to the end of the run.
    drop(raw_batches);
    report.rows_rejected = rejects.len as u64;
    report.rejected_by_reason = rejects.by_reason.clone();

    info!(
        rejected = report.rows_rejected,
        seconds = stage_clock.seconds(),
        cpu_seconds = stage_clock.cpu_seconds(),
        "stage validate done"
    );
    let stage_clock = StageClock::start();

    // ---- link --------------------------------------------------------------
    let mut tables: Vec<StagedTable> = vec![StagedTable {
        table: "rejects".into(),
        mode: WriteMode::Upsert,
        batches: vec![rejects.finish(&stamp)?],
    }];
    let mut link_rows = crm_links::LinkRows::default();
    let mut ahead: Vec<leadflow_sinks::EncodedAhead> = Vec::new();
    if let Some(schema) = good.first().map(|(b, _)| b.schema()) {
        let leads = arrival_order(&schema, good)?;
        let sheets: HashSet<&str> = pipeline
            .sources
            .iter()
            .filter(|s| s.google_sheets.is_some())
            .map(|s| s.name.as_str())
            .collect();
        // Most of `records` is known now: its encoding starts beside the link.
        let lead_columns = record_lead_columns(&leads, &crm_sources, &sheets, &stamp)?;
        ahead.push(warehouse.encode_ahead("records", lead_columns.clone()).await?);
        // A warehouse's first load has nothing to look up: skip the joins.
        let run_links = crm_links::RunLinks::load(&ctx, warehouse, &leads, &crm_sources).await?;
        let pins = run_links.outbound_pins(&leads);
        // Counted once from the masters' log: it decides the lookups and
        // scales the probabilistic prior (None: a file without statistics).
        let masters_rows = warehouse.row_count("masters").await?;
        let (candidates, known, pinned) = if masters_rows != Some(0) || warehouse.has_data("records").await? {
            candidates(&ctx, &leads, &pins, &pipeline.dedupe).await?
        } else {
            (
                RecordBatch::new_empty(lschema::MASTERS_SCHEMA.clone()),
                HashMap::new(),
                HashMap::new(),
            )
        };
        info!(
            rows = leads.num_rows(),
            candidates = candidates.num_rows(),
            known = known.len(),
            seconds = stage_clock.seconds(),
            cpu_seconds = stage_clock.cpu_seconds(),
            "stage candidates done"
        );
        let stage_clock = StageClock::start();
        // Rules other than `newest` weigh every record of a master: read the
        // earlier records of the masters this run may touch.
        let rules = loaded.config.survivorship_for(pipeline.entity.as_deref());
        let history = if rules.needs_history() && candidates.num_rows() > 0 {
            Some(earlier_records(&ctx, &candidates).await?)
        } else {
            None
        };
        let surv = dedupe::Survivorship {
            rules,
            history: history.as_ref(),
        };
        let mut outcome = match pipeline.dedupe.mode {
            dedupe::DedupeMode::Exact => {
                dedupe::link(&leads, &candidates, &known, &pipeline.dedupe, &stamp, surv)
            }
            dedupe::DedupeMode::Probabilistic => {
                // The prior is scaled to every master, not only the candidates.
                let masters = masters_rows.unwrap_or(candidates.num_rows() as u64);
                let population = leads.num_rows() as u64 + masters;
                dedupe::link_probabilistic(
                    &leads,
                    &candidates,
                    &known,
                    &pipeline.dedupe,
                    &stamp,
                    surv,
                    population,
                )
                .await
            }
        }
        .map_err(|e| RunError::Other(e.to_string()))?;
        let review = new_reviews(
            &ctx,
            warehouse,
            std::mem::replace(
                &mut outcome.review,
                RecordBatch::new_empty(lschema::REVIEW_SCHEMA.clone()),
            ),
        )
        .await?;
        report.bridged = std::mem::take(&mut outcome.bridged);
        let outbound = crm_links::apply_outbound(&leads, &mut outcome, &pinned, &stamp)?;
        report.outbound_linked = outbound;
        let s = &outcome.stats;
        report.masters_new = s.masters_new;
        report.matched_existing = s.matched_existing;
        report.merged_in_batch = s.merged_in_batch;
        report.records_known = s.records_known;
        report.conflicts = s.conflicts;
        info!(
            masters = outcome.masters.iter().map(RecordBatch::num_rows).sum::<usize>(),
            seconds = stage_clock.seconds(),
            cpu_seconds = stage_clock.cpu_seconds(),
            "stage link done"
        );
        let stage_clock = StageClock::start();
        let known_flags: Vec<bool> = outcome
            .match_rule
            .iter()
            .map(|r| r == Some("known_record"))
            .collect();
        let existing_links = if warehouse.has_data("project_links").await? {
            existing_links(&ctx, &outcome.master_id).await?
        } else {
            RecordBatch::new_empty(lschema::PROJECT_LINKS_SCHEMA.clone())
        };
        let links_mode = WriteMode::upsert_if(existing_links.num_rows() > 0);
        let default_status = pipeline.defaults.status.clone().unwrap_or_else(|| "new".into());
        let links = dedupe::project_links(
            &leads,
            &outcome.master_id,
            &known_flags,
            &existing_links,
            &default_status,
            &stamp,
        )
        .map_err(|e| RunError::Other(e.to_string()))?;
        // The lead columns were built (and are being encoded) before linking.
        let records = records_batch(&lead_columns, &outcome)?;
        report.records_written = records.num_rows() as u64;
        link_rows.add_seen(&run_links, &leads, &outcome.master_id, &pipeline.name, &stamp);
        info!(
            seconds = stage_clock.seconds(),
            cpu_seconds = stage_clock.cpu_seconds(),
            "stage project links+records done"
        );
        tables.push(StagedTable {
            table: "records".into(),
            mode: WriteMode::upsert_if(s.records_known > 0),
            batches: vec![records],
        });
        tables.push(StagedTable {
            table: "masters".into(),
            mode: WriteMode::upsert_if(s.masters_updated > 0),
            batches: outcome.masters,
        });
        tables.push(StagedTable {
            table: "project_links".into(),
            mode: links_mode,
            batches: links,
        });
        tables.push(StagedTable {
            table: "merges".into(),
            mode: WriteMode::Upsert,
            batches: outcome.merges,
        });
        if review.num_rows() > 0 {
            tables.push(StagedTable {
                table: "review".into(),
                mode: WriteMode::Upsert,
                batches: vec![review],
            });
        }
    }
    // CRM deletions mark records (read back) in the same `records` write.
    let (deleted_records, deleted) = crm_links::mark_deleted(
        &ctx,
        warehouse,
        &deletions,
        &crm_sources,
        &mut link_rows,
        &pipeline.name,
        &stamp,
    )
    .await?;
    report.records_deleted = deleted;
    if let Some(rows) = deleted_records {
        match tables.iter_mut().find(|t| t.table == "records") {
            Some(t) => {
                t.batches.push(rows);
                t.mode = WriteMode::Upsert;
            }
            None => tables.push(StagedTable {
                table: "records".into(),
                mode: WriteMode::Upsert,
                batches: vec![rows],
            }),
        }
    }
    if !link_rows.is_empty() {
        tables.push(StagedTable {
            table: "crm_links".into(),
            mode: WriteMode::Upsert,
            batches: vec![link_rows.finish(&stamp)?],
        });
    }
    // The cursor moves only with this commit: a failed run re-reads.
    tables.push(StagedTable {
        table: "source_cursors".into(),
        mode: WriteMode::Upsert,
        batches: vec![cursors_batch(&pipeline.name, &cursors, &stamp)?],
    });
    tables.push(StagedTable {
        table: "source_files".into(),
        mode: WriteMode::Upsert,
        batches: vec![ledger_rows.finish()?],
    });
    report.status = "succeeded".into();
    let finished = Utc::now();
    report.duration_seconds = (finished - started).as_seconds_f64();
    tables.push(StagedTable {
        table: "runs".into(),
        mode: WriteMode::Upsert,
        batches: vec![runs_row(report, started, finished)?],
    });

    // Owner assignment and reminders of new project links, in this commit.
    // Held from reading the reminders to committing them, so a tick or an
    // API call of the same daemon cannot change them in between.
    let _reminders_turn = if pipeline.reminders.is_some() || pipeline.assignment.is_some() {
        Some(crate::reminders::engine::write_turn().await)
    } else {
        None
    };
    let stage_clock = StageClock::start();
    let staged = crate::reminders::stage_for_run(warehouse, pipeline, &report.run_id, &mut tables)
        .await
        .map_err(|e| RunError::Other(format!("reminders: {e}")))?;
    report.reminders_created = staged.reminders_created as u64;
    info!(
        seconds = stage_clock.seconds(),
        cpu_seconds = stage_clock.cpu_seconds(),
        "stage reminders done"
    );

    // ---- commit ------------------------------------------------------------
    let stage_clock = StageClock::start();
    // Tables with nothing to write are left alone: a run over unchanged
    // input changes no table but `runs`.
    tables.retain(|t| t.table == "runs" || t.batches.iter().any(|b| b.num_rows() > 0));
    let commit = StagedCommit {
        pipeline: pipeline.name.clone(),
        run_id: report.run_id.clone(),
        app_id,
        version,
        tables,
    };
    let fault = opts.fault_after_table.clone();
    warehouse
        .commit_with(&commit, ahead, |table| {
            if fault.as_deref() == Some(table) {
                eprintln!("LEADFLOW_FAULT_AFTER_TABLE={table}: aborting as a crash would");
                std::process::abort();
            }
        })
        .await?;

    info!(
        seconds = stage_clock.seconds(),
        cpu_seconds = stage_clock.cpu_seconds(),
        "stage commit done"
    );

    // Only after the commit: a crash before this re-reads, never loses.
    for f in &imported {
        if let Err(e) = f.drop.archive(&f.entry).await {
            warn!(source = %f.source, file = %f.entry.relative, error = %e, "could not archive file");
        }
    }
    Ok(())
}

/// After a committed run: merge the pairs of existing masters a record of
/// the run linked strongly to both, as approving their reviews would (the
/// run could not: it never rewrites masters it did not load, nor their
/// records). A pair a person rejected stays apart; a failure leaves the
/// review open for a person and the run succeeded all the same.
async fn merge_bridged_masters(
    loaded: &LoadedConfig,
    pipeline: &PipelineConfig,
    warehouse: &Warehouse,
    report: &mut RunReport,
) {
    let pairs = std::mem::take(&mut report.bridged);
    if pairs.is_empty() {
        return;
    }
    let warehouse = match crate::warehouse_for(warehouse, pipeline.entity.as_deref()).await {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "bridged masters not merged; their reviews stay open");
            return;
        }
    };
    let rules = loaded.config.survivorship_for(pipeline.entity.as_deref());
    let note = format!(
        "a record of run {} links to both masters above the link threshold",
        report.run_id
    );
    let by = format!("leadflow run {}", report.run_id);
    let clock = Instant::now();
    // Pairs whose review is no longer open (a person rejected it) are left
    // alone by `merge_bridged`: theirs to say.
    match crate::review::merge_bridged(&warehouse, rules, &pairs, &note, &by, Utc::now()).await {
        Ok(merged) => {
            report.masters_merged = merged.len() as u64;
            info!(
                pairs = pairs.len(),
                merged = merged.len(),
                seconds = clock.elapsed().as_secs_f64(),
                "bridged masters merged"
            );
        }
        Err(e) => {
            warn!(pairs = pairs.len(), error = %e, "bridged masters not merged; their reviews stay open")
        }
    }
}

/// After a committed run: vacuum the warehouse once `warehouse.vacuum_every`
/// has passed since the last vacuum, with the tables' own retention. A
/// failure is logged, not the run's: the next run tries again. One that
/// finds another pipeline's commit staged is put off the same way.
async fn vacuum_when_due(loaded: &LoadedConfig, warehouse: &Warehouse) {
    let every = loaded.config.warehouse.vacuum_every;
    if every.is_zero() {
        return;
    }
    let due = match warehouse.vacuum_due(every) {
        Ok(due) => due,
        Err(e) => {
            warn!(error = %e, "could not read when the warehouse was last vacuumed");
            return;
        }
    };
    if !due {
        return;
    }
    let opts = leadflow_sinks::VacuumOptions::default();
    match crate::vacuum_warehouse(&loaded.config, warehouse, opts).await {
        Ok(tables) => info!(
            files = tables.iter().map(|t| t.files).sum::<usize>(),
            bytes = tables.iter().map(|t| t.bytes).sum::<u64>(),
            "warehouse vacuumed"
        ),
        Err(e) => warn!(error = %e, "warehouse vacuum failed; the next run tries again"),
    }
}

/// Raw values of one source row as a JSON object (header -> value).
fn raw_json(batch: &RecordBatch, row: usize) -> String {
    let mut map = serde_json::Map::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if f.name().starts_with("_source") {
            continue;
        }
        let s = c.as_string::<i32>();
        let v = if s.is_null(row) {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(s.value(row).to_string())
        };
        map.insert(f.name().clone(), v);
    }
    serde_json::Value::Object(map).to_string()
}

/// A text column read back from Delta, as Utf8 (scans may hand back views).
/// The run's valid leads as one batch in arrival order: each batch's rows
/// that `keep` marks (all when `None`), gathered in one copy. DataFusion may
/// hand partitions back in any order, and linking is order-sensitive (the
/// first record names a new master, ties go to the later row). Each batch
/// keeps its rows in order (the stages only project), so ordering the
/// batches by their first position is enough; checked, with a sort of the
/// row picks as the fallback should a stage ever reorder rows in a batch.
/// One gather instead of a filter per batch and then a concatenation: at a
/// million rows each whole copy is a visible cost (fresh pages).
fn arrival_order(
    schema: &arrow::datatypes::SchemaRef,
    mut batches: Vec<(RecordBatch, Option<BooleanArray>)>,
) -> Result<RecordBatch, RunError> {
    use rayon::prelude::*;
    let positions = |b: &RecordBatch| {
        b.column_by_name(lschema::RAW_POS)
            .expect("normalised")
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .clone()
    };
    batches.retain(|(b, _)| b.num_rows() > 0);
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    batches.sort_by_key(|(b, _)| positions(b).value(0));
    let pos: Vec<_> = batches.iter().map(|(b, _)| positions(b)).collect();
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(batches.iter().map(|(b, _)| b.num_rows()).sum());
    for (k, (b, keep)) in batches.iter().enumerate() {
        match keep {
            None => picks.extend((0..b.num_rows()).map(|i| (k, i))),
            Some(keep) => picks.extend(
                (0..b.num_rows())
                    .filter(|&i| keep.is_valid(i) && keep.value(i))
                    .map(|i| (k, i)),
            ),
        }
    }
    let at = |&(k, i): &(usize, usize)| pos[k].value(i);
    let sorted = picks.windows(2).all(|w| at(&w[0]) < at(&w[1]));
    if !sorted {
        picks.sort_unstable_by_key(at);
    }
    drop(pos);
    // The batches taken apart into columns, each column's pieces owned by
    // one task: a column's source arrays are freed as soon as it is
    // copied, so the allocator hands that memory to the next column's copy
    // instead of fresh pages, and the peak is the input plus the columns in
    // flight rather than the input plus a whole second copy.
    let mut by_column: Vec<Vec<ArrayRef>> = vec![Vec::with_capacity(batches.len()); schema.fields().len()];
    for (b, _) in batches {
        for (c, column) in b.columns().iter().enumerate() {
            by_column[c].push(column.clone());
        }
    }
    if !sorted {
        let columns = by_column
            .into_par_iter()
            .map(|pieces| {
                let arrays: Vec<&dyn Array> = pieces.iter().map(|a| a.as_ref()).collect();
                arrow::compute::interleave(&arrays, &picks)
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(RecordBatch::try_new(schema.clone(), columns)?);
    }
    // The usual case: the batches already hold the rows in arrival order,
    // so the kept rows are runs of consecutive rows, each copied in one
    // piece rather than gathered row by row.
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for &(k, i) in &picks {
        match runs.last_mut() {
            Some((rk, _, end)) if *rk == k && *end == i => *end += 1,
            _ => runs.push((k, i, i + 1)),
        }
    }
    let rows = picks.len();
    drop(picks);
    let columns = by_column
        .into_par_iter()
        .zip(schema.fields().par_iter())
        .map(|(pieces, field)| -> Result<ArrayRef, arrow::error::ArrowError> {
            use arrow::array::{Capacities, MutableArrayData};
            let data: Vec<_> = pieces.iter().map(|a| a.to_data()).collect();
            let capacity = match field.data_type() {
                // Text: offsets and value bytes sized up front (an upper bound).
                DataType::Utf8 => Capacities::Binary(
                    rows,
                    Some(
                        data.iter()
                            .map(|d| {
                                let offsets = d.buffer::<i32>(0);
                                (offsets[d.len()] - offsets[0]) as usize
                            })
                            .sum(),
                    ),
                ),
                _ => Capacities::Array(rows),
            };
            let mut out = MutableArrayData::with_capacities(data.iter().collect(), false, capacity);
            for &(k, start, end) in &runs {
                out.try_extend(k, start, end)?;
            }
            Ok(arrow::array::make_array(out.freeze()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A text column the stage before guarantees (normalised leads, `records`).
pub(crate) fn text<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("batch has no column {name}"))
        .as_string::<i32>()
}

pub fn utf8(a: &ArrayRef) -> Result<StringArray, RunError> {
    Ok(arrow::compute::cast(a, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

struct Ledger {
    by_stat: HashSet<(String, i64, i64)>,
    by_hash: HashSet<(String, String)>,
}

/// What a CRM source gave this run.
struct CrmRead {
    rows: u64,
    deleted: Vec<leadflow_connectors::crm::CrmDeletion>,
    raw: Vec<RecordBatch>,
    mapped: Vec<RecordBatch>,
    cursor: Option<String>,
    report: FileReport,
}

/// Reads a CRM source (any kind) from its saved cursor and maps it with
/// the provider's field defaults and the CRM id as record id, so an edited
/// lead upserts its old record. The new cursor is only returned: it is
/// saved with the run's commit. A Google Sheet's header must hold every
/// column the pipeline's `mapping.columns` names.
async fn read_crm(
    ctx: &SessionContext,
    pipeline: &str,
    source: &str,
    config: &CrmConfig,
    mapper: &Mapper,
    mapping: &MappingConfig,
    first_raw: usize,
) -> Result<CrmRead, RunError> {
    let src_err = |e: &dyn std::fmt::Display| RunError::Source {
        source_name: source.to_string(),
        message: e.to_string(),
    };
    let sql = format!(
        "SELECT cursor FROM source_cursors WHERE pipeline = '{}' AND source = '{}'",
        pipeline.replace('\'', "''"),
        source.replace('\'', "''")
    );
    let saved = ctx
        .sql(&sql)
        .await?
        .collect()
        .await?
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| utf8(b.column(0)).map(|c| c.value(0).to_string()))
        .transpose()?;
    let crm = CrmSource::new(source, config).map_err(|e| src_err(&e))?;
    let fetched = crm.fetch(saved.as_deref()).await.map_err(|e| src_err(&e))?;
    if let CrmSource::Sheets(sheet) = &crm
        && fetched.mode != "empty"
    {
        // Checked on every run, also when no row changed: a renamed header
        // fails now, not on the next edit.
        let missing = missing_mapped_columns(&fetched.headers, mapping);
        if !missing.is_empty() {
            return Err(src_err(&sheet.missing_columns(&missing, &fetched.headers[1..])));
        }
    }
    info!(
        source,
        kind = config.kind(),
        mode = fetched.mode,
        rows = fetched.rows,
        deleted = fetched.deleted.len(),
        requests = fetched.requests,
        "crm source read"
    );
    let mut mapped = Vec::new();
    if !fetched.batches.is_empty() {
        let mut fm = mapper
            .with_source_aliases(crm.default_aliases())
            .and_then(|m| m.for_headers(&fetched.headers))
            .and_then(|fm| fm.with_id_column(crm.id_column()))
            .map_err(|e| src_err(&e))?;
        let first =
            u32::try_from(first_raw).map_err(|_| RunError::Other("too many batches in one run".into()))?;
        mapped = fm
            .apply_all(&fetched.batches, first, &fetched.display)
            .map_err(|e| src_err(&e))?;
    }
    Ok(CrmRead {
        rows: fetched.rows,
        deleted: fetched.deleted,
        mapped,
        cursor: fetched.cursor,
        report: FileReport {
            source: source.to_string(),
            path: format!("{} ({})", fetched.display, fetched.mode),
            status: "imported".into(),
            rows: fetched.rows,
            reason: None,
        },
        raw: fetched.batches,
    })
}

/// The headers that `mapping.columns` names and `headers` lacks (compared
/// as the mapper compares them: case, spaces and punctuation ignored).
pub fn missing_mapped_columns(headers: &[String], mapping: &MappingConfig) -> Vec<String> {
    let have: HashSet<String> = headers.iter().map(|h| fold_key(h)).collect();
    mapping
        .columns
        .keys()
        .filter(|c| !have.contains(&fold_key(c)))
        .cloned()
        .collect()
}

/// `source_cursors` rows of this run.
fn cursors_batch(
    pipeline: &str,
    cursors: &[(String, String)],
    stamp: &RunStamp,
) -> Result<RecordBatch, RunError> {
    let n = cursors.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![pipeline; n])),
        Arc::new(StringArray::from_iter_values(
            cursors.iter().map(|c| c.0.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            cursors.iter().map(|c| c.1.as_str()),
        )),
        Arc::new(StringArray::from(vec![stamp.run_id.as_str(); n])),
        Arc::new(TimestampMicrosecondArray::from(vec![stamp.now_us; n]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(
        lschema::SOURCE_CURSORS_SCHEMA.clone(),
        cols,
    )?)
}

/// Files this source already imported (or quarantined).
async fn load_ledger(ctx: &SessionContext, source: &str) -> Result<Ledger, RunError> {
    let sql = format!(
        "SELECT path, content_hash, size, modified_at FROM source_files WHERE source = '{}'",
        source.replace('\'', "''")
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut l = Ledger {
        by_stat: HashSet::new(),
        by_hash: HashSet::new(),
    };
    for b in batches {
        let path = utf8(b.column(0))?;
        let hash = utf8(b.column(1))?;
        let size = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        let modified = b.column(3).as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            l.by_hash
                .insert((path.value(i).to_string(), hash.value(i).to_string()));
            if !size.is_null(i) && !modified.is_null(i) {
                l.by_stat
                    .insert((path.value(i).to_string(), size.value(i), modified.value(i)));
            }
        }
    }
    Ok(l)
}

/// Existing masters sharing a key with the run's leads, and records the
/// warehouse already holds.
#[allow(clippy::type_complexity)]
async fn candidates(
    ctx: &SessionContext,
    leads: &RecordBatch,
    pins: &HashMap<(String, String), String>,
    dedupe_config: &dedupe::DedupeConfig,
) -> Result<
    (
        RecordBatch,
        HashMap<(String, String), String>,
        HashMap<(String, String), String>,
    ),
    RunError,
> {
    let mut keys = StringBuilder::new();
    for name in ["phone", "email_key"] {
        let a = leads.column_by_name(name).expect("normalised").as_string::<i32>();
        for v in a.iter().flatten() {
            keys.append_value(v);
        }
    }
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("key", DataType::Utf8, true)])),
        vec![Arc::new(keys.finish()) as ArrayRef],
    )?;
    let ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("source_record_id", DataType::Utf8, false),
        ])),
        vec![
            leads.column_by_name("source").expect("normalised").clone(),
            leads
                .column_by_name("source_record_id")
                .expect("normalised")
                .clone(),
        ],
    )?;
    stages::register_mem(ctx, "run_keys", keys.schema(), vec![vec![keys]])?;
    stages::register_mem(ctx, "run_records", ids.schema(), vec![vec![ids]])?;
    let known_batches = ctx
        .sql("SELECT r.source, r.source_record_id, r.master_id FROM records r JOIN run_records q ON r.source = q.source AND r.source_record_id = q.source_record_id")
        .await?
        .collect()
        .await?;
    let mut known = HashMap::new();
    for b in &known_batches {
        let (s, r, m) = (utf8(b.column(0))?, utf8(b.column(1))?, utf8(b.column(2))?);
        for i in 0..b.num_rows() {
            known.insert(
                (s.value(i).to_string(), r.value(i).to_string()),
                m.value(i).to_string(),
            );
        }
    }
    // Records whose CRM id leadflow created there go to that master, like a
    // record known by id, unless the warehouse already holds the record.
    let mut pinned = HashMap::new();
    for (k, m) in pins {
        if !known.contains_key(k) {
            known.insert(k.clone(), m.clone());
            pinned.insert(k.clone(), m.clone());
        }
    }
    // Masters sharing a key with the run, plus the masters of records seen
    // before (known above: the records table is scanned once).
    let known_masters: StringArray = known.values().map(|m| Some(m.as_str())).collect();
    let known_masters = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("master_id", DataType::Utf8, true)])),
        vec![Arc::new(known_masters) as ArrayRef],
    )?;
    stages::register_mem(
        ctx,
        "run_known",
        known_masters.schema(),
        vec![vec![known_masters]],
    )?;
    let mut sql = "SELECT * FROM masters WHERE master_id IN (
            SELECT mk.master_id FROM (
                SELECT master_id, unnest(phones) AS k FROM masters
                UNION ALL SELECT master_id, unnest(email_keys) AS k FROM masters
            ) mk JOIN (SELECT DISTINCT key FROM run_keys) rk ON mk.k = rk.key
            UNION SELECT master_id FROM run_known
        ) ORDER BY master_id"
        .to_string();
    let mut tables = vec!["run_keys", "run_records", "run_known"];
    if dedupe_config.mode == dedupe::DedupeMode::Probabilistic {
        // Also the masters sharing any block key with the run (phonetic
        // surname + city, initials, ...): keys hashed by the same function
        // for the run's leads and for every master's blocking columns, then
        // joined on integers; a key held by more than `max_block_size`
        // masters is skipped.
        use leadflow_transforms::linkage::block;
        let lc = &dedupe_config.linkage;
        let other = |e: leadflow_transforms::linkage::LinkageError| RunError::Other(e.to_string());
        let (run_keys, run_rows) = block::batch_block_keys(leads, &lc.blocking, &[]).map_err(other)?;
        let mut cols: Vec<String> = vec!["\"master_id\"".into()];
        for p in lc.blocking.iter().flat_map(|r| &r.parts) {
            let name = dedupe::MASTER_RENAMES
                .iter()
                .find(|(from, _)| *from == p.column.as_str())
                .map_or(p.column.as_str(), |(_, to)| *to);
            let quoted = format!("\"{name}\"");
            if lschema::MASTERS_SCHEMA.field_with_name(name).is_ok() && !cols.contains(&quoted) {
                cols.push(quoted);
            }
        }
        let narrow = ctx
            .sql(&format!("SELECT {} FROM masters", cols.join(", ")))
            .await?
            .collect()
            .await?;
        let narrow = match narrow.first() {
            Some(b) => concat_batches(&b.schema(), &narrow)?,
            None => RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new(
                "master_id",
                DataType::Utf8,
                false,
            )]))),
        };
        let (master_keys, master_rows) =
            block::batch_block_keys(&narrow, &lc.blocking, dedupe::MASTER_RENAMES).map_err(other)?;
        let run_keys = block::keys_batch(run_keys, run_rows).map_err(other)?;
        let master_keys = block::keys_batch(master_keys, master_rows).map_err(other)?;
        stages::register_mem(ctx, "run_block_keys", run_keys.schema(), vec![vec![run_keys]])?;
        stages::register_mem(
            ctx,
            "master_block_keys",
            master_keys.schema(),
            vec![vec![master_keys]],
        )?;
        let hits = ctx
            .sql(&format!(
                "WITH mk AS (SELECT m.k, m.i FROM master_block_keys m
                     JOIN (SELECT DISTINCT k FROM run_block_keys) rk ON m.k = rk.k),
                 ok AS (SELECT k FROM mk GROUP BY k HAVING count(DISTINCT i) <= {cap})
                 SELECT DISTINCT mk.i FROM mk JOIN ok ON mk.k = ok.k",
                cap = lc.max_block_size
            ))
            .await?
            .collect()
            .await?;
        ctx.deregister_table("run_block_keys")?;
        ctx.deregister_table("master_block_keys")?;
        let narrow_ids = utf8(narrow.column(0))?;
        let block_masters: StringArray = hits
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<arrow::datatypes::UInt32Type>()
                    .values()
                    .to_vec()
            })
            .map(|i| Some(narrow_ids.value(i as usize)))
            .collect();
        let block_masters = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("master_id", DataType::Utf8, true)])),
            vec![Arc::new(block_masters) as ArrayRef],
        )?;
        stages::register_mem(
            ctx,
            "run_block_masters",
            block_masters.schema(),
            vec![vec![block_masters]],
        )?;
        tables.push("run_block_masters");
        sql = "SELECT * FROM masters WHERE master_id IN (
                 SELECT master_id FROM run_block_masters
                 UNION SELECT master_id FROM run_known
             ) ORDER BY master_id"
            .to_string();
    }
    let batches = ctx.sql(&sql).await?.collect().await?;
    for t in tables {
        ctx.deregister_table(t)?;
    }
    let masters = if batches.is_empty() {
        RecordBatch::new_empty(lschema::MASTERS_SCHEMA.clone())
    } else {
        let b = concat_batches(&batches[0].schema(), &batches)?;
        conform(&b, &lschema::MASTERS_SCHEMA)?
    };
    Ok((masters, known, pinned))
}

/// The records (not deleted) of the candidate masters, oldest first.
async fn earlier_records(ctx: &SessionContext, candidates: &RecordBatch) -> Result<RecordBatch, RunError> {
    let ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("master_id", DataType::Utf8, false)])),
        vec![
            candidates
                .column_by_name("master_id")
                .expect("masters schema")
                .clone(),
        ],
    )?;
    stages::register_mem(ctx, "run_candidate_masters", ids.schema(), vec![vec![ids]])?;
    let batches = ctx
        .sql(
            "SELECT r.source, r.source_record_id, r.master_id, r.first_name, r.last_name, r.full_name, \
                    r.phone, r.email, r.email_key, r.company, r.job_title, r.country, r.city, r.website, \
                    r.source_created_at, r.ingested_at \
             FROM records r JOIN run_candidate_masters c ON r.master_id = c.master_id \
             WHERE r.deleted_at IS NULL \
             ORDER BY r.ingested_at, r.source_file, r.source_row, r.source, r.source_record_id",
        )
        .await?
        .collect()
        .await;
    ctx.deregister_table("run_candidate_masters")?;
    let batches = batches?;
    let Some(first) = batches.first() else {
        return Ok(RecordBatch::new_empty(lschema::RECORDS_SCHEMA.clone()));
    };
    let b = concat_batches(&first.schema(), &batches)?;
    // Text as Utf8 and times as UTC microseconds, as the golden builder reads them.
    let mut cols = Vec::with_capacity(b.num_columns());
    let mut fields = Vec::with_capacity(b.num_columns());
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        let to = if f.name() == "source_created_at" || f.name() == "ingested_at" {
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()))
        } else {
            DataType::Utf8
        };
        cols.push(arrow::compute::cast(c, &to)?);
        fields.push(Field::new(f.name(), to, true));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// The run's review pairs that `review` does not hold yet: a pair already
/// there (open, approved or rejected) keeps its row and status.
async fn new_reviews(
    ctx: &SessionContext,
    warehouse: &Warehouse,
    review: RecordBatch,
) -> Result<RecordBatch, RunError> {
    if review.num_rows() == 0 || !warehouse.has_data("review").await? {
        return Ok(review);
    }
    let ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("review_id", DataType::Utf8, false)])),
        vec![review.column(0).clone()],
    )?;
    warehouse.register(ctx, &["review"]).await?;
    stages::register_mem(ctx, "run_review", ids.schema(), vec![vec![ids]])?;
    let batches = ctx
        .sql("SELECT r.review_id FROM review r JOIN run_review q ON r.review_id = q.review_id")
        .await?
        .collect()
        .await?;
    ctx.deregister_table("run_review")?;
    let mut seen = HashSet::new();
    for b in &batches {
        let a = utf8(b.column(0))?;
        seen.extend((0..a.len()).map(|i| a.value(i).to_string()));
    }
    let ids = review.column(0).as_string::<i32>();
    let keep: arrow::array::BooleanArray = (0..review.num_rows())
        .map(|i| Some(!seen.contains(ids.value(i))))
        .collect();
    Ok(filter_record_batch(&review, &keep)?)
}

/// Cast a batch read back from Delta to the schema the code expects (Delta
/// may hand back views or other field names for the same data).
pub(crate) fn conform(
    b: &RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, RunError> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let c = b
                .column_by_name(f.name())
                .ok_or_else(|| RunError::Other(format!("warehouse table lacks column {}", f.name())))?;
            Ok(arrow::compute::cast(c, f.data_type())?)
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// Existing project links of the masters the run touched.
async fn existing_links(ctx: &SessionContext, master_ids: &StringArray) -> Result<RecordBatch, RunError> {
    let ids = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("master_id", DataType::Utf8, false)])),
        vec![Arc::new(master_ids.clone()) as ArrayRef],
    )?;
    stages::register_mem(ctx, "run_masters", ids.schema(), vec![vec![ids]])?;
    let batches = ctx
        .sql("SELECT * FROM project_links WHERE master_id IN (SELECT DISTINCT master_id FROM run_masters)")
        .await?
        .collect()
        .await?;
    ctx.deregister_table("run_masters")?;
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(lschema::PROJECT_LINKS_SCHEMA.clone()));
    }
    let b = concat_batches(&batches[0].schema(), &batches)?;
    conform(&b, &lschema::PROJECT_LINKS_SCHEMA)
}

/// The `records` columns that come from the leads alone: every column but
/// the link's three (`master_id`, `match_rule`, `match_score`), in schema
/// order. Known before linking, so their encoding can start then.
fn record_lead_columns(
    leads: &RecordBatch,
    crm: &crm_links::CrmSources,
    sheets: &HashSet<&str>,
    stamp: &RunStamp,
) -> Result<Vec<(String, ArrayRef)>, RunError> {
    let n = leads.num_rows();
    let source = text(leads, "source");
    let rid = text(leads, "source_record_id");
    // One lookup per row, shared by the three origin columns; none (and no
    // per-row list) for a pipeline without CRM sources.
    let origins: Vec<Option<&crm_links::CrmOrigin>> = if crm.is_empty() {
        Vec::new()
    } else {
        (0..n).map(|i| crm.get(source.value(i))).collect()
    };
    let origin = |i: usize| origins.get(i).copied().flatten();
    RECORDS_SCHEMA
        .fields()
        .iter()
        .filter(|f| !LINK_COLUMNS.contains(&f.name().as_str()))
        .map(|f| -> Result<(String, ArrayRef), RunError> {
            let column: ArrayRef = match f.name().as_str() {
                "run_id" => Arc::new(StringArray::from(vec![stamp.run_id.as_str(); n])),
                "ingested_at" => {
                    Arc::new(TimestampMicrosecondArray::from(vec![stamp.now_us; n]).with_timezone("UTC"))
                }
                "origin" => Arc::new(StringArray::from_iter_values((0..n).map(|i| match origin(i) {
                    Some(_) => "crm",
                    // Most pipelines have no sheet: no hash per row then.
                    None if !sheets.is_empty() && sheets.contains(source.value(i)) => "sheet",
                    None => "file",
                }))),
                "provider" => Arc::new(
                    (0..n)
                        .map(|i| origin(i).map(|o| o.provider))
                        .collect::<StringArray>(),
                ),
                "crm_id" => Arc::new(
                    (0..n)
                        .map(|i| origin(i).map(|_| rid.value(i)))
                        .collect::<StringArray>(),
                ),
                // Seen alive in this run: a deletion mark (if any) is lifted.
                "deleted_at" => Arc::new(TimestampMicrosecondArray::new_null(n).with_timezone("UTC")),
                name => {
                    let c = leads
                        .column_by_name(name)
                        .ok_or_else(|| RunError::Other(format!("normalised leads lack column {name}")))?;
                    arrow::compute::cast(c, f.data_type())?
                }
            };
            Ok((f.name().clone(), column))
        })
        .collect()
}

/// The `records` columns the link decides.
const LINK_COLUMNS: [&str; 3] = ["master_id", "match_rule", "match_score"];

/// The run's `records` rows: the lead columns and the link's decisions.
fn records_batch(
    lead_columns: &[(String, ArrayRef)],
    outcome: &dedupe::LinkOutcome,
) -> Result<RecordBatch, RunError> {
    let mut from_leads = lead_columns.iter();
    let cols = RECORDS_SCHEMA
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef, RunError> {
            Ok(match f.name().as_str() {
                "master_id" => Arc::new(outcome.master_id.clone()),
                "match_rule" => Arc::new(outcome.match_rule.clone()),
                "match_score" => Arc::new(outcome.match_score.clone()),
                name => match from_leads.next() {
                    Some((n, c)) if n == name => c.clone(),
                    _ => return Err(RunError::Other(format!("records column {name} out of order"))),
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(RECORDS_SCHEMA.clone(), cols)?)
}

#[derive(Default)]
struct RejectRows {
    source: StringBuilder,
    id: StringBuilder,
    file: StringBuilder,
    row: Vec<i64>,
    raw: StringBuilder,
    reasons: Vec<Vec<String>>,
    codes: Vec<Vec<String>>,
    by_reason: BTreeMap<String, u64>,
    len: usize,
}

impl RejectRows {
    fn push(
        &mut self,
        source: &str,
        id: &str,
        file: &str,
        row: i64,
        raw: &str,
        reasons: &[(String, String)],
    ) {
        self.source.append_value(source);
        self.id.append_value(id);
        self.file.append_value(file);
        self.row.push(row);
        self.raw.append_value(raw);
        self.reasons
            .push(reasons.iter().map(|(c, m)| format!("{c}: {m}")).collect());
        self.codes.push(reasons.iter().map(|(c, _)| c.clone()).collect());
        for (c, _) in reasons {
            *self.by_reason.entry(c.clone()).or_default() += 1;
        }
        self.len += 1;
    }

    fn finish(&mut self, stamp: &RunStamp) -> Result<RecordBatch, RunError> {
        let list = |v: &[Vec<String>]| {
            let mut b = lschema::list_builder();
            for items in v {
                for s in items {
                    b.values().append_value(s);
                }
                b.append(true);
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let n = self.len;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.id.finish()),
            Arc::new(self.file.finish()),
            Arc::new(Int64Array::from(std::mem::take(&mut self.row))),
            Arc::new(self.raw.finish()),
            list(&self.reasons),
            list(&self.codes),
            Arc::new(StringArray::from(vec![stamp.run_id.as_str(); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![stamp.now_us; n]).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(REJECTS_SCHEMA.clone(), cols)?)
    }
}

#[derive(Default)]
struct LedgerRows {
    source: StringBuilder,
    path: StringBuilder,
    hash: StringBuilder,
    size: Vec<i64>,
    modified: Vec<i64>,
    status: StringBuilder,
    reason: StringBuilder,
    format: StringBuilder,
    rows: Vec<i64>,
    run_id: StringBuilder,
    at: Vec<i64>,
}

impl LedgerRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        source: &str,
        e: &FileEntry,
        hash: &str,
        status: &str,
        reason: Option<&str>,
        format: Option<&str>,
        rows: i64,
        stamp: &RunStamp,
    ) {
        self.source.append_value(source);
        self.path.append_value(&e.relative);
        self.hash.append_value(hash);
        self.size.push(e.size as i64);
        self.modified.push(e.last_modified.timestamp_micros());
        self.status.append_value(status);
        self.reason.append_option(reason);
        self.format.append_option(format);
        self.rows.push(rows);
        self.run_id.append_value(&stamp.run_id);
        self.at.push(stamp.now_us);
    }

    fn finish(&mut self) -> Result<RecordBatch, RunError> {
        let ts = |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.hash.finish()),
            Arc::new(Int64Array::from(std::mem::take(&mut self.size))),
            ts(std::mem::take(&mut self.modified)),
            Arc::new(self.status.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.format.finish()),
            Arc::new(Int64Array::from(std::mem::take(&mut self.rows))),
            Arc::new(self.run_id.finish()),
            ts(std::mem::take(&mut self.at)),
        ];
        Ok(RecordBatch::try_new(SOURCE_FILES_SCHEMA.clone(), cols)?)
    }
}

/// The run's row in `runs`.
fn runs_row(r: &RunReport, started: DateTime<Utc>, finished: DateTime<Utc>) -> Result<RecordBatch, RunError> {
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let i = |v: u64| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
    let ts = |t: DateTime<Utc>| {
        Arc::new(TimestampMicrosecondArray::from(vec![t.timestamp_micros()]).with_timezone("UTC")) as ArrayRef
    };
    let cols: Vec<ArrayRef> = vec![
        s(&r.run_id),
        s(&r.pipeline),
        Arc::new(Int64Array::from(vec![r.sequence])),
        s(&r.trigger),
        s(&r.status),
        ts(started),
        ts(finished),
        i(r.files_seen),
        i(r.files_imported),
        i(r.files_unchanged),
        i(r.files_quarantined),
        i(r.rows_read),
        i(r.rows_rejected),
        s(&serde_json::to_string(&r.rejected_by_reason).unwrap_or_default()),
        i(r.masters_new),
        i(r.matched_existing),
        i(r.merged_in_batch),
        i(r.records_known),
        i(r.conflicts),
        i(r.records_written),
        Arc::new(StringArray::from(vec![r.error.as_deref()])),
        i(r.records_deleted),
    ];
    Ok(RecordBatch::try_new(RUNS_SCHEMA.clone(), cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::UInt64Array;

    fn batch(pos: &[u64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(lschema::RAW_POS, DataType::UInt64, false),
            Field::new("v", DataType::Utf8, false),
        ]));
        let v: Vec<String> = pos.iter().map(|p| format!("row{p}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(pos.to_vec())),
                Arc::new(StringArray::from(v)),
            ],
        )
        .unwrap()
    }

    fn order_of(b: &RecordBatch) -> Vec<u64> {
        b.column(0)
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn arrival_order_orders_batches_and_keeps_columns_together() {
        let batches = vec![batch(&[1 << 32 | 3, 1 << 32 | 7]), batch(&[]), batch(&[0, 2, 5])];
        let batches: Vec<_> = batches.into_iter().map(|b| (b, None)).collect();
        let schema = batches[0].0.schema();
        let out = arrival_order(&schema, batches).unwrap();
        assert_eq!(order_of(&out), vec![0, 2, 5, 1 << 32 | 3, 1 << 32 | 7]);
        assert_eq!(text(&out, "v").value(3), format!("row{}", 1u64 << 32 | 3));
    }

    #[test]
    fn arrival_order_of_empty_batches_or_no_kept_rows_is_an_empty_batch() {
        let empty = vec![(batch(&[]), None), (batch(&[]), None)];
        let schema = empty[0].0.schema();
        assert_eq!(arrival_order(&schema, empty).unwrap().num_rows(), 0);
        let none_kept = vec![(batch(&[0, 1]), Some(BooleanArray::from(vec![false, false])))];
        let out = arrival_order(&schema, none_kept).unwrap();
        assert_eq!((out.num_rows(), out.num_columns()), (0, 2));
    }

    #[test]
    fn arrival_order_keeps_only_the_rows_validation_kept() {
        let keep = |v: &[Option<bool>]| Some(BooleanArray::from(v.to_vec()));
        let batches = vec![
            (
                batch(&[1 << 32 | 3, 1 << 32 | 7]),
                keep(&[Some(false), Some(true)]),
            ),
            (batch(&[0, 2, 5]), keep(&[Some(true), None, Some(true)])),
            // Out of order inside a batch: the picks are sorted, not the rows.
            (
                batch(&[9 << 32 | 4, 9 << 32 | 1]),
                keep(&[Some(true), Some(false)]),
            ),
            (batch(&[8 << 32]), None),
        ];
        let schema = batches[0].0.schema();
        let out = arrival_order(&schema, batches).unwrap();
        assert_eq!(order_of(&out), vec![0, 5, 1 << 32 | 7, 8 << 32, 9 << 32 | 4]);
        assert_eq!(text(&out, "v").value(2), format!("row{}", 1u64 << 32 | 7));
        assert_eq!(text(&out, "v").value(4), format!("row{}", 9u64 << 32 | 4));
    }

    #[test]
    fn arrival_order_sorts_rows_a_stage_reordered() {
        // Overlapping batches (rows out of order inside them): the full sort.
        let batches = vec![batch(&[4, 1]), batch(&[3, 0, 2])];
        let batches: Vec<_> = batches.into_iter().map(|b| (b, None)).collect();
        let schema = batches[0].0.schema();
        let out = arrival_order(&schema, batches).unwrap();
        assert_eq!(order_of(&out), vec![0, 1, 2, 3, 4]);
        assert_eq!(text(&out, "v").value(1), "row1");
    }
}
