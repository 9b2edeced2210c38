//! The daemon's reminder and event loop, and the reminder routes.
//!
//! Every `daemon.events_every` the loop advances reminders
//! ([`reminders::tick`]) and delivers pending outbox events
//! ([`reminders::deliver_pending`]), feeding the reminder and delivery
//! metrics. Runs write `reminder.created` events in their own commit; the
//! loop delivers them on its next turn.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use leadflow_sinks::events::EventOutput;
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, warn};

use super::AppState;
use super::api::ApiError;
use crate::config::LoadedConfig;
use crate::reminders::{self, DeliverOptions, ReminderError, ReminderState, cli as rcli};

/// The event outputs of the current config, built once per config (a
/// NATS output keeps its connection) and rebuilt after a reload.
#[derive(Default)]
pub struct Outputs {
    built: Option<(Arc<LoadedConfig>, Vec<EventOutput>)>,
}

impl Outputs {
    fn for_config(&mut self, config: &Arc<LoadedConfig>) -> Option<&[EventOutput]> {
        if !self.built.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, config)) {
            match rcli::outputs(config) {
                Ok(o) => self.built = Some((config.clone(), o)),
                Err(e) => {
                    warn!(error = %e, "event outputs cannot be built");
                    self.built = None;
                    return None;
                }
            }
        }
        self.built.as_ref().map(|(_, o)| o.as_slice())
    }
}

/// One turn: tick, then one delivery round. Errors are logged, never
/// fatal: the next turn tries again. Returns whether a full batch went out
/// (more is probably waiting: the loop goes on without sleeping).
pub async fn turn(state: &AppState, outputs: &mut Outputs) -> bool {
    let config = state.config();
    match reminders::tick(&state.warehouse, &config.config.pipelines, Utc::now()).await {
        Ok(t) => {
            for (pipeline, c) in &t.pipelines {
                state.metrics.reminders(pipeline, "overdue", c.overdue);
                state.metrics.reminders(pipeline, "expired", c.expired);
                state.metrics.reminders_open(pipeline, c.open as i64);
            }
        }
        Err(e) => warn!(error = %e, "reminder tick failed; retrying next turn"),
    }
    let Some(outputs) = outputs.for_config(&config) else {
        return false;
    };
    if outputs.is_empty() {
        return false;
    }
    let opts = DeliverOptions {
        max_rounds: 1,
        ..Default::default()
    };
    match reminders::deliver_pending(&state.warehouse, outputs, &opts).await {
        Ok(d) => {
            let full = d
                .outputs
                .values()
                .any(|c| c.delivered + c.failed >= opts.batch_size as u64);
            for (output, c) in &d.outputs {
                state.metrics.init_output(output);
                state.metrics.delivered(output, c.delivered);
                state.metrics.delivery_failed(output, c.failed);
                state.metrics.dead(output, c.dead);
                debug!(output = %output, delivered = c.delivered, backlog = c.backlog, "events delivered");
            }
            full
        }
        Err(e) => {
            warn!(error = %e, "event delivery failed; retrying next turn");
            false
        }
    }
}

/// Run [`turn`] every `events_every` until shutdown starts.
pub fn spawn_loop(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stop = state.shutdown_signal();
        let mut more = false;
        let mut outputs = Outputs::default();
        loop {
            // A backlog is worked off turn after turn; otherwise wait.
            let every = if more {
                Duration::ZERO
            } else {
                state.config().config.daemon.events_every
            };
            // The watch guard must not live across an await (not Send).
            let stopping = async { stop.wait_for(|s| *s).await.map(|_| ()) };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopping => break,
            }
            more = turn(&state, &mut outputs).await;
        }
        // Deliver what the last runs wrote before the process ends.
        turn(&state, &mut outputs).await;
    })
}

fn reminder_error(e: ReminderError) -> ApiError {
    let status = match &e {
        ReminderError::NotFound(_) => StatusCode::NOT_FOUND,
        ReminderError::AlreadyClosed { .. } => StatusCode::CONFLICT,
        ReminderError::Invalid(_) => StatusCode::BAD_REQUEST,
        ReminderError::Conflict(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            warn!(error = %e, "reminder operation failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, e.to_string())
}

fn view(r: &reminders::Reminder) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_else(|_| json!({ "reminder_id": r.reminder_id }))
}

/// `POST /api/v1/reminders/{id}/contacted`
pub async fn contacted(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = reminders::mark_contacted(&state.warehouse, &id, "api", Utc::now())
        .await
        .map_err(reminder_error)?;
    state.metrics.reminders(&r.pipeline, "contacted", 1);
    Ok(Json(view(&r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    minutes: u32,
}

/// `POST /api/v1/reminders/{id}/snooze` with `{"minutes": N}`
pub async fn snooze(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Result<Json<SnoozeBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let r = reminders::snooze(&state.warehouse, &id, body.minutes, Utc::now())
        .await
        .map_err(reminder_error)?;
    Ok(Json(view(&r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pipeline: Option<String>,
    /// open, snoozed, contacted or expired; default open and snoozed.
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/reminders?pipeline=&state=&limit=`
pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query?;
    let states = match q.state.as_deref() {
        None => vec![ReminderState::Open, ReminderState::Snoozed],
        Some(s) => vec![ReminderState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state {s:?}: expected open, snoozed, contacted or expired"),
            )
        })?],
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
    let rows = reminders::list(&state.warehouse, q.pipeline.as_deref(), &states, limit)
        .await
        .map_err(reminder_error)?;
    Ok(Json(
        json!({ "reminders": rows.iter().map(view).collect::<Vec<_>>() }),
    ))
}
