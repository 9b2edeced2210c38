//! Scoring pairs with a model, explaining a score, and turning scored
//! pairs into clusters and decisions.

use rayon::prelude::*;

use super::LinkageError;
use super::compare::{compare, level_labels, tf_key};
use super::config::{ComparisonKind, LinkageConfig};
use super::frame::Frame;
use super::model::{Model, probability};

/// A value must be held by at least this many records before its term
/// frequency lowers an exact level's weight (two appearances of one person
/// are normal).
const TF_MIN_COUNT: u32 = 3;

/// Term frequencies from fewer values than this say nothing about how
/// common a value is (a run of ten leads): no adjustment then.
const TF_MIN_VALUES: u64 = 1000;

/// A config with its model, ready to score.
pub struct Scorer {
    pub config: LinkageConfig,
    pub model: Model,
    labels: Vec<Vec<String>>,
    weights: Vec<Vec<f64>>,
    exact_m: Vec<f64>,
    /// (comparison, level) pairs that keep two records apart whatever the
    /// score.
    vetoes: Vec<(usize, usize)>,
    /// log2 prior odds for the population linked ([`Scorer::for_population`]).
    prior_weight: f64,
    /// The population the prior was scaled to, when it was.
    population: Option<u64>,
}

/// A scored candidate pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub a: u32,
    pub b: u32,
    /// Total match weight (prior included), log2 odds.
    pub weight: f64,
    pub probability: f64,
    pub vetoed: bool,
}

impl Scorer {
    pub fn new(config: LinkageConfig, model: Model) -> Result<Scorer, LinkageError> {
        model.check(&config.comparisons)?;
        let labels: Vec<Vec<String>> = config.comparisons.iter().map(level_labels).collect();
        let weights = model.weights(&config.comparisons);
        let exact_m = config
            .comparisons
            .iter()
            .map(|c| {
                model
                    .comparisons
                    .iter()
                    .find(|x| x.name == c.name)
                    .and_then(|cm| cm.levels.first())
                    .map_or(1.0, |l| l.m)
            })
            .collect();
        let mut vetoes = Vec::new();
        for v in &config.veto {
            let (c, l) = v
                .split_once('.')
                .ok_or_else(|| LinkageError::Config(format!("veto `{v}` is not `comparison.level`")))?;
            let ci = config
                .comparisons
                .iter()
                .position(|x| x.name == c)
                .ok_or_else(|| LinkageError::Config(format!("veto `{v}`: no comparison `{c}`")))?;
            let li = labels[ci].iter().position(|x| x == l).ok_or_else(|| {
                LinkageError::Config(format!("veto `{v}`: `{c}` has levels {:?}", labels[ci]))
            })?;
            vetoes.push((ci, li));
        }
        if !(0.0..=1.0).contains(&config.review_threshold)
            || !(0.0..=1.0).contains(&config.link_threshold)
            || config.review_threshold > config.link_threshold
        {
            return Err(LinkageError::Config(format!(
                "thresholds must satisfy 0 <= review_threshold ({}) <= link_threshold ({}) <= 1",
                config.review_threshold, config.link_threshold
            )));
        }
        let prior_weight = model.prior_weight();
        Ok(Scorer {
            config,
            model,
            labels,
            weights,
            exact_m,
            vetoes,
            prior_weight,
            population: None,
        })
    }

    /// Score among `records` records in all (a run's leads plus every
    /// master of the warehouse, not only the candidates): the model's prior
    /// scaled to that population ([`Model::prior_weight_for`]).
    pub fn for_population(mut self, records: u64) -> Scorer {
        self.prior_weight = self.model.prior_weight_for(records);
        self.population = self.model.prior_scale(records).map(|_| records);
        self
    }

    /// Levels of a pair per comparison.
    pub fn levels(&self, f: &Frame, a: usize, b: usize) -> Vec<Option<usize>> {
        self.config
            .comparisons
            .iter()
            .enumerate()
            .map(|(c, cfg)| compare(cfg, &f.prepared[c][a], &f.prepared[c][b]))
            .collect()
    }

    /// Weight of comparison `c` at `level` for the pair, with the term
    /// frequency adjustment; also how many records share the value when it
    /// was adjusted.
    fn contribution(&self, f: &Frame, c: usize, level: usize, a: usize, b: usize) -> (f64, Option<u32>) {
        let w = self.weights[c][level];
        let cfg = &self.config.comparisons[c];
        // A name with first and last swapped is the same name: it counts at
        // most what the name agreeing exactly would, common names less.
        let swapped = level == 1 && cfg.kind == ComparisonKind::PersonName;
        if level != 0 && !swapped {
            return (w, None);
        }
        let Some((counts, total)) = &f.tf[c] else {
            return (w, None);
        };
        let count = |x: usize, y: usize| {
            tf_key(cfg, &f.prepared[c][x], 0, &f.prepared[c][y]).and_then(|k| counts.get(k))
        };
        let n = if swapped {
            // Either order may be the common one: the larger count.
            match (count(a, a), count(b, b)) {
                (Some(&x), Some(&y)) => Some(x.max(y)),
                (x, y) => x.or(y).copied(),
            }
        } else {
            count(a, b).copied()
        };
        match n {
            Some(n) if n >= TF_MIN_COUNT && *total >= TF_MIN_VALUES => {
                let freq = n as f64 / (*total).max(1) as f64;
                let adjusted = (self.exact_m[c].max(1e-9) / freq).log2();
                if adjusted < w {
                    (adjusted, Some(n))
                } else {
                    (w, None)
                }
            }
            _ => (w, None),
        }
    }

