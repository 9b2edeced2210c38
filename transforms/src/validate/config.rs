//! Validation rules as written in a pipeline's YAML.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with a row whose phone or e-mail is present but invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// The row goes to `rejects` with the reason.
    Reject,
    /// The row is kept; the invalid value stays in `phone_raw`/`email_raw`
    /// and is not used for matching.
    Keep,
}

/// Validation rules. Every failing rule of a row is reported, not just the first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateConfig {
    /// Lead fields that must have a value, e.g. `[project]`.
    pub required: Vec<String>,
    /// Groups of fields of which at least one must have a usable value.
    /// Default: `[[phone, email]]` (a lead nobody can contact is a reject).
    pub require_any: Vec<Vec<String>>,
    /// A phone that is present but not a valid number: `keep` (default: the
    /// row stays if it has another usable contact; the bad value is kept in
    /// `phone_raw` with `phone_valid = false`) or `reject`.
    pub invalid_phone: OnInvalid,
    /// An e-mail that is present but not valid: `keep` (default, as for
    /// phones) or `reject`.
    pub invalid_email: OnInvalid,
    /// Maximum length in characters per lead field, e.g. `{first_name: 100}`.
    pub max_length: BTreeMap<String, usize>,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            required: Vec::new(),
            require_any: vec![vec!["phone".into(), "email".into()]],
            invalid_phone: OnInvalid::Keep,
            invalid_email: OnInvalid::Keep,
            max_length: BTreeMap::new(),
        }
    }
}
