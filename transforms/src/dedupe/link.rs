//! Linking a run's leads to masters by exact keys.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, ListArray, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64_with_seed, xxh3_128};

use super::config::{DedupeConfig, MatchKey};
use super::golden::{Golden, Survivorship, build_all_masters};
use super::names::FoldedName;
use super::union_find::{Clusters, Veto};
use crate::schema::MERGES_SCHEMA;

#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    #[error("dedupe input is missing column `{0}`")]
    MissingColumn(String),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Linkage(#[from] crate::linkage::LinkageError),
}

/// Who and when: stamped on every row this run writes.
#[derive(Debug, Clone)]
pub struct RunStamp {
    pub run_id: String,
    /// Run start, microseconds since the epoch (UTC).
    pub now_us: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// New masters created.
    pub masters_new: u64,
    /// Records linked to a master that existed before the run.
    pub matched_existing: u64,
    /// Records merged into another record of this run (same new master).
    pub merged_in_batch: u64,
    /// Records seen before (same source id), kept on their master.
    pub records_known: u64,
    /// Shared keys kept apart (names disagree, or two masters bridged).
    pub conflicts: u64,
    /// Pairs sent to `review` (probabilistic mode).
    pub reviews: u64,
    /// Existing masters updated.
    pub masters_updated: u64,
}

pub struct LinkOutcome {
    /// Per lead row: its master, how it matched and with what score.
    pub master_id: StringArray,
    pub match_rule: StringArray,
    pub match_score: Float64Array,
    /// New and changed masters (MASTERS_SCHEMA), in the parts they were
    /// built in: the warehouse writes a list, so they are never joined.
    pub masters: Vec<RecordBatch>,
    /// Link and conflict decisions (MERGES_SCHEMA), in parts as `masters`.
    pub merges: Vec<RecordBatch>,
    /// Pairs of masters for a person to decide (REVIEW_SCHEMA; probabilistic
    /// mode only).
    pub review: RecordBatch,
    /// Pairs of existing masters (ids) a record linked to both strongly:
    /// merged after the run's commit (probabilistic mode only).
    pub bridged: Vec<(String, String)>,
    pub stats: LinkStats,
}

pub(super) fn strings<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray, DedupeError> {
    b.column_by_name(name)
        .map(|c| c.as_string::<i32>())
        .ok_or_else(|| DedupeError::MissingColumn(name.into()))
}

pub(super) fn opt(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i) && !a.value(i).is_empty()).then(|| a.value(i))
}

pub(super) fn list_values(a: &ListArray, i: usize) -> Vec<String> {
    if a.is_null(i) {
        return Vec::new();
    }
    let v = a.value(i);
    let s = v.as_string::<i32>();
    (0..s.len())
        .filter(|&j| !s.is_null(j))
        .map(|j| s.value(j).to_string())
        .collect()
}

/// Master id of a new person: derived from the first record that created
/// them, so re-running the same input gives the same id.
pub fn new_master_id(source: &str, record_id: &str) -> String {
    let mut id = String::with_capacity(26);
    id.push_str("m-");
    crate::hex::push_hex(&mut id, joined_digest(&[source, record_id]) >> 32, 24);
    id
}

pub(super) fn event_id(parts: &[&str]) -> String {
    let mut id = String::with_capacity(34);
    write_event_id(&mut id, parts);
    id
}

/// [`event_id`] appended to `out` (a buffer reused across rows).
pub(super) fn write_event_id(out: &mut String, parts: &[&str]) {
    out.push_str("e-");
    crate::hex::push_hex(out, joined_digest(parts), 32);
}

/// xxh3-128 of the parts joined by U+001F, gathered in a per-thread buffer
/// (ids are made for every master and decision: no String per join).
fn joined_digest(parts: &[&str]) -> u128 {
    thread_local! {
        static JOINED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    JOINED.with_borrow_mut(|b| {
        b.clear();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                b.push(0x1f);
            }
            b.extend_from_slice(p.as_bytes());
        }
        xxh3_128(b)
    })
}

/// Distinct people one key may stand for before it counts as a hub.
const MAX_ANCHORS: usize = 16;

/// The nodes holding one match key, in the order they were listed.
struct KeyGroup<'k> {
    kind: MatchKey,
    key: &'k str,
    /// `members[start..end]` of [`key_groups`].
    start: u32,
    end: u32,
}

/// Indices grouped by key: `members[span.0..span.1]` is one group, its
/// indices ascending; spans in order of their first index.
pub(super) struct HashGroups {
    pub members: Vec<u32>,
    pub spans: Vec<(u32, u32)>,
}

