//! Mapping configuration: how source columns become lead fields.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How source columns map onto lead fields.
///
/// Headers are matched ignoring case, spaces and punctuation, so "E-mail",
/// "email" and "EMAIL " are one header. Built-in aliases cover the usual
/// spellings ("Mobile No.", "Contact Number", "Surname", ...); add yours here.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    /// Explicit `source header: lead field` pairs. They win over aliases.
    pub columns: BTreeMap<String, String>,
    /// More header aliases per lead field, e.g. `phone: ["WhatsApp No"]`.
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Value maps per lead field, e.g. `status: {"Hot Lead": hot}`. Keys match
    /// ignoring case, spaces and punctuation. Status values that no map names
    /// become lower_snake_case.
    pub values: BTreeMap<String, BTreeMap<String, String>>,
    /// Source columns to drop (not even kept as extras).
    pub ignore: Vec<String>,
    /// Keep unmapped columns as a JSON object in `extras` (default: true).
    #[serde(default = "yes")]
    pub keep_extras: bool,
}

fn yes() -> bool {
    true
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            columns: BTreeMap::new(),
            aliases: BTreeMap::new(),
            values: BTreeMap::new(),
            ignore: Vec::new(),
            keep_extras: true,
        }
    }
}

/// Values a pipeline fills in when a row has none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Project for rows without one.
    pub project: Option<String>,
    /// Region (ISO 3166-1 alpha-2, e.g. IN) for phone numbers written without
    /// a country code, when the row's own country does not say.
    pub phone_region: Option<String>,
    /// Status of a new project link whose rows give none (default: `new`).
    /// A row without a status never changes an existing link's status.
    pub status: Option<String>,
    /// Owner for rows without one.
    pub owner: Option<String>,
}
