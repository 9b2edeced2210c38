//! Probabilistic dedupe: a run's leads linked to each other and to the
//! candidate masters with the Fellegi-Sunter engine (`crate::linkage`).
//! Pairs at or above the link threshold join (never two existing masters,
//! never across a vetoed pair); pairs between the thresholds go to
//! `review` and the record keeps (or gets) its own master; every decision
//! is written to `merges` with its score and explanation.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, StringArray, StringBuilder, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use xxhash_rust::xxh3::xxh3_128;

use super::config::DedupeConfig;
use super::golden::{Golden, Survivorship, build_all_masters};
use super::link::{
    DedupeError, LinkOutcome, LinkStats, MergeRows, RunStamp, event_id, new_master_id, strings,
};
use crate::linkage::{Frame, Model, Scorer, link_frame};
use crate::schema::REVIEW_SCHEMA;

/// Config columns that masters hold under another name (lists).
pub const MASTER_RENAMES: &[(&str, &str)] = &[("phone", "phones"), ("email_key", "email_keys")];

/// Review id of a pair of masters: the same whichever side comes first.
pub fn review_id(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("rv-{:032x}", xxh3_128(format!("{x}\u{1f}{y}").as_bytes()))
}

/// Load the configured model (or the built-in one) and check it fits.
pub fn scorer(config: &DedupeConfig) -> Result<Scorer, DedupeError> {
    let model = Model::for_config(&config.linkage)?;
    Ok(Scorer::new(config.linkage.clone(), model)?)
}

#[derive(Clone, Copy, PartialEq)]
enum Rule {
    New,
    Known,
    Linked(u32),
}

