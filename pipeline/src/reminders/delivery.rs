//! Delivery: outbox events to every configured output, at least once, with
//! their state per output in `deliveries` (delivered, retrying, dead).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use leadflow_sinks::events::{Event, EventOutput, Outcome};
use leadflow_sinks::{StagedTable, Warehouse, WriteMode, is_commit_conflict};
use leadflow_transforms::schema::DELIVERIES_SCHEMA;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::ReminderError;
use super::state::{self, lit};

/// One delivery loop per process writes `deliveries` at a time.
static DELIVERY_LOCK: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

const APP_ID: &str = "leadflow:deliveries";

/// Longest `Retry-After` honoured; a receiver asking for more is retried then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How one `deliver_pending` call behaves.
#[derive(Debug, Clone)]
pub struct DeliverOptions {
    /// Events sent to one output per round.
    pub batch_size: usize,
    /// Keep going this long for retries that fall due (0: send what is due
    /// now and return; the daemon's loop calls again).
    pub wait: Duration,
    /// Stop after this many rounds (0: until nothing is due). The daemon
    /// does one round per turn so a backlog never starves the reminder
    /// tick or the metrics.
    pub max_rounds: usize,
}

impl Default for DeliverOptions {
    fn default() -> Self {
        Self {
            // Each round scans `outbox` against `deliveries` once: big
            // rounds keep a backlog (a bulk import's reminders) moving.
            batch_size: 5000,
            wait: Duration::ZERO,
            max_rounds: 0,
        }
    }
}

/// Counts of one output in one call (the daemon adds them to its counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutputDelivery {
    /// `file`, `webhook` or `nats`.
    pub kind: String,
    pub delivered: u64,
    /// Failed attempts (each retry that failed counts).
    pub failed: u64,
    /// Events given up on in this call (now `dead`).
    pub dead: u64,
    /// Events still waiting for this output when the call ended.
    pub backlog: u64,
}

/// Per output name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryReport {
    pub outputs: BTreeMap<String, OutputDelivery>,
}

struct Pending {
    event: Event,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
}

/// Events not yet delivered to (nor dead at) `output`, oldest first; one
/// per event id (the outbox may hold a repeated write of one event).
async fn pending(warehouse: &Warehouse, output: &str) -> Result<Vec<Pending>, ReminderError> {
    let ctx = SessionContext::new();
    warehouse.register(&ctx, &["outbox", "deliveries"]).await?;
    let sql = format!(
        "SELECT o.event_id, o.kind, o.payload, o.created_at, d.attempts, d.next_attempt_at
         FROM (SELECT event_id, max(kind) AS kind, max(payload) AS payload, min(created_at) AS created_at
               FROM outbox GROUP BY event_id) o
         LEFT JOIN (SELECT event_id, state, attempts, next_attempt_at FROM deliveries WHERE output = {}) d
           ON o.event_id = d.event_id
         WHERE d.event_id IS NULL OR d.state = 'retrying'
         ORDER BY o.created_at, o.event_id",
        lit(output)
    );
    let mut out = Vec::new();
    for b in warehouse.query(&ctx, &sql).await? {
        let (id, kind, payload) = (
            state::text(&b, "event_id")?,
            state::text(&b, "kind")?,
            state::text(&b, "payload")?,
        );
        let (attempts, next) = (state::ints(&b, "attempts")?, state::times(&b, "next_attempt_at")?);
        for i in 0..b.num_rows() {
            out.push(Pending {
                event: Event {
                    event_id: id.value(i).to_string(),
                    kind: kind.value(i).to_string(),
                    payload: payload.value(i).to_string(),
                },
                attempts: if arrow::array::Array::is_null(&attempts, i) {
                    0
                } else {
                    attempts.value(i)
                },
                next_attempt_at: state::at(&next, i),
            });
        }
    }
    Ok(out)
}

/// A `deliveries` row.
struct Row {
    event_id: String,
    output: String,
    state: &'static str,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

fn rows_batch(rows: &[Row]) -> Result<RecordBatch, ReminderError> {
    let s = |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let t = |f: &dyn Fn(&Row) -> Option<DateTime<Utc>>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| f(r).map(|t| t.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        )
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|r| Some(r.event_id.as_str())),
        s(&|r| Some(r.output.as_str())),
        s(&|r| Some(r.state)),
        Arc::new(rows.iter().map(|r| r.attempts).collect::<Int64Array>()),
        s(&|r| r.last_error.as_deref()),
        t(&|r| r.next_attempt_at),
        t(&|r| r.delivered_at),
        t(&|r| Some(r.updated_at)),
    ];
    Ok(RecordBatch::try_new(DELIVERIES_SCHEMA.clone(), cols)?)
}

async fn record(warehouse: &Warehouse, rows: &[Row]) -> Result<(), ReminderError> {
    if rows.is_empty() {
        return Ok(());
    }
    let staged = StagedTable {
        table: "deliveries".into(),
        mode: WriteMode::Upsert,
        batches: vec![rows_batch(rows)?],
    };
    // The events are sent already: keep trying to record that, so they are
    // not sent again (which would still be safe: same ids).
    for attempt in 1..=5u64 {
        let last = warehouse.txn_version("deliveries", APP_ID).await?.unwrap_or(0);
        let version = Utc::now().timestamp_micros().max(last + 1);
        match warehouse.apply(&staged, APP_ID, version).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if is_commit_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
        warn!(attempt, "another writer changed `deliveries` first; retrying");
        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
    }
    Err(ReminderError::Conflict("deliveries".into()))
}