/// Groups the indices `0..n` that `key` gives a key by that key, through a
/// parallel sort of (64-bit hash, index) instead of a hash map of strings:
/// the hashes and the sort use every core, the grouping is one pass over a
/// compact array (a map's fresh table of a million string keys was the
/// cost). Equal hashes are checked by key, so a collision never joins two.
pub(super) fn group_by_hash<K: Ord>(
    n: usize,
    key: impl Fn(u32) -> Option<K> + Sync,
    hash: impl Fn(&K) -> u64 + Sync,
) -> HashGroups {
    let mut hashed: Vec<(u64, u32)> = (0..n as u32)
        .into_par_iter()
        .filter_map(|i| key(i).map(|k| (hash(&k), i)))
        .collect();
    // (hash, index): equal keys end up side by side, in index order.
    hashed.par_sort_unstable();
    let mut members: Vec<u32> = hashed.par_iter().map(|e| e.1).collect();
    // Runs of one hash (integers compared), then each run checked by value
    // on every core: that check reads every key. A run hiding two keys (a
    // hash collision, rare) is split by key, each part in order.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut at = 0;
    while at < hashed.len() {
        let h = hashed[at].0;
        let end = at + hashed[at..].iter().take_while(|e| e.0 == h).count();
        runs.push((at as u32, end as u32));
        at = end;
    }
    let mixed: Vec<bool> = runs
        .par_iter()
        .map(|&(a, b)| {
            let run = &members[a as usize..b as usize];
            run.len() > 1 && {
                let first = key(run[0]);
                run[1..].iter().any(|&i| key(i) != first)
            }
        })
        .collect();
    let mut spans: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
    for (&(a, b), mixed) in runs.iter().zip(mixed) {
        if !mixed {
            spans.push((a, b));
            continue;
        }
        let run = &mut members[a as usize..b as usize];
        run.sort_by_cached_key(|&i| (key(i), i));
        let mut k = 0;
        while k < run.len() {
            let part = key(run[k]);
            let len = run[k..].iter().take_while(|&&i| key(i) == part).count();
            spans.push((a + k as u32, a + (k + len) as u32));
            k += len;
        }
    }
    spans.par_sort_unstable_by_key(|s| members[s.0 as usize]);
    HashGroups { members, spans }
}

/// Groups `keys` (kind, value, node; masters first, then leads in order) by
/// key, each group's nodes in listing order, groups in order of their
/// first listing (the order the walk needs).
fn key_groups<'k>(keys: &[(MatchKey, &'k str, u32)]) -> (Vec<KeyGroup<'k>>, Vec<u32>) {
    key_groups_by(keys, |kind, key| xxh3_64_with_seed(key.as_bytes(), kind as u64))
}

