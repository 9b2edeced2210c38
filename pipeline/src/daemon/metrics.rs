//! Prometheus metrics of the daemon, on a registry of our own (the default
//! registry would pick up whatever a dependency registers).
//!
//! Names are a contract with deploy/ (dashboards, alert rules): change them
//! only together. Labels are low-cardinality (pipeline, source name, reason
//! code, output name), never lead data.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::run::RunReport;

/// Link rules of `leadflow_records_linked_total`.
pub const LINK_RULES: [&str; 4] = [
    "new_master",
    "matched_existing",
    "merged_in_batch",
    "known_record",
];
/// File outcomes of `leadflow_files_total`.
pub const FILE_STATUSES: [&str; 3] = ["imported", "unchanged", "quarantined"];
/// Reminder event kinds of `leadflow_reminders_total`.
pub const REMINDER_KINDS: [&str; 4] = ["created", "overdue", "contacted", "expired"];

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
    run_duration: HistogramVec,
    last_success: GaugeVec,
    last_run: GaugeVec,
    in_progress: IntGaugeVec,
    rows_read: IntCounterVec,
    rows_rejected: IntCounterVec,
    masters_created: IntCounterVec,
    records_linked: IntCounterVec,
    link_conflicts: IntCounterVec,
    masters_merged: IntCounterVec,
    files: IntCounterVec,
    reminders: IntCounterVec,
    reminders_open: IntGaugeVec,
    events_delivered: IntCounterVec,
    event_failures: IntCounterVec,
    events_dead: IntCounterVec,
    build_info: IntGaugeVec,
    config_reloads: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("metric registered once");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let run_duration = HistogramVec::new(
            HistogramOpts::new(
                "leadflow_run_duration_seconds",
                "Wall time of finished pipeline runs.",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            &["pipeline"],
        )
        .expect("valid metric");
        r.register(Box::new(run_duration.clone()))
            .expect("metric registered once");
        let m = Self {
            runs: counter(
                &r,
                "leadflow_runs_total",
                "Finished pipeline runs by outcome (succeeded, failed).",
                &["pipeline", "outcome"],
            ),
            run_duration,
            last_success: gauge(
                &r,
                "leadflow_last_success_timestamp_seconds",
                "Unix time the last successful run of the pipeline finished (0: none yet).",
                &["pipeline"],
            ),
            last_run: gauge(
                &r,
                "leadflow_last_run_timestamp_seconds",
                "Unix time the last run of the pipeline finished, whatever its outcome (0: none yet).",
                &["pipeline"],
            ),
            in_progress: int_gauge(
                &r,
                "leadflow_run_in_progress",
                "1 while a run of the pipeline is going.",
                &["pipeline"],
            ),
            rows_read: counter(
                &r,
                "leadflow_rows_read_total",
                "Rows read from source files.",
                &["pipeline", "source"],
            ),
            rows_rejected: counter(
                &r,
                "leadflow_rows_rejected_total",
                "Rows sent to `rejects`, per failing rule (a row failing two rules counts under both).",
                &["pipeline", "reason"],
            ),
            masters_created: counter(
                &r,
                "leadflow_masters_created_total",
                "New golden masters (new people).",
                &["pipeline"],
            ),
            records_linked: counter(
                &r,
                "leadflow_records_linked_total",
                "Records linked to a master, by how (new_master, matched_existing, merged_in_batch, known_record).",
                &["pipeline", "rule"],
            ),
            link_conflicts: counter(
                &r,
                "leadflow_link_conflicts_total",
                "Shared keys kept apart because the names disagree.",
                &["pipeline"],
            ),
            masters_merged: counter(
                &r,
                "leadflow_masters_merged_total",
                "Pairs of existing masters merged after a run because one of its records linked strongly to both.",
                &["pipeline"],
            ),
            files: counter(
                &r,
                "leadflow_files_total",
                "Source files seen by runs, by outcome (imported, unchanged, quarantined).",
                &["pipeline", "status"],
            ),
            reminders: counter(
                &r,
                "leadflow_reminders_total",
                "Reminder events by kind (created, overdue, contacted, expired).",
                &["pipeline", "kind"],
            ),
            reminders_open: int_gauge(
                &r,
                "leadflow_reminders_open",
                "Reminders not yet contacted or expired.",
                &["pipeline"],
            ),
            events_delivered: counter(
                &r,
                "leadflow_events_delivered_total",
                "Outbox events delivered to an output.",
                &["output"],
            ),
            event_failures: counter(
                &r,
                "leadflow_event_delivery_failures_total",
                "Failed delivery attempts (retried until the event goes dead).",
                &["output"],
            ),
            events_dead: counter(
                &r,
                "leadflow_events_dead_total",
                "Events given up on after the last retry.",
                &["output"],
            ),
            build_info: int_gauge(
                &r,
                "leadflow_build_info",
                "Always 1; the label carries the leadflow version.",
                &["version"],
            ),
            config_reloads: counter(
                &r,
                "leadflow_config_reloads_total",
                "SIGHUP config reloads by outcome (succeeded, failed).",
                &["outcome"],
            ),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for outcome in ["succeeded", "failed"] {
            m.config_reloads.with_label_values(&[outcome]);
        }
        m
    }

    /// Create a pipeline's series at zero so alerts and dashboards see them
    /// before the first run. Idempotent.
    pub fn init_pipeline(&self, pipeline: &str, sources: &[&str]) {
        for outcome in ["succeeded", "failed"] {
            self.runs.with_label_values(&[pipeline, outcome]);
        }
        self.run_duration.with_label_values(&[pipeline]);
        self.last_success.with_label_values(&[pipeline]);
        self.last_run.with_label_values(&[pipeline]);
        self.in_progress.with_label_values(&[pipeline]);
        for s in sources {
            self.rows_read.with_label_values(&[pipeline, s]);
        }
        self.masters_created.with_label_values(&[pipeline]);
        for rule in LINK_RULES {
            self.records_linked.with_label_values(&[pipeline, rule]);
        }
        self.link_conflicts.with_label_values(&[pipeline]);
        self.masters_merged.with_label_values(&[pipeline]);
        for status in FILE_STATUSES {
            self.files.with_label_values(&[pipeline, status]);
        }
        for kind in REMINDER_KINDS {
            self.reminders.with_label_values(&[pipeline, kind]);
        }
        self.reminders_open.with_label_values(&[pipeline]);
    }

    /// Seed the timestamps from the `runs` table at start, so staleness
    /// alerts survive a restart.
    pub fn seed_last_times(&self, pipeline: &str, last_success: Option<f64>, last_run: Option<f64>) {
        if let Some(t) = last_success {
            self.last_success.with_label_values(&[pipeline]).set(t);
        }
        if let Some(t) = last_run {
            self.last_run.with_label_values(&[pipeline]).set(t);
        }
    }

    pub fn run_started(&self, pipeline: &str) {
        self.in_progress.with_label_values(&[pipeline]).set(1);
    }

    /// Count a finished run.
    pub fn run_finished(&self, r: &RunReport, finished_unix: f64) {
        let p = r.pipeline.as_str();
        self.in_progress.with_label_values(&[p]).set(0);
        let outcome = if r.succeeded() { "succeeded" } else { "failed" };
        self.runs.with_label_values(&[p, outcome]).inc();
        self.run_duration
            .with_label_values(&[p])
            .observe(r.duration_seconds);
        self.last_run.with_label_values(&[p]).set(finished_unix);
        if r.succeeded() {
            self.last_success.with_label_values(&[p]).set(finished_unix);
        }
        for f in &r.files {
            self.rows_read
                .with_label_values(&[p, f.source.as_str()])
                .inc_by(f.rows);
            if FILE_STATUSES.contains(&f.status.as_str()) {
                self.files.with_label_values(&[p, f.status.as_str()]).inc();
            }
        }
        for (reason, n) in &r.rejected_by_reason {
            self.rows_rejected
                .with_label_values(&[p, reason.as_str()])
                .inc_by(*n);
        }
        self.masters_created.with_label_values(&[p]).inc_by(r.masters_new);
        for (rule, n) in [
            ("new_master", r.masters_new),
            ("matched_existing", r.matched_existing),
            ("merged_in_batch", r.merged_in_batch),
            ("known_record", r.records_known),
        ] {
            self.records_linked.with_label_values(&[p, rule]).inc_by(n);
        }
        self.link_conflicts.with_label_values(&[p]).inc_by(r.conflicts);
        self.masters_merged
            .with_label_values(&[p])
            .inc_by(r.masters_merged);
        self.reminders
            .with_label_values(&[p, "created"])
            .inc_by(r.reminders_created);
    }

    /// A SIGHUP reload; `ok` false when the new config was refused.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "succeeded" } else { "failed" }])
            .inc();
    }

    /// Reminder events of one kind (created|overdue|contacted|expired).
    pub fn reminders(&self, pipeline: &str, kind: &str, n: u64) {
        self.reminders.with_label_values(&[pipeline, kind]).inc_by(n);
    }

    /// Reminders currently open in a pipeline.
    pub fn reminders_open(&self, pipeline: &str, n: i64) {
        self.reminders_open.with_label_values(&[pipeline]).set(n);
    }

    /// Events delivered to an output (by its configured name).
    pub fn delivered(&self, output: &str, n: u64) {
        self.events_delivered.with_label_values(&[output]).inc_by(n);
    }

    /// Failed delivery attempts to an output.
    pub fn delivery_failed(&self, output: &str, n: u64) {
        self.event_failures.with_label_values(&[output]).inc_by(n);
    }

    /// Events that went dead (no more retries) at an output.
    pub fn dead(&self, output: &str, n: u64) {
        self.events_dead.with_label_values(&[output]).inc_by(n);
    }

    /// Create an output's event series at zero (call at start per output).
    pub fn init_output(&self, output: &str) {
        self.events_delivered.with_label_values(&[output]);
        self.event_failures.with_label_values(&[output]);
        self.events_dead.with_label_values(&[output]);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of our own metrics");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::FileReport;

    #[test]
    fn a_finished_run_feeds_every_run_metric() {
        let m = Metrics::new();
        m.init_pipeline("quick", &["drops"]);
        let mut r = RunReport {
            pipeline: "quick".into(),
            status: "succeeded".into(),
            duration_seconds: 1.5,
            masters_new: 39,
            merged_in_batch: 8,
            conflicts: 3,
            masters_merged: 2,
            ..Default::default()
        };
        r.rejected_by_reason.insert("invalid_email".into(), 2);
        r.files.push(FileReport {
            source: "drops".into(),
            path: "a.csv".into(),
            status: "imported".into(),
            rows: 52,
            reason: None,
        });
        m.run_started("quick");
        m.run_finished(&r, 1_700_000_000.0);
        let text = m.render();
        for line in [
            "leadflow_runs_total{outcome=\"succeeded\",pipeline=\"quick\"} 1",
            "leadflow_runs_total{outcome=\"failed\",pipeline=\"quick\"} 0",
            "leadflow_rows_read_total{pipeline=\"quick\",source=\"drops\"} 52",
            "leadflow_rows_rejected_total{pipeline=\"quick\",reason=\"invalid_email\"} 2",
            "leadflow_masters_created_total{pipeline=\"quick\"} 39",
            "leadflow_records_linked_total{pipeline=\"quick\",rule=\"merged_in_batch\"} 8",
            "leadflow_link_conflicts_total{pipeline=\"quick\"} 3",
            "leadflow_masters_merged_total{pipeline=\"quick\"} 2",
            "leadflow_files_total{pipeline=\"quick\",status=\"imported\"} 1",
            "leadflow_last_success_timestamp_seconds{pipeline=\"quick\"} 1700000000",
            "leadflow_run_in_progress{pipeline=\"quick\"} 0",
            "leadflow_run_duration_seconds_count{pipeline=\"quick\"} 1",
            "leadflow_reminders_total{kind=\"overdue\",pipeline=\"quick\"} 0",
            "leadflow_config_reloads_total{outcome=\"failed\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains(&format!(
            "leadflow_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn reminder_and_event_hooks_count() {
        let m = Metrics::new();
        m.reminders("p", "created", 3);
        m.reminders_open("p", 2);
        m.delivered("hook", 5);
        m.delivery_failed("hook", 1);
        m.dead("hook", 1);
        let text = m.render();
        assert!(text.contains("leadflow_reminders_total{kind=\"created\",pipeline=\"p\"} 3"));
        assert!(text.contains("leadflow_reminders_open{pipeline=\"p\"} 2"));
        assert!(text.contains("leadflow_events_delivered_total{output=\"hook\"} 5"));
        assert!(text.contains("leadflow_event_delivery_failures_total{output=\"hook\"} 1"));
        assert!(text.contains("leadflow_events_dead_total{output=\"hook\"} 1"));
    }
}