    /// Score one pair.
    pub fn score(&self, f: &Frame, a: usize, b: usize) -> ScoredPair {
        let mut weight = self.prior_weight;
        let mut vetoed = false;
        // Level by level without collecting them: this runs for every pair.
        for (c, cfg) in self.config.comparisons.iter().enumerate() {
            if let Some(l) = compare(cfg, &f.prepared[c][a], &f.prepared[c][b]) {
                weight += self.contribution(f, c, l, a, b).0;
                vetoed |= self.vetoes.contains(&(c, l));
            }
        }
        ScoredPair {
            a: a as u32,
            b: b as u32,
            weight,
            probability: probability(weight),
            vetoed,
        }
    }

    /// Score many pairs on the rayon pool.
    pub fn score_all(&self, f: &Frame, pairs: &[(u32, u32)]) -> Vec<ScoredPair> {
        pairs
            .par_iter()
            .map(|&(a, b)| self.score(f, a as usize, b as usize))
            .collect()
    }

    /// Field by field: "name exact +11.2, phone exact +16.4, email missing,
    /// city differs -3.2, prior -15.6 = weight 8.8, p 0.998".
    pub fn explain(&self, f: &Frame, a: usize, b: usize) -> String {
        let mut parts = Vec::new();
        let mut weight = self.prior_weight;
        let mut vetoed = Vec::new();
        for (c, l) in self.levels(f, a, b).into_iter().enumerate() {
            let name = &self.config.comparisons[c].name;
            match l {
                None => parts.push(format!("{name} missing")),
                Some(l) => {
                    let (w, shared) = self.contribution(f, c, l, a, b);
                    weight += w;
                    let label = &self.labels[c][l];
                    match shared {
                        Some(n) => parts.push(format!("{name} {label} {w:+.1} (shared by {n})")),
                        None => parts.push(format!("{name} {label} {w:+.1}")),
                    }
                    if self.vetoes.contains(&(c, l)) {
                        vetoed.push(format!("{name} {label}"));
                    }
                }
            }
        }
        let prior = match self.population {
            Some(n) => format!("prior {:+.1} ({n} records)", self.prior_weight),
            None => format!("prior {:+.1}", self.prior_weight),
        };
        let mut s = format!(
            "{}, {prior} = weight {:.1}, p {:.4}",
            parts.join(", "),
            weight,
            probability(weight)
        );
        if !vetoed.is_empty() {
            s.push_str(&format!("; vetoed: {}", vetoed.join(", ")));
        }
        s
    }
}

/// What clustering decided.
#[derive(Debug, Default)]
pub struct Clustering {
    /// Per node: the cluster representative.
    pub root: Vec<u32>,
    /// Per node: the pair (index into the scored pairs) that brought it into
    /// its cluster, if any.
    pub joined_by: Vec<Option<u32>>,
    /// Pairs between the thresholds whose records ended apart, and strong
    /// pairs refused because they would join two exclusive nodes (two
    /// masters): one per pair of clusters, the strongest.
    pub review: Vec<u32>,
    /// Strong pairs kept apart by a veto or a veto elsewhere in the clusters.
    pub conflicts: Vec<u32>,
}

struct Uf {
    parent: Vec<u32>,
    size: Vec<u32>,
    /// Per root: exclusive classes present (a cluster holds at most one
    /// node of each class: one master, one record per data set).
    classes: Vec<Vec<u32>>,
    /// Per root: nodes that must never share its cluster.
    cannot: Vec<Vec<u32>>,
}

impl Uf {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let p = self.parent[x] as usize;
            self.parent[x] = self.parent[p];
            x = self.parent[x] as usize;
        }
        x
    }

    fn join(&mut self, ra: usize, rb: usize) {
        let (big, small) = if self.size[ra] >= self.size[rb] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        let c = std::mem::take(&mut self.classes[small]);
        self.classes[big].extend(c);
        let c = std::mem::take(&mut self.cannot[small]);
        self.cannot[big].extend(c);
    }

    /// Why `ra` and `rb` may not join: `Some(true)` = exclusive classes
    /// clash, `Some(false)` = a cannot-link.
    fn refuse(&mut self, ra: usize, rb: usize) -> Option<bool> {
        if self.classes[ra].iter().any(|c| self.classes[rb].contains(c)) {
            return Some(true);
        }
        let (x, other) = if self.cannot[ra].len() <= self.cannot[rb].len() {
            (ra, rb)
        } else {
            (rb, ra)
        };
        let list = self.cannot[x].clone();
        for n in list {
            if self.find(n as usize) == other {
                return Some(false);
            }
        }
        None
    }
}

