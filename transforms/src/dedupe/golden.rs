//! Survivorship: the golden record of each touched master, and the
//! per-project links.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray, StringBuilder};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;

use super::link::{DedupeError, RunStamp, event_times, list_values, opt, strings, ts_builder};
use crate::schema::{MASTERS_SCHEMA, PROJECT_LINKS_SCHEMA};

/// One cluster: its master id, the existing master row (index into the
/// candidates batch) if any, and its lead rows in input order.
pub(super) struct Golden {
    pub master_id: String,
    pub existing: Option<usize>,
    pub rows: Vec<usize>,
}

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

/// Fields whose newest non-null value wins.
const NEWEST_WINS: &[&str] = &["company", "job_title", "country", "city", "website"];

/// Build MASTERS_SCHEMA rows for the clusters: newest non-null per field
/// (the source's created time, else ingestion time; an existing master's
/// values count as of its `last_seen`), every phone and e-mail ever seen.
/// Golden records of every cluster a run touched, built in chunks on the
/// rayon pool (clusters are independent). Shared by both dedupe modes.
pub(super) fn build_all_masters(
    leads: &RecordBatch,
    masters: &RecordBatch,
    clusters: &[Golden],
    known: &[bool],
    stamp: &RunStamp,
) -> Result<RecordBatch, DedupeError> {
    use rayon::prelude::*;
    let times = event_times(leads, stamp.now_us);
    let chunk = clusters
        .len()
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .max(4096);
    let parts = clusters
        .par_chunks(chunk)
        .map(|c| build_masters(leads, masters, c, known, &times, stamp))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.is_empty() {
        return build_masters(leads, masters, &[], known, &times, stamp);
    }
    Ok(arrow::compute::concat_batches(&parts[0].schema(), &parts)?)
}

/// Golden records rebuilt from scratch out of their records, for merges
/// and splits outside runs: `groups` names each master and the rows of
/// `records` (the `records` columns the survivorship reads, text as Utf8,
/// times as UTC microseconds) that now belong to it. Same survivorship as
/// a run, with no earlier golden record to start from.
pub fn golden_from_records(
    records: &RecordBatch,
    groups: &[(String, Vec<usize>)],
    stamp: &RunStamp,
) -> Result<RecordBatch, DedupeError> {
    let none = RecordBatch::new_empty(MASTERS_SCHEMA.clone());
    let clusters: Vec<Golden> = groups
        .iter()
        .map(|(id, rows)| Golden {
            master_id: id.clone(),
            existing: None,
            rows: rows.clone(),
        })
        .collect();
    let known = vec![false; records.num_rows()];
    build_all_masters(records, &none, &clusters, &known, stamp)
}

