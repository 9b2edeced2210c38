//! Runs as the API shows them: the ones of this process live in memory
//! (queued, running, recently finished); older ones are read from the
//! warehouse's `runs` table, so run ids survive a restart.

use std::collections::{BTreeMap, HashMap, VecDeque};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use chrono::{DateTime, Utc};
use datafusion::prelude::{SessionContext, col, lit};
use leadflow_sinks::{Warehouse, WarehouseError};
use serde::Serialize;

use crate::run::RunReport;

/// Finished runs kept in memory; older ones are answered from the table.
const KEEP_FINISHED: usize = 500;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl RunState {
    fn from_status(s: &str) -> Self {
        match s {
            "succeeded" => Self::Succeeded,
            "running" => Self::Running,
            _ => Self::Failed,
        }
    }

    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A run's counts (the `runs` table's columns).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    pub files_seen: u64,
    pub files_imported: u64,
    pub files_unchanged: u64,
    pub files_quarantined: u64,
    pub rows_read: u64,
    pub rows_rejected: u64,
    pub records_written: u64,
    pub masters_new: u64,
    pub matched_existing: u64,
    pub merged_in_batch: u64,
    pub records_known: u64,
    pub conflicts: u64,
    /// Records marked deleted because their source deleted them.
    pub records_deleted: u64,
}

/// One run in API answers.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub pipeline: String,
    pub trigger: String,
    pub state: RunState,
    /// When the run was accepted (queued) or, for finished runs, started.
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub error: Option<String>,
}

impl RunView {
    pub fn queued(run_id: &str, pipeline: &str, trigger: &str, at: DateTime<Utc>) -> Self {
        Self {
            run_id: run_id.into(),
            pipeline: pipeline.into(),
            trigger: trigger.into(),
            state: RunState::Queued,
            started_at: at.to_rfc3339(),
            finished_at: None,
            duration_seconds: None,
            counts: None,
            rejected_by_reason: BTreeMap::new(),
            error: None,
        }
    }

    pub fn from_report(r: &RunReport, finished: DateTime<Utc>) -> Self {
        Self {
            run_id: r.run_id.clone(),
            pipeline: r.pipeline.clone(),
            trigger: r.trigger.clone(),
            state: RunState::from_status(&r.status),
            started_at: r.started_at.clone(),
            finished_at: Some(finished.to_rfc3339()),
            duration_seconds: Some(r.duration_seconds),
            counts: Some(Counts {
                files_seen: r.files_seen,
                files_imported: r.files_imported,
                files_unchanged: r.files_unchanged,
                files_quarantined: r.files_quarantined,
                rows_read: r.rows_read,
                rows_rejected: r.rows_rejected,
                records_written: r.records_written,
                masters_new: r.masters_new,
                matched_existing: r.matched_existing,
                merged_in_batch: r.merged_in_batch,
                records_known: r.records_known,
                conflicts: r.conflicts,
                records_deleted: r.records_deleted,
            }),
            rejected_by_reason: r.rejected_by_reason.clone(),
            error: r.error.clone(),
        }
    }
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StartError {
    #[error("no pipeline named `{0}`")]
    Unknown(String),
    #[error("pipeline is already running (run {0}); one run per pipeline at a time")]
    Running(String),
    #[error("the daemon is shutting down and starts no new runs")]
    ShuttingDown,
}

/// The runs of this process.
#[derive(Debug, Default)]
pub struct Registry {
    runs: HashMap<String, RunView>,
    /// Finished run ids, oldest first, for eviction.
    finished: VecDeque<String>,
    /// pipeline -> its queued/running run.
    running: HashMap<String, String>,
    /// No new runs (set under the same lock as `running`, so a shutdown
    /// sees every run that got in).
    pub closed: bool,
}

impl Registry {
    /// Reserve the pipeline for a new run, or say why not.
    pub fn admit(&mut self, view: RunView) -> Result<(), StartError> {
        if self.closed {
            return Err(StartError::ShuttingDown);
        }
        if let Some(id) = self.running.get(&view.pipeline) {
            return Err(StartError::Running(id.clone()));
        }
        self.running.insert(view.pipeline.clone(), view.run_id.clone());
        self.runs.insert(view.run_id.clone(), view);
        Ok(())
    }

    pub fn set_running(&mut self, run_id: &str) {
        if let Some(v) = self.runs.get_mut(run_id) {
            v.state = RunState::Running;
        }
    }

