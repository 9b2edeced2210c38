//! Reminders and outbox events as rows: ids, reading and writing the
//! `reminders` and `outbox` tables.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use leadflow_sinks::{StagedTable, Warehouse, WriteMode};
use leadflow_transforms::schema::{OUTBOX_SCHEMA, REMINDERS_SCHEMA};
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use super::ReminderError;

/// Where a reminder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderState {
    Open,
    Snoozed,
    Contacted,
    Expired,
    /// Its project link went to another master (a merge, or a split that
    /// took all the project's records); that master's reminder carries on.
    Moved,
}

impl ReminderState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Snoozed => "snoozed",
            Self::Contacted => "contacted",
            Self::Expired => "expired",
            Self::Moved => "moved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "snoozed" => Self::Snoozed,
            "contacted" => Self::Contacted,
            "expired" => Self::Expired,
            "moved" => Self::Moved,
            _ => return None,
        })
    }

    /// Contacted, expired and moved reminders never change again.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Contacted | Self::Expired | Self::Moved)
    }
}

impl std::fmt::Display for ReminderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `reminders`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reminder {
    pub reminder_id: String,
    pub pipeline: String,
    pub master_id: String,
    pub project: String,
    pub owner: Option<String>,
    pub state: ReminderState,
    pub created_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub next_due_at: DateTime<Utc>,
    /// `reminder.overdue` events emitted so far.
    pub repeats: i64,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// What closed it: `link status`, `api`, `cli`, `max_repeats`, ...
    pub closed_by: Option<String>,
    /// The run that created it.
    pub run_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Event kinds written to the outbox.
pub const CREATED: &str = "reminder.created";
pub const OVERDUE: &str = "reminder.overdue";
pub const EXPIRED: &str = "reminder.expired";
pub const CONTACTED: &str = "reminder.contacted";

/// One row of `outbox`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub event_id: String,
    pub kind: &'static str,
    pub reminder: Reminder,
    pub repeat: Option<i64>,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

fn hash_id(prefix: &str, parts: &[&str]) -> String {
    // NUL-separated so ("ab", "c") and ("a", "bc") differ.
    format!("{prefix}{:032x}", xxh3_128(parts.join("\0").as_bytes()))
}

/// A reminder's id: the same (pipeline, master, project) always gives the same id.
pub fn reminder_id(pipeline: &str, master_id: &str, project: &str) -> String {
    hash_id("rem-", &[pipeline, master_id, project])
}

/// An event's id, from what it is about: the reminder, the kind and (for
/// overdue events) the repeat number. Written twice, it is one event.
pub fn event_id(reminder_id: &str, kind: &str, repeat: Option<i64>) -> String {
    let n = repeat.map(|r| r.to_string()).unwrap_or_default();
    hash_id("ev-", &[reminder_id, kind, &n])
}

impl OutboxEvent {
    /// The event of `kind` about `r` (its state as after the change).
    pub fn new(kind: &'static str, r: &Reminder, repeat: Option<i64>, now: DateTime<Utc>) -> Self {
        let event_id = event_id(&r.reminder_id, kind, repeat);
        // The consumer's view: ids and times, no personal data (the master
        // id leads to the person for those allowed to look).
        let mut payload = serde_json::json!({
            "event_id": event_id,
            "kind": kind,
            "occurred_at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "pipeline": r.pipeline,
            "reminder_id": r.reminder_id,
            "master_id": r.master_id,
            "project": r.project,
            "owner": r.owner,
            "state": r.state.as_str(),
            "deadline": r.deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        if let Some(n) = repeat {
            payload["repeat"] = n.into();
        }
        if kind == OVERDUE {
            payload["next_due_at"] = r
                .next_due_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .into();
        }
        if let Some(by) = &r.closed_by {
            payload["closed_by"] = by.as_str().into();
        }
        Self {
            event_id,
            kind,
            reminder: r.clone(),
            repeat,
            payload: payload.to_string(),
            created_at: now,
        }
    }
}

fn ts_array(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(v).with_timezone("UTC"))
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// `reminders` rows.
pub fn reminders_batch(rows: &[Reminder]) -> Result<RecordBatch, ReminderError> {
    let s = |f: &dyn Fn(&Reminder) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let t = |f: &dyn Fn(&Reminder) -> Option<DateTime<Utc>>| ts_array(rows.iter().map(|r| f(r).map(us)));
    let cols: Vec<ArrayRef> = vec![
        s(&|r| Some(r.reminder_id.as_str())),
        s(&|r| Some(r.pipeline.as_str())),
        s(&|r| Some(r.master_id.as_str())),
        s(&|r| Some(r.project.as_str())),
        s(&|r| r.owner.as_deref()),
        s(&|r| Some(r.state.as_str())),
        t(&|r| Some(r.created_at)),
        t(&|r| Some(r.deadline)),
        t(&|r| Some(r.next_due_at)),
        Arc::new(rows.iter().map(|r| r.repeats).collect::<Int64Array>()),
        t(&|r| r.snoozed_until),
        t(&|r| r.closed_at),
        s(&|r| r.closed_by.as_deref()),
        s(&|r| r.run_id.as_deref()),
        t(&|r| Some(r.updated_at)),
    ];
    Ok(RecordBatch::try_new(REMINDERS_SCHEMA.clone(), cols)?)
}

/// `outbox` rows.
pub fn outbox_batch(events: &[OutboxEvent]) -> Result<RecordBatch, ReminderError> {
    let s = |f: &dyn Fn(&OutboxEvent) -> Option<&str>| -> ArrayRef {
        Arc::new(events.iter().map(f).collect::<StringArray>())
    };
    let cols: Vec<ArrayRef> = vec![
        s(&|e| Some(e.event_id.as_str())),
        s(&|e| Some(e.kind)),
        s(&|e| Some(e.reminder.pipeline.as_str())),
        s(&|e| Some(e.reminder.reminder_id.as_str())),
        s(&|e| Some(e.reminder.master_id.as_str())),
        s(&|e| Some(e.reminder.project.as_str())),
        s(&|e| e.reminder.owner.as_deref()),
        ts_array(events.iter().map(|e| Some(us(e.reminder.deadline)))),
        Arc::new(events.iter().map(|e| e.repeat).collect::<Int64Array>()),
        s(&|e| Some(e.payload.as_str())),
        ts_array(events.iter().map(|e| Some(us(e.created_at)))),
    ];
    Ok(RecordBatch::try_new(OUTBOX_SCHEMA.clone(), cols)?)
}

/// Staged tables for reminders (upserted, or appended when all are new)
/// and their events (always appended: the outbox is append-only so runs and
/// ticks never fight over its rows).
pub fn staged(
    reminders: &[Reminder],
    events: &[OutboxEvent],
    all_new: bool,
) -> Result<Vec<StagedTable>, ReminderError> {
    let mut t = Vec::new();
    if !reminders.is_empty() {
        t.push(StagedTable {
            table: "reminders".into(),
            mode: WriteMode::upsert_if(!all_new),
            batches: vec![reminders_batch(reminders)?],
        });
    }
    if !events.is_empty() {
        t.push(StagedTable {
            table: "outbox".into(),
            mode: WriteMode::Append,
            batches: vec![outbox_batch(events)?],
        });
    }
    Ok(t)
}

/// Delta may hand text back as views and times with other units: one shape.
pub(super) fn text(b: &RecordBatch, name: &str) -> Result<StringArray, ReminderError> {
    let c = column(b, name)?;
    Ok(arrow::compute::cast(c, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

pub(super) fn times(b: &RecordBatch, name: &str) -> Result<TimestampMicrosecondArray, ReminderError> {
    let c = column(b, name)?;
    let t = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))?;
    Ok(t.as_primitive::<TimestampMicrosecondType>().clone())
}

pub(super) fn ints(b: &RecordBatch, name: &str) -> Result<Int64Array, ReminderError> {
    let c = column(b, name)?;
    Ok(arrow::compute::cast(c, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ReminderError> {
    b.column_by_name(name)
        .ok_or_else(|| ReminderError::Schema(format!("warehouse table lacks column `{name}`")))
}

pub(super) fn at(a: &TimestampMicrosecondArray, i: usize) -> Option<DateTime<Utc>> {
    (!a.is_null(i))
        .then(|| Utc.timestamp_micros(a.value(i)).single())
        .flatten()
}

pub(super) fn opt_text(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

/// Reminders read back from query batches with every `reminders` column.
pub fn reminders_from(batches: &[RecordBatch]) -> Result<Vec<Reminder>, ReminderError> {
    let mut out = Vec::new();
    for b in batches {
        let (id, pipeline, master, project, owner, state) = (
            text(b, "reminder_id")?,
            text(b, "pipeline")?,
            text(b, "master_id")?,
            text(b, "project")?,
            text(b, "owner")?,
            text(b, "state")?,
        );
        let (created, deadline, due, snoozed, closed, updated) = (
            times(b, "created_at")?,
            times(b, "deadline")?,
            times(b, "next_due_at")?,
            times(b, "snoozed_until")?,
            times(b, "closed_at")?,
            times(b, "updated_at")?,
        );
        let (repeats, closed_by, run_id) = (ints(b, "repeats")?, text(b, "closed_by")?, text(b, "run_id")?);
        for i in 0..b.num_rows() {
            let state = ReminderState::parse(state.value(i)).ok_or_else(|| {
                ReminderError::Schema(format!(
                    "reminder {} has an unknown state {:?}",
                    id.value(i),
                    state.value(i)
                ))
            })?;
            let epoch = DateTime::<Utc>::UNIX_EPOCH;
            out.push(Reminder {
                reminder_id: id.value(i).to_string(),
                pipeline: pipeline.value(i).to_string(),
                master_id: master.value(i).to_string(),
                project: project.value(i).to_string(),
                owner: opt_text(&owner, i),
                state,
                created_at: at(&created, i).unwrap_or(epoch),
                deadline: at(&deadline, i).unwrap_or(epoch),
                next_due_at: at(&due, i).unwrap_or(epoch),
                repeats: if repeats.is_null(i) { 0 } else { repeats.value(i) },
                snoozed_until: at(&snoozed, i),
                closed_at: at(&closed, i),
                closed_by: opt_text(&closed_by, i),
                run_id: opt_text(&run_id, i),
                updated_at: at(&updated, i).unwrap_or(epoch),
            });
        }
    }
    Ok(out)
}

/// A SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Reminders matching a SQL condition over the `reminders` table.
pub async fn load(warehouse: &Warehouse, condition: &str) -> Result<Vec<Reminder>, ReminderError> {
    let ctx = SessionContext::new();
    warehouse.register(&ctx, &["reminders"]).await?;
    let sql = format!("SELECT * FROM reminders WHERE {condition} ORDER BY created_at, reminder_id");
    let batches = warehouse.query(&ctx, &sql).await?;
    reminders_from(&batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reminder() -> Reminder {
        let t = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        Reminder {
            reminder_id: reminder_id("p", "m-1", "Riverside Towers"),
            pipeline: "p".into(),
            master_id: "m-1".into(),
            project: "Riverside Towers".into(),
            owner: Some("asha".into()),
            state: ReminderState::Open,
            created_at: t,
            deadline: t + chrono::Duration::minutes(5),
            next_due_at: t + chrono::Duration::minutes(5),
            repeats: 0,
            snoozed_until: None,
            closed_at: None,
            closed_by: None,
            run_id: Some("r1".into()),
            updated_at: t,
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(reminder_id("p", "m", "x"), reminder_id("p", "m", "x"));
        assert_ne!(reminder_id("p", "m", "x"), reminder_id("p", "mx", ""));
        let r = reminder_id("p", "m", "x");
        assert_ne!(event_id(&r, OVERDUE, Some(1)), event_id(&r, OVERDUE, Some(2)));
        assert_ne!(event_id(&r, CREATED, None), event_id(&r, CONTACTED, None));
        assert!(r.starts_with("rem-") && r.len() == 4 + 32);
    }

    #[test]
    fn rows_round_trip_and_payloads_carry_no_lead_data() {
        let r = reminder();
        let b = reminders_batch(std::slice::from_ref(&r)).unwrap();
        assert_eq!(reminders_from(&[b]).unwrap(), vec![r.clone()]);
        let e = OutboxEvent::new(OVERDUE, &r, Some(2), r.created_at);
        let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["event_id"], e.event_id.as_str());
        assert_eq!(v["kind"], "reminder.overdue");
        assert_eq!(v["repeat"], 2);
        assert_eq!(v["owner"], "asha");
        assert_eq!(v["deadline"], "2026-11-22T10:05:00Z");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        for k in keys {
            assert!(!["phone", "email", "first_name", "name"].contains(&k.as_str()));
        }
        let ob = outbox_batch(&[e]).unwrap();
        assert_eq!(ob.num_rows(), 1);
    }
}