/// Link `leads` against `masters` (candidates, MASTERS_SCHEMA) and `known`
/// records, probabilistically. `population`: the run's leads plus every
/// master of the warehouse (the model's prior is scaled to it).
#[allow(clippy::too_many_arguments)]
pub async fn link_probabilistic(
    leads: &RecordBatch,
    masters: &RecordBatch,
    known: &HashMap<(String, String), String>,
    config: &DedupeConfig,
    stamp: &RunStamp,
    surv: Survivorship<'_>,
    population: u64,
) -> Result<LinkOutcome, DedupeError> {
    let n = leads.num_rows();
    let m = masters.num_rows();
    let scorer = scorer(config)?.for_population(population.max((n + m) as u64));
    let source = strings(leads, "source")?;
    let record_id = strings(leads, "source_record_id")?;
    let master_ids = strings(masters, "master_id")?;
    let clock = std::time::Instant::now();
    let frame = Frame::new(&scorer.config, &[(leads, &[]), (masters, MASTER_RENAMES)])?;
    tracing::debug!(
        rows = n + m,
        seconds = clock.elapsed().as_secs_f64(),
        "linkage frame prepared"
    );
    let master_index: HashMap<&str, usize> = (0..m).map(|j| (master_ids.value(j), n + j)).collect();

    let mut class = vec![None; n + m];
    for c in class.iter_mut().skip(n) {
        *c = Some(0u32);
    }
    let mut force = Vec::new();
    let mut known_rows = vec![false; n];
    if !known.is_empty() {
        for (i, k) in known_rows.iter_mut().enumerate() {
            let key = (source.value(i).to_string(), record_id.value(i).to_string());
            if let Some(mid) = known.get(&key)
                && let Some(&node) = master_index.get(mid.as_str())
            {
                force.push((i as u32, node as u32));
                *k = true;
            }
        }
    }
    let linked = link_frame(&scorer, &frame, n, None, &class, &force).await?;
    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "linkage linked");
    let c = &linked.clustering;
    let pairs = &linked.pairs;

    // Clusters in order of their first row; the master node of each root.
    let mut master_of_root: HashMap<u32, usize> = HashMap::new();
    for j in n..n + m {
        master_of_root.insert(c.root[j], j);
    }
    let mut cluster_of_root: HashMap<u32, usize> = HashMap::new();
    let mut clusters: Vec<Golden> = Vec::new();
    let mut rules = Vec::with_capacity(n);
    let mut stats = LinkStats::default();
    let mut ids = StringBuilder::with_capacity(n, n * 27);
    #[allow(clippy::needless_range_loop)] // i indexes leads, roots and flags alike
    for i in 0..n {
        let r = c.root[i];
        let k = *cluster_of_root.entry(r).or_insert_with(|| {
            let existing = master_of_root.get(&r).map(|&node| node - n);
            let master_id = match existing {
                Some(j) => master_ids.value(j).to_string(),
                None => new_master_id(source.value(i), record_id.value(i)),
            };
            clusters.push(Golden {
                master_id,
                existing,
                rows: Default::default(),
            });
            clusters.len() - 1
        });
        let g = &mut clusters[k];
        let rule = if known_rows[i] {
            stats.records_known += 1;
            Rule::Known
        } else if g.existing.is_none() && g.rows.is_empty() {
            stats.masters_new += 1;
            Rule::New
        } else {
            if g.existing.is_some() {
                stats.matched_existing += 1;
            } else {
                stats.merged_in_batch += 1;
            }
            Rule::Linked(c.joined_by[i].unwrap_or(u32::MAX))
        };
        g.rows.push(i);
        ids.append_value(&g.master_id);
        rules.push(rule);
    }
    let master_id = ids.finish();
    let node_master = |x: usize| -> &str {
        if x < n {
            master_id.value(x)
        } else {
            master_ids.value(x - n)
        }
    };
    let describe = |x: usize| -> String {
        if x < n {
            format!("record {}/{}", source.value(x), record_id.value(x))
        } else {
            format!("master {}", master_ids.value(x - n))
        }
    };

    let mut rule_col = StringBuilder::with_capacity(n, n * 12);
    let mut score_col = Float64Builder::with_capacity(n);
    let mut mb = MergeRows::default();
    for (i, r) in rules.iter().enumerate() {
        match r {
            Rule::New => {
                rule_col.append_value("new");
                score_col.append_value(1.0);
            }
            Rule::Known => {
                rule_col.append_value("known_record");
                score_col.append_value(1.0);
            }
            Rule::Linked(k) => {
                rule_col.append_value("probabilistic");
                let (prob, text) = match pairs.get(*k as usize) {
                    Some(p) => {
                        let other = if p.a as usize == i { p.b } else { p.a } as usize;
                        (
                            p.probability,
                            format!(
                                "linked with {}: {}",
                                describe(other),
                                scorer.explain(&frame, p.a as usize, p.b as usize)
                            ),
                        )
                    }
                    None => (1.0, "linked through its cluster".to_string()),
                };
                score_col.append_value(prob);
                let mid = master_id.value(i);
                mb.push(
                    event_id(&["link", source.value(i), record_id.value(i), mid]),
                    "link",
                    Some(mid),
                    None,
                    Some((source.value(i), record_id.value(i))),
                    "probabilistic",
                    prob,
                    text,
                );
            }
        }
    }
    let record_of = |x: usize| (x < n).then(|| (source.value(x), record_id.value(x)));
    for &k in &c.conflicts {
        let p = &pairs[k as usize];
        let (a, b) = (p.a as usize, p.b as usize);
        stats.conflicts += 1;
        mb.push(
            event_id(&[
                "conflict",
                node_master(a),
                node_master(b),
                &describe(a),
                &describe(b),
            ]),
            "conflict",
            Some(node_master(a)),
            Some(node_master(b)),
            record_of(a),
            "probabilistic",
            p.probability,
            format!(
                "{} and {} kept apart: {}",
                describe(a),
                describe(b),
                scorer.explain(&frame, a, b)
            ),
        );
    }
    let mut rv = ReviewRows::default();
    let mut bridged = Vec::new();
    for &k in &c.review {
        let p = &pairs[k as usize];
        let (a, b) = (p.a as usize, p.b as usize);
        let (ma, mb_) = (node_master(a), node_master(b));
        // A strong pair held apart only because each side already has its
        // master: the two masters merge after the commit, unless their
        // golden records themselves are vetoed (a nameless record bridging
        // two siblings) - those wait for a person.
        if scorer.config.merge_bridged_masters && p.probability >= scorer.config.link_threshold {
            let masters = (master_of_root.get(&c.root[a]), master_of_root.get(&c.root[b]));
            if let (Some(&x), Some(&y)) = masters
                && !scorer.score(&frame, x, y).vetoed
            {
                bridged.push((ma.to_string(), mb_.to_string()));
            }
        }
        let text = format!(
            "{} and {}: {}",
            describe(a),
            describe(b),
            scorer.explain(&frame, a, b)
        );
        stats.reviews += 1;
        mb.push(
            event_id(&["review", &review_id(ma, mb_), &stamp.run_id]),
            "review",
            Some(ma),
            Some(mb_),
            record_of(a),
            "probabilistic",
            p.probability,
            text.clone(),
        );
        rv.push(ma, mb_, record_of(a), record_of(b), p.probability, text);
    }

    // Golden records, as in exact mode.
    tracing::debug!(
        seconds = clock.elapsed().as_secs_f64(),
        "linkage decisions written"
    );
    let golden = build_all_masters(leads, masters, &clusters, &known_rows, stamp, surv)?;
    tracing::debug!(
        seconds = clock.elapsed().as_secs_f64(),
        "linkage golden records built"
    );
    let masters_out = golden.masters;
    for (mid, values) in &golden.conflicts {
        mb.push_survivorship(mid, values);
    }
    stats.masters_updated = clusters.iter().filter(|g| g.existing.is_some()).count() as u64;
    let merges = vec![mb.finish(stamp)?];
    Ok(LinkOutcome {
        master_id,
        match_rule: rule_col.finish(),
        match_score: score_col.finish(),
        masters: masters_out,
        merges,
        review: rv.finish(stamp)?,
        bridged,
        stats,
    })
}