    pub fn finish(&mut self, view: RunView) {
        if self.running.get(&view.pipeline) == Some(&view.run_id) {
            self.running.remove(&view.pipeline);
        }
        self.finished.push_back(view.run_id.clone());
        self.runs.insert(view.run_id.clone(), view);
        while self.finished.len() > KEEP_FINISHED {
            if let Some(old) = self.finished.pop_front() {
                self.runs.remove(&old);
            }
        }
    }

    pub fn get(&self, run_id: &str) -> Option<RunView> {
        self.runs.get(run_id).cloned()
    }

    pub fn running_id(&self, pipeline: &str) -> Option<String> {
        self.running.get(pipeline).cloned()
    }

    /// Queued or running runs: (pipeline, run id).
    pub fn active(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.running.iter().map(|(p, r)| (p.clone(), r.clone())).collect();
        v.sort();
        v
    }

    /// Runs of this process (optionally of one pipeline), newest first.
    pub fn list(&self, pipeline: Option<&str>) -> Vec<RunView> {
        let mut v: Vec<RunView> = self
            .runs
            .values()
            .filter(|r| pipeline.is_none_or(|p| r.pipeline == p))
            .cloned()
            .collect();
        sort_newest_first(&mut v);
        v
    }
}

/// Run ids start with their UTC start time, so they sort by time; the
/// start time itself breaks nothing when ids come from elsewhere.
pub fn sort_newest_first(v: &mut [RunView]) {
    v.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
}

/// Reads of the `runs` table.
pub struct RunsTable<'a> {
    pub warehouse: &'a Warehouse,
}

fn query_err(e: datafusion::error::DataFusionError) -> WarehouseError {
    WarehouseError::Query {
        table: "runs".into(),
        source: e,
    }
}

impl RunsTable<'_> {
    async fn context(&self) -> Result<SessionContext, WarehouseError> {
        let ctx = SessionContext::new();
        self.warehouse.register(&ctx, &["runs"]).await?;
        Ok(ctx)
    }

    /// One run by id (the id compared as a value, never spliced into SQL).
    pub async fn get(&self, run_id: &str) -> Result<Option<RunView>, WarehouseError> {
        let ctx = self.context().await?;
        let batches = ctx
            .table("runs")
            .await
            .map_err(query_err)?
            .filter(col("run_id").eq(lit(run_id)))
            .map_err(query_err)?
            .collect()
            .await
            .map_err(query_err)?;
        Ok(views(&batches)?.into_iter().next())
    }

    /// Newest runs first, optionally of one pipeline.
    pub async fn list(&self, pipeline: Option<&str>, limit: usize) -> Result<Vec<RunView>, WarehouseError> {
        let ctx = self.context().await?;
        let mut df = ctx.table("runs").await.map_err(query_err)?;
        if let Some(p) = pipeline {
            df = df.filter(col("pipeline").eq(lit(p))).map_err(query_err)?;
        }
        let batches = df
            .sort(vec![
                col("started_at").sort(false, true),
                col("run_id").sort(false, true),
            ])
            .map_err(query_err)?
            .limit(0, Some(limit))
            .map_err(query_err)?
            .collect()
            .await
            .map_err(query_err)?;
        Ok(views(&batches)?)
    }

    /// Per pipeline: (last start, last successful finish, last finish), in
    /// UTC, for missed ticks and the metrics' timestamps.
    pub async fn last_times(&self) -> Result<HashMap<String, LastTimes>, WarehouseError> {
        let ctx = self.context().await?;
        let batches = self
            .warehouse
            .query(
                &ctx,
                "SELECT pipeline, \
                        max(started_at) AS last_start, \
                        max(CASE WHEN status = 'succeeded' THEN finished_at END) AS last_success, \
                        max(finished_at) AS last_finish \
                 FROM runs GROUP BY pipeline",
            )
            .await?;
        let mut out = HashMap::new();
        for b in &batches {
            let pipeline = strings(b, "pipeline")?;
            let start = micros(b, "last_start")?;
            let success = micros(b, "last_success")?;
            let finish = micros(b, "last_finish")?;
            for i in 0..b.num_rows() {
                if let Some(p) = &pipeline[i] {
                    out.insert(
                        p.clone(),
                        LastTimes {
                            start: start[i].and_then(DateTime::from_timestamp_micros),
                            success: success[i].and_then(DateTime::from_timestamp_micros),
                            finish: finish[i].and_then(DateTime::from_timestamp_micros),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}

/// A pipeline's last run times from the `runs` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastTimes {
    pub start: Option<DateTime<Utc>>,
    pub success: Option<DateTime<Utc>>,
    pub finish: Option<DateTime<Utc>>,
}

/// A `runs` column that cannot be read as expected (schema drift). Kept
/// small; turned into a WarehouseError at the public boundary.
#[derive(Debug)]
struct DecodeError(String);

impl From<DecodeError> for WarehouseError {
    fn from(e: DecodeError) -> Self {
        WarehouseError::Query {
            table: "runs".into(),
            source: datafusion::error::DataFusionError::Plan(e.0),
        }
    }
}

fn column(b: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, DecodeError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| DecodeError(format!("the runs table has no column `{name}`")))?;
    cast(c, to).map_err(|e| DecodeError(format!("runs.{name} cannot be read as {to}: {e}")))
}

fn strings(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, DecodeError> {
    let c = column(b, name, &DataType::Utf8)?;
    let a = c.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect())
}

/// Timestamps and integers as i64 (timestamps: microseconds since epoch,
/// the `runs` table's unit).
fn micros(b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, DecodeError> {
    let c = column(b, name, &DataType::Int64)?;
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i)))
        .collect())
}

