//! Exact dedupe settings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A match key: a normalised value that identifies a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchKey {
    /// The phone in E.164 form (valid numbers only).
    Phone,
    /// The e-mail match key (lower-case, gmail dots and +tags folded).
    Email,
}

impl MatchKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKey::Phone => "phone",
            MatchKey::Email => "email",
        }
    }
}

/// How records are linked to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DedupeMode {
    /// Shared match keys with a name check (`keys`, `name_check`).
    #[default]
    Exact,
    /// Fellegi-Sunter record linkage (`linkage`): fuzzy matches, scores,
    /// a review queue for uncertain pairs.
    Probabilistic,
}

/// Dedupe: `exact` (records sharing a match key are one person, unless
/// their names clearly disagree: an office switchboard, a family e-mail) or
/// `probabilistic` (see `linkage`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    /// `exact` (default) or `probabilistic`.
    pub mode: DedupeMode,
    /// Keys that link records, default `[phone, email]`.
    pub keys: Vec<MatchKey>,
    /// Keep records apart when a shared key comes with clearly different
    /// names, and write the conflict to `merges` (default: true).
    pub name_check: bool,
    /// Jaro-Winkler similarity at or above which two first (or last) names
    /// agree, e.g. Preeti/Priti (default 0.85).
    pub name_similarity: f64,
    /// Probabilistic linkage settings (used when `mode: probabilistic`).
    pub linkage: crate::linkage::LinkageConfig,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            keys: vec![MatchKey::Phone, MatchKey::Email],
            name_check: true,
            name_similarity: 0.85,
            mode: DedupeMode::default(),
            linkage: crate::linkage::LinkageConfig::default(),
        }
    }
}
