//! Survivorship: the golden record of each touched master, and the
//! per-project links.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;

use super::config::{SurvivorField, SurvivorRule, SurvivorshipConfig};
use super::link::{
    DedupeError, HashGroups, RunStamp, event_times, group_by_hash, list_values, opt, strings, ts_builder,
};
use crate::schema::{MASTERS_SCHEMA, PROJECT_LINKS_SCHEMA};

/// One cluster: its master id, the existing master row (index into the
/// candidates batch) if any, and its lead rows in input order.
pub(super) struct Golden {
    pub master_id: String,
    pub existing: Option<usize>,
    /// The run's rows in the cluster: most clusters hold one or two, kept
    /// inline (one heap Vec per cluster was 700k allocations at 1M rows).
    pub rows: ClusterRows,
}

pub(super) type ClusterRows = smallvec::SmallVec<[usize; 2]>;

/// A value stamped with (event time, arrival order); the newest wins and a
/// tie goes to the later row. An existing master's values arrive at -1.
type Stamped<T> = (i64, i64, T);

/// Keep `cand` if it is at least as new as `best`.
fn keep_newest<T>(best: &mut Option<Stamped<T>>, cand: Stamped<T>) {
    if best.as_ref().is_none_or(|b| (cand.0, cand.1) >= (b.0, b.1)) {
        *best = Some(cand);
    }
}

fn timestamps(b: &RecordBatch, name: &str) -> Option<arrow::array::TimestampMicrosecondArray> {
    b.column_by_name(name)
        .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
}

fn int64s(b: &RecordBatch, name: &str) -> Option<Int64Array> {
    b.column_by_name(name)
        .map(|c| c.as_primitive::<arrow::datatypes::Int64Type>().clone())
}

/// The rules, and what they read beyond the run.
#[derive(Clone, Copy)]
pub struct Survivorship<'a> {
    pub rules: &'a SurvivorshipConfig,
    /// Earlier records of the masters the run touches (`records` columns),
    /// read when `rules.needs_history()`. A master
    /// with records here is rebuilt from them instead of from its golden
    /// record.
    pub history: Option<&'a RecordBatch>,
}

impl Survivorship<'static> {
    /// Newest wins everywhere, no history: the default.
    pub fn newest() -> Self {
        static RULES: std::sync::LazyLock<SurvivorshipConfig> = std::sync::LazyLock::new(Default::default);
        Survivorship {
            rules: &RULES,
            history: None,
        }
    }
}

/// Golden records of a run, and per master the fields whose records
/// disagreed: `{field: {kept, rule, others}}` for `merges`.
pub(super) struct GoldenOut {
    /// MASTERS_SCHEMA rows, one batch per chunk of clusters: the warehouse
    /// writes a list of batches, so joining them would only copy.
    pub masters: Vec<RecordBatch>,
    /// (master id, its disagreements as JSON text): one per master whose
    /// records differ, often a third of the masters, so written as text at
    /// once rather than built as `serde_json::Value` trees.
    pub conflicts: Vec<(String, String)>,
}

/// Build MASTERS_SCHEMA rows for the clusters by the survivorship rules
/// (default: newest non-null per field: the source's created time, else
/// ingestion time; an existing master's values count as of its
/// `last_seen`), every phone and e-mail ever seen.
/// Golden records of every cluster a run touched, built in chunks on the
/// rayon pool (clusters are independent). Shared by both dedupe modes.
pub(super) fn build_all_masters(
    leads: &RecordBatch,
    masters: &RecordBatch,
    clusters: &[Golden],
    known: &[bool],
    stamp: &RunStamp,
    surv: Survivorship,
) -> Result<GoldenOut, DedupeError> {
    use rayon::prelude::*;
    let times = event_times(leads, stamp.now_us);
    let history = match surv.history {
        Some(h) if h.num_rows() > 0 => Some(History::index(h, leads, known, surv.rules)?),
        _ => None,
    };
    let ctx = Ctx {
        leads,
        masters,
        known,
        times: &times,
        rules: surv.rules,
        history: history.as_ref(),
        lead_rank: ranks(leads, surv.rules)?,
    };
    let chunk = clusters
        .len()
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(4096);
    let parts = clusters
        .par_chunks(chunk)
        .map(|c| build_masters(&ctx, c, stamp))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        // One empty batch: the table still gets its schema.
        return build_masters(&ctx, &[], stamp);
    }
    let mut out = GoldenOut {
        masters: Vec::with_capacity(parts.len()),
        conflicts: Vec::new(),
    };
    for p in parts {
        out.masters.extend(p.masters);
        out.conflicts.extend(p.conflicts);
    }
    Ok(out)
}

/// Golden records rebuilt from scratch out of their records, for merges
/// and splits outside runs: `groups` names each master and the rows of
/// `records` (the `records` columns the survivorship reads, text as Utf8,
/// times as UTC microseconds) that now belong to it. Same survivorship as
/// a run, with no earlier golden record to start from. Also returns, per
/// master, the fields whose records disagree.
pub fn golden_from_records(
    records: &RecordBatch,
    groups: &[(String, Vec<usize>)],
    rules: &SurvivorshipConfig,
    stamp: &RunStamp,
) -> Result<(RecordBatch, Vec<(String, serde_json::Value)>), DedupeError> {
    let none = RecordBatch::new_empty(MASTERS_SCHEMA.clone());
    let clusters: Vec<Golden> = groups
        .iter()
        .map(|(id, rows)| Golden {
            master_id: id.clone(),
            existing: None,
            rows: rows.iter().copied().collect(),
        })
        .collect();
    let known = vec![false; records.num_rows()];
    let surv = Survivorship { rules, history: None };
    let out = build_all_masters(records, &none, &clusters, &known, stamp, surv)?;
    let masters = arrow::compute::concat_batches(&MASTERS_SCHEMA, &out.masters)?;
    let conflicts = out
        .conflicts
        .into_iter()
        .map(|(id, text)| {
            (
                id,
                serde_json::from_str(&text).expect("the builder writes valid JSON"),
            )
        })
        .collect();
    Ok((masters, conflicts))
}

