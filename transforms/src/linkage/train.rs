//! Training without labels: u from random pairs (almost all of them are
//! different people), m by expectation-maximisation over the blocked
//! candidate pairs with u held fixed, and the prior from EM's share of
//! matches among the candidates.

use std::collections::HashMap;

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use super::compare::level_labels;
use super::config::LinkageConfig;
use super::frame::Frame;
use super::model::{ComparisonModel, LevelModel, MODEL_FORMAT, Model};
use super::score::Scorer;

/// What training reports besides the model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub random_pairs: u64,
    pub candidate_pairs: u64,
    pub em_iterations: u32,
    /// Share of candidate pairs EM takes for matches.
    pub match_share: f64,
    /// Pairs a person said are one person, added to m (see [`train`]).
    pub labelled_pairs: u64,
}

/// How many pairs EM's m counts for beside labelled pairs: with more
/// labels than this, the labels outweigh EM.
const LABEL_WEIGHT: f64 = 20.0;

/// m with the level counts of `labels` (pairs known to be one person)
/// added: `(m * LABEL_WEIGHT + count) / (LABEL_WEIGHT + labelled)` per
/// comparison, over the labelled pairs where it is not missing.
fn with_labels(
    config: &LinkageConfig,
    f: &Frame,
    mut m: Vec<Vec<f64>>,
    labels: &[(u32, u32)],
) -> Vec<Vec<f64>> {
    for (c, cfg) in config.comparisons.iter().enumerate() {
        let mut counts = vec![0.0; m[c].len()];
        let mut n = 0.0;
        for &(a, b) in labels {
            if let Some(l) =
                super::compare::compare(cfg, &f.prepared[c][a as usize], &f.prepared[c][b as usize])
                && l < counts.len()
            {
                counts[l] += 1.0;
                n += 1.0;
            }
        }
        if n > 0.0 {
            for (x, k) in m[c].iter_mut().zip(&counts) {
                *x = (*x * LABEL_WEIGHT + k) / (LABEL_WEIGHT + n);
            }
        }
    }
    m
}

/// splitmix64: deterministic sampling without a `rand` dependency.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Level counts per comparison over random pairs.
fn estimate_u(
    config: &LinkageConfig,
    scorer: &Scorer,
    f: &Frame,
    samples: usize,
    seed: u64,
) -> Vec<Vec<f64>> {
    let n = f.len as u64;
    let counts: Vec<Vec<u64>> = (0..samples as u64)
        .into_par_iter()
        .fold(
            || {
                config
                    .comparisons
                    .iter()
                    .map(|c| vec![0u64; level_labels(c).len()])
                    .collect::<Vec<_>>()
            },
            |mut acc, s| {
                let a = mix(seed ^ (2 * s)) % n;
                let mut b = mix(seed ^ (2 * s + 1)) % n;
                if a == b {
                    b = (b + 1) % n;
                }
                for (c, l) in scorer.levels(f, a as usize, b as usize).into_iter().enumerate() {
                    if let Some(l) = l {
                        acc[c][l] += 1;
                    }
                }
                acc
            },
        )
        .reduce(
            || {
                config
                    .comparisons
                    .iter()
                    .map(|c| vec![0u64; level_labels(c).len()])
                    .collect()
            },
            |mut x, y| {
                for (a, b) in x.iter_mut().zip(y) {
                    for (p, q) in a.iter_mut().zip(b) {
                        *p += q;
                    }
                }
                x
            },
        );
    // Half a pair for a level never seen: rare levels stay rare, not zero.
    counts
        .into_iter()
        .map(|c| {
            let total: f64 = c.iter().sum::<u64>() as f64 + 0.5 * c.len() as f64;
            c.iter().map(|&k| (k as f64 + 0.5) / total).collect()
        })
        .collect()
}

