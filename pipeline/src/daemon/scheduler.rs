//! When pipelines run on their own: cron schedules (with seconds, in a time
//! zone) or fixed intervals, one loop per scheduled pipeline.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use tracing::{info, warn};

use super::AppState;
use super::runs::StartError;
use crate::config::PipelineConfig;

/// A pipeline's timetable.
#[derive(Debug, Clone)]
pub enum Plan {
    Cron {
        expr: String,
        schedule: Box<cron::Schedule>,
        tz: Tz,
    },
    Every(Duration),
}

/// How a plan is shown in the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl Plan {
    /// The pipeline's plan; None when it runs only when triggered. Errors
    /// only for configs that skipped the checks.
    pub fn of(p: &PipelineConfig) -> Result<Option<Plan>, String> {
        if let Some(expr) = &p.schedule {
            let schedule = cron::Schedule::from_str(expr).map_err(|e| format!("schedule {expr:?}: {e}"))?;
            let tz = match &p.time_zone {
                Some(z) => z
                    .parse::<Tz>()
                    .map_err(|_| format!("time_zone {z:?} is unknown"))?,
                None => Tz::UTC,
            };
            return Ok(Some(Plan::Cron {
                expr: expr.clone(),
                schedule: Box::new(schedule),
                tz,
            }));
        }
        Ok(p.every.map(Plan::Every))
    }

    pub fn view(&self) -> PlanView {
        match self {
            Plan::Cron { expr, tz, .. } => PlanView {
                schedule: Some(expr.clone()),
                every: None,
                time_zone: Some(tz.name().to_string()),
            },
            Plan::Every(d) => PlanView {
                schedule: None,
                every: Some(humantime_serde::re::humantime::format_duration(*d).to_string()),
                time_zone: None,
            },
        }
    }

    /// The first tick strictly after `t`. Intervals count from `anchor` (the
    /// moment the loop started), so ticks do not drift with run times.
    pub fn next_after(&self, t: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Plan::Cron { schedule, tz, .. } => schedule
                .after(&t.with_timezone(tz))
                .next()
                .map(|d| d.with_timezone(&Utc)),
            Plan::Every(d) => {
                let step = chrono::Duration::from_std(*d).ok()?;
                let step_us = step.num_microseconds()?.max(1);
                let since = (t - anchor).num_microseconds()?;
                let k = if since < 0 { 0 } else { since / step_us + 1 };
                Some(anchor + chrono::Duration::microseconds(k * step_us))
            }
        }
    }

    /// Did a tick fall after the last run started and up to `now`? Then the
    /// daemon was down (or busy) through it and runs once on start: once,
    /// however many ticks were missed.
    pub fn missed_since(&self, last_start: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        match self {
            Plan::Cron { .. } => self.next_after(last_start, last_start).is_some_and(|t| t <= now),
            Plan::Every(d) => chrono::Duration::from_std(*d).is_ok_and(|d| last_start + d <= now),
        }
    }
}

/// One pipeline's loop: sleep to the next tick, start a run, repeat. A tick
/// while the pipeline still runs is skipped (and logged). Ends at shutdown
/// (or is aborted when a reload rebuilds the schedules).
pub async fn schedule_loop(state: Arc<AppState>, pipeline: String, plan: Plan) {
    let mut shutdown = state.shutdown_signal();
    let anchor = Utc::now();
    let mut after = anchor;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(next) = plan.next_after(after, anchor) else {
            info!(pipeline = %pipeline, "schedule has no more ticks");
            state.set_next_tick(&pipeline, None);
            return;
        };
        state.set_next_tick(&pipeline, Some(next));
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // Never before `now`: after a stall (suspend, overload) the loop
        // goes on from the present instead of replaying every lost tick.
        after = std::cmp::max(next, Utc::now());
        match state.start_run(&pipeline, "schedule") {
            Ok(run_id) => {
                info!(pipeline = %pipeline, run_id = %run_id, tick = %next.to_rfc3339(), "scheduled run started")
            }
            Err(StartError::Running(run_id)) => info!(
                pipeline = %pipeline,
                running_run_id = %run_id,
                tick = %next.to_rfc3339(),
                "tick skipped: the previous run is still going"
            ),
            Err(StartError::ShuttingDown) => return,
            Err(e @ StartError::Unknown(_)) => {
                warn!(pipeline = %pipeline, error = %e, "schedule stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn cron(expr: &str, tz: Tz) -> Plan {
        Plan::Cron {
            expr: expr.into(),
            schedule: Box::new(cron::Schedule::from_str(expr).unwrap()),
            tz,
        }
    }

    fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).unwrap()
    }

    #[test]
    fn cron_ticks_follow_the_time_zone() {
        // 09:00 in Kolkata (UTC+5:30) is 03:30 UTC.
        let p = cron("0 0 9 * * *", chrono_tz::Asia::Kolkata);
        assert_eq!(p.next_after(utc(1, 0, 0), utc(1, 0, 0)), Some(utc(3, 30, 0)));
        let p = cron("0 */5 * * * *", Tz::UTC);
        assert_eq!(p.next_after(utc(1, 2, 3), utc(0, 0, 0)), Some(utc(1, 5, 0)));
        // Strictly after: a tick at `t` itself is not the next one.
        assert_eq!(p.next_after(utc(1, 5, 0), utc(0, 0, 0)), Some(utc(1, 10, 0)));
    }

    #[test]
    fn intervals_count_from_the_anchor() {
        let p = Plan::Every(Duration::from_secs(300));
        let a = utc(1, 0, 0);
        assert_eq!(p.next_after(a, a), Some(utc(1, 5, 0)));
        assert_eq!(p.next_after(utc(1, 7, 30), a), Some(utc(1, 10, 0)));
        assert_eq!(p.next_after(utc(1, 10, 0), a), Some(utc(1, 15, 0)));
    }

    #[test]
    fn missed_ticks_count_once_whatever_their_number() {
        let p = cron("0 */5 * * * *", Tz::UTC);
        // Last run 01:02, now 01:04: no tick in between.
        assert!(!p.missed_since(utc(1, 2, 0), utc(1, 4, 59)));
        // The 01:05 tick was missed.
        assert!(p.missed_since(utc(1, 2, 0), utc(1, 5, 0)));
        // Hours of missed ticks: still just "missed" (one catch-up run).
        assert!(p.missed_since(utc(1, 2, 0), utc(9, 0, 0)));
        let e = Plan::Every(Duration::from_secs(60));
        assert!(!e.missed_since(utc(1, 0, 0), utc(1, 0, 59)));
        assert!(e.missed_since(utc(1, 0, 0), utc(1, 1, 0)));
    }

    #[test]
    fn plans_from_config_and_their_view() {
        let yaml = "name: p\nsources: []\nschedule: \"0 */5 * * * *\"\ntime_zone: Asia/Kolkata\n";
        let pc: PipelineConfig = serde_norway::from_str(yaml).unwrap();
        let plan = Plan::of(&pc).unwrap().unwrap();
        assert_eq!(
            plan.view(),
            PlanView {
                schedule: Some("0 */5 * * * *".into()),
                every: None,
                time_zone: Some("Asia/Kolkata".into())
            }
        );
        let pc: PipelineConfig = serde_norway::from_str("name: p\nsources: []\nevery: 5m\n").unwrap();
        assert_eq!(
            Plan::of(&pc).unwrap().unwrap().view().every.as_deref(),
            Some("5m")
        );
        let pc: PipelineConfig = serde_norway::from_str("name: p\nsources: []\n").unwrap();
        assert!(Plan::of(&pc).unwrap().is_none());
    }
}