/// Earlier records by master id, without the ones this run sees again.
struct History<'a> {
    batch: &'a RecordBatch,
    times: Vec<i64>,
    rank: Vec<u32>,
    of_master: HashMap<&'a str, Vec<usize>, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
}

impl<'a> History<'a> {
    fn index(
        batch: &'a RecordBatch,
        leads: &RecordBatch,
        known: &[bool],
        rules: &SurvivorshipConfig,
    ) -> Result<Self, DedupeError> {
        let (ls, lr) = (strings(leads, "source")?, strings(leads, "source_record_id")?);
        let again: std::collections::HashSet<(&str, &str)> = (0..leads.num_rows())
            .filter(|&i| known[i])
            .map(|i| (ls.value(i), lr.value(i)))
            .collect();
        let (hs, hr, hm) = (
            strings(batch, "source")?,
            strings(batch, "source_record_id")?,
            strings(batch, "master_id")?,
        );
        let mut of_master: HashMap<&str, Vec<usize>, _> = HashMap::default();
        for h in 0..batch.num_rows() {
            if !again.contains(&(hs.value(h), hr.value(h))) {
                of_master.entry(hm.value(h)).or_default().push(h);
            }
        }
        Ok(History {
            batch,
            times: event_times(batch, i64::MIN),
            rank: ranks(batch, rules)?,
            of_master,
        })
    }
}

/// Source rank of each row under `source_priority` (0 = most trusted,
/// unlisted sources after every listed one).
fn ranks(b: &RecordBatch, rules: &SurvivorshipConfig) -> Result<Vec<u32>, DedupeError> {
    if rules.source_priority.is_empty() {
        return Ok(Vec::new());
    }
    let source = strings(b, "source")?;
    let unlisted = rules.source_priority.len() as u32;
    Ok((0..b.num_rows())
        .map(|i| {
            rules
                .source_priority
                .iter()
                .position(|s| s == source.value(i))
                .map_or(unlisted, |p| p as u32)
        })
        .collect())
}

struct Ctx<'a> {
    leads: &'a RecordBatch,
    masters: &'a RecordBatch,
    known: &'a [bool],
    times: &'a [i64],
    rules: &'a SurvivorshipConfig,
    history: Option<&'a History<'a>>,
    lead_rank: Vec<u32>,
}

/// Where a candidate value comes from.
#[derive(Clone, Copy)]
enum Origin {
    /// The existing golden record (row of the candidates batch).
    Master(usize),
    /// An earlier record (row of the history batch).
    Earlier(usize),
    /// A lead of this run.
    Lead(usize),
}

/// A value with what the rules weigh: event time, arrival order (a tie in
/// time goes to the later row), source rank.
#[derive(Clone, Copy)]
struct Cand<V> {
    time: i64,
    order: i64,
    rank: u32,
    value: V,
}

/// The index of the candidate `rule` keeps: the greatest by the rule's
/// measure, a tie going to the newest (time, then arrival order).
fn choose<V>(rule: SurvivorRule, cands: &[Cand<V>], text: impl Fn(&V) -> &str) -> Option<usize> {
    // Most frequent: records per value, spelling variants in case and
    // spaces counted as one value (the key `same_text` compares).
    let counts: Vec<i64> = if rule == SurvivorRule::MostFrequent {
        let keys: Vec<String> = cands.iter().map(|c| text_key(text(&c.value))).collect();
        let mut per_key: HashMap<&str, i64> = HashMap::with_capacity(keys.len());
        for k in &keys {
            *per_key.entry(k).or_default() += 1;
        }
        keys.iter().map(|k| per_key[k.as_str()]).collect()
    } else {
        Vec::new()
    };
    (0..cands.len()).max_by_key(|&k| {
        let c = &cands[k];
        let measure = match rule {
            SurvivorRule::Newest => 0,
            SurvivorRule::Longest => text(&c.value).chars().count() as i64,
            SurvivorRule::SourcePriority => -i64::from(c.rank),
            SurvivorRule::MostFrequent => counts[k],
        };
        (measure, c.time, c.order)
    })
}

/// A name as one unit (first, last, full) and the form rules compare.
type NameValue<'a> = ([Option<&'a str>; 3], Cow<'a, str>);

/// The text a rule weighs: the value itself, or a name's shown form.
fn plain<'a>(v: &'a &str) -> &'a str {
    v
}

fn name_text<'a>(v: &'a NameValue) -> &'a str {
    &v.1
}

