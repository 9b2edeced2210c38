//! The reminder engine: reminders for a run's new project links, the tick
//! that turns missed deadlines into overdue events, and contacted/snooze.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use leadflow_sinks::{StagedTable, Warehouse, is_commit_conflict};
use leadflow_transforms::schema::PROJECT_LINKS_SCHEMA;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{debug, info};

use super::ReminderError;
use super::assign::assign_owners;
use super::config::RemindersConfig;
use super::schedule;
use super::state::{
    self, CONTACTED, CREATED, EXPIRED, OVERDUE, OutboxEvent, Reminder, ReminderState, lit, reminder_id,
};
use crate::config::PipelineConfig;

/// Delta writers of one table conflict; within a process, reminder writes
/// (tick, contacted, snooze) take turns here. Across processes a lost race
/// is detected and the whole operation retried from fresh state.
static WRITE_LOCK: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

/// The writer's turn on the `reminders` table within this process. A run
/// that stages reminders holds it while it commits, so its MERGE never
/// races a tick or an API call of the same daemon.
pub async fn write_turn() -> tokio::sync::MutexGuard<'static, ()> {
    WRITE_LOCK.lock().await
}

/// Transaction app id of reminder writes outside runs.
const APP_ID: &str = "leadflow:reminders";

/// What a run did for reminders and assignment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReminders {
    pub owners_assigned: usize,
    pub reminders_created: usize,
    pub reminders_closed: usize,
}