/// Cluster `nodes` from scored pairs, strongest first: a pair at or above
/// `link` joins its two clusters unless a vetoed pair lies between them or
/// both hold a node of the same exclusive class (`class[node]`); pairs
/// between `review` and `link` that end in different clusters, and strong
/// pairs refused for their classes, are for review. `force` joins first,
/// unconditionally (records known to belong to a master).
pub fn cluster(
    nodes: usize,
    pairs: &[ScoredPair],
    class: &[Option<u32>],
    force: &[(u32, u32)],
    link: f64,
    review: f64,
) -> Clustering {
    let mut uf = Uf {
        parent: (0..nodes as u32).collect(),
        size: vec![1; nodes],
        classes: (0..nodes)
            .map(|i| class.get(i).copied().flatten().into_iter().collect())
            .collect(),
        cannot: vec![Vec::new(); nodes],
    };
    let mut joined_by = vec![None; nodes];
    for &(a, b) in force {
        let (ra, rb) = (uf.find(a as usize), uf.find(b as usize));
        if ra != rb {
            uf.join(ra, rb);
        }
    }
    for p in pairs.iter().filter(|p| p.vetoed) {
        uf.cannot[p.a as usize].push(p.b);
        uf.cannot[p.b as usize].push(p.a);
    }
    // Re-home the cannot-links of forced joins onto their roots.
    for i in 0..nodes {
        let r = uf.find(i);
        if r != i && !uf.cannot[i].is_empty() {
            let c = std::mem::take(&mut uf.cannot[i]);
            uf.cannot[r].extend(c);
        }
    }
    let mut order: Vec<u32> = (0..pairs.len() as u32)
        .filter(|&k| pairs[k as usize].probability >= review)
        .collect();
    order.sort_by(|&x, &y| {
        let (px, py) = (&pairs[x as usize], &pairs[y as usize]);
        py.weight
            .total_cmp(&px.weight)
            .then((px.a, px.b).cmp(&(py.a, py.b)))
    });
    let mut out = Clustering::default();
    let mut pending_review = Vec::new();
    for &k in &order {
        let p = &pairs[k as usize];
        let (ra, rb) = (uf.find(p.a as usize), uf.find(p.b as usize));
        if ra == rb {
            continue;
        }
        if p.probability < link {
            pending_review.push(k);
            continue;
        }
        if p.vetoed {
            out.conflicts.push(k);
            continue;
        }
        match uf.refuse(ra, rb) {
            Some(true) => pending_review.push(k),
            Some(false) => out.conflicts.push(k),
            None => {
                uf.join(ra, rb);
                for x in [p.a, p.b] {
                    joined_by[x as usize].get_or_insert(k);
                }
            }
        }
    }
    // One review per pair of clusters, the strongest (order is by weight).
    let mut seen = std::collections::HashSet::new();
    for k in pending_review {
        let p = &pairs[k as usize];
        let (ra, rb) = (uf.find(p.a as usize), uf.find(p.b as usize));
        if ra != rb && !p.vetoed && seen.insert((ra.min(rb), ra.max(rb))) {
            out.review.push(k);
        }
    }
    out.root = (0..nodes).map(|i| uf.find(i) as u32).collect();
    out.joined_by = joined_by;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: u32, b: u32, probability: f64, vetoed: bool) -> ScoredPair {
        ScoredPair {
            a,
            b,
            weight: (probability / (1.0 - probability)).log2(),
            probability,
            vetoed,
        }
    }

    #[test]
    fn strong_links_join_weak_ones_wait_and_vetoes_hold() {
        // 0-1 strong, 1-2 strong but 0-2 vetoed: 2 stays out.
        // 3-4 uncertain: review. 5 and 6 are masters (class 0): a record 7
        // strongly like both joins the stronger, the other pair is reviewed.
        let pairs = vec![
            p(0, 1, 0.999, false),
            p(1, 2, 0.99, false),
            p(0, 2, 0.2, true),
            p(3, 4, 0.7, false),
            p(5, 7, 0.9999, false),
            p(6, 7, 0.999, false),
        ];
        let mut class = vec![None; 8];
        class[5] = Some(0);
        class[6] = Some(0);
        let c = cluster(8, &pairs, &class, &[], 0.95, 0.5);
        assert_eq!(c.root[0], c.root[1]);
        assert_ne!(c.root[2], c.root[0], "vetoed against a member");
        assert_ne!(c.root[3], c.root[4]);
        assert_eq!(c.root[7], c.root[5]);
        assert_ne!(c.root[6], c.root[5], "two masters never merge");
        assert_eq!(c.conflicts, vec![1]);
        let mut r = c.review.clone();
        r.sort();
        assert_eq!(r, vec![3, 5]);
        assert_eq!(c.joined_by[7], Some(4));
    }
}