/// [`key_groups`] with the hash given (tests force collisions).
fn key_groups_by<'k>(
    keys: &[(MatchKey, &'k str, u32)],
    hash: impl Fn(MatchKey, &str) -> u64 + Sync,
) -> (Vec<KeyGroup<'k>>, Vec<u32>) {
    let HashGroups { mut members, spans } = group_by_hash(
        keys.len(),
        |i| Some((keys[i as usize].0, keys[i as usize].1)),
        |&(kind, key)| hash(kind, key),
    );
    let groups = spans
        .par_iter()
        .map(|&(start, end)| {
            let (kind, key, _) = keys[members[start as usize] as usize];
            KeyGroup {
                kind,
                key,
                start,
                end,
            }
        })
        .collect();
    // Listing indices -> the nodes the walk joins.
    members.par_iter_mut().for_each(|m| *m = keys[*m as usize].2);
    (groups, members)
}

#[derive(Clone, Copy, PartialEq)]
enum Rule {
    None,
    New,
    Known,
    Key(MatchKey),
}

/// Link `leads` (records-shaped, valid rows only) against `masters` (the
/// existing masters that share a key with them, MASTERS_SCHEMA) and
/// `known` records ((source, source_record_id) -> master_id).
pub fn link(
    leads: &RecordBatch,
    masters: &RecordBatch,
    known: &HashMap<(String, String), String>,
    config: &DedupeConfig,
    stamp: &RunStamp,
    surv: Survivorship<'_>,
) -> Result<LinkOutcome, DedupeError> {
    let n = leads.num_rows();
    let m = masters.num_rows();
    let source = strings(leads, "source")?;
    let record_id = strings(leads, "source_record_id")?;
    let phone = strings(leads, "phone")?;
    let email_key = strings(leads, "email_key")?;
    let (first, last) = (strings(leads, "first_name")?, strings(leads, "last_name")?);
    let master_ids = strings(masters, "master_id")?;
    let (m_first, m_last) = (strings(masters, "first_name")?, strings(masters, "last_name")?);
    let list = |name: &str| -> Result<&ListArray, DedupeError> {
        masters
            .column_by_name(name)
            .map(|c| c.as_list::<i32>())
            .ok_or_else(|| DedupeError::MissingColumn(name.into()))
    };
    let (m_phones, m_email_keys) = (list("phones")?, list("email_keys")?);

    // Debug timings of the parts (`LEADFLOW_LOG=leadflow_transforms=debug`).
    let mut clock = std::time::Instant::now();
    let mut lap = |part: &str| {
        tracing::debug!(part, seconds = clock.elapsed().as_secs_f64(), "exact link");
        clock = std::time::Instant::now();
    };
    // Nodes: leads 0..n, existing masters n..n+m.
    // Folding 1M names is a visible cost: spread it over the rayon pool.
    let names: Vec<FoldedName> = (0..n + m)
        .into_par_iter()
        .map(|x| {
            if x < n {
                FoldedName::new(opt(first, x), opt(last, x))
            } else {
                FoldedName::new(opt(m_first, x - n), opt(m_last, x - n))
            }
        })
        .collect();
    let master_index: HashMap<&str, usize> = (0..m).map(|j| (master_ids.value(j), n + j)).collect();
    let mut clusters = Clusters::new(&names, |x| x >= n, config.name_similarity, config.name_check);
    let mut rule = vec![Rule::None; n];
    let mut via: Vec<Option<(MatchKey, u32)>> = vec![None; n];
    lap("names and clusters");

    // Records seen before stay with their master.
    if !known.is_empty() {
        for (i, r) in rule.iter_mut().enumerate() {
            let key = (source.value(i).to_string(), record_id.value(i).to_string());
            if let Some(mid) = known.get(&key)
                && let Some(&node) = master_index.get(mid.as_str())
            {
                clusters.force(i, node);
                *r = Rule::Known;
            }
        }
    }

    // Every (key, node), masters first, then leads in order, grouped by key.
    let use_phone = config.keys.contains(&MatchKey::Phone);
    let use_email = config.keys.contains(&MatchKey::Email);
    let mut owned_master_keys: Vec<(MatchKey, usize, String)> = Vec::new();
    for j in 0..m {
        if use_phone {
            owned_master_keys.extend(
                list_values(m_phones, j)
                    .into_iter()
                    .map(|k| (MatchKey::Phone, n + j, k)),
            );
        }
        if use_email {
            owned_master_keys.extend(
                list_values(m_email_keys, j)
                    .into_iter()
                    .map(|k| (MatchKey::Email, n + j, k)),
            );
        }
    }
    let mut listed: Vec<(MatchKey, &str, u32)> = Vec::with_capacity(owned_master_keys.len() + 2 * n);
    listed.extend(
        owned_master_keys
            .iter()
            .map(|(kind, node, key)| (*kind, key.as_str(), *node as u32)),
    );
    for i in 0..n {
        if use_phone && let Some(p) = opt(phone, i) {
            listed.push((MatchKey::Phone, p, i as u32));
        }
        if use_email && let Some(e) = opt(email_key, i) {
            listed.push((MatchKey::Email, e, i as u32));
        }
    }
    let (groups, members) = key_groups(&listed);
    drop(listed);

    lap("key chains");
    // Walk each key's nodes: each node joins the first anchor that accepts it.
    let mut conflicts: Vec<(MatchKey, String, usize, Veto)> = Vec::new();
    let mut anchors: Vec<usize> = Vec::new();
    let mut hubs: Vec<(MatchKey, String, usize)> = Vec::new();
    for g in &groups {
        let (kind, key) = (g.kind, g.key);
        anchors.clear();
        let mut hub = false;
        for &node in &members[g.start as usize..g.end as usize] {
            let node = node as usize;
            let mut joined = false;
            let mut first_veto = None;
            for &a in anchors.iter() {
                match clusters.try_union(a, node) {
                    Ok(changed) => {
                        if changed && node < n && via[node].is_none() {
                            via[node] = Some((kind, a as u32));
                        }
                        joined = true;
                        break;
                    }
                    Err(v) => {
                        first_veto.get_or_insert(v);
                    }
                }
            }
            if !joined {
                if anchors.len() < MAX_ANCHORS {
                    if let Some(v) = first_veto {
                        conflicts.push((kind, key.to_string(), node, v));
                    }
                    anchors.push(node);
                } else if !hub {
                    // A key shared by this many different people is a hub
                    // (a reception desk, "noemail@..."): say so once and
                    // stop using it for anyone else.
                    hub = true;
                    hubs.push((kind, key.to_string(), node));
                }
            }
        }
    }

    lap("unions");
    // Assign master ids: the existing master, else the first record's id.
    // Clusters numbered in order of their first row: a dense index per root
    // instead of hashing (1M rows), and a deterministic output order.
    let mut cluster_of_root: Vec<u32> = vec![u32::MAX; n + m];
    let mut cluster_of_row: Vec<u32> = Vec::with_capacity(n);
    let mut first_row: Vec<usize> = Vec::new();
    let mut clusters_out: Vec<Golden> = Vec::new();
    let mut rules = StringBuilder::with_capacity(n, n * 6);
    let mut scores = Float64Builder::with_capacity(n);
    let mut stats = LinkStats::default();
    for i in 0..n {
        let r = clusters.find(i);
        if cluster_of_root[r] == u32::MAX {
            cluster_of_root[r] = clusters_out.len() as u32;
            let existing = clusters.master[r].map(|node| node as usize - n);
            if existing.is_none() {
                stats.masters_new += 1;
                rule[i] = Rule::New;
            }
            first_row.push(i);
            // The id is filled in below, on every core.
            clusters_out.push(Golden {
                master_id: String::new(),
                existing,
                rows: Default::default(),
            });
        }
        let c = cluster_of_root[r];
        cluster_of_row.push(c);
        let g = &mut clusters_out[c as usize];
        g.rows.push(i);
        if rule[i] == Rule::None {
            rule[i] = Rule::Key(via[i].map(|v| v.0).unwrap_or(MatchKey::Phone));
            if g.existing.is_some() {
                stats.matched_existing += 1;
            } else {
                stats.merged_in_batch += 1;
            }
        } else if rule[i] == Rule::Known {
            stats.records_known += 1;
        }
        let (name, score) = match rule[i] {
            Rule::New => ("new", 1.0),
            Rule::Known => ("known_record", 1.0),
            Rule::Key(k) => (k.as_str(), 1.0),
            Rule::None => unreachable!("every row gets a rule"),
        };
        rules.append_value(name);
        scores.append_value(score);
    }
    // The existing master's id, else one from the cluster's first record.
    clusters_out
        .par_iter_mut()
        .zip(first_row.par_iter())
        .for_each(|(g, &i)| {
            g.master_id = match g.existing {
                Some(j) => master_ids.value(j).to_string(),
                None => new_master_id(source.value(i), record_id.value(i)),
            };
        });
    let mut ids = StringBuilder::with_capacity(n, n * 27);
    for &c in &cluster_of_row {
        ids.append_value(&clusters_out[c as usize].master_id);
    }
    let master_id = ids.finish();

    lap("master ids");
    // Golden records for every cluster this run touched.
    let known_rows: Vec<bool> = rule.iter().map(|r| *r == Rule::Known).collect();
    let golden = build_all_masters(leads, masters, &clusters_out, &known_rows, stamp, surv)?;
    let masters_out = golden.masters;
    stats.masters_updated = clusters_out.iter().filter(|g| g.existing.is_some()).count() as u64;

    lap("golden records");
    // Decisions: every key link, every conflict.
    let mut mb = MergeRows::default();
    let describe_into = |out: &mut String, node: usize| {
        if node < n {
            write!(out, "record {}/{}", source.value(node), record_id.value(node))
        } else {
            write!(out, "master {}", master_ids.value(node - n))
        }
        .expect("write to String")
    };
    let describe = |node: usize| -> String {
        let mut out = String::new();
        describe_into(&mut out, node);
        out
    };
    let name_of = |node: usize| -> String {
        let (f, l) = if node < n {
            (opt(first, node), opt(last, node))
        } else {
            (opt(m_first, node - n), opt(m_last, node - n))
        };
        format!("{} {}", f.unwrap_or(""), l.unwrap_or(""))
            .trim()
            .to_string()
    };
    // One decision per linked record (hundreds of thousands on a big
    // file): built in row chunks on the rayon pool, kept in row order.
    const CHUNK: usize = 65_536;
    let link_parts: Vec<MergeRows> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut part = MergeRows::default();
            // Id and explanation written into buffers reused row to row.
            let (mut id, mut why) = (String::with_capacity(34), String::with_capacity(96));
            for i in c * CHUNK..n.min((c + 1) * CHUNK) {
                if let Rule::Key(k) = rule[i] {
                    let mid = master_id.value(i);
                    id.clear();
                    write_event_id(&mut id, &["link", source.value(i), record_id.value(i), mid]);
                    why.clear();
                    why.push_str("exact ");
                    why.push_str(k.as_str());
                    why.push_str(" match with ");
                    if let Some((_, a)) = via[i] {
                        describe_into(&mut why, a as usize);
                    }
                    why.push_str("; names agree");
                    part.push(
                        &id,
                        "link",
                        Some(mid),
                        None,
                        Some((source.value(i), record_id.value(i))),
                        k.as_str(),
                        1.0,
                        &why,
                    );
                }
            }
            part
        })
        .collect();
    for (kind, key, node, veto) in &conflicts {
        stats.conflicts += 1;
        let (explanation, other_master, kind_name) = match veto {
            Veto::Names(a, b) => (
                format!(
                    "{} {key} is shared by {} and {}, but names disagree ({:?} vs {:?}); kept apart",
                    kind.as_str(),
                    describe(*node),
                    describe(if *a == *node { *b } else { *a }),
                    name_of(*a),
                    name_of(*b)
                ),
                None,
                "conflict",
            ),
            Veto::TwoMasters(a, b) => (
                format!(
                    "{} {key} of {} would join {} and {}; masters are never merged automatically, left for review",
                    kind.as_str(),
                    describe(*node),
                    describe(*a),
                    describe(*b)
                ),
                Some(master_ids.value(b.max(a) - n).to_string()),
                "bridge",
            ),
        };
        let (src, rid) = if *node < n {
            (Some(source.value(*node)), Some(record_id.value(*node)))
        } else {
            (None, None)
        };
        let mid = if *node < n {
            master_id.value(*node).to_string()
        } else {
            master_ids.value(*node - n).to_string()
        };
        mb.push(
            event_id(&[
                kind_name,
                kind.as_str(),
                key,
                &mid,
                src.unwrap_or(""),
                rid.unwrap_or(""),
            ]),
            kind_name,
            Some(&mid),
            other_master.as_deref(),
            src.zip(rid),
            kind.as_str(),
            0.0,
            explanation,
        );
    }
    for (kind, key, node) in &hubs {
        stats.conflicts += 1;
        let mid = if *node < n {
            master_id.value(*node).to_string()
        } else {
            master_ids.value(*node - n).to_string()
        };
        mb.push(
            event_id(&["hub", kind.as_str(), key]),
            "hub_key",
            Some(&mid),
            None,
            None,
            kind.as_str(),
            0.0,
            format!(
                "{} {key} is shared by more than {MAX_ANCHORS} people whose names disagree; it links no one beyond them",
                kind.as_str()
            ),
        );
    }
    // Survivorship disagreements (one per master whose records differ:
    // often a third of the masters), serialised in chunks on the pool.
    let survivorship_parts: Vec<MergeRows> = golden
        .conflicts
        .par_chunks(CHUNK / 4)
        .map(|c| {
            let mut part = MergeRows::default();
            for (mid, values) in c {
                part.push_survivorship(mid, values);
            }
            part
        })
        .collect();
    // Same row order as one builder: links, conflicts and hubs, survivorship.
    let merge_parts = link_parts
        .into_par_iter()
        .chain(rayon::iter::once(mb))
        .chain(survivorship_parts)
        .map(|p| p.finish(stamp))
        .collect::<Result<Vec<_>, _>>()?;
    lap("decisions");

    Ok(LinkOutcome {
        master_id,
        match_rule: rules.finish(),
        match_score: scores.finish(),
        masters: masters_out,
        merges: merge_parts,
        review: RecordBatch::new_empty(crate::schema::REVIEW_SCHEMA.clone()),
        bridged: Vec::new(),
        stats,
    })
}

