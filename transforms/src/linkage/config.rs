//! Probabilistic record linkage settings: what is compared, how candidate
//! pairs are found, and where the decisions fall.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a field is compared. Each kind has fixed comparison levels (see
/// `compare::level_labels`); a missing value on either side is the neutral
/// level (weight 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonKind {
    /// A person's name, columns `[first, last]`: exact, first/last swapped,
    /// both parts alike (Jaro-Winkler >= 0.92, nickname, sound-alike), both
    /// similar (>= 0.85), initial + surname, surname only, first name only,
    /// one part missing and the other agrees, differs.
    PersonName,
    /// Phone (E.164): exact, same national significant number, same last 7
    /// digits, differs.
    Phone,
    /// E-mail match key: exact, same local part (dots ignored), same corporate domain
    /// (free-mail domains do not count), differs.
    Email,
    /// Company, normalised, legal suffixes dropped (Pvt Ltd, Inc, GmbH, ...):
    /// exact, Jaro-Winkler >= 0.9, differs.
    Company,
    /// City (folded): exact, Jaro-Winkler >= 0.88, differs.
    City,
    /// Country code: exact, differs.
    Country,
    /// Any text, compared as is (trimmed): exact, differs.
    Exact,
    /// Any text, folded: exact, one edit apart, then one level per
    /// `similarity` band (Jaro-Winkler), differs.
    String,
    /// A date (its digits, e.g. 19560412 or 1956-04-12): exact, one digit
    /// wrong, day and month transposed, same year and month, differs.
    Date,
}

/// One compared field.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComparisonConfig {
    /// Name of the comparison (the model's levels are keyed by it).
    pub name: String,
    pub kind: ComparisonKind,
    /// Input columns: `person_name` takes `[first, last]` or `[first, last,
    /// full]` (the whole name's words also count), the others one.
    pub columns: Vec<String>,
    /// Term-frequency adjustment of the exact level: a value many records
    /// share (a common name, an office switchboard) counts for less.
    #[serde(default)]
    pub term_frequency: bool,
    /// Jaro-Winkler bands of a `string` comparison, high to low
    /// (default `[0.92, 0.8]`).
    #[serde(default)]
    pub similarity: Vec<f64>,
}

/// How a column's value becomes (part of) a block key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlockTransform {
    /// The value, trimmed.
    Exact,
    /// Lower-case letters and digits only.
    Fold,
    /// Soundex-style phonetic code of the folded value (Sharma/Sharmaa).
    Phonetic,
    /// First letter of the folded value.
    Initial,
    /// Last 7 digits (phones written with or without a country code).
    Last7,
    /// The part of an e-mail before `@`, without dots.
    EmailLocal,
    /// Digits only.
    Digits,
}

/// One part of a block key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockPart {
    pub column: String,
    #[serde(default = "default_transform")]
    pub transform: BlockTransform,
}

fn default_transform() -> BlockTransform {
    BlockTransform::Exact
}

/// A blocking rule: records whose parts all agree are a candidate pair.
/// A record without a value for some part has no key under the rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockingRule {
    pub name: String,
    pub parts: Vec<BlockPart>,
}

/// Probabilistic linkage (Fellegi-Sunter): comparisons, blocking,
/// thresholds and the model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LinkageConfig {
    /// Compared fields (default: the lead model: name, phone, email,
    /// company, city, country).
    pub comparisons: Vec<ComparisonConfig>,
    /// Blocking rules (default: phone, e-mail key, last 7 phone digits,
    /// e-mail local part, phonetic surname + city, first initial + surname).
    pub blocking: Vec<BlockingRule>,
    /// Blocks with more records than this are skipped, so one common value
    /// cannot explode the pairs (default 64).
    pub max_block_size: usize,
    /// Match probability at or above which a pair is linked (default 0.95).
    pub link_threshold: f64,
    /// Match probability from which a pair that is not linked goes to
    /// `review` (default 0.5). Pairs below are different people.
    pub review_threshold: f64,
    /// Levels (`comparison.level`) that keep two records apart whatever
    /// their score, e.g. a shared family phone and e-mail with different
    /// first names (default: `name.surname_only`, `name.first_only`,
    /// `name.differs`). A vetoed pair is never linked, also not through
    /// other records; a strong one is written to `merges` as a conflict.
    pub veto: Vec<String>,
    /// A record linked at or above `link_threshold` to two existing masters
    /// merges them right after its run, as an approved review would (records
    /// re-pointed, golden record rebuilt, a `merges` row and an event; undone
    /// with `master unmerge`), unless the two golden records compared
    /// directly are vetoed (e.g. siblings whose parent left no name) or a
    /// person rejected the pair. `false`: every such pair waits in `review`
    /// (default true).
    pub merge_bridged_masters: bool,
    /// A model JSON written by `leadflow train`; default: the built-in lead
    /// model.
    pub model: Option<String>,
}

fn cmp(name: &str, kind: ComparisonKind, columns: &[&str], tf: bool) -> ComparisonConfig {
    ComparisonConfig {
        name: name.into(),
        kind,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        term_frequency: tf,
        similarity: Vec::new(),
    }
}

fn rule(name: &str, parts: &[(&str, BlockTransform)]) -> BlockingRule {
    BlockingRule {
        name: name.into(),
        parts: parts
            .iter()
            .map(|(c, t)| BlockPart {
                column: c.to_string(),
                transform: *t,
            })
            .collect(),
    }
}

impl LinkageConfig {
    /// The lead comparisons: columns of the normalised lead batch.
    pub fn lead_comparisons() -> Vec<ComparisonConfig> {
        use ComparisonKind as K;
        vec![
            cmp(
                "name",
                K::PersonName,
                &["first_name", "last_name", "full_name"],
                true,
            ),
            cmp("phone", K::Phone, &["phone"], true),
            cmp("email", K::Email, &["email_key"], true),
            cmp("company", K::Company, &["company"], false),
            cmp("city", K::City, &["city"], false),
            cmp("country", K::Country, &["country"], false),
        ]
    }

    /// The lead blocking rules.
    pub fn lead_blocking() -> Vec<BlockingRule> {
        use BlockTransform as T;
        vec![
            rule("phone", &[("phone", T::Exact)]),
            rule("email", &[("email_key", T::Exact)]),
            rule("phone_last7", &[("phone", T::Last7)]),
            rule("email_local", &[("email_key", T::EmailLocal)]),
            rule(
                "surname_sound_city",
                &[("last_name", T::Phonetic), ("city", T::Fold)],
            ),
            rule(
                "initial_surname",
                &[("first_name", T::Initial), ("last_name", T::Fold)],
            ),
        ]
    }
}

impl Default for LinkageConfig {
    fn default() -> Self {
        Self {
            comparisons: Self::lead_comparisons(),
            blocking: Self::lead_blocking(),
            max_block_size: 64,
            link_threshold: 0.95,
            review_threshold: 0.5,
            veto: ["name.surname_only", "name.first_only", "name.differs"]
                .map(String::from)
                .to_vec(),
            merge_bridged_masters: true,
            model: None,
        }
    }
}