/// The form `same_text` compares: lower case, no spaces.
fn text_key(a: &str) -> String {
    a.split_whitespace()
        .flat_map(str::chars)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Equal ignoring case and spacing: "Acme  Corp" and "acme corp" are one value.
fn same_text(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    // Most values are ASCII: compare bytes, not a char-by-char lowercase
    // iterator (it runs for every candidate of every field of every master
    // with more than one record). `char::is_whitespace` is the rule
    // `split_whitespace` uses (it counts the vertical tab, unlike
    // `u8::is_ascii_whitespace`).
    if a.is_ascii() && b.is_ascii() {
        fn fold(s: &str) -> impl Iterator<Item = u8> + '_ {
            s.bytes()
                .filter(|&c| !(c as char).is_whitespace())
                .map(|c| c.to_ascii_lowercase())
        }
        return fold(a).eq(fold(b));
    }
    a.split_whitespace()
        .flat_map(str::chars)
        .flat_map(char::to_lowercase)
        .eq(b
            .split_whitespace()
            .flat_map(str::chars)
            .flat_map(char::to_lowercase))
}

/// `{"kept":..,"others":[..],"rule":..}` as JSON text when the candidates
/// hold more than one value. Keys in the order serde_json's maps keep them
/// (sorted), so the text, and the `merges` id hashed from it, is the same
/// as when it was built as a `serde_json::Value`.
fn conflict<V>(
    rule: SurvivorRule,
    cands: &[Cand<V>],
    kept: usize,
    text: impl Fn(&V) -> &str,
) -> Option<Vec<u8>> {
    let k = text(&cands[kept].value);
    if cands.iter().all(|c| same_text(text(&c.value), k)) {
        return None;
    }
    let mut others: Vec<&str> = Vec::new();
    for c in cands {
        let v = text(&c.value);
        if !same_text(v, k) && !others.iter().any(|o| same_text(o, v)) && others.len() < 10 {
            others.push(v);
        }
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"kept\":");
    json_string(&mut out, k);
    out.extend_from_slice(b",\"others\":[");
    for (i, o) in others.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, o);
    }
    out.extend_from_slice(b"],\"rule\":");
    json_string(&mut out, rule.as_str());
    out.push(b'}');
    Some(out)
}

/// A JSON string literal, escaped as serde_json escapes it.
fn json_string(out: &mut Vec<u8>, v: &str) {
    serde_json::to_writer(out, v).expect("a string serialises");
}