#[derive(Default)]
pub(super) struct MergeRows {
    event_id: StringBuilder,
    kind: StringBuilder,
    master_id: StringBuilder,
    other_master_id: StringBuilder,
    source: StringBuilder,
    source_record_id: StringBuilder,
    rule: StringBuilder,
    score: Float64Builder,
    explanation: StringBuilder,
    len: usize,
}

impl MergeRows {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
        &mut self,
        event_id: impl AsRef<str>,
        kind: &str,
        master_id: Option<&str>,
        other: Option<&str>,
        record: Option<(&str, &str)>,
        rule: &str,
        score: f64,
        explanation: impl AsRef<str>,
    ) {
        self.event_id.append_value(event_id);
        self.kind.append_value(kind);
        self.master_id.append_option(master_id);
        self.other_master_id.append_option(other);
        self.source.append_option(record.map(|r| r.0));
        self.source_record_id.append_option(record.map(|r| r.1));
        self.rule.append_value(rule);
        self.score.append_value(score);
        self.explanation.append_value(explanation);
        self.len += 1;
    }

    /// The fields a master's records disagree on and what the golden
    /// record kept. The id is the content's, so the same disagreement seen
    /// again (or a run re-applied after a crash) rewrites its row.
    pub(super) fn push_survivorship(&mut self, master_id: &str, text: &str) {
        self.event_id
            .append_value(event_id(&["survivorship", master_id, text]));
        self.kind.append_value("survivorship");
        self.master_id.append_value(master_id);
        self.other_master_id.append_null();
        self.source.append_null();
        self.source_record_id.append_null();
        self.rule.append_null();
        self.score.append_null();
        self.explanation.append_value(text);
        self.len += 1;
    }

    pub(super) fn finish(mut self, stamp: &RunStamp) -> Result<RecordBatch, DedupeError> {
        let n = self.len;
        let run: StringArray = std::iter::repeat_n(Some(stamp.run_id.as_str()), n).collect();
        let at = TimestampMicrosecondArray::from(vec![stamp.now_us; n]).with_timezone("UTC");
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.master_id.finish()),
            Arc::new(self.other_master_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.source_record_id.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.score.finish()),
            Arc::new(self.explanation.finish()),
            Arc::new(run),
            Arc::new(at),
        ];
        Ok(RecordBatch::try_new(MERGES_SCHEMA.clone(), cols)?)
    }
}

