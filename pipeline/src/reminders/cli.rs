//! CLI glue: what `leadflow run`, `leadflow reminders ...` and `leadflow
//! deliver` do around the engine, and how they print it.

use std::time::Duration;

use chrono::Utc;
use leadflow_sinks::Warehouse;
use leadflow_sinks::events::{EventError, EventOutput, build_outputs};

use super::{DeliverOptions, DeliveryReport, Reminder, ReminderError, TickReport, deliver_pending, tick};
use crate::config::{LoadedConfig, PipelineConfig};

/// The configured event outputs (file paths resolve against the config's folder).
pub fn outputs(loaded: &LoadedConfig) -> Result<Vec<EventOutput>, EventError> {
    build_outputs(&loaded.config.events, &loaded.base)
}

/// After runs (or on `reminders tick`): advance the reminders of
/// `pipelines`, then deliver what is due, waiting up to `wait` for retries.
pub async fn tick_and_deliver(
    loaded: &LoadedConfig,
    warehouse: &Warehouse,
    pipelines: &[PipelineConfig],
    wait: Duration,
) -> Result<(TickReport, DeliveryReport), String> {
    let ticked = tick(warehouse, pipelines, Utc::now())
        .await
        .map_err(|e| format!("reminders: {e}"))?;
    let delivered = deliver(loaded, warehouse, wait).await?;
    Ok((ticked, delivered))
}

/// Deliver pending events to every output of the config.
pub async fn deliver(
    loaded: &LoadedConfig,
    warehouse: &Warehouse,
    wait: Duration,
) -> Result<DeliveryReport, String> {
    let outs = outputs(loaded).map_err(|e| e.to_string())?;
    deliver_pending(
        warehouse,
        &outs,
        &DeliverOptions {
            wait,
            ..Default::default()
        },
    )
    .await
    .map_err(|e: ReminderError| format!("event delivery: {e}"))
}

/// `5s`, `2m`, ... for `--wait`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (say e.g. 30s or 2m)"))
}

pub fn print_tick(t: &TickReport) {
    for (p, c) in &t.pipelines {
        println!(
            "  reminders {p}: {} overdue, {} expired, {} back from snooze; {} open, {} snoozed",
            c.overdue, c.expired, c.reopened, c.open, c.snoozed
        );
    }
}

pub fn print_delivery(d: &DeliveryReport) {
    for (name, c) in &d.outputs {
        println!(
            "  events {name} ({}): {} delivered, {} failed attempts, {} dead, {} waiting",
            c.kind, c.delivered, c.failed, c.dead, c.backlog
        );
    }
}

fn time(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// A table of reminders for a terminal.
pub fn print_list(rows: &[Reminder]) {
    if rows.is_empty() {
        println!("no reminders");
        return;
    }
    println!(
        "{:<36}  {:<9}  {:<20}  {:<20}  {:>7}  {:<12}  {:<20}  master_id",
        "reminder_id", "state", "deadline", "next_due_at", "repeats", "owner", "project"
    );
    for r in rows {
        let due = match r.state {
            super::ReminderState::Snoozed => r.snoozed_until.map(time).unwrap_or_default(),
            s if s.is_closed() => "-".into(),
            _ => time(r.next_due_at),
        };
        println!(
            "{:<36}  {:<9}  {:<20}  {:<20}  {:>7}  {:<12}  {:<20}  {}",
            r.reminder_id,
            r.state.as_str(),
            time(r.deadline),
            due,
            r.repeats,
            r.owner.as_deref().unwrap_or("-"),
            r.project,
            r.master_id
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").unwrap_err().contains("30s"));
    }
}