/// Owner assignment and reminders for a run, as staged tables in the run's
/// own commit (so they are txn-guarded with it: a re-applied commit adds
/// nothing twice). Assigns owners in the staged `project_links` in place,
/// then adds a `reminders` row and a `reminder.created` event per new
/// (master, project) link, and closes the open reminder of a link whose
/// status a later run changed (someone worked the lead).
pub async fn stage_for_run(
    warehouse: &Warehouse,
    pipeline: &PipelineConfig,
    run_id: &str,
    tables: &mut Vec<StagedTable>,
) -> Result<RunReminders, ReminderError> {
    let mut done = RunReminders::default();
    if pipeline.reminders.is_none() && pipeline.assignment.is_none() {
        return Ok(done);
    }
    let Some(idx) = tables.iter().position(|t| t.table == "project_links") else {
        return Ok(done);
    };
    let schema = tables[idx]
        .batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| PROJECT_LINKS_SCHEMA.clone());
    let links = concat_batches(&schema, &tables[idx].batches)?;
    if links.num_rows() == 0 {
        return Ok(done);
    }
    let master = links.column(0).as_string::<i32>().clone();
    let project = links.column(1).as_string::<i32>().clone();
    let ctx = SessionContext::new();
    warehouse.register(&ctx, &["project_links"]).await?;
    let keys = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("master_id", DataType::Utf8, false),
            Field::new("project", DataType::Utf8, false),
        ])),
        vec![Arc::new(master.clone()) as ArrayRef, Arc::new(project.clone())],
    )?;
    ctx.register_batch("run_links", keys)?;
    let existing = warehouse
        .query(
            &ctx,
            "SELECT l.master_id, l.project, l.status FROM project_links l
             JOIN run_links r ON l.master_id = r.master_id AND l.project = r.project",
        )
        .await?;
    let mut prior: HashMap<(String, String), Option<String>> = HashMap::new();
    for b in &existing {
        let (m, p, s) = (
            state::text(b, "master_id")?,
            state::text(b, "project")?,
            state::text(b, "status")?,
        );
        for i in 0..b.num_rows() {
            prior.insert(
                (m.value(i).to_string(), p.value(i).to_string()),
                state::opt_text(&s, i),
            );
        }
    }

    let links = if let Some(assignment) = &pipeline.assignment {
        let counts = warehouse
            .query(
                &ctx,
                "SELECT project, count(*) AS n FROM project_links
                 WHERE owner IS NOT NULL AND project IN (SELECT DISTINCT project FROM run_links)
                 GROUP BY project",
            )
            .await?;
        let mut before = HashMap::new();
        for b in &counts {
            let (p, n) = (state::text(b, "project")?, state::ints(b, "n")?);
            for i in 0..b.num_rows() {
                before.insert(p.value(i).to_string(), n.value(i) as u64);
            }
        }
        let (assigned, n) = assign_owners(&links, &before, assignment)?;
        done.owners_assigned = n;
        tables[idx].batches = vec![assigned.clone()];
        assigned
    } else {
        links
    };

    let Some(cfg) = &pipeline.reminders else {
        info!(owners_assigned = done.owners_assigned, "owners assigned");
        return Ok(done);
    };
    let now = Utc::now();
    let default_status = pipeline.defaults.status.as_deref().unwrap_or("new");
    let owner = links.column(3).as_string::<i32>().clone();
    let status = links.column(2).as_string::<i32>().clone();
    let mut rows = Vec::new();
    let mut events = Vec::new();
    let mut worked = Vec::new();
    for i in 0..links.num_rows() {
        let key = (master.value(i).to_string(), project.value(i).to_string());
        let st = state::opt_text(&status, i);
        match prior.get(&key) {
            None => {
                let deadline = schedule::deadline(now, cfg);
                let r = Reminder {
                    reminder_id: reminder_id(&pipeline.name, &key.0, &key.1),
                    pipeline: pipeline.name.clone(),
                    master_id: key.0,
                    project: key.1,
                    owner: state::opt_text(&owner, i),
                    state: ReminderState::Open,
                    created_at: now,
                    deadline,
                    next_due_at: deadline,
                    repeats: 0,
                    snoozed_until: None,
                    closed_at: None,
                    closed_by: None,
                    run_id: Some(run_id.to_string()),
                    updated_at: now,
                };
                events.push(OutboxEvent::new(CREATED, &r, None, now));
                rows.push(r);
            }
            Some(before) => {
                if st != *before && st.as_deref().is_some_and(|s| s != default_status) {
                    worked.push(reminder_id(&pipeline.name, &key.0, &key.1));
                }
            }
        }
    }
    done.reminders_created = rows.len();
    let all_new = worked.is_empty();
    if !worked.is_empty() {
        let ids: Vec<String> = worked.iter().map(|id| lit(id)).collect();
        let open = state::load(
            warehouse,
            &format!(
                "state IN ('open', 'snoozed') AND reminder_id IN ({})",
                ids.join(", ")
            ),
        )
        .await?;
        for mut r in open {
            close(&mut r, ReminderState::Contacted, "link status", now);
            events.push(OutboxEvent::new(CONTACTED, &r, None, now));
            rows.push(r);
            done.reminders_closed += 1;
        }
    }
    info!(
        owners_assigned = done.owners_assigned,
        reminders_created = done.reminders_created,
        reminders_closed = done.reminders_closed,
        "reminders staged"
    );
    tables.extend(state::staged(&rows, &events, all_new)?);
    Ok(done)
}