#[derive(Default)]
struct ReviewRows {
    seen: std::collections::HashSet<String>,
    id: StringBuilder,
    a: StringBuilder,
    b: StringBuilder,
    src_a: StringBuilder,
    rid_a: StringBuilder,
    src_b: StringBuilder,
    rid_b: StringBuilder,
    score: Float64Builder,
    text: StringBuilder,
    len: usize,
}

impl ReviewRows {
    fn push(
        &mut self,
        a: &str,
        b: &str,
        ra: Option<(&str, &str)>,
        rb: Option<(&str, &str)>,
        score: f64,
        text: String,
    ) {
        let id = review_id(a, b);
        if !self.seen.insert(id.clone()) {
            return;
        }
        self.id.append_value(id);
        self.a.append_value(a);
        self.b.append_value(b);
        self.src_a.append_option(ra.map(|r| r.0));
        self.rid_a.append_option(ra.map(|r| r.1));
        self.src_b.append_option(rb.map(|r| r.0));
        self.rid_b.append_option(rb.map(|r| r.1));
        self.score.append_value(score);
        self.text.append_value(text);
        self.len += 1;
    }

    fn finish(mut self, stamp: &RunStamp) -> Result<RecordBatch, DedupeError> {
        let n = self.len;
        let text = |v: &str| Arc::new(std::iter::repeat_n(Some(v), n).collect::<StringArray>()) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.a.finish()),
            Arc::new(self.b.finish()),
            Arc::new(self.src_a.finish()),
            Arc::new(self.rid_a.finish()),
            Arc::new(self.src_b.finish()),
            Arc::new(self.rid_b.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.text.finish()),
            text("open"),
            text(&stamp.run_id),
            Arc::new(TimestampMicrosecondArray::from(vec![stamp.now_us; n]).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; n]).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(REVIEW_SCHEMA.clone(), cols)?)
    }
}