/// One master's disagreements, `{"field":{..},..}` with the fields sorted
/// (as a serde_json map orders them). Field names are plain identifiers.
fn conflicts_text(mut fields: Vec<(&'static str, Vec<u8>)>) -> String {
    fields.sort_unstable_by_key(|(f, _)| *f);
    let mut out = Vec::with_capacity(2 + fields.iter().map(|(f, x)| f.len() + x.len() + 4).sum::<usize>());
    out.push(b'{');
    for (i, (f, x)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(f.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(x);
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON text of UTF-8 strings is UTF-8")
}

/// A text column of the leads, the candidates and (if read) the history.
struct Cols<'a> {
    lead: &'a StringArray,
    /// None for `email_key`: masters keep only the list.
    master: Option<&'a StringArray>,
    earlier: Option<&'a StringArray>,
}

impl<'a> Cols<'a> {
    fn of(ctx: &Ctx<'a>, name: &str) -> Result<Self, DedupeError> {
        Ok(Cols {
            lead: strings(ctx.leads, name)?,
            master: ctx.masters.column_by_name(name).map(|c| c.as_string::<i32>()),
            earlier: ctx.history.map(|h| strings(h.batch, name)).transpose()?,
        })
    }

    fn at(&self, o: Origin) -> Option<&'a str> {
        match o {
            Origin::Master(j) => self.master.and_then(|a| opt(a, j)),
            Origin::Earlier(h) => self.earlier.and_then(|a| opt(a, h)),
            Origin::Lead(i) => opt(self.lead, i),
        }
    }
}

/// A builder for `rows` values like those of `like` (the run's column),
/// sized by its average value plus a quarter. Grown by doubling, these
/// buffers were copied at each step into freshly faulted pages (the
/// profile's page faults); capacity never written is never touched.
fn sized_builder(like: &StringArray, rows: usize) -> StringBuilder {
    let avg = like.value_data().len().div_ceil(like.len().max(1));
    StringBuilder::with_capacity(rows, rows * (avg + avg / 4 + 1))
}

fn build_masters(ctx: &Ctx, clusters: &[Golden], stamp: &RunStamp) -> Result<GoldenOut, DedupeError> {
    let (leads, masters, known, times) = (ctx.leads, ctx.masters, ctx.known, ctx.times);
    let k = clusters.len();
    let m_last_seen = timestamps(masters, "last_seen");
    let m_first_seen = timestamps(masters, "first_seen");
    let m_count = int64s(masters, "record_count");
    let master_time = |j: usize| {
        m_last_seen
            .as_ref()
            .filter(|a| !a.is_null(j))
            .map(|a| a.value(j))
            .unwrap_or(i64::MIN)
    };

    // Each cluster's candidates: its golden record, or its earlier records
    // when the rules read them, then the run's rows (arrival order). One
    // flat list for all clusters, `bounds[c]..bounds[c + 1]` being cluster c's.
    let mut flat: Vec<Cand<Origin>> = Vec::with_capacity(clusters.iter().map(|g| g.rows.len() + 1).sum());
    let mut bounds = Vec::with_capacity(k + 1);
    bounds.push(0);
    for g in clusters {
        let earlier = ctx
            .history
            .zip(g.existing)
            .and_then(|(h, _)| h.of_master.get(g.master_id.as_str()).map(|rows| (h, rows)));
        match (earlier, g.existing) {
            (Some((h, rows)), _) => {
                let n = rows.len() as i64;
                flat.extend(rows.iter().enumerate().map(|(k, &r)| Cand {
                    time: h.times[r],
                    order: k as i64 - n - 1,
                    rank: h.rank.get(r).copied().unwrap_or(0),
                    value: Origin::Earlier(r),
                }));
            }
            (None, Some(j)) => flat.push(Cand {
                time: master_time(j),
                order: -1,
                // Its sources are not known: trusted least.
                rank: u32::MAX,
                value: Origin::Master(j),
            }),
            (None, None) => {}
        }
        flat.extend(g.rows.iter().map(|&i| Cand {
            time: times[i],
            order: i as i64,
            rank: ctx.lead_rank.get(i).copied().unwrap_or(0),
            value: Origin::Lead(i),
        }));
        bounds.push(flat.len());
    }
    let origins: Vec<&[Cand<Origin>]> = bounds.windows(2).map(|w| &flat[w[0]..w[1]]).collect();
    let mut conflicts: Vec<Vec<(&'static str, Vec<u8>)>> = vec![Vec::new(); k];
    // Disagreements are reported when new records join a master, not each
    // time a source re-sends records it sent before.
    let report: Vec<bool> = clusters
        .iter()
        .map(|g| g.rows.iter().any(|&i| !known[i]))
        .collect();

    let mut out: Vec<ArrayRef> = Vec::with_capacity(MASTERS_SCHEMA.fields().len());
    let mut ids = StringBuilder::with_capacity(k, clusters.iter().map(|g| g.master_id.len()).sum());
    for g in clusters {
        ids.append_value(&g.master_id);
    }
    out.push(Arc::new(ids.finish()));

    // The name travels as one unit (first, last, full from one record), so a
    // golden record never pairs one record's first name with another's last.
    let (first, last, full) = (
        Cols::of(ctx, "first_name")?,
        Cols::of(ctx, "last_name")?,
        Cols::of(ctx, "full_name")?,
    );
    let rule = ctx.rules.rule(SurvivorField::Name);
    let mut nb = [first.lead, last.lead, full.lead].map(|a| sized_builder(a, k));
    let mut cands: Vec<Cand<NameValue>> = Vec::new();
    for (c, pool) in origins.iter().enumerate() {
        // One candidate (most masters): it is the value, nothing disagrees.
        if let [o] = pool {
            let parts = [first.at(o.value), last.at(o.value), full.at(o.value)];
            let named = parts[0].is_some() || parts[2].is_some();
            for (b, v) in nb.iter_mut().zip(parts) {
                b.append_option(v.filter(|_| named));
            }
            continue;
        }
        cands.clear();
        for o in *pool {
            let parts = [first.at(o.value), last.at(o.value), full.at(o.value)];
            if parts[0].is_some() || parts[2].is_some() {
                let shown = match parts {
                    [_, _, Some(f)] => Cow::Borrowed(f),
                    [f, l, None] => Cow::Owned(
                        format!("{} {}", f.unwrap_or(""), l.unwrap_or(""))
                            .trim()
                            .to_string(),
                    ),
                };
                cands.push(Cand {
                    time: o.time,
                    order: o.order,
                    rank: o.rank,
                    value: (parts, shown),
                });
            }
        }
        let kept = choose(rule, &cands, name_text);
        if let Some(kk) = kept
            && report[c]
            && let Some(x) = conflict(rule, &cands, kk, name_text)
        {
            conflicts[c].push(("name", x));
        }
        let parts = kept.map(|kk| cands[kk].value.0).unwrap_or([None; 3]);
        for (b, v) in nb.iter_mut().zip(parts) {
            b.append_option(v);
        }
    }
    for mut b in nb {
        out.push(Arc::new(b.finish()));
    }

    // Best phone / e-mail among the valid ones (every one seen stays in
    // the lists below).
    for (field, sf) in [("phone", SurvivorField::Phone), ("email", SurvivorField::Email)] {
        let col = Cols::of(ctx, field)?;
        // An invalid e-mail kept by `invalid_email: keep` has no key: skip it.
        let key = if field == "email" {
            Some(Cols::of(ctx, "email_key")?)
        } else {
            None
        };
        let rule = ctx.rules.rule(sf);
        let mut b = sized_builder(col.lead, k);
        let mut cands: Vec<Cand<&str>> = Vec::new();
        let keyed = |o: &Cand<Origin>| match (&key, o.value) {
            (Some(_), Origin::Master(_)) | (None, _) => true,
            (Some(k), at) => k.at(at).is_some(),
        };
        for pool in &origins {
            if let [o] = pool {
                b.append_option(col.at(o.value).filter(|_| keyed(o)));
                continue;
            }
            cands.clear();
            for o in *pool {
                if keyed(o)
                    && let Some(v) = col.at(o.value)
                {
                    cands.push(o.with(v));
                }
            }
            b.append_option(choose(rule, &cands, plain).map(|kk| cands[kk].value));
        }
        out.push(Arc::new(b.finish()));
    }

    // Every phone, e-mail and e-mail key seen: existing first, then new in order.
    for (list_col, lead_col) in [
        ("phones", "phone"),
        ("emails", "email"),
        ("email_keys", "email_key"),
    ] {
        let existing = masters
            .column_by_name(list_col)
            .map(|c| c.as_list::<i32>().clone());
        let lc = strings(leads, lead_col)?;
        let keys = strings(leads, "email_key")?;
        // Most people have one value: a list per cluster plus its item.
        let mut b = crate::schema::list_builder_with(sized_builder(lc, k), k);
        let mut seen: Vec<&str> = Vec::new();
        for g in clusters {
            let old: Vec<String> = match (&existing, g.existing) {
                (Some(a), Some(j)) => list_values(a, j),
                _ => Vec::new(),
            };
            seen.clear();
            for &i in &g.rows {
                if lead_col == "email" && opt(keys, i).is_none() {
                    continue;
                }
                if let Some(v) = opt(lc, i)
                    && !seen.contains(&v)
                    && !old.iter().any(|o| o == v)
                {
                    seen.push(v);
                }
            }
            for v in old.iter().map(String::as_str).chain(seen.iter().copied()) {
                b.values().append_value(v);
            }
            b.append(true);
        }
        out.push(Arc::new(b.finish()));
    }

    for sf in [
        SurvivorField::Company,
        SurvivorField::JobTitle,
        SurvivorField::Country,
        SurvivorField::City,
        SurvivorField::Website,
    ] {
        let col = Cols::of(ctx, sf.as_str())?;
        let rule = ctx.rules.rule(sf);
        let mut b = sized_builder(col.lead, k);
        let mut cands: Vec<Cand<&str>> = Vec::new();
        for (c, pool) in origins.iter().enumerate() {
            if let [o] = pool {
                b.append_option(col.at(o.value));
                continue;
            }
            cands.clear();
            cands.extend(pool.iter().filter_map(|o| col.at(o.value).map(|v| o.with(v))));
            let kept = choose(rule, &cands, plain);
            if let Some(kk) = kept
                && report[c]
                && let Some(x) = conflict(rule, &cands, kk, plain)
            {
                conflicts[c].push((sf.as_str(), x));
            }
            b.append_option(kept.map(|kk| cands[kk].value));
        }
        out.push(Arc::new(b.finish()));
    }

    let mut counts = Vec::with_capacity(k);
    let mut first_seen = ts_builder(k);
    let mut last_seen = ts_builder(k);
    for g in clusters {
        let new_rows = g.rows.iter().filter(|&&i| !known[i]).count() as i64;
        let before = g
            .existing
            .and_then(|j| m_count.as_ref().map(|a| a.value(j)))
            .unwrap_or(0);
        counts.push(before + new_rows);
        let lead_min = g.rows.iter().map(|&i| times[i]).min();
        let lead_max = g.rows.iter().map(|&i| times[i]).max();
        let fs = g.existing.and_then(|j| {
            m_first_seen
                .as_ref()
                .filter(|a| !a.is_null(j))
                .map(|a| a.value(j))
        });
        let ls = g.existing.map(master_time).filter(|t| *t != i64::MIN);
        first_seen.append_option([fs, lead_min].into_iter().flatten().min());
        last_seen.append_option([ls, lead_max].into_iter().flatten().max());
    }
    out.push(Arc::new(Int64Array::from(counts)));
    out.push(Arc::new(first_seen.finish()));
    out.push(Arc::new(last_seen.finish()));
    out.push(Arc::new(
        std::iter::repeat_n(Some(stamp.run_id.as_str()), k).collect::<StringArray>(),
    ));
    let conflicts = clusters
        .iter()
        .zip(conflicts)
        .filter(|(_, m)| !m.is_empty())
        .map(|(g, m)| (g.master_id.clone(), conflicts_text(m)))
        .collect();
    Ok(GoldenOut {
        masters: vec![RecordBatch::try_new(MASTERS_SCHEMA.clone(), out)?],
        conflicts,
    })
}

impl Cand<Origin> {
    fn with<V>(&self, value: V) -> Cand<V> {
        Cand {
            time: self.time,
            order: self.order,
            rank: self.rank,
            value,
        }
    }
}

/// Project links for the run's leads: one row per (master, project) touched,
/// merged with the existing link rows (`existing`, PROJECT_LINKS_SCHEMA).
/// A row's status or owner changes a link only when the row states one; a
/// new link without a status gets `default_status`. Rows sorted by
/// (master, project), in batches of up to 131,072 built side by side.
pub fn project_links(
    leads: &RecordBatch,
    master_id: &StringArray,
    known: &[bool],
    existing: &RecordBatch,
    default_status: &str,
    stamp: &RunStamp,
) -> Result<Vec<RecordBatch>, DedupeError> {
    let project = strings(leads, "project")?;
    let status = strings(leads, "status")?;
    let owner = strings(leads, "owner")?;
    let times = event_times(leads, stamp.now_us);
    let (e_master, e_project) = (strings(existing, "master_id")?, strings(existing, "project")?);
    let (e_status, e_owner) = (strings(existing, "status")?, strings(existing, "owner")?);
    let e_count = int64s(existing, "record_count");
    let e_fs = timestamps(existing, "first_seen");
    let e_ls = timestamps(existing, "last_seen");
    // xxh3, not SipHash: up to a million keys per run.
    type FastMap<K, V> = HashMap<K, V, xxhash_rust::xxh3::Xxh3DefaultBuilder>;
    let mut index: FastMap<(&str, &str), usize> =
        FastMap::with_capacity_and_hasher(existing.num_rows(), Default::default());
    for j in 0..existing.num_rows() {
        index.insert((e_master.value(j), e_project.value(j)), j);
    }

    struct Link<'a> {
        status: Option<Stamped<&'a str>>,
        owner: Option<Stamped<&'a str>>,
        count: i64,
        first: i64,
        last: i64,
    }
    // Rows grouped by (master, project): a million string pairs.
    use rayon::prelude::*;
    let key_of = |i: u32| opt(project, i as usize).map(|p| (master_id.value(i as usize), p));
    let HashGroups { members, spans } = group_by_hash(leads.num_rows(), key_of, |&(m, p)| {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(p.as_bytes(), 0);
        xxhash_rust::xxh3::xxh3_64_with_seed(m.as_bytes(), h)
    });
    let groups: Vec<&[u32]> = spans
        .par_iter()
        .map(|&(a, b)| &members[a as usize..b as usize])
        .collect();
    let links: Vec<Link> = groups
        .par_iter()
        .map(|rows| {
            let mut l = Link {
                status: None,
                owner: None,
                count: 0,
                first: i64::MAX,
                last: i64::MIN,
            };
            for &i in rows.iter() {
                let i = i as usize;
                let t = times[i];
                if let Some(s) = opt(status, i) {
                    keep_newest(&mut l.status, (t, i as i64, s));
                }
                if let Some(o) = opt(owner, i) {
                    keep_newest(&mut l.owner, (t, i as i64, o));
                }
                if !known[i] {
                    l.count += 1;
                }
                l.first = l.first.min(t);
                l.last = l.last.max(t);
            }
            l
        })
        .collect();
    let mut order: Vec<(u128, (&str, &str), u32)> = groups
        .par_iter()
        .enumerate()
        .map(|(g, rows)| {
            let key = key_of(rows[0]).expect("grouped rows have a key");
            (text_prefix(key.0), key, g as u32)
        })
        .collect();
    // Keys are unique: an unstable sort gives the same order, cheaper; a
    // million string pairs sort in half the time on two cores. Most
    // comparisons end at the master id's first 16 bytes, held inline, so
    // they read no string (the ids are spread over a million rows).
    order.par_sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    // Rows written in chunks of the sorted keys on every core; the
    // warehouse writes the list of batches as it is.
    const CHUNK: usize = 131_072;
    if order.is_empty() {
        return Ok(vec![RecordBatch::new_empty(PROJECT_LINKS_SCHEMA.clone())]);
    }
    order
        .par_chunks(CHUNK)
        .map(|part| -> Result<RecordBatch, DedupeError> {
            let k = part.len();
            // Sized up front (see `sized_builder`), ids and projects exactly.
            let (mut mb, mut pb, mut sb, mut ob) = (
                StringBuilder::with_capacity(k, part.iter().map(|(_, key, _)| key.0.len()).sum()),
                StringBuilder::with_capacity(k, part.iter().map(|(_, key, _)| key.1.len()).sum()),
                sized_builder(status, k),
                sized_builder(owner, k),
            );
            let (mut counts, mut fs, mut ls) = (Vec::with_capacity(k), ts_builder(k), ts_builder(k));
            for (_, key, at) in part {
                let l = &links[*at as usize];
                let prior = index.get(key).copied();
                mb.append_value(key.0);
                pb.append_value(key.1);
                let prior_status = prior.and_then(|j| opt(e_status, j));
                let prior_owner = prior.and_then(|j| opt(e_owner, j));
                sb.append_option(l.status.map(|s| s.2).or(prior_status).or(Some(default_status)));
                ob.append_option(l.owner.map(|o| o.2).or(prior_owner));
                counts.push(
                    prior
                        .and_then(|j| e_count.as_ref().map(|a| a.value(j)))
                        .unwrap_or(0)
                        + l.count,
                );
                let pf = prior.and_then(|j| e_fs.as_ref().filter(|a| !a.is_null(j)).map(|a| a.value(j)));
                let pl = prior.and_then(|j| e_ls.as_ref().filter(|a| !a.is_null(j)).map(|a| a.value(j)));
                fs.append_value(pf.map_or(l.first, |p| p.min(l.first)));
                ls.append_value(pl.map_or(l.last, |p| p.max(l.last)));
            }
            let cols: Vec<ArrayRef> = vec![
                Arc::new(mb.finish()),
                Arc::new(pb.finish()),
                Arc::new(sb.finish()),
                Arc::new(ob.finish()),
                Arc::new(Int64Array::from(counts)),
                Arc::new(fs.finish()),
                Arc::new(ls.finish()),
                Arc::new(std::iter::repeat_n(Some(stamp.run_id.as_str()), k).collect::<StringArray>()),
            ];
            Ok(RecordBatch::try_new(PROJECT_LINKS_SCHEMA.clone(), cols)?)
        })
        .collect()
}

/// The first 16 bytes of `s` as a big-endian number (zero-padded): when
/// two prefixes differ, the strings compare the same way.
fn text_prefix(s: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RECORDS_SCHEMA;
    use arrow::array::{TimestampMicrosecondArray, new_null_array};

    /// A `records` row: (first, last, email, email_key, city, time).
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>, i64);

    fn records(rows: &[Row]) -> RecordBatch {
        let cols: Vec<ArrayRef> = RECORDS_SCHEMA
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                let s = |g: &dyn Fn(&Row) -> Option<String>| {
                    Arc::new(rows.iter().map(g).collect::<StringArray>()) as ArrayRef
                };
                match f.name().as_str() {
                    "source" => s(&|_| Some("drops".into())),
                    "source_record_id" | "master_id" => s(&|r| Some(format!("{}-{}", r.0, r.5))),
                    "first_name" => s(&|r| Some(r.0.into())),
                    "last_name" => s(&|r| Some(r.1.into())),
                    "full_name" => s(&|r| Some(format!("{} {}", r.0, r.1))),
                    "email" => s(&|r| Some(r.2.into())),
                    "email_key" => s(&|r| Some(r.3.into())),
                    "city" => s(&|r| r.4.map(Into::into)),
                    "source_created_at" => Arc::new(
                        TimestampMicrosecondArray::from(rows.iter().map(|r| r.5).collect::<Vec<_>>())
                            .with_timezone("UTC"),
                    ),
                    _ => new_null_array(f.data_type(), rows.len()),
                }
            })
            .collect();
        RecordBatch::try_new(RECORDS_SCHEMA.clone(), cols).unwrap()
    }

    #[test]
    fn text_prefix_orders_as_the_text_does_where_it_differs() {
        let words = [
            "",
            "a",
            "m-",
            "m-0",
            "m-00ff",
            "m-0123456789abcdef",
            "m-0123456789abcdeg",
            "m-0123456789abcd",
            "z",
            "é",
        ];
        for a in words {
            for b in words {
                let (pa, pb) = (text_prefix(a), text_prefix(b));
                if pa != pb {
                    assert_eq!(pa.cmp(&pb), a.cmp(b), "{a:?} vs {b:?}");
                }
            }
        }
    }

    #[test]
    fn same_text_ignores_case_and_spacing_alike_for_ascii_and_not() {
        for (a, b, same) in [
            ("Acme  Corp", "acme corp", true),
            ("Acme\u{b}Corp", "acmecorp", true),
            ("\tACME corp ", "AcmeCorp", true),
            ("Acme Corp", "Acme Corps", false),
            ("Zoë Roy", "zoë  roy", true),
            ("Zoë Roy", "Zoe Roy", false),
            ("İstanbul", "i̇stanbul", true),
            ("", "  ", true),
        ] {
            assert_eq!(same_text(a, b), same, "{a:?} vs {b:?}");
            assert_eq!(same_text(a, b), text_key(a) == text_key(b), "{a:?} vs {b:?}");
        }
    }

    /// The disagreement text hashes into a `merges` id: it must stay byte
    /// for byte what serde_json wrote when it was built as a `Value`.
    #[test]
    fn conflict_text_is_what_serde_json_wrote() {
        let values = [
            "Zoë \"Z\" O'Brien",
            "back\\slash\ttab\u{1}",
            "zoë  \"z\" o'brien",
            "Plain",
            "日本",
        ];
        let cands: Vec<Cand<&str>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Cand {
                time: i as i64,
                order: i as i64,
                rank: 0,
                value: *v,
            })
            .collect();
        let text = conflict(SurvivorRule::MostFrequent, &cands, 0, |v: &&str| v).unwrap();
        // The same-text duplicate ("zoë  \"z\"...") is not listed again.
        let others = ["back\\slash\ttab\u{1}", "Plain", "日本"];
        let value = serde_json::json!({"kept": values[0], "rule": "most_frequent", "others": others});
        assert_eq!(String::from_utf8(text.clone()).unwrap(), value.to_string());

        let whole = conflicts_text(vec![
            ("name", text.clone()),
            ("city", b"{\"kept\":\"A\"}".to_vec()),
        ]);
        let mut map = serde_json::Map::new();
        map.insert("name".into(), value);
        map.insert("city".into(), serde_json::json!({"kept": "A"}));
        assert_eq!(whole, serde_json::Value::Object(map).to_string());
        assert!(conflict(SurvivorRule::Newest, &cands[..1], 0, |v: &&str| v).is_none());
    }

    #[test]
    fn golden_records_from_records_alone_pick_newest_and_keep_every_email() {
        let b = records(&[
            (
                "Neha",
                "Kapoor",
                "neha.k@gmail.com",
                "nehak@gmail.com",
                Some("Delhi"),
                10,
            ),
            ("Neha", "K", "nk88@gmail.com", "nk88@gmail.com", None, 20),
            ("Ravi", "Rao", "ravi@x.in", "ravi@x.in", Some("Pune"), 5),
        ]);
        let stamp = RunStamp {
            run_id: "e-1".into(),
            now_us: 99,
        };
        let groups = vec![("m-n".to_string(), vec![0, 1]), ("m-r".to_string(), vec![2])];
        let (g, conflicts) =
            golden_from_records(&b, &groups, &SurvivorshipConfig::default(), &stamp).unwrap();
        // The two Nehas disagree on the name (and one has no city: not a conflict).
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].1["name"]["kept"], "Neha K");
        assert_eq!(conflicts[0].1["name"]["others"][0], "Neha Kapoor");
        assert!(conflicts[0].1.get("city").is_none());
        assert_eq!(g.num_rows(), 2);
        let s = |name: &str, i: usize| {
            let a = g.column_by_name(name).unwrap().as_string::<i32>();
            (!a.is_null(i)).then(|| a.value(i).to_string())
        };
        assert_eq!(s("master_id", 0).as_deref(), Some("m-n"));
        // The newest record's name, the newest non-null city.
        assert_eq!(s("last_name", 0).as_deref(), Some("K"));
        assert_eq!(s("city", 0).as_deref(), Some("Delhi"));
        let emails = g.column_by_name("emails").unwrap().as_list::<i32>().value(0);
        assert_eq!(emails.len(), 2);
        let counts = g
            .column_by_name("record_count")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!((counts.value(0), counts.value(1)), (2, 1));
        let first = g
            .column_by_name("first_seen")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(first.value(0), 10);
    }

    /// `b` with text column `name` replaced.
    fn with_text(b: &RecordBatch, name: &str, values: &[Option<&str>]) -> RecordBatch {
        let i = b.schema().index_of(name).unwrap();
        let mut cols = b.columns().to_vec();
        cols[i] = Arc::new(values.iter().copied().collect::<StringArray>());
        RecordBatch::try_new(b.schema(), cols).unwrap()
    }

    fn text_of(b: &RecordBatch, name: &str, i: usize) -> String {
        b.column_by_name(name)
            .unwrap()
            .as_string::<i32>()
            .value(i)
            .to_string()
    }

    fn rules(yaml: &str) -> SurvivorshipConfig {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn each_rule_picks_its_value_and_records_what_it_overruled() {
        // Three records of one person, oldest first.
        let b = records(&[
            ("Priya", "Nair", "p@x.in", "p@x.in", Some("Kochi"), 10),
            ("Priya", "Nair", "p@x.in", "p@x.in", Some("Kochi"), 20),
            ("Priyaa", "N", "p@x.in", "p@x.in", Some("Cochin"), 30),
        ]);
        let b = with_text(
            &b,
            "company",
            &[Some("Acme"), Some("Acme Industries Pvt Ltd"), Some("ACME")],
        );
        let b = with_text(&b, "source", &[Some("crm"), Some("sheet"), Some("drops")]);
        let b = with_text(&b, "source_record_id", &[Some("1"), Some("2"), Some("3")]);
        let stamp = RunStamp {
            run_id: "e-1".into(),
            now_us: 99,
        };
        let groups = vec![("m-p".to_string(), vec![0, 1, 2])];
        let pick = |r: &SurvivorshipConfig| golden_from_records(&b, &groups, r, &stamp).unwrap();

        // Newest: the third record's everything.
        let (g, c) = pick(&SurvivorshipConfig::default());
        assert_eq!(text_of(&g, "first_name", 0), "Priyaa");
        assert_eq!(text_of(&g, "city", 0), "Cochin");
        assert_eq!(text_of(&g, "company", 0), "ACME");
        assert_eq!(c[0].1["city"]["others"][0], "Kochi");
        assert_eq!(c[0].1["company"]["rule"], "newest");

        // Most frequent: Kochi twice; "Acme" and "ACME" are one value.
        let (g, c) = pick(&rules(r#"{"default": "most_frequent"}"#));
        assert_eq!(text_of(&g, "city", 0), "Kochi");
        assert_eq!(text_of(&g, "first_name", 0), "Priya");
        assert_eq!(text_of(&g, "company", 0), "ACME");
        assert_eq!(c[0].1["company"]["kept"], "ACME");
        assert_eq!(c[0].1["company"]["others"][0], "Acme Industries Pvt Ltd");

        // Source priority: the CRM first, even though it is the oldest.
        let (g, _) = pick(&rules(
            r#"{"fields": {"name": "source_priority", "city": "source_priority"}, "source_priority": ["crm", "sheet"]}"#,
        ));
        assert_eq!(text_of(&g, "last_name", 0), "Nair");
        assert_eq!(text_of(&g, "city", 0), "Kochi");
        // Fields without a rule stay newest.
        assert_eq!(text_of(&g, "company", 0), "ACME");

        // Longest company.
        let (g, c) = pick(&rules(r#"{"fields": {"company": "longest"}}"#));
        assert_eq!(text_of(&g, "company", 0), "Acme Industries Pvt Ltd");
        assert_eq!(c[0].1["company"]["rule"], "longest");
    }

    #[test]
    fn history_replaces_the_golden_record_and_a_record_seen_again_counts_once() {
        // Earlier records of m-1: Acme (t=10, record r1), Acme (t=30, r2), Beta (t=20, r3).
        let hist = records(&[
            ("A", "B", "a@x.in", "a@x.in", None, 10),
            ("A", "B", "a@x.in", "a@x.in", None, 30),
            ("A", "B", "a@x.in", "a@x.in", None, 20),
        ]);
        let hist = with_text(&hist, "company", &[Some("Acme"), Some("Acme"), Some("Beta")]);
        let hist = with_text(&hist, "source_record_id", &[Some("r1"), Some("r2"), Some("r3")]);
        let hist = with_text(&hist, "master_id", &[Some("m-1"); 3]);
        let stamp = RunStamp {
            run_id: "e-2".into(),
            now_us: 99,
        };
        let (existing, _) = golden_from_records(
            &hist,
            &[("m-1".to_string(), vec![0, 1, 2])],
            &SurvivorshipConfig::default(),
            &stamp,
        )
        .unwrap();
        assert_eq!(text_of(&existing, "company", 0), "Acme");
        // The run sees r1 again, now saying Beta (older than r2).
        let lead = records(&[("A", "B", "a@x.in", "a@x.in", None, 5)]);
        let lead = with_text(&lead, "company", &[Some("Beta")]);
        let lead = with_text(&lead, "source_record_id", &[Some("r1")]);
        let clusters = [Golden {
            master_id: "m-1".into(),
            existing: Some(0),
            rows: smallvec::smallvec![0],
        }];
        let r = rules(r#"{"fields": {"company": "most_frequent"}}"#);
        let build = |history: Option<&RecordBatch>| {
            let surv = Survivorship { rules: &r, history };
            build_all_masters(&lead, &existing, &clusters, &[true], &stamp, surv).unwrap()
        };
        let one = |out: GoldenOut| arrow::compute::concat_batches(&MASTERS_SCHEMA, &out.masters).unwrap();
        let out = one(build(Some(&hist)));
        // r1 counts once, as Beta: Beta 2, Acme 1.
        assert_eq!(text_of(&out, "company", 0), "Beta");
        // Re-seen, not new: the count stays.
        let counts = out
            .column_by_name("record_count")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(counts.value(0), 3);
        // Without the history only the golden record (Acme) and the lead
        // (Beta) are weighed: a tie, the newer (the golden record) wins.
        let out = one(build(None));
        assert_eq!(text_of(&out, "company", 0), "Acme");
    }
}
