//! The review queue and manual merges: what a person decides about
//! masters outside runs.
//!
//! - [`list`], [`show`], [`approve`], [`reject`]: the `review` rows that
//!   probabilistic runs write (pairs of masters the linker was unsure of).
//!   Approving merges the pair; rejecting marks it `rejected`, and since a
//!   run never rewrites a review row nor joins two existing masters, the
//!   pair stays apart and never comes back.
//! - [`merge`], [`split`], [`unmerge`]: re-point records, combine or divide
//!   project links and CRM links, rebuild golden records with the run's
//!   survivorship code, write a `merges` row (kind `merge` / `split`,
//!   holding what undoes it) and an outbox event (`master.merged` /
//!   `master.split`) for the configured outputs.
//!
//! Writes happen outside runs under the Delta txn app id `leadflow:review`,
//! one writer per process (a lock); an operation that loses a commit race
//! with another process (a run, a second CLI) is redone from fresh state.

pub mod cli;
mod ops;
mod tables;

pub use ops::{
    MergeOutcome, Review, ReviewDetail, SplitOutcome, approve, list, merge, merge_bridged, merged_into,
    reject, run_turn, show, split, unmerge,
};

/// Transaction app id of every write this module makes.
pub const APP_ID: &str = "leadflow:review";

/// Outbox event kinds.
pub const MERGED: &str = "master.merged";
pub const SPLIT: &str = "master.split";

/// Why a review or merge operation failed. `NotFound` / `Decided` /
/// `Invalid` are the caller's (HTTP 404 / 409 / 400), the rest the
/// warehouse's.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("review `{id}` is already {status}; only open reviews can be approved or rejected")]
    Decided { id: String, status: String },
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
    #[error("golden record: {0}")]
    Dedupe(#[from] leadflow_transforms::dedupe::DedupeError),
    #[error("reminders: {0}")]
    Reminders(Box<crate::reminders::ReminderError>),
}

impl From<crate::reminders::ReminderError> for ReviewError {
    fn from(e: crate::reminders::ReminderError) -> Self {
        match e {
            crate::reminders::ReminderError::Conflict(table) => Self::Conflict(table),
            other => Self::Reminders(Box::new(other)),
        }
    }
}

impl crate::retry::Contended for ReviewError {
    fn conflict_table(&self) -> Option<&str> {
        match self {
            Self::Conflict(table) => Some(table),
            _ => None,
        }
    }
}

impl From<leadflow_sinks::WarehouseError> for ReviewError {
    fn from(e: leadflow_sinks::WarehouseError) -> Self {
        if leadflow_sinks::is_commit_conflict(&e) {
            return Self::Conflict(match &e {
                leadflow_sinks::WarehouseError::Delta { table, .. } => table.clone(),
                _ => "?".into(),
            });
        }
        Self::Warehouse(Box::new(e))
    }
}

impl From<datafusion::error::DataFusionError> for ReviewError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Self::Query(Box::new(e))
    }
}