/// A person merge or split: the open and snoozed reminders of master `from`
/// (only those of `projects`, when given) go to master `to`. Each becomes
/// `to`'s reminder for its pipeline and project (same id rule as a run's;
/// deadline, owner, repeats and snooze kept), unless `to` has an open one
/// there already, which carries on; the old one is closed as `moved` by
/// `by`. Returns the rows to upsert (the caller writes them with the merge
/// or split). The caller holds [`write_turn`].
pub async fn moved_reminders(
    warehouse: &Warehouse,
    from: &str,
    to: &str,
    projects: Option<&[String]>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Reminder>, ReminderError> {
    let all = reminders_of(warehouse, &[from, to]).await?;
    Ok(moved_from(&all, from, to, projects, by, now))
}

/// Every reminder of `masters` (none when the table is empty).
pub async fn reminders_of(warehouse: &Warehouse, masters: &[&str]) -> Result<Vec<Reminder>, ReminderError> {
    if !warehouse.has_data("reminders").await? || masters.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = masters.iter().map(|m| lit(m)).collect();
    state::load(warehouse, &format!("master_id IN ({})", ids.join(", "))).await
}

/// [`moved_reminders`] from reminders already read (`all` holds at least
/// those of `from` and `to`; others are ignored).
pub fn moved_from(
    all: &[Reminder],
    from: &str,
    to: &str,
    projects: Option<&[String]>,
    by: &str,
    now: DateTime<Utc>,
) -> Vec<Reminder> {
    let held: HashSet<&str> = all
        .iter()
        .filter(|r| r.master_id == to && !r.state.is_closed())
        .map(|r| r.reminder_id.as_str())
        .collect();
    let mut rows = Vec::new();
    let wanted = |r: &Reminder| projects.is_none_or(|p| p.contains(&r.project));
    for r in all
        .iter()
        .filter(|r| r.master_id == from && !r.state.is_closed() && wanted(r))
    {
        let id = reminder_id(&r.pipeline, to, &r.project);
        if !held.contains(id.as_str()) {
            let mut moved = r.clone();
            moved.reminder_id = id;
            moved.master_id = to.to_string();
            moved.updated_at = now;
            rows.push(moved);
        }
        let mut closed = r.clone();
        close(&mut closed, ReminderState::Moved, by, now);
        rows.push(closed);
    }
    rows
}

fn close(r: &mut Reminder, to: ReminderState, by: &str, now: DateTime<Utc>) {
    r.state = to;
    r.closed_at = Some(now);
    r.closed_by = Some(by.to_string());
    r.snoozed_until = None;
    r.updated_at = now;
}

/// Write changed reminders and their events outside a run: events first
/// (append), then the reminders (upsert), each with a fresh txn version.
/// A crash in between leaves events whose reminders did not move: the next
/// tick makes the same events again, with the same ids.
async fn write(
    warehouse: &Warehouse,
    rows: &[Reminder],
    events: &[OutboxEvent],
    now: DateTime<Utc>,
) -> Result<(), ReminderError> {
    if rows.is_empty() && events.is_empty() {
        return Ok(());
    }
    let last = warehouse
        .txn_version("reminders", APP_ID)
        .await?
        .max(warehouse.txn_version("outbox", APP_ID).await?)
        .unwrap_or(0);
    let version = now.timestamp_micros().max(last + 1);
    // Outbox first: an event may be written twice, never lost.
    let mut staged = state::staged(rows, events, false)?;
    staged.sort_by_key(|t| t.table != "outbox");
    for t in &staged {
        match warehouse.apply(t, APP_ID, version).await {
            Ok(true) => {}
            // Another process committed this version first.
            Ok(false) => return Err(ReminderError::Conflict(t.table.clone())),
            Err(e) if is_commit_conflict(&e) => return Err(ReminderError::Conflict(t.table.clone())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Redo `op` from fresh state when another writer won the race.
async fn retrying<T, F, Fut>(what: &str, op: F) -> Result<T, ReminderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReminderError>>,
{
    crate::retry::on_conflict(what, Duration::from_millis(50), op).await
}

/// What a tick did, per pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineTick {
    /// `reminder.overdue` events emitted.
    pub overdue: u64,
    /// Reminders that ran out of repeats (`reminder.expired`).
    pub expired: u64,
    /// Snoozed reminders whose snooze ended.
    pub reopened: u64,
    /// Open reminders after the tick.
    pub open: u64,
    /// Snoozed reminders after the tick.
    pub snoozed: u64,
}

/// What a tick did: pipeline name -> counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TickReport {
    pub pipelines: BTreeMap<String, PipelineTick>,
}

/// Advance reminders to `now`: a snoozed reminder whose snooze ended is
/// open again (and due); an open reminder past its due time emits
/// `reminder.overdue` (repeat n) and is due again `repeat_every` later, or,
/// after `max_repeats` overdue events, expires (`reminder.expired`).
/// Pipelines without `reminders:` are left alone. Call it every few seconds
/// (the daemon) or once per `leadflow run` / `leadflow reminders tick`.
pub async fn tick(
    warehouse: &Warehouse,
    pipelines: &[PipelineConfig],
    now: DateTime<Utc>,
) -> Result<TickReport, ReminderError> {
    let configs: HashMap<&str, &RemindersConfig> = pipelines
        .iter()
        .filter_map(|p| p.reminders.as_ref().map(|r| (p.name.as_str(), r)))
        .collect();
    if configs.is_empty() {
        return Ok(TickReport::default());
    }
    let _turn = WRITE_LOCK.lock().await;
    retrying("reminders tick", || tick_once(warehouse, &configs, now)).await
}

async fn tick_once(
    warehouse: &Warehouse,
    configs: &HashMap<&str, &RemindersConfig>,
    now: DateTime<Utc>,
) -> Result<TickReport, ReminderError> {
    let names: Vec<String> = configs.keys().map(|n| lit(n)).collect();
    let live = state::load(
        warehouse,
        &format!(
            "state IN ('open', 'snoozed') AND pipeline IN ({})",
            names.join(", ")
        ),
    )
    .await?;
    let mut report = TickReport::default();
    for name in configs.keys() {
        report.pipelines.entry(name.to_string()).or_default();
    }
    let mut rows = Vec::new();
    let mut events = Vec::new();
    for mut r in live {
        let cfg = configs[r.pipeline.as_str()];
        let counts = report.pipelines.entry(r.pipeline.clone()).or_default();
        let mut changed = false;
        if r.state == ReminderState::Snoozed {
            match r.snoozed_until {
                Some(until) if until > now => {
                    counts.snoozed += 1;
                    continue;
                }
                until => {
                    r.state = ReminderState::Open;
                    r.next_due_at = r.next_due_at.max(until.unwrap_or(now));
                    r.snoozed_until = None;
                    counts.reopened += 1;
                    changed = true;
                }
            }
        }
        if r.next_due_at <= now {
            changed = true;
            if r.repeats >= i64::from(cfg.max_repeats) {
                close(&mut r, ReminderState::Expired, "max_repeats", now);
                events.push(OutboxEvent::new(EXPIRED, &r, None, now));
                counts.expired += 1;
            } else {
                r.repeats += 1;
                r.next_due_at = schedule::next_repeat(r.next_due_at, now, cfg);
                events.push(OutboxEvent::new(OVERDUE, &r, Some(r.repeats), now));
                counts.overdue += 1;
            }
        }
        if r.state == ReminderState::Open {
            counts.open += 1;
        }
        if changed {
            r.updated_at = now;
            rows.push(r);
        }
    }
    write(warehouse, &rows, &events, now).await?;
    for (p, c) in &report.pipelines {
        if c.overdue + c.expired + c.reopened > 0 {
            info!(pipeline = %p, overdue = c.overdue, expired = c.expired, reopened = c.reopened, open = c.open, "reminders tick");
        } else {
            debug!(pipeline = %p, open = c.open, snoozed = c.snoozed, "reminders tick: nothing due");
        }
    }
    Ok(report)
}

/// Mark a reminder contacted (`by` says who: `api`, `cli`, ...). Emits
/// `reminder.contacted`. NotFound / AlreadyClosed map to HTTP 404 / 409.
pub async fn mark_contacted(
    warehouse: &Warehouse,
    reminder_id: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Reminder, ReminderError> {
    let _turn = WRITE_LOCK.lock().await;
    retrying("mark contacted", || async {
        let mut r = one_live(warehouse, reminder_id).await?;
        close(&mut r, ReminderState::Contacted, by, now);
        let ev = OutboxEvent::new(CONTACTED, &r, None, now);
        write(warehouse, std::slice::from_ref(&r), &[ev], now).await?;
        info!(reminder_id = %r.reminder_id, pipeline = %r.pipeline, by, "reminder contacted");
        Ok(r)
    })
    .await
}

/// Snooze a reminder for `minutes`: no overdue events until then, then it
/// is open and due again. Snoozing a snoozed reminder moves the end.
pub async fn snooze(
    warehouse: &Warehouse,
    reminder_id: &str,
    minutes: u32,
    now: DateTime<Utc>,
) -> Result<Reminder, ReminderError> {
    if minutes == 0 || minutes > 7 * 24 * 60 {
        return Err(ReminderError::Invalid(format!(
            "snooze minutes must be between 1 and {} (a week), got {minutes}",
            7 * 24 * 60
        )));
    }
    let _turn = WRITE_LOCK.lock().await;
    retrying("snooze", || async {
        let mut r = one_live(warehouse, reminder_id).await?;
        r.state = ReminderState::Snoozed;
        r.snoozed_until = Some(now + chrono::Duration::minutes(i64::from(minutes)));
        r.updated_at = now;
        write(warehouse, std::slice::from_ref(&r), &[], now).await?;
        info!(reminder_id = %r.reminder_id, pipeline = %r.pipeline, minutes, "reminder snoozed");
        Ok(r)
    })
    .await
}

/// The reminder `id` if it is open or snoozed.
async fn one_live(warehouse: &Warehouse, id: &str) -> Result<Reminder, ReminderError> {
    let found = state::load(warehouse, &format!("reminder_id = {}", lit(id))).await?;
    // Upserts keep one row per id; a duplicate would be a bug elsewhere,
    // and the newest row is the truth then.
    let r = found
        .into_iter()
        .max_by_key(|r| r.updated_at)
        .ok_or_else(|| ReminderError::NotFound(id.to_string()))?;
    if r.state.is_closed() {
        return Err(ReminderError::AlreadyClosed {
            id: id.to_string(),
            state: r.state,
        });
    }
    Ok(r)
}

/// Reminders, oldest first: of one pipeline or all, in the given states (all when empty).
pub async fn list(
    warehouse: &Warehouse,
    pipeline: Option<&str>,
    states: &[ReminderState],
    limit: usize,
) -> Result<Vec<Reminder>, ReminderError> {
    let mut cond = vec!["true".to_string()];
    if let Some(p) = pipeline {
        cond.push(format!("pipeline = {}", lit(p)));
    }
    if !states.is_empty() {
        let s: Vec<String> = states.iter().map(|s| lit(s.as_str())).collect();
        cond.push(format!("state IN ({})", s.join(", ")));
    }
    let mut all = state::load(warehouse, &cond.join(" AND ")).await?;
    all.truncate(limit);
    Ok(all)
}

/// Counts for dashboards: reminders per (pipeline, state) and distinct
/// events per (pipeline, kind) in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReminderStats {
    pub reminders: BTreeMap<String, BTreeMap<String, u64>>,
    pub events: BTreeMap<String, BTreeMap<String, u64>>,
}

pub async fn stats(warehouse: &Warehouse) -> Result<ReminderStats, ReminderError> {
    let ctx = SessionContext::new();
    warehouse.register(&ctx, &["reminders", "outbox"]).await?;
    let mut out = ReminderStats::default();
    for (sql, into) in [
        (
            "SELECT pipeline, state AS k, count(*) AS n FROM reminders GROUP BY pipeline, state",
            &mut out.reminders,
        ),
        (
            "SELECT pipeline, kind AS k, count(DISTINCT event_id) AS n FROM outbox GROUP BY pipeline, kind",
            &mut out.events,
        ),
    ] {
        for b in warehouse.query(&ctx, sql).await? {
            let (p, k, n) = (
                state::text(&b, "pipeline")?,
                state::text(&b, "k")?,
                state::ints(&b, "n")?,
            );
            for i in 0..b.num_rows() {
                into.entry(p.value(i).to_string())
                    .or_default()
                    .insert(k.value(i).to_string(), n.value(i) as u64);
            }
        }
    }
    Ok(out)
}

// The daemon spawns these on tokio and calls them from axum handlers: their
// futures must be Send. This fails to compile if one stops being so.
#[allow(dead_code)]
fn futures_are_send(w: &Warehouse, p: &[PipelineConfig]) {
    fn is_send<T: Send>(_: T) {}
    is_send(tick(w, p, Utc::now()));
    is_send(mark_contacted(w, "x", "api", Utc::now()));
    is_send(snooze(w, "x", 5, Utc::now()));
}