/// Level patterns of pairs with counts; comparisons in `skip` count as
/// missing.
fn patterns(
    scorer: &Scorer,
    f: &Frame,
    pairs: &[(u32, u32)],
    skip: &[bool],
) -> Vec<(Vec<Option<usize>>, f64)> {
    let map: HashMap<Vec<Option<usize>>, u64> = pairs
        .par_iter()
        .fold(
            HashMap::new,
            |mut acc: HashMap<Vec<Option<usize>>, u64>, &(a, b)| {
                let mut levels = scorer.levels(f, a as usize, b as usize);
                for (l, s) in levels.iter_mut().zip(skip) {
                    if *s {
                        *l = None;
                    }
                }
                *acc.entry(levels).or_default() += 1;
                acc
            },
        )
        .reduce(HashMap::new, |mut x, y| {
            for (k, v) in y {
                *x.entry(k).or_default() += v;
            }
            x
        });
    map.into_iter().map(|(k, v)| (k, v as f64)).collect()
}

/// Posterior match probability of a pattern.
fn posterior(levels: &[Option<usize>], m: &[Vec<f64>], u: &[Vec<f64>], lambda: f64) -> f64 {
    let (mut pm, mut pu) = (lambda, 1.0 - lambda);
    for (c, l) in levels.iter().enumerate() {
        if let Some(l) = l {
            pm *= m[c][*l].max(1e-12);
            pu *= u[c][*l].max(1e-12);
        }
    }
    pm / (pm + pu)
}

/// EM with u fixed: m of the comparisons not skipped, and the match share.
fn em(
    pats: &[(Vec<Option<usize>>, f64)],
    m0: &[Vec<f64>],
    u: &[Vec<f64>],
    skip: &[bool],
) -> (Vec<Vec<f64>>, f64, u32) {
    let mut m = m0.to_vec();
    let mut lambda = 0.3;
    let total: f64 = pats.iter().map(|p| p.1).sum();
    let mut iterations = 0;
    if total == 0.0 {
        return (m, lambda, 0);
    }
    for it in 0..100 {
        iterations = it + 1;
        let mut num: Vec<Vec<f64>> = m.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut matched = 0.0;
        for (levels, count) in pats {
            let post = posterior(levels, &m, u, lambda);
            matched += post * count;
            for (c, l) in levels.iter().enumerate() {
                if let Some(l) = l {
                    num[c][*l] += post * count;
                }
            }
        }
        let new_lambda = (matched / total).clamp(1e-6, 1.0 - 1e-6);
        let mut delta = (new_lambda - lambda).abs();
        for (c, v) in num.iter().enumerate() {
            let s: f64 = v.iter().sum();
            if skip[c] || s < 1e-9 {
                continue;
            }
            let s = s + 1e-3 * v.len() as f64;
            for (l, x) in v.iter().enumerate() {
                let nm = (x + 1e-3) / s;
                delta = delta.max((nm - m[c][l]).abs());
                m[c][l] = nm;
            }
        }
        lambda = new_lambda;
        if delta < 1e-5 {
            break;
        }
    }
    (m, lambda, iterations)
}

