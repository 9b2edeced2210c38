//! Validation: YAML rules evaluated on whole normalised batches. A failing row
//! is never dropped: it leaves with every reason it failed, for `rejects`.

pub mod config;
mod rules;

pub use config::{OnInvalid, ValidateConfig};
pub use rules::{Reason, ValidateError, Validation, Validator};