pub(super) fn build_masters(
    leads: &RecordBatch,
    masters: &RecordBatch,
    clusters: &[Golden],
    known: &[bool],
    times: &[i64],
    stamp: &RunStamp,
) -> Result<RecordBatch, DedupeError> {
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

    // Newest wins: ties go to the later row (input order is arrival order).
    let pick = |g: &Golden, lead_col: &StringArray, master_col: &StringArray| -> Option<String> {
        let mut best: Option<(i64, i64, &str)> = None;
        if let Some(j) = g.existing
            && let Some(v) = opt(master_col, j)
        {
            best = Some((master_time(j), -1, v));
        }
        for &i in &g.rows {
            if let Some(v) = opt(lead_col, i) {
                keep_newest(&mut best, (times[i], i as i64, v));
            }
        }
        best.map(|b| b.2.to_string())
    };

    let mut out: Vec<ArrayRef> = Vec::with_capacity(MASTERS_SCHEMA.fields().len());
    let mut ids = StringBuilder::new();
    for g in clusters {
        ids.append_value(&g.master_id);
    }
    out.push(Arc::new(ids.finish()));

    // The name travels as one unit (first, last, full from one record), so a
    // golden record never pairs one record's first name with another's last.
    let (lf, ll, lfull) = (
        strings(leads, "first_name")?,
        strings(leads, "last_name")?,
        strings(leads, "full_name")?,
    );
    let (mf, ml, mfull) = (
        strings(masters, "first_name")?,
        strings(masters, "last_name")?,
        strings(masters, "full_name")?,
    );
    let mut nb = [StringBuilder::new(), StringBuilder::new(), StringBuilder::new()];
    for g in clusters {
        let mut best: Option<(i64, i64, [Option<&str>; 3])> = None;
        if let Some(j) = g.existing
            && (opt(mf, j).is_some() || opt(mfull, j).is_some())
        {
            best = Some((master_time(j), -1, [opt(mf, j), opt(ml, j), opt(mfull, j)]));
        }
        for &i in &g.rows {
            if opt(lf, i).is_some() || opt(lfull, i).is_some() {
                keep_newest(
                    &mut best,
                    (times[i], i as i64, [opt(lf, i), opt(ll, i), opt(lfull, i)]),
                );
            }
        }
        let parts = best.map(|b| b.2).unwrap_or([None; 3]);
        for (b, v) in nb.iter_mut().zip(parts) {
            b.append_option(v);
        }
    }
    for mut b in nb {
        out.push(Arc::new(b.finish()));
    }

    // Best phone / e-mail: newest valid one.
    for field in ["phone", "email"] {
        let (lc, mc) = (strings(leads, field)?, strings(masters, field)?);
        // An invalid e-mail kept by `invalid_email: keep` has no key: skip it.
        let valid = if field == "email" {
            Some(strings(leads, "email_key")?)
        } else {
            None
        };
        let mut b = StringBuilder::new();
        for g in clusters {
            let mut best: Option<(i64, i64, &str)> = g
                .existing
                .and_then(|j| opt(mc, j).map(|v| (master_time(j), -1, v)));
            for &i in &g.rows {
                if valid.is_some_and(|k| opt(k, i).is_none()) {
                    continue;
                }
                if let Some(v) = opt(lc, i) {
                    keep_newest(&mut best, (times[i], i as i64, v));
                }
            }
            b.append_option(best.map(|b| b.2));
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
        let mut b = crate::schema::list_builder();
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

    for field in NEWEST_WINS {
        let (lc, mc) = (strings(leads, field)?, strings(masters, field)?);
        let mut b = StringBuilder::new();
        for g in clusters {
            b.append_option(pick(g, lc, mc));
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
    Ok(RecordBatch::try_new(MASTERS_SCHEMA.clone(), out)?)
}

/// Project links for the run's leads: one row per (master, project) touched,
/// merged with the existing link rows (`existing`, PROJECT_LINKS_SCHEMA).
/// A row's status or owner changes a link only when the row states one; a
/// new link without a status gets `default_status`.
pub fn project_links(
    leads: &RecordBatch,
    master_id: &StringArray,
    known: &[bool],
    existing: &RecordBatch,
    default_status: &str,
    stamp: &RunStamp,
) -> Result<RecordBatch, DedupeError> {
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
    // Links in a Vec, the map only finds a key's slot.
    let mut order: Vec<((&str, &str), u32)> = Vec::new();
    let mut links: Vec<Link> = Vec::new();
    let mut slot: FastMap<(&str, &str), u32> =
        FastMap::with_capacity_and_hasher(leads.num_rows(), Default::default());
    for i in 0..leads.num_rows() {
        let Some(p) = opt(project, i) else { continue };
        let key = (master_id.value(i), p);
        let at = *slot.entry(key).or_insert_with(|| {
            order.push((key, links.len() as u32));
            links.push(Link {
                status: None,
                owner: None,
                count: 0,
                first: i64::MAX,
                last: i64::MIN,
            });
            links.len() as u32 - 1
        });
        let l = &mut links[at as usize];
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
    // Keys are unique: an unstable sort gives the same order, cheaper.
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let k = order.len();
    let (mut mb, mut pb, mut sb, mut ob) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut counts, mut fs, mut ls) = (Vec::with_capacity(k), ts_builder(k), ts_builder(k));
    for (key, at) in &order {
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
        let g = golden_from_records(&b, &groups, &stamp).unwrap();
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
}