fn short(e: &str) -> String {
    const MAX: usize = 500;
    if e.len() <= MAX {
        return e.to_string();
    }
    let mut end = MAX;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &e[..end])
}

/// One round for one output: send what is due, turn outcomes into rows.
/// Returns the rows, the counts, and when this output next has work.
async fn round(
    warehouse: &Warehouse,
    output: &EventOutput,
    batch_size: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<Row>, OutputDelivery, Option<DateTime<Utc>>), ReminderError> {
    let all = pending(warehouse, output.name()).await?;
    let mut counts = OutputDelivery {
        kind: output.kind().into(),
        ..Default::default()
    };
    let (due, waiting): (Vec<Pending>, Vec<Pending>) = all
        .into_iter()
        .partition(|p| p.next_attempt_at.is_none_or(|t| t <= now));
    let mut wake = waiting.iter().filter_map(|p| p.next_attempt_at).min();
    let due_total = due.len();
    let due: Vec<Pending> = due.into_iter().take(batch_size).collect();
    let events: Vec<Event> = due.iter().map(|p| p.event.clone()).collect();
    let outcomes = output.send(&events).await;
    let policy = output.retry_policy();
    let mut rows = Vec::new();
    let mut held = false;
    for (p, outcome) in due.iter().zip(outcomes) {
        let attempts = p.attempts + 1;
        let mut row = Row {
            event_id: p.event.event_id.clone(),
            output: output.name().to_string(),
            state: "delivered",
            attempts,
            last_error: None,
            next_attempt_at: None,
            delivered_at: None,
            updated_at: now,
        };
        match outcome {
            Outcome::Delivered => {
                row.delivered_at = Some(now);
                counts.delivered += 1;
            }
            Outcome::Refused { error } => {
                counts.failed += 1;
                counts.dead += 1;
                warn!(output = output.name(), event_id = %row.event_id, error = %error, "event refused by the output: dead, not retried");
                row.state = "dead";
                row.last_error = Some(short(&error));
            }
            Outcome::Retry { error, retry_after } => {
                counts.failed += 1;
                row.last_error = Some(short(&error));
                if policy.exhausted(attempts as u32) {
                    counts.dead += 1;
                    row.state = "dead";
                    warn!(output = output.name(), event_id = %row.event_id, attempts, error = %error, "event delivery gave up: dead");
                } else {
                    let backoff = policy.backoff(attempts as u32, &row.event_id);
                    let wait = retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER).max(backoff));
                    let at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
                    row.state = "retrying";
                    row.next_attempt_at = Some(at);
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    held = true;
                    debug!(output = output.name(), event_id = %row.event_id, attempts, error = %error, retry_in = ?wait, "event delivery failed, will retry");
                }
            }
        }
        rows.push(row);
    }
    // Due events not attempted (past the batch, or the output stopped at a
    // failure) stay pending: go on at once, unless the output is failing.
    if !held && rows.len() < due_total {
        wake = Some(now);
    }
    counts.backlog = ((waiting.len() + due_total) as u64).saturating_sub(counts.delivered + counts.dead);
    Ok((rows, counts, wake))
}

/// Deliver pending outbox events to every output, oldest first, at least
/// once. Returns per-output counts for metrics
/// (`leadflow_events_delivered_total{output}`, ...). A failing output does
/// not hold up the others; a webhook that keeps failing turns its events
/// `dead` after `max_attempts`, the file and NATS outputs retry until they
/// succeed.
pub async fn deliver_pending(
    warehouse: &Warehouse,
    outputs: &[EventOutput],
    opts: &DeliverOptions,
) -> Result<DeliveryReport, ReminderError> {
    let mut report = DeliveryReport::default();
    if outputs.is_empty() {
        return Ok(report);
    }
    let _turn = DELIVERY_LOCK.lock().await;
    let until = Utc::now() + chrono::Duration::from_std(opts.wait).unwrap_or(chrono::Duration::hours(24));
    let mut hold: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        let now = Utc::now();
        let active: Vec<&EventOutput> = outputs
            .iter()
            .filter(|o| hold.get(o.name()).is_none_or(|t| *t <= now))
            .collect();
        let results = futures::future::join_all(
            active
                .iter()
                .map(|o| round(warehouse, o, opts.batch_size.max(1), now)),
        )
        .await;
        let mut rows = Vec::new();
        let mut failure = None;
        for (o, r) in active.iter().zip(results) {
            let (mut r_rows, counts, wake) = match r {
                Ok(x) => x,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            rows.append(&mut r_rows);
            let total = report.outputs.entry(o.name().to_string()).or_default();
            total.kind = counts.kind;
            total.delivered += counts.delivered;
            total.failed += counts.failed;
            total.dead += counts.dead;
            total.backlog = counts.backlog;
            match wake {
                Some(t) => hold.insert(o.name().to_string(), t),
                None => hold.remove(o.name()),
            };
        }
        // What was sent is recorded even when another output failed.
        record(warehouse, &rows).await?;
        if let Some(e) = failure {
            return Err(e);
        }
        if opts.max_rounds > 0 && rounds >= opts.max_rounds {
            break;
        }
        let next = hold.values().min().copied();
        match next {
            Some(t) if t <= now => continue,
            Some(t) if t <= until => {
                let d = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(d).await;
            }
            _ => break,
        }
    }
    for (name, c) in &report.outputs {
        if c.delivered + c.failed > 0 {
            info!(output = %name, delivered = c.delivered, failed = c.failed, dead = c.dead, backlog = c.backlog, "events delivered");
        }
    }
    Ok(report)
}
