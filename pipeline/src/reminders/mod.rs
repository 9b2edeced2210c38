//! Reminders, owner assignment and event delivery.
//!
//! - A run assigns owners to its project links and writes a reminder (plus a
//!   `reminder.created` event in the `outbox`) for each new (master,
//!   project) link, in the run's own commit: [`stage_for_run`].
//! - [`tick`] turns missed deadlines into `reminder.overdue` events and
//!   expires reminders after `max_repeats`; [`mark_contacted`] and
//!   [`snooze`] are the API and CLI actions.
//! - [`deliver_pending`] sends outbox events to the configured outputs
//!   (file, webhook, NATS) at least once, keeping per-output state in
//!   `deliveries`.

pub mod assign;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod schedule;
pub mod state;

pub use config::{AssignmentConfig, QuietHours, RemindersConfig};
pub use delivery::{DeliverOptions, DeliveryReport, OutputDelivery, deliver_pending};
pub use engine::{
    PipelineTick, ReminderStats, RunReminders, TickReport, list, mark_contacted, snooze, stage_for_run,
    stats, tick,
};
pub use state::{Reminder, ReminderState};

/// Why a reminder operation failed. `NotFound` and `AlreadyClosed` are the
/// caller's (HTTP 404 and 409), `Invalid` is a bad argument (400); the
/// rest are the warehouse's.
#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error("no reminder with id `{0}`")]
    NotFound(String),
    #[error("reminder `{id}` is already {state}; only open or snoozed reminders can change")]
    AlreadyClosed { id: String, state: ReminderState },
    #[error("{0}")]
    Invalid(String),
    #[error("another leadflow process kept changing table `{0}` at the same time; try again")]
    Conflict(String),
    #[error("unexpected warehouse data: {0}")]
    Schema(String),
    // Boxed: large, and everything here returns Result.
    #[error(transparent)]
    Warehouse(Box<leadflow_sinks::WarehouseError>),
    #[error(transparent)]
    Query(Box<datafusion::error::DataFusionError>),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl crate::retry::Contended for ReminderError {
    fn conflict_table(&self) -> Option<&str> {
        match self {
            Self::Conflict(table) => Some(table),
            _ => None,
        }
    }
}

impl From<leadflow_sinks::WarehouseError> for ReminderError {
    fn from(e: leadflow_sinks::WarehouseError) -> Self {
        Self::Warehouse(Box::new(e))
    }
}

impl From<datafusion::error::DataFusionError> for ReminderError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(Box::new(e))
    }
}