/// Train a model on a frame (every row a record of the data set), as
/// Splink does: u from random pairs; then per blocking rule, EM over that
/// rule's candidate pairs with the comparisons the rule reads left out
/// (their agreement is forced by the block); each comparison's m is the
/// mean over the rules that estimated it; the prior from the match share
/// of all candidates under the final m and u. `group` drops pairs within
/// one group (linking two data sets). `start` seeds m when it fits the
/// comparisons, else neutral guesses do. `labels`: pairs of rows a person
/// said are one person (approved reviews); their level counts are added
/// to m ([`with_labels`]). Pairs a person said are not one person are no
/// sample of non-matches (they are the hard ones), so u stays from random
/// pairs.
pub async fn train(
    config: &LinkageConfig,
    start: &Model,
    f: &Frame,
    group: Option<&[u32]>,
    labels: &[(u32, u32)],
    name: &str,
    trained_at: &str,
) -> Result<(Model, TrainReport), super::LinkageError> {
    let start = if start.check(&config.comparisons).is_ok() {
        start.clone()
    } else {
        Model::initial(&config.comparisons, 1e-4)
    };
    let scorer = Scorer::new(config.clone(), start.clone())?;
    let samples = (f.len * 20).clamp(10_000, 1_000_000);
    let u = estimate_u(
        config,
        &scorer,
        f,
        samples,
        0x1ead_f10e ^ xxh3_64(name.as_bytes()),
    );
    let m0: Vec<Vec<f64>> = config
        .comparisons
        .iter()
        .map(|c| {
            start
                .comparisons
                .iter()
                .find(|x| x.name == c.name)
                .map(|cm| cm.levels.iter().map(|l| l.m).collect())
                .unwrap_or_default()
        })
        .collect();
    let k = config.comparisons.len();
    let mut sums: Vec<Vec<f64>> = m0.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut runs = vec![0u32; k];
    let mut iterations = 0;
    for rule in &config.blocking {
        let skip: Vec<bool> = config
            .comparisons
            .iter()
            .map(|c| {
                c.columns
                    .iter()
                    .any(|col| rule.parts.iter().any(|p| &p.column == col))
            })
            .collect();
        let one = LinkageConfig {
            blocking: vec![rule.clone()],
            ..config.clone()
        };
        let (pairs, _) = super::candidates(&one, f, f.len, group).await?;
        let pats = patterns(&scorer, f, &pairs, &skip);
        let (m, _, it) = em(&pats, &m0, &u, &skip);
        iterations += it;
        for c in (0..k).filter(|&c| !skip[c]) {
            if pats.is_empty() {
                continue;
            }
            runs[c] += 1;
            for (s, x) in sums[c].iter_mut().zip(&m[c]) {
                *s += x;
            }
        }
    }
    let m: Vec<Vec<f64>> = (0..k)
        .map(|c| {
            if runs[c] == 0 {
                m0[c].clone()
            } else {
                sums[c].iter().map(|s| s / runs[c] as f64).collect()
            }
        })
        .collect();
    let m = with_labels(config, f, m, labels);
    // The prior: the match share of all candidates, m and u fixed.
    let (all, _) = super::candidates(config, f, f.len, group).await?;
    let pats = patterns(&scorer, f, &all, &vec![false; k]);
    let total: f64 = pats.iter().map(|p| p.1).sum();
    let mut lambda = 0.1;
    for _ in 0..200 {
        if total == 0.0 {
            break;
        }
        let matched: f64 = pats.iter().map(|(l, c)| posterior(l, &m, &u, lambda) * c).sum();
        let next = (matched / total).clamp(1e-6, 1.0 - 1e-6);
        if (next - lambda).abs() < 1e-7 {
            lambda = next;
            break;
        }
        lambda = next;
    }
    let n = f.len as f64;
    let all_pairs = match group {
        // Pairs across groups only.
        Some(g) => {
            let mut sizes: HashMap<u32, f64> = HashMap::new();
            for x in g {
                *sizes.entry(*x).or_default() += 1.0;
            }
            let s: f64 = sizes.values().sum();
            ((s * s - sizes.values().map(|v| v * v).sum::<f64>()) / 2.0).max(1.0)
        }
        None => (n * (n - 1.0) / 2.0).max(1.0),
    };
    let prior = (lambda * total / all_pairs).clamp(1e-12, 0.5);
    let comparisons = config
        .comparisons
        .iter()
        .enumerate()
        .map(|(c, cfg)| ComparisonModel {
            name: cfg.name.clone(),
            levels: level_labels(cfg)
                .into_iter()
                .enumerate()
                .map(|(l, label)| LevelModel {
                    label,
                    m: round(m[c][l]),
                    u: round(u[c][l]),
                })
                .collect(),
        })
        .collect();
    let model = Model {
        format: MODEL_FORMAT,
        name: name.into(),
        trained_at: trained_at.into(),
        trained_records: f.len as u64,
        trained_pairs: all.len() as u64,
        prior: round(prior),
        prior_records: f.len as u64,
        comparisons,
    };
    Ok((
        model,
        TrainReport {
            random_pairs: samples as u64,
            candidate_pairs: all.len() as u64,
            em_iterations: iterations,
            match_share: lambda,
            labelled_pairs: labels.len() as u64,
        },
    ))
}

/// Six significant digits: a readable JSON.
fn round(x: f64) -> f64 {
    format!("{x:.6e}").parse().unwrap_or(x)
}
