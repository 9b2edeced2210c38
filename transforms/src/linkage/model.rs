//! Fellegi-Sunter model: per comparison level the probability `m` of that
//! level among true matches and `u` among non-matches; the level's match
//! weight is log2(m/u). A pair's weight = prior weight + the sum of its
//! levels' weights; its match probability = 2^w / (1 + 2^w). Models are
//! versioned JSON (`format`); the built-in lead model is embedded.

use serde::{Deserialize, Serialize};

use super::LinkageError;
use super::compare::level_labels;
use super::config::{ComparisonConfig, LinkageConfig};

/// The JSON format this code reads and writes.
pub const MODEL_FORMAT: u32 = 1;

/// The built-in model for leads (see `default_leads.json`).
const DEFAULT_LEADS: &str = include_str!("default_leads.json");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelModel {
    pub label: String,
    /// P(level | match).
    pub m: f64,
    /// P(level | non-match).
    pub u: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparisonModel {
    pub name: String,
    pub levels: Vec<LevelModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// JSON format version ([`MODEL_FORMAT`]).
    pub format: u32,
    /// What the model is for, and how it was made.
    pub name: String,
    /// When it was trained (RFC 3339), or "built-in".
    pub trained_at: String,
    /// Records and pairs it was trained on (0 for the built-in model).
    #[serde(default)]
    pub trained_records: u64,
    #[serde(default)]
    pub trained_pairs: u64,
    /// Probability that two records picked at random are the same person.
    pub prior: f64,
    /// Records the prior was measured or set for (0: never rescaled). A
    /// person has about as many duplicates however many records there are,
    /// so the chance that two random records match falls as the population
    /// grows: linking among N > `prior_records` records uses
    /// `prior * prior_records / N` ([`Model::prior_weight_for`]). A fixed
    /// prior let namesakes through as the warehouse grew (BENCHMARKS.md).
    #[serde(default)]
    pub prior_records: u64,
    pub comparisons: Vec<ComparisonModel>,
}

/// Smallest probability a level is given, so no weight is infinite.
const FLOOR: f64 = 1e-9;

impl Model {
    /// The built-in lead model.
    pub fn default_leads() -> Model {
        serde_json::from_str(DEFAULT_LEADS).expect("the built-in lead model is valid JSON")
    }

    pub fn from_json(text: &str) -> Result<Model, LinkageError> {
        let m: Model = serde_json::from_str(text).map_err(|e| LinkageError::Model(e.to_string()))?;
        if m.format != MODEL_FORMAT {
            return Err(LinkageError::Model(format!(
                "model format {} is not supported (this leadflow reads format {MODEL_FORMAT}); retrain with `leadflow train`",
                m.format
            )));
        }
        Ok(m)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a model serialises")
    }

    /// Load the configured model, or the built-in one.
    pub fn for_config(config: &LinkageConfig) -> Result<Model, LinkageError> {
        let model = match &config.model {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| LinkageError::Model(format!("cannot read model {path}: {e}")))?;
                Model::from_json(&text)?
            }
            None => Model::default_leads(),
        };
        model.check(&config.comparisons)?;
        Ok(model)
    }

    /// Does the model fit these comparisons (same names, same levels)?
    pub fn check(&self, comparisons: &[ComparisonConfig]) -> Result<(), LinkageError> {
        for c in comparisons {
            let Some(cm) = self.comparisons.iter().find(|x| x.name == c.name) else {
                return Err(LinkageError::Model(format!(
                    "model `{}` has no comparison `{}`; train one for these comparisons with `leadflow train`",
                    self.name, c.name
                )));
            };
            let labels = level_labels(c);
            let have: Vec<&str> = cm.levels.iter().map(|l| l.label.as_str()).collect();
            if have != labels {
                return Err(LinkageError::Model(format!(
                    "model `{}` comparison `{}` has levels {:?}, the config's {:?} kind has {:?}; retrain",
                    self.name, c.name, have, c.kind, labels
                )));
            }
        }
        Ok(())
    }

    /// A model with neutral guesses for these comparisons: m falls and u
    /// rises level by level. EM's starting point when nothing better exists.
    pub fn initial(comparisons: &[ComparisonConfig], prior: f64) -> Model {
        let comparisons = comparisons
            .iter()
            .map(|c| {
                let labels = level_labels(c);
                let k = labels.len();
                let mut m: Vec<f64> = (0..k).map(|i| 0.5f64.powi(i as i32 + 1)).collect();
                m[k - 1] = m[k - 1].max(0.05);
                let mut u: Vec<f64> = (0..k).map(|i| 0.1f64.powi((k - 1 - i) as i32 + 1)).collect();
                u[k - 1] = 0.9;
                let (sm, su): (f64, f64) = (m.iter().sum(), u.iter().sum());
                ComparisonModel {
                    name: c.name.clone(),
                    levels: labels
                        .into_iter()
                        .zip(m.iter().zip(&u))
                        .map(|(label, (m, u))| LevelModel {
                            label,
                            m: m / sm,
                            u: u / su,
                        })
                        .collect(),
                }
            })
            .collect();
        Model {
            format: MODEL_FORMAT,
            name: "initial".into(),
            trained_at: "untrained".into(),
            trained_records: 0,
            trained_pairs: 0,
            prior,
            prior_records: 0,
            comparisons,
        }
    }

    /// Weights per comparison (in config order) and level.
    pub fn weights(&self, comparisons: &[ComparisonConfig]) -> Vec<Vec<f64>> {
        comparisons
            .iter()
            .map(|c| {
                let cm = self
                    .comparisons
                    .iter()
                    .find(|x| x.name == c.name)
                    .expect("checked");
                cm.levels
                    .iter()
                    .map(|l| (l.m.max(FLOOR) / l.u.max(FLOOR)).log2())
                    .collect()
            })
            .collect()
    }

    /// u of each comparison's exact level (term-frequency adjustment).
    pub fn exact_u(&self, comparisons: &[ComparisonConfig]) -> Vec<f64> {
        comparisons
            .iter()
            .map(|c| {
                self.comparisons
                    .iter()
                    .find(|x| x.name == c.name)
                    .and_then(|cm| cm.levels.first())
                    .map_or(1.0, |l| l.u.max(FLOOR))
            })
            .collect()
    }

    /// log2 of the prior odds, as the model states it.
    pub fn prior_weight(&self) -> f64 {
        log2_odds(self.prior, FLOOR)
    }

    /// How much smaller than its stated prior the model's prior is among
    /// `population` records: `prior_records / population` when the population
    /// is larger, else `None` (never up: below its size the prior stands).
    pub fn prior_scale(&self, population: u64) -> Option<f64> {
        (self.prior_records != 0 && population > self.prior_records)
            .then(|| self.prior_records as f64 / population as f64)
    }

    /// log2 of the prior odds among `population` records: the model's prior
    /// scaled by [`Model::prior_scale`].
    pub fn prior_weight_for(&self, population: u64) -> f64 {
        match self.prior_scale(population) {
            // A scaled prior may fall below FLOOR: at 1e9 records it is ~1e-9.
            Some(scale) => log2_odds(self.prior * scale, FLOOR * FLOOR),
            None => self.prior_weight(),
        }
    }
}