/// Event time of each row: when the source says it was created, else when
/// leadflow read it (`ingested_at`, on stored records), else `fallback` (a
/// run's own leads: the run's start).
pub(super) fn event_times(b: &RecordBatch, fallback: i64) -> Vec<i64> {
    let ts = |name: &str| {
        b.column_by_name(name)
            .map(|c| c.as_primitive::<TimestampMicrosecondType>())
    };
    let (created, ingested) = (ts("source_created_at"), ts("ingested_at"));
    let at =
        |a: Option<&TimestampMicrosecondArray>, i: usize| a.filter(|a| !a.is_null(i)).map(|a| a.value(i));
    (0..b.num_rows())
        .map(|i| at(created, i).or_else(|| at(ingested, i)).unwrap_or(fallback))
        .collect()
}

pub(super) fn ts_builder(n: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{MASTERS_SCHEMA, list_builder};
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    /// The parts of an outcome table as one batch.
    fn one(schema: &SchemaRef, parts: &[RecordBatch]) -> RecordBatch {
        arrow::compute::concat_batches(schema, parts).unwrap()
    }

    /// (id, first, last, phone, email_key, project)
    type Lead<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
    );

    fn leads(rows: &[Lead]) -> RecordBatch {
        let text = [
            "source",
            "source_record_id",
            "first_name",
            "last_name",
            "full_name",
            "phone",
            "email",
            "email_key",
            "company",
            "job_title",
            "country",
            "city",
            "website",
            "project",
            "status",
            "owner",
        ];
        let mut fields: Vec<Field> = text
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect();
        fields.push(Field::new(
            "source_created_at",
            crate::schema::RECORDS_SCHEMA
                .field_with_name("source_created_at")
                .unwrap()
                .data_type()
                .clone(),
            true,
        ));
        let col = |f: &dyn Fn(&Lead) -> Option<String>| {
            Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef
        };
        let cols: Vec<ArrayRef> = vec![
            col(&|_| Some("src".into())),
            col(&|r| Some(r.0.into())),
            col(&|r| Some(r.1.into())),
            col(&|r| Some(r.2.into())),
            col(&|r| Some(format!("{} {}", r.1, r.2))),
            col(&|r| r.3.map(Into::into)),
            col(&|r| r.4.map(Into::into)),
            col(&|r| r.4.map(Into::into)),
            col(&|_| None),
            col(&|_| None),
            col(&|_| Some("IN".into())),
            col(&|r| Some(format!("City of {}", r.0))),
            col(&|_| None),
            col(&|r| Some(r.5.into())),
            col(&|_| None),
            col(&|_| None),
            Arc::new(TimestampMicrosecondArray::from(vec![None::<i64>; rows.len()]).with_timezone("UTC")),
        ];
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    /// (master_id, first, last, phones, email_keys)
    type Master<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], &'a [&'a str]);

    fn masters(rows: &[Master]) -> RecordBatch {
        let s = |f: &dyn Fn(&Master) -> Option<String>| {
            Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef
        };
        let list = |f: &dyn Fn(&Master) -> Vec<String>| {
            let mut b = list_builder();
            for r in rows {
                for v in f(r) {
                    b.values().append_value(v);
                }
                b.append(true);
            }
            Arc::new(b.finish()) as ArrayRef
        };
        let n = rows.len();
        let ts =
            || Arc::new(TimestampMicrosecondArray::from(vec![1_000i64; n]).with_timezone("UTC")) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            s(&|r| Some(r.0.into())),
            s(&|r| Some(r.1.into())),
            s(&|r| Some(r.2.into())),
            s(&|r| Some(format!("{} {}", r.1, r.2))),
            s(&|r| r.3.first().map(|x| x.to_string())),
            s(&|r| r.4.first().map(|x| x.to_string())),
            list(&|r| r.3.iter().map(|x| x.to_string()).collect()),
            list(&|r| r.4.iter().map(|x| x.to_string()).collect()),
            list(&|r| r.4.iter().map(|x| x.to_string()).collect()),
            s(&|_| Some("Old Co".into())),
            s(&|_| None),
            s(&|_| Some("IN".into())),
            s(&|_| Some("Old City".into())),
            s(&|_| None),
            Arc::new(Int64Array::from(vec![3i64; n])),
            ts(),
            ts(),
            s(&|_| Some("r0".into())),
        ];
        RecordBatch::try_new(MASTERS_SCHEMA.clone(), cols).unwrap()
    }

    fn stamp() -> RunStamp {
        RunStamp {
            run_id: "r1".into(),
            now_us: 2_000,
        }
    }

    fn grouped(groups: &[KeyGroup], members: &[u32]) -> Vec<(MatchKey, String, Vec<u32>)> {
        groups
            .iter()
            .map(|g| {
                let nodes = members[g.start as usize..g.end as usize].to_vec();
                (g.kind, g.key.to_string(), nodes)
            })
            .collect()
    }

    /// Master and event ids live in the warehouse: the buffer that gathers
    /// the parts must hash the same bytes `join` + `format!` did.
    #[test]
    fn ids_hash_the_parts_joined_as_before() {
        let old_event = |parts: &[&str]| format!("e-{:032x}", xxh3_128(parts.join("\u{1f}").as_bytes()));
        for parts in [
            &["link", "drops", "r-1", "m-1"][..],
            &["hub", "phone", "+911234"],
            &["x"],
            &[],
        ] {
            assert_eq!(event_id(parts), old_event(parts));
        }
        let old_master = format!("m-{:024x}", xxh3_128("drops\u{1f}r-1".as_bytes()) >> 32);
        assert_eq!(new_master_id("drops", "r-1"), old_master);
        let mut buf = String::from("kept ");
        write_event_id(&mut buf, &["a", "b"]);
        assert_eq!(buf, format!("kept {}", event_id(&["a", "b"])));
    }

    #[test]
    fn key_groups_keep_listing_order_and_never_join_colliding_keys() {
        use MatchKey::{Email, Phone};
        let keys = [
            (Phone, "+911", 7),
            (Email, "a@x", 7),
            (Phone, "+912", 3),
            (Email, "+911", 3), // same text, other kind: another key
            (Phone, "+911", 1),
            (Email, "a@x", 0),
        ];
        let want = vec![
            (Phone, "+911".to_string(), vec![7, 1]),
            (Email, "a@x".to_string(), vec![7, 0]),
            (Phone, "+912".to_string(), vec![3]),
            (Email, "+911".to_string(), vec![3]),
        ];
        let (g, m) = key_groups(&keys);
        assert_eq!(grouped(&g, &m), want);
        // Every key on one hash: the values still decide the groups.
        let (g, m) = key_groups_by(&keys, |_, _| 42);
        assert_eq!(grouped(&g, &m), want);
        // Two hashes, each shared by two different keys.
        let (g, m) = key_groups_by(&keys, |_, k| k.len() as u64);
        assert_eq!(grouped(&g, &m), want);
    }

    /// Many keys on hashes that collide a lot (runs checked on the pool,
    /// mixed runs split): the groups are what a map by value gives.
    #[test]
    fn key_groups_in_pieces_match_a_grouping_by_value() {
        use MatchKey::{Email, Phone};
        let texts: Vec<String> = (0..700).map(|i| format!("k{}", (i * 7919) % 251)).collect();
        let keys: Vec<(MatchKey, &str, u32)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (if i % 3 == 0 { Email } else { Phone }, t.as_str(), i as u32 / 2))
            .collect();
        let mut want: Vec<(MatchKey, String, Vec<u32>)> = Vec::new();
        for &(kind, key, node) in &keys {
            match want.iter_mut().find(|(k, v, _)| *k == kind && v == key) {
                Some(g) => g.2.push(node),
                None => want.push((kind, key.to_string(), vec![node])),
            }
        }
        for hash in [
            |_: MatchKey, k: &str| k.len() as u64,
            |_: MatchKey, k: &str| k.as_bytes()[1] as u64 % 5,
        ] {
            let (g, m) = key_groups_by(&keys, hash);
            assert_eq!(grouped(&g, &m), want);
        }
        let (g, m) = key_groups(&keys);
        assert_eq!(grouped(&g, &m), want);
    }

    #[test]
    fn links_within_the_run_and_keeps_a_family_apart() {
        let b = leads(&[
            ("a", "Vikram", "Mehta", Some("+919820012345"), None, "Riverside"),
            (
                "b",
                "Vikram",
                "Mehta",
                Some("+919820012345"),
                Some("vikram@x.in"),
                "Lakeside",
            ),
            ("c", "Vikram", "", None, Some("vikram@x.in"), "Lakeside"),
            (
                "d",
                "Anil",
                "Sharma",
                Some("+919811145678"),
                Some("family@x.in"),
                "Riverside",
            ),
            (
                "e",
                "Sunita",
                "Sharma",
                Some("+919811145678"),
                Some("family@x.in"),
                "Riverside",
            ),
        ]);
        let out = link(
            &b,
            &masters(&[]),
            &HashMap::new(),
            &DedupeConfig::default(),
            &stamp(),
            Survivorship::newest(),
        )
        .unwrap();
        let ids: Vec<&str> = (0..5).map(|i| out.master_id.value(i)).collect();
        assert_eq!(ids[0], new_master_id("src", "a"));
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[1], ids[2]);
        assert_ne!(ids[3], ids[4], "family stays apart");
        let rules: Vec<&str> = (0..5).map(|i| out.match_rule.value(i)).collect();
        assert_eq!(rules, vec!["new", "phone", "email", "new", "new"]);
        assert_eq!(out.stats.masters_new, 3);
        assert_eq!(out.stats.merged_in_batch, 2);
        assert_eq!(out.stats.conflicts, 2, "phone and e-mail conflicts");
        let merges = one(&MERGES_SCHEMA, &out.merges);
        let kinds = merges.column_by_name("kind").unwrap().as_string::<i32>();
        assert_eq!(
            (0..kinds.len()).filter(|&i| kinds.value(i) == "conflict").count(),
            2
        );
        let m = &one(&MASTERS_SCHEMA, &out.masters);
        assert_eq!(m.num_rows(), 3);
        // Vikram's golden record keeps his phone and e-mail.
        let mid = m.column_by_name("master_id").unwrap().as_string::<i32>();
        let row = (0..m.num_rows()).find(|&i| mid.value(i) == ids[0]).unwrap();
        let emails = m.column_by_name("email_keys").unwrap().as_list::<i32>();
        assert_eq!(list_values(emails, row), vec!["vikram@x.in"]);
        assert_eq!(
            m.column_by_name("record_count")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(row),
            3
        );
    }

    #[test]
    fn matches_existing_masters_and_never_merges_two() {
        let existing = masters(&[
            (
                "m-1",
                "Neha",
                "Kapoor",
                &["+919845067890"],
                &["nehakapoor@gmail.com"],
            ),
            ("m-2", "Neha", "Kapoor", &["+919800000001"], &["neha.k@work.in"]),
        ]);
        let b = leads(&[
            (
                "x",
                "Neha",
                "Kapoor",
                None,
                Some("nehakapoor@gmail.com"),
                "Lakeside",
            ),
            // Bridges m-1 (phone) and m-2 (e-mail): linked to one, flagged.
            (
                "y",
                "Neha",
                "Kapoor",
                Some("+919845067890"),
                Some("neha.k@work.in"),
                "Lakeside",
            ),
            ("z", "Priya", "Kapoor", Some("+919845067890"), None, "Lakeside"),
        ]);
        let out = link(
            &b,
            &existing,
            &HashMap::new(),
            &DedupeConfig::default(),
            &stamp(),
            Survivorship::newest(),
        )
        .unwrap();
        assert_eq!(out.master_id.value(0), "m-1");
        assert!(["m-1", "m-2"].contains(&out.master_id.value(1)));
        assert_ne!(
            out.master_id.value(2),
            "m-1",
            "different first name on a shared phone"
        );
        assert_eq!(out.stats.matched_existing, 2);
        let merges = one(&MERGES_SCHEMA, &out.merges);
        let kinds = merges.column_by_name("kind").unwrap().as_string::<i32>();
        assert!((0..kinds.len()).any(|i| kinds.value(i) == "bridge"));
        // m-1 now counts the new record, keeps its first_seen, takes newer values.
        let m = &one(&MASTERS_SCHEMA, &out.masters);
        let mid = m.column_by_name("master_id").unwrap().as_string::<i32>();
        let row = (0..m.num_rows()).find(|&i| mid.value(i) == "m-1").unwrap();
        let count = m
            .column_by_name("record_count")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert!(count.value(row) >= 4);
        let city = m.column_by_name("city").unwrap().as_string::<i32>();
        assert!(city.value(row).starts_with("City of"), "newest non-null wins");
        let company = m.column_by_name("company").unwrap().as_string::<i32>();
        assert_eq!(company.value(row), "Old Co", "a null never overwrites");
    }

    #[test]
    fn known_records_stay_on_their_master() {
        let existing = masters(&[("m-9", "Ravi", "Kumar", &["+919811122233"], &[])]);
        let b = leads(&[("k", "Ravi", "Kumar", Some("+919811122233"), None, "Riverside")]);
        let known = HashMap::from([(("src".to_string(), "k".to_string()), "m-9".to_string())]);
        let out = link(
            &b,
            &existing,
            &known,
            &DedupeConfig::default(),
            &stamp(),
            Survivorship::newest(),
        )
        .unwrap();
        assert_eq!(out.master_id.value(0), "m-9");
        assert_eq!(out.match_rule.value(0), "known_record");
        assert_eq!(out.stats.records_known, 1);
        assert_eq!(
            one(&MERGES_SCHEMA, &out.merges).num_rows(),
            0,
            "no new decision for a record seen before"
        );
    }
}