fn views(batches: &[RecordBatch]) -> Result<Vec<RunView>, DecodeError> {
    let mut out = Vec::new();
    for b in batches {
        let s = |n: &str| strings(b, n);
        let n = |n: &str| micros(b, n);
        let (run_id, pipeline, trigger, status, reasons, error) = (
            s("run_id")?,
            s("pipeline")?,
            s("trigger")?,
            s("status")?,
            s("rejected_by_reason")?,
            s("error")?,
        );
        let (started, finished) = (n("started_at")?, n("finished_at")?);
        let count_cols = [
            "files_seen",
            "files_imported",
            "files_unchanged",
            "files_quarantined",
            "rows_read",
            "rows_rejected",
            "records_written",
            "masters_new",
            "matched_existing",
            "merged_in_batch",
            "records_known",
            "conflicts",
            "records_deleted",
        ];
        let counts: Vec<Vec<Option<i64>>> = count_cols.iter().map(|c| n(c)).collect::<Result<_, _>>()?;
        for i in 0..b.num_rows() {
            let c = |k: usize| counts[k][i].unwrap_or(0).max(0) as u64;
            let ts = |v: Option<i64>| {
                v.and_then(DateTime::from_timestamp_micros)
                    .map(|t| t.to_rfc3339())
            };
            let duration = match (started[i], finished[i]) {
                (Some(a), Some(b)) => Some((b - a) as f64 / 1e6),
                _ => None,
            };
            out.push(RunView {
                run_id: run_id[i].clone().unwrap_or_default(),
                pipeline: pipeline[i].clone().unwrap_or_default(),
                trigger: trigger[i].clone().unwrap_or_default(),
                state: RunState::from_status(status[i].as_deref().unwrap_or("failed")),
                started_at: ts(started[i]).unwrap_or_default(),
                finished_at: ts(finished[i]),
                duration_seconds: duration,
                counts: Some(Counts {
                    files_seen: c(0),
                    files_imported: c(1),
                    files_unchanged: c(2),
                    files_quarantined: c(3),
                    rows_read: c(4),
                    rows_rejected: c(5),
                    records_written: c(6),
                    masters_new: c(7),
                    matched_existing: c(8),
                    merged_in_batch: c(9),
                    records_known: c(10),
                    conflicts: c(11),
                    records_deleted: c(12),
                }),
                rejected_by_reason: reasons[i]
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default(),
                error: error[i].clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, p: &str) -> RunView {
        RunView::queued(id, p, "api", Utc::now())
    }

    #[test]
    fn one_run_per_pipeline_and_none_after_close() {
        let mut r = Registry::default();
        r.admit(view("1", "a")).unwrap();
        assert_eq!(r.admit(view("2", "a")), Err(StartError::Running("1".into())));
        r.admit(view("3", "b")).unwrap();
        assert_eq!(r.active().len(), 2);
        let mut done = r.get("1").unwrap();
        done.state = RunState::Succeeded;
        r.finish(done);
        assert_eq!(r.running_id("a"), None);
        r.admit(view("4", "a")).unwrap();
        r.closed = true;
        assert_eq!(r.admit(view("5", "c")), Err(StartError::ShuttingDown));
    }

    #[test]
    fn finished_runs_are_bounded_in_memory() {
        let mut r = Registry::default();
        for i in 0..KEEP_FINISHED + 10 {
            let v = view(&format!("{i:05}"), "a");
            r.admit(v.clone()).unwrap();
            r.finish(v);
        }
        assert!(r.get("00000").is_none());
        assert!(r.get(&format!("{:05}", KEEP_FINISHED + 9)).is_some());
        assert_eq!(r.list(Some("a")).len(), KEEP_FINISHED);
    }
}
