//! Exact dedupe settings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A match key: a normalised value that identifies a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
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

/// How a golden record picks one value of a field among its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SurvivorRule {
    /// The newest record's value (its source's creation time, else when it
    /// was read).
    #[default]
    Newest,
    /// The value most records hold; a tie goes to the newest of them.
    MostFrequent,
    /// The value from the source listed first in `source_priority`
    /// (unlisted sources after the listed ones); a tie goes to the newest.
    SourcePriority,
    /// The longest value, e.g. "Acme Industries Pvt Ltd" over "Acme"; a tie
    /// goes to the newest.
    Longest,
}

impl SurvivorRule {
    pub fn as_str(self) -> &'static str {
        match self {
            SurvivorRule::Newest => "newest",
            SurvivorRule::MostFrequent => "most_frequent",
            SurvivorRule::SourcePriority => "source_priority",
            SurvivorRule::Longest => "longest",
        }
    }
}

/// A golden-record field a rule can be set for. `name` is first, last and
/// full name together: they always come from one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SurvivorField {
    Name,
    /// The best phone (every phone seen stays in `phones`).
    Phone,
    /// The best e-mail (every e-mail seen stays in `emails`).
    Email,
    Company,
    JobTitle,
    Country,
    City,
    Website,
}

impl SurvivorField {
    pub const ALL: [SurvivorField; 8] = [
        SurvivorField::Name,
        SurvivorField::Phone,
        SurvivorField::Email,
        SurvivorField::Company,
        SurvivorField::JobTitle,
        SurvivorField::Country,
        SurvivorField::City,
        SurvivorField::Website,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SurvivorField::Name => "name",
            SurvivorField::Phone => "phone",
            SurvivorField::Email => "email",
            SurvivorField::Company => "company",
            SurvivorField::JobTitle => "job_title",
            SurvivorField::Country => "country",
            SurvivorField::City => "city",
            SurvivorField::Website => "website",
        }
    }
}

/// Survivorship: which value of each field a master's golden record keeps
/// when its records disagree. One set of rules per warehouse (all
/// pipelines write the same `masters`). Rules other than `newest` are
/// applied over all of a master's records, so a run reads the earlier
/// records of the masters it touches.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SurvivorshipConfig {
    /// Rule of every field not named in `fields` (default `newest`).
    pub default: SurvivorRule,
    /// Rules per field, e.g. `{company: most_frequent, name: source_priority}`.
    pub fields: std::collections::BTreeMap<SurvivorField, SurvivorRule>,
    /// Source names, most trusted first, for `source_priority`.
    pub source_priority: Vec<String>,
}

impl SurvivorshipConfig {
    pub fn rule(&self, field: SurvivorField) -> SurvivorRule {
        self.fields.get(&field).copied().unwrap_or(self.default)
    }

    /// True when some rule needs every record of a master, not only its
    /// current golden record and the run's new records.
    pub fn needs_history(&self) -> bool {
        SurvivorField::ALL
            .iter()
            .any(|f| self.rule(*f) != SurvivorRule::Newest)
    }

    /// Problems serde cannot see, as (key under `survivorship`, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let uses_priority = SurvivorField::ALL
            .iter()
            .any(|f| self.rule(*f) == SurvivorRule::SourcePriority);
        if uses_priority && self.source_priority.is_empty() {
            out.push((
                "source_priority".into(),
                "a field uses `source_priority` but no sources are listed: add `source_priority: [most_trusted, ...]`"
                    .into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.source_priority {
            if !seen.insert(s) {
                out.push(("source_priority".into(), format!("source `{s}` is listed twice")));
            }
        }
        out
    }
}