/// log2 of the odds of `p`, kept `floor` away from 0 and 1.
fn log2_odds(p: f64, floor: f64) -> f64 {
    let p = p.clamp(floor, 1.0 - FLOOR);
    (p / (1.0 - p)).log2()
}

/// Match probability of a total weight.
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_fits_the_lead_comparisons_and_round_trips() {
        let m = Model::default_leads();
        m.check(&LinkageConfig::lead_comparisons()).unwrap();
        let back = Model::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        let w = m.weights(&LinkageConfig::lead_comparisons());
        assert!(w[1][0] > 5.0, "an exact phone is strong evidence");
        assert!(w[0][5] < 0.0, "surname only (siblings) counts against");
        assert!((probability(0.0) - 0.5).abs() < 1e-12);
        let base = m.prior_weight();
        assert_eq!(m.prior_weight_for(m.prior_records / 2), base, "never raised");
        let tenfold = m.prior_weight_for(m.prior_records * 10);
        assert!((base - tenfold - 10f64.log2()).abs() < 0.01, "{base} {tenfold}");
        let mut fixed = m.clone();
        fixed.prior_records = 0;
        assert_eq!(fixed.prior_weight_for(u64::MAX), base, "0 = never rescaled");
        let mut old = m.clone();
        old.format = 99;
        assert!(Model::from_json(&old.to_json()).is_err());
    }

    #[test]
    fn a_model_for_other_comparisons_is_refused() {
        let mut c = LinkageConfig::lead_comparisons();
        c[0].name = "full_name".into();
        let e = Model::default_leads().check(&c).unwrap_err().to_string();
        assert!(e.contains("full_name"), "{e}");
    }
}
