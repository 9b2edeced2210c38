//! Review decisions, merge, split and unmerge as warehouse writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use chrono::{DateTime, Utc};
use datafusion::prelude::{Expr, col};
use leadflow_sinks::{StagedTable, Warehouse, WriteMode};
use leadflow_transforms::dedupe::{RunStamp, SurvivorshipConfig, golden_from_records, new_master_id};
use leadflow_transforms::schema::{
    CRM_LINKS_SCHEMA, MERGES_SCHEMA, OUTBOX_SCHEMA, PROJECT_LINKS_SCHEMA, RECORDS_SCHEMA, REVIEW_SCHEMA,
};
use serde::Serialize;
use tokio::sync::{RwLock, RwLockReadGuard};
use tracing::info;

use super::tables::{
    at, conform, hash_id, json_rows, lit, lits, opt_text, query, repeat_text, text, times, ts_col,
    with_column,
};
use super::{APP_ID, MERGED, ReviewError, SPLIT};

/// Within a process, review and merge writes take turns (the write side)
/// and runs share the read side: a run reads masters as candidates and
/// writes them back at its commit, so a merge in between would be undone.
/// A run waits for a merge in progress, a merge for the runs going. Across
/// processes a lost commit race is detected and the operation redone.
static WRITE_LOCK: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// Held by a run from start to commit: merges and splits of this process
/// wait until it is done (and it waits for one already going).
pub async fn run_turn() -> RwLockReadGuard<'static, ()> {
    WRITE_LOCK.read().await
}

/// One `review` row with the two masters' names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Review {
    pub review_id: String,
    pub master_id: String,
    pub other_master_id: String,
    pub master_name: Option<String>,
    pub other_name: Option<String>,
    pub score: Option<f64>,
    pub status: String,
    pub explanation: Option<String>,
    pub run_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// A review with both golden records and their records.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewDetail {
    pub review: Review,
    /// Golden records (`masters` rows; lists joined with ", ").
    pub masters: Vec<serde_json::Value>,
    /// Each master's records: master_id, source, source_record_id, name, phone, email.
    pub records: Vec<serde_json::Value>,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeOutcome {
    /// The `merges` row (kind `merge`); `unmerge` takes it.
    pub event_id: String,
    pub master_id: String,
    pub absorbed_master_id: String,
    pub records_moved: usize,
    pub record_count: usize,
}

/// What a split (or unmerge) did.
#[derive(Debug, Clone, Serialize)]
pub struct SplitOutcome {
    /// The `merges` row (kind `split`).
    pub event_id: String,
    pub master_id: String,
    pub new_master_id: String,
    pub records_moved: usize,
}

/// Who decided and why, kept in the `merges` row.
#[derive(Debug, Clone)]
struct Why<'a> {
    review: Option<&'a Review>,
    note: Option<&'a str>,
    by: &'a str,
    rules: &'a SurvivorshipConfig,
}

const REVIEW_COLUMNS: &str = "r.review_id, r.master_id, r.other_master_id, a.full_name AS master_name, \
     b.full_name AS other_name, r.score, r.status, r.explanation, r.run_id, r.created_at, r.decided_at";

fn reviews_from(batches: &[RecordBatch]) -> Result<Vec<Review>, ReviewError> {
    let mut out = Vec::new();
    for b in batches {
        let (id, m, o, mn, on, st, ex, run) = (
            text(b, "review_id")?,
            text(b, "master_id")?,
            text(b, "other_master_id")?,
            text(b, "master_name")?,
            text(b, "other_name")?,
            text(b, "status")?,
            text(b, "explanation")?,
            text(b, "run_id")?,
        );
        let score = arrow::compute::cast(
            b.column_by_name("score")
                .ok_or_else(|| ReviewError::Schema("review rows lack `score`".into()))?,
            &arrow::datatypes::DataType::Float64,
        )?;
        let score = score
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64")
            .clone();
        let (created, decided) = (times(b, "created_at")?, times(b, "decided_at")?);
        for i in 0..b.num_rows() {
            out.push(Review {
                review_id: id.value(i).to_string(),
                master_id: m.value(i).to_string(),
                other_master_id: o.value(i).to_string(),
                master_name: opt_text(&mn, i),
                other_name: opt_text(&on, i),
                score: (!score.is_null(i)).then(|| score.value(i)),
                status: st.value(i).to_string(),
                explanation: opt_text(&ex, i),
                run_id: opt_text(&run, i),
                created_at: at(&created, i),
                decided_at: at(&decided, i),
            });
        }
    }
    Ok(out)
}

async fn load_reviews(warehouse: &Warehouse, condition: &str) -> Result<Vec<Review>, ReviewError> {
    if !warehouse.has_data("review").await? {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {REVIEW_COLUMNS} FROM review r \
         LEFT JOIN masters a ON a.master_id = r.master_id \
         LEFT JOIN masters b ON b.master_id = r.other_master_id \
         WHERE {condition} \
         ORDER BY CASE WHEN r.status = 'open' THEN 0 ELSE 1 END, r.created_at, r.review_id"
    );
    reviews_from(&query(warehouse, &["review", "masters"], &sql).await?)
}

/// Reviews with `status` (all when None), open first, oldest first.
pub async fn list(warehouse: &Warehouse, status: Option<&str>) -> Result<Vec<Review>, ReviewError> {
    let cond = match status {
        Some(s) => format!("r.status = {}", lit(s)),
        None => "true".into(),
    };
    load_reviews(warehouse, &cond).await
}

async fn one_review(warehouse: &Warehouse, id: &str) -> Result<Review, ReviewError> {
    load_reviews(warehouse, &format!("r.review_id = {}", lit(id)))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ReviewError::NotFound {
            what: "review",
            id: id.to_string(),
        })
}

/// A review with both golden records and every record of the two masters.
pub async fn show(warehouse: &Warehouse, id: &str) -> Result<ReviewDetail, ReviewError> {
    let review = one_review(warehouse, id).await?;
    let ids = lits(&[&review.master_id, &review.other_master_id]);
    let masters = query(
        warehouse,
        &["masters"],
        &format!(
            "SELECT master_id, full_name, phone, email, array_to_string(phones, ', ') AS phones, \
             array_to_string(emails, ', ') AS emails, company, job_title, city, country, website, \
             record_count, first_seen, last_seen FROM masters WHERE master_id IN ({ids}) ORDER BY master_id"
        ),
    )
    .await?;
    let records = query(
        warehouse,
        &["records"],
        &format!(
            "SELECT master_id, source, source_record_id, full_name, phone, email, company, city, project \
             FROM records WHERE master_id IN ({ids}) ORDER BY master_id, ingested_at, source, source_record_id"
        ),
    )
    .await?;
    Ok(ReviewDetail {
        review,
        masters: json_rows(&masters)?,
        records: json_rows(&records)?,
    })
}

/// Approve an open review: merge its two masters (the older survives, or
/// `keep`). 404 / 409 for an unknown or decided review.
pub async fn approve(
    warehouse: &Warehouse,
    rules: &SurvivorshipConfig,
    id: &str,
    keep: Option<&str>,
    note: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<MergeOutcome, ReviewError> {
    exclusive("approve review", || async {
        let r = open_review(warehouse, id).await?;
        let why = Why {
            review: Some(&r),
            note,
            by,
            rules,
        };
        merge_once(warehouse, &r.master_id, &r.other_master_id, keep, &why, now).await
    })
    .await
}

/// Reject an open review: the pair is "not the same". The row keeps status
/// `rejected`; runs never rewrite a review row nor join two masters, so
/// the pair is never linked or offered again.
pub async fn reject(
    warehouse: &Warehouse,
    id: &str,
    note: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Review, ReviewError> {
    exclusive("reject review", || async {
        let mut r = open_review(warehouse, id).await?;
        let version = next_version(warehouse, now).await?;
        let event_id = hash_id(
            "e-",
            &["rejected", &r.review_id, &now.timestamp_micros().to_string()],
        );
        let explanation = serde_json::json!({"review_id": r.review_id, "note": note, "by": by});
        let merges = merges_row(
            &event_id,
            "rejected",
            &r.master_id,
            &r.other_master_id,
            "review",
            r.score,
            &explanation.to_string(),
            now,
        )?;
        let row = decided_review(warehouse, &r.review_id, "rejected", now).await?;
        apply_all(
            warehouse,
            version,
            vec![upsert("merges", merges), upsert("review", row)],
        )
        .await?;
        info!(review_id = %r.review_id, by, "review rejected");
        r.status = "rejected".into();
        r.decided_at = Some(now);
        Ok(r)
    })
    .await
}

async fn open_review(warehouse: &Warehouse, id: &str) -> Result<Review, ReviewError> {
    let r = one_review(warehouse, id).await?;
    if r.status != "open" {
        return Err(ReviewError::Decided {
            id: id.to_string(),
            status: r.status,
        });
    }
    Ok(r)
}

/// The `reminders` write of a merge or split: the open reminders of `from`
/// (all, or those of `projects`) moved to `to`, if any. Also the reminders
/// write turn, to hold until that write, so a tick of this process waits.
async fn moving_reminders(
    warehouse: &Warehouse,
    from: &str,
    to: &str,
    projects: Option<&[String]>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(Option<StagedTable>, tokio::sync::MutexGuard<'static, ()>), ReviewError> {
    let turn = crate::reminders::engine::write_turn().await;
    if projects.is_some_and(|p| p.is_empty()) {
        return Ok((None, turn));
    }
    let rows = crate::reminders::engine::moved_reminders(warehouse, from, to, projects, by, now).await?;
    let table = if rows.is_empty() {
        None
    } else {
        Some(upsert(
            "reminders",
            crate::reminders::state::reminders_batch(&rows)?,
        ))
    };
    Ok((table, turn))
}

/// A review row out of a merge: (row of the read rows to copy, review_id,
/// master_id, other_master_id, status, decided_at).
type ReviewOut = (u32, String, String, String, String, Option<i64>);

/// Review pairs of the absorbed master `x`, carried over to the survivor
/// `s`: a pair (x, y) becomes (s, y) with its status, so a "not the same"
/// still stands (x is now part of s, so s is not y either) and an open
/// question stays open; a rejection wins over an open (s, y) row already
/// there, any other (s, y) row is kept. The old rows become `superseded`.
/// `approving`: the review this merge decides, left to the caller.
/// Also returns what an unmerge needs to put each changed row back
/// ([`ReviewUndo`]).
/// Review rows that name any of `masters`, by id.
async fn reviews_of(warehouse: &Warehouse, masters: &[&str]) -> Result<RecordBatch, ReviewError> {
    if !warehouse.has_data("review").await? {
        return Ok(RecordBatch::new_empty(REVIEW_SCHEMA.clone()));
    }
    let rows = query(
        warehouse,
        &["review"],
        &format!(
            "SELECT * FROM review WHERE master_id IN ({xs}) OR other_master_id IN ({xs}) ORDER BY review_id",
            xs = lits(masters)
        ),
    )
    .await?;
    conform(&rows, &REVIEW_SCHEMA)
}

/// `b`: review rows read by [`reviews_of`] for (at least) `s` and `x`.
fn carried_reviews(
    b: &RecordBatch,
    s: &str,
    x: &str,
    approving: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(RecordBatch, Vec<ReviewUndo>), ReviewError> {
    let (id, a, o, st) = (
        text(b, "review_id")?,
        text(b, "master_id")?,
        text(b, "other_master_id")?,
        text(b, "status")?,
    );
    let decided = times(b, "decided_at")?;
    let decided_at = |i: usize| (!decided.is_null(i)).then(|| decided.value(i));
    // The survivor's own pairs: other master -> row.
    let mut of_s: HashMap<&str, usize> = HashMap::new();
    for i in 0..b.num_rows() {
        if a.value(i) == s {
            of_s.insert(o.value(i), i);
        } else if o.value(i) == s {
            of_s.insert(a.value(i), i);
        }
    }
    let mut out: Vec<ReviewOut> = Vec::new();
    let mut undo: Vec<ReviewUndo> = Vec::new();
    for i in 0..b.num_rows() {
        let involves_x = a.value(i) == x || o.value(i) == x;
        let between_them = (a.value(i) == s) || (o.value(i) == s);
        // The pair being merged, already approved (a retried merge of an
        // approval): it stays the record of that decision.
        if !involves_x
            || Some(id.value(i)) == approving
            || st.value(i) == "superseded"
            || (between_them && st.value(i) == "approved")
        {
            continue;
        }
        out.push((
            i as u32,
            id.value(i).to_string(),
            a.value(i).to_string(),
            o.value(i).to_string(),
            "superseded".to_string(),
            Some(now.timestamp_micros()),
        ));
        undo.push(ReviewUndo {
            review_id: id.value(i).to_string(),
            set: "superseded".into(),
            was: Some(st.value(i).to_string()),
            was_decided_at: decided_at(i),
        });
        let y = if a.value(i) == x { o.value(i) } else { a.value(i) };
        let existing = of_s.get(y).copied();
        let carry = y != s
            && match existing {
                None => true,
                Some(e) => st.value(e) == "open" && st.value(i) == "rejected",
            };
        if carry {
            let (m1, m2) = if s <= y { (s, y) } else { (y, s) };
            let carried_id = leadflow_transforms::dedupe::review_id(s, y);
            out.push((
                i as u32,
                carried_id.clone(),
                m1.to_string(),
                m2.to_string(),
                st.value(i).to_string(),
                decided_at(i),
            ));
            undo.push(ReviewUndo {
                review_id: carried_id,
                set: st.value(i).to_string(),
                was: existing.map(|e| st.value(e).to_string()),
                was_decided_at: existing.and_then(decided_at),
            });
        }
    }
    let rows = arrow::array::UInt32Array::from(out.iter().map(|r| r.0).collect::<Vec<_>>());
    let picked = arrow::compute::take_record_batch(b, &rows)?;
    let texts = |f: fn(&ReviewOut) -> &str| -> ArrayRef {
        Arc::new(out.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let picked = with_column(&picked, "review_id", texts(|r| &r.1))?;
    let picked = with_column(&picked, "master_id", texts(|r| &r.2))?;
    let picked = with_column(&picked, "other_master_id", texts(|r| &r.3))?;
    let picked = restamped(&picked, texts(|r| &r.4), out.iter().map(|r| r.5))?;
    Ok((picked, undo))
}

/// `b` with a new status and decision time per row.
fn restamped(
    b: &RecordBatch,
    status: ArrayRef,
    decided_at: impl IntoIterator<Item = Option<i64>>,
) -> Result<RecordBatch, ReviewError> {
    let b = with_column(b, "status", status)?;
    with_column(&b, "decided_at", ts_col(decided_at))
}

/// A review row a merge changed, as its `merges` row keeps it: the status
/// the merge set, and what the row was before (`was: None`: the merge
/// created the row). An unmerge puts back every row still as the merge
/// left it; a row decided since keeps that decision.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct ReviewUndo {
    review_id: String,
    set: String,
    was: Option<String>,
    was_decided_at: Option<i64>,
}

/// The review rows an unmerge restores (see [`ReviewUndo`]); a row the
/// merge created and that is still as it left it becomes `superseded`: it
/// stood for the absorbed master, which is apart again.
async fn restored_reviews(
    warehouse: &Warehouse,
    undo: &[ReviewUndo],
    now: DateTime<Utc>,
) -> Result<Option<RecordBatch>, ReviewError> {
    if undo.is_empty() || !warehouse.has_data("review").await? {
        return Ok(None);
    }
    let ids: Vec<&str> = undo.iter().map(|u| u.review_id.as_str()).collect();
    let rows = query(
        warehouse,
        &["review"],
        &format!("SELECT * FROM review WHERE review_id IN ({})", lits(&ids)),
    )
    .await?;
    let b = conform(&rows, &REVIEW_SCHEMA)?;
    let (id, st) = (text(&b, "review_id")?, text(&b, "status")?);
    let by_id: HashMap<&str, &ReviewUndo> = undo.iter().map(|u| (u.review_id.as_str(), u)).collect();
    let mut pick = Vec::new();
    let mut status = Vec::new();
    let mut decided = Vec::new();
    for i in 0..b.num_rows() {
        let Some(u) = by_id.get(id.value(i)) else { continue };
        if st.value(i) != u.set {
            continue;
        }
        pick.push(i as u32);
        match &u.was {
            Some(was) => {
                status.push(was.clone());
                decided.push(u.was_decided_at);
            }
            None => {
                status.push("superseded".to_string());
                decided.push(Some(now.timestamp_micros()));
            }
        }
    }
    if pick.is_empty() {
        return Ok(None);
    }
    let picked = arrow::compute::take_record_batch(&b, &arrow::array::UInt32Array::from(pick))?;
    let status = Arc::new(StringArray::from_iter_values(&status));
    Ok(Some(restamped(&picked, status, decided)?))
}

/// The review row as stored, with a new status and decision time.
async fn decided_review(
    warehouse: &Warehouse,
    id: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch, ReviewError> {
    let rows = query(
        warehouse,
        &["review"],
        &format!("SELECT * FROM review WHERE review_id = {}", lit(id)),
    )
    .await?;
    decided_from(&conform(&rows, &REVIEW_SCHEMA)?, id, status, now)
}

/// [`decided_review`] from review rows already read.
fn decided_from(
    reviews: &RecordBatch,
    id: &str,
    status: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch, ReviewError> {
    let ids = text(reviews, "review_id")?;
    let keep: arrow::array::BooleanArray = (0..reviews.num_rows())
        .map(|i| Some(ids.value(i) == id))
        .collect();
    let b = filter_record_batch(reviews, &keep)?;
    let n = b.num_rows();
    restamped(
        &b,
        repeat_text(Some(status), n),
        std::iter::repeat_n(Some(now.timestamp_micros()), n),
    )
}

/// Merge masters `a` and `b` by hand. The survivor keeps its id: `keep`,
/// else the older one (first seen), else the smaller id.
#[allow(clippy::too_many_arguments)] // the same arguments as `approve`, plus the pair
pub async fn merge(
    warehouse: &Warehouse,
    rules: &SurvivorshipConfig,
    a: &str,
    b: &str,
    keep: Option<&str>,
    note: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<MergeOutcome, ReviewError> {
    let why = Why {
        review: None,
        note,
        by,
        rules,
    };
    exclusive("merge masters", || merge_once(warehouse, a, b, keep, &why, now)).await
}

/// Pick the survivor of two masters given (id, first_seen).
fn survivor<'a>(
    found: &'a [(String, Option<DateTime<Utc>>)],
    keep: Option<&str>,
) -> Result<(&'a str, &'a str), ReviewError> {
    let (x, y) = (&found[0], &found[1]);
    if let Some(k) = keep {
        return if k == x.0 {
            Ok((&x.0, &y.0))
        } else if k == y.0 {
            Ok((&y.0, &x.0))
        } else {
            Err(ReviewError::Invalid(format!(
                "--keep {k} is neither of the two masters ({} and {})",
                x.0, y.0
            )))
        };
    }
    // Unknown first_seen sorts last: a master with a known past is older.
    let key = |m: &(String, Option<DateTime<Utc>>)| (m.1.is_none(), m.1, m.0.clone());
    Ok(if key(x) <= key(y) {
        (&x.0, &y.0)
    } else {
        (&y.0, &x.0)
    })
}

async fn master_rows(
    warehouse: &Warehouse,
    ids: &[&str],
) -> Result<Vec<(String, Option<DateTime<Utc>>)>, ReviewError> {
    if !warehouse.has_data("masters").await? {
        return Ok(Vec::new());
    }
    let rows = query(
        warehouse,
        &["masters"],
        &format!(
            "SELECT master_id, first_seen FROM masters WHERE master_id IN ({}) ORDER BY master_id",
            lits(ids)
        ),
    )
    .await?;
    let mut out = Vec::new();
    for b in &rows {
        let (id, fs) = (text(b, "master_id")?, times(b, "first_seen")?);
        for i in 0..b.num_rows() {
            out.push((id.value(i).to_string(), at(&fs, i)));
        }
    }
    Ok(out)
}

async fn missing_master(warehouse: &Warehouse, id: &str) -> ReviewError {
    let hint = match merged_into(warehouse, id).await {
        Ok(Some((into, _))) => format!(" (it was merged into {into})"),
        _ => String::new(),
    };
    ReviewError::NotFound {
        what: "master",
        id: format!("{id}{hint}"),
    }
}

async fn merge_once(
    warehouse: &Warehouse,
    a: &str,
    b: &str,
    keep: Option<&str>,
    why: &Why<'_>,
    now: DateTime<Utc>,
) -> Result<MergeOutcome, ReviewError> {
    if a == b {
        return Err(ReviewError::Invalid(format!(
            "cannot merge master {a} with itself"
        )));
    }
    let reads = MergeReads::load(warehouse, &[a, b]).await?;
    for id in [a, b] {
        if !reads.masters.iter().any(|m| m.0 == id) {
            return Err(missing_master(warehouse, id).await);
        }
    }
    let version = next_version(warehouse, now).await?;
    let plan = plan_merge(warehouse, &reads, a, b, keep, why, now).await?;
    apply_merges(warehouse, version, plan.tables, &plan.removed).await?;
    log_merge(&plan.outcome, why);
    Ok(plan.outcome)
}

/// What merges read, for one pair or for many at once (the pairs a run
/// bridged): one query per table for all of them.
struct MergeReads {
    /// (master_id, first_seen) of the masters found.
    masters: Vec<(String, Option<DateTime<Utc>>)>,
    /// Their records, in arrival order.
    records: RecordBatch,
    links: HashMap<String, Vec<Link>>,
    crm: RecordBatch,
    /// Review rows that name any of them.
    reviews: RecordBatch,
    reminders: Vec<crate::reminders::state::Reminder>,
    /// Held until the writes are done, so a reminders tick of this process
    /// cannot move the same reminders meanwhile.
    _reminders_turn: tokio::sync::MutexGuard<'static, ()>,
}

impl MergeReads {
    async fn load(warehouse: &Warehouse, ids: &[&str]) -> Result<Self, ReviewError> {
        let masters = master_rows(warehouse, ids).await?;
        let records = records_of(warehouse, ids).await?;
        let links = links_of_many(warehouse, ids).await?;
        let crm = crm_links_of(warehouse, ids).await?;
        let reviews = reviews_of(warehouse, ids).await?;
        let turn = crate::reminders::engine::write_turn().await;
        let reminders = crate::reminders::engine::reminders_of(warehouse, ids).await?;
        Ok(Self {
            masters,
            records,
            links,
            crm,
            reviews,
            reminders,
            _reminders_turn: turn,
        })
    }

    /// The records of `a` and `b`, in arrival order.
    fn records_of(&self, a: &str, b: &str) -> Result<RecordBatch, ReviewError> {
        let m = text(&self.records, "master_id")?;
        let keep: arrow::array::BooleanArray = (0..self.records.num_rows())
            .map(|i| Some(m.value(i) == a || m.value(i) == b))
            .collect();
        Ok(filter_record_batch(&self.records, &keep)?)
    }
}

/// One merge's writes, not applied yet.
struct MergePlan {
    tables: Vec<StagedTable>,
    /// Review rows it writes (two merges of one batch must not share one).
    review_ids: Vec<String>,
    /// What goes: the absorbed master and its project links (master, project).
    removed: Removed,
    outcome: MergeOutcome,
}

/// Plan the merge of `a` and `b` from `reads`. Both must be in `reads.masters`.
async fn plan_merge(
    warehouse: &Warehouse,
    reads: &MergeReads,
    a: &str,
    b: &str,
    keep: Option<&str>,
    why: &Why<'_>,
    now: DateTime<Utc>,
) -> Result<MergePlan, ReviewError> {
    let found: Vec<_> = reads
        .masters
        .iter()
        .filter(|m| m.0 == a || m.0 == b)
        .cloned()
        .collect();
    let (s, x) = survivor(&found, keep)?;
    let (s, x) = (s.to_string(), x.to_string());

    let records = reads.records_of(&s, &x)?;
    let mids = text(&records, "master_id")?;
    let moved: Vec<usize> = (0..records.num_rows()).filter(|&i| mids.value(i) == x).collect();
    // The absorbed master still there without records: an earlier attempt
    // of this merge stopped after re-pointing them. Finish that one (same
    // event, same record keys for unmerge) instead of starting another.
    let prior = if moved.is_empty() {
        prior_merge(warehouse, &s, &x).await?
    } else {
        None
    };
    let event_id = match &prior {
        Some((id, _)) => id.clone(),
        None => hash_id("e-", &["merge", &s, &x, &now.timestamp_micros().to_string()]),
    };
    let keys = record_keys(&records, &moved)?;
    let mut explanation = serde_json::json!({
        "absorbed_master_id": x,
        "records": keys.iter().map(|(s, r)| serde_json::json!({"source": s, "source_record_id": r})).collect::<Vec<_>>(),
        "by": why.by,
        "note": why.note,
    });
    if let Some(r) = why.review {
        explanation["review_id"] = r.review_id.as_str().into();
        explanation["review_explanation"] = r.explanation.as_deref().into();
    }

    let all: Vec<usize> = (0..records.num_rows()).collect();
    let (golden, conflicts) = golden(&records, &[(s.clone(), all)], &event_id, why.rules)?;
    // What the records of the two people disagree on, and what was kept.
    if let Some((_, c)) = conflicts.into_iter().next() {
        explanation["conflicts"] = c;
    }
    let moved_rows = repoint(&records, &moved, &s)?;
    let no_links = Vec::new();
    let links = merged_links(
        reads.links.get(&s).unwrap_or(&no_links),
        reads.links.get(&x).unwrap_or(&no_links),
        &s,
        &event_id,
    )?;
    let crm = repoint_crm(&reads.crm, &x, None, &s, now)?;
    let (carried, mut review_undo) = carried_reviews(
        &reads.reviews,
        &s,
        &x,
        why.review.map(|r| r.review_id.as_str()),
        now,
    )?;
    if let Some(r) = why.review {
        // Undone, the approved pair is a question again.
        review_undo.push(ReviewUndo {
            review_id: r.review_id.clone(),
            set: "approved".into(),
            was: Some("open".into()),
            was_decided_at: None,
        });
    }
    if !review_undo.is_empty() {
        explanation["reviews"] = serde_json::to_value(&review_undo).expect("plain data");
    }
    // A retry keeps what the first attempt wrote (its review rows are
    // already changed, so this attempt saw less).
    let explanation = match &prior {
        Some((_, text)) => serde_json::from_str(text).unwrap_or(explanation),
        None => explanation,
    };
    // The absorbed person's open reminders go to the survivor.
    let reminders = crate::reminders::engine::moved_from(
        &reads.reminders,
        &x,
        &s,
        None,
        &format!("merge {event_id}"),
        now,
    );

    let merges = merges_row(
        &event_id,
        "merge",
        &s,
        &x,
        if why.review.is_some() { "review" } else { "manual" },
        why.review.and_then(|r| r.score),
        &explanation.to_string(),
        now,
    )?;
    let payload = serde_json::json!({
        "event_id": hash_id("ev-", &[&event_id, MERGED]),
        "kind": MERGED,
        "occurred_at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "master_id": s,
        "absorbed_master_id": x,
        "merge_event_id": event_id,
        "records_moved": moved.len(),
    });
    let outbox = outbox_row(MERGED, &event_id, &s, &payload, now)?;

    // The outbox and the decision first: a crash after them repeats the
    // same event id, never loses the record keys an unmerge needs.
    let mut tables = vec![append("outbox", outbox), upsert("merges", merges)];
    if moved_rows.num_rows() > 0 {
        tables.push(upsert("records", moved_rows));
    }
    if crm.num_rows() > 0 {
        tables.push(upsert("crm_links", crm));
    }
    if links.num_rows() > 0 {
        tables.push(upsert("project_links", links));
    }
    if !reminders.is_empty() {
        tables.push(upsert(
            "reminders",
            crate::reminders::state::reminders_batch(&reminders)?,
        ));
    }
    tables.push(upsert("masters", golden));
    // One review write: the approved pair and the carried ones.
    let mut review_rows = Vec::new();
    if carried.num_rows() > 0 {
        review_rows.push(carried);
    }
    if let Some(r) = why.review {
        review_rows.push(decided_from(&reads.reviews, &r.review_id, "approved", now)?);
    }
    let mut review_ids = Vec::new();
    if !review_rows.is_empty() {
        let rows = arrow::compute::concat_batches(&REVIEW_SCHEMA, &review_rows)?;
        let ids = text(&rows, "review_id")?;
        review_ids.extend((0..rows.num_rows()).map(|i| ids.value(i).to_string()));
        tables.push(upsert("review", rows));
    }
    let removed = Removed {
        masters: vec![x.clone()],
        links: reads
            .links
            .get(&x)
            .map(|l| l.iter().map(|l| (x.clone(), l.project.clone())).collect())
            .unwrap_or_default(),
    };
    Ok(MergePlan {
        tables,
        review_ids,
        removed,
        outcome: MergeOutcome {
            event_id,
            master_id: s,
            absorbed_master_id: x,
            records_moved: moved.len(),
            record_count: records.num_rows(),
        },
    })
}

/// Rows merges remove: absorbed masters and their project links.
#[derive(Default)]
struct Removed {
    masters: Vec<String>,
    /// (master_id, project)
    links: Vec<(String, String)>,
}

impl Removed {
    fn extend(&mut self, other: Removed) {
        self.masters.extend(other.masters);
        self.links.extend(other.links);
    }
}

/// Write merges' tables at `version`. `masters` and `project_links` are
/// replaced in one rewrite each: the survivors' rows in, the absorbed
/// masters' rows out (gone from `masters`, an absorbed id is never a
/// candidate of a later run).
async fn apply_merges(
    warehouse: &Warehouse,
    version: i64,
    mut tables: Vec<StagedTable>,
    removed: &Removed,
) -> Result<(), ReviewError> {
    if !removed.links.is_empty() && !tables.iter().any(|t| t.table == "project_links") {
        tables.push(upsert(
            "project_links",
            RecordBatch::new_empty(PROJECT_LINKS_SCHEMA.clone()),
        ));
    }
    let text_col = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let key_batch = |cols: Vec<(&str, ArrayRef)>| {
        RecordBatch::try_from_iter(cols.into_iter().map(|(n, c)| (n.to_string(), c)))
    };
    for t in &tables {
        let remove = match t.table.as_str() {
            "masters" => Some(key_batch(vec![(
                "master_id",
                text_col(removed.masters.iter().map(String::as_str).collect()),
            )])?),
            "project_links" => Some(key_batch(vec![
                (
                    "master_id",
                    text_col(removed.links.iter().map(|l| l.0.as_str()).collect()),
                ),
                (
                    "project",
                    text_col(removed.links.iter().map(|l| l.1.as_str()).collect()),
                ),
            ])?),
            _ => None,
        };
        let done = match remove {
            Some(keys) => warehouse.replace(t, &keys, APP_ID, version).await,
            None => warehouse.apply(t, APP_ID, version).await,
        };
        wrote(&t.table, done)?;
    }
    Ok(())
}

fn log_merge(m: &MergeOutcome, why: &Why<'_>) {
    info!(
        event_id = %m.event_id,
        master_id = %m.master_id,
        absorbed = %m.absorbed_master_id,
        records_moved = m.records_moved,
        by = why.by,
        "masters merged"
    );
}

/// Merge the pairs of masters a run bridged (a record of it linked to
/// both above the link threshold), as approving their open reviews would,
/// with one set of writes for all pairs that share no master (and no review
/// row); the others follow in further rounds, through the masters the
/// earlier rounds kept. A pair whose review is no longer open (a person
/// rejected it) is left alone.
pub async fn merge_bridged(
    warehouse: &Warehouse,
    rules: &SurvivorshipConfig,
    pairs: &[(String, String)],
    note: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Vec<MergeOutcome>, ReviewError> {
    exclusive("merge bridged masters", move || async move {
        let mut done: Vec<MergeOutcome> = Vec::new();
        let mut pending: Vec<(String, String)> = pairs.to_vec();
        while !pending.is_empty() {
            // Earlier rounds' survivors stand for the masters they absorbed.
            let into: HashMap<String, String> = done
                .iter()
                .map(|m| (m.absorbed_master_id.clone(), m.master_id.clone()))
                .collect();
            let resolve = |m: &String| {
                let mut m = m.clone();
                while let Some(s) = into.get(&m) {
                    m = s.clone();
                }
                m
            };
            let mut current: Vec<(String, String)> = pending
                .iter()
                .map(|(a, b)| (resolve(a), resolve(b)))
                .filter(|(a, b)| a != b)
                .collect();
            current.sort();
            current.dedup();
            let ids: Vec<String> = current
                .iter()
                .map(|(a, b)| leadflow_transforms::dedupe::review_id(a, b))
                .collect();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let open: HashMap<String, Review> = if id_refs.is_empty() {
                HashMap::new()
            } else {
                load_reviews(
                    warehouse,
                    &format!("r.review_id IN ({}) AND r.status = 'open'", lits(&id_refs)),
                )
                .await?
                .into_iter()
                .map(|r| (r.review_id.clone(), r))
                .collect()
            };
            let mut used: HashSet<&str> = HashSet::new();
            let mut round: Vec<(&str, &str, &Review)> = Vec::new();
            let mut later: Vec<(String, String)> = Vec::new();
            for ((a, b), id) in current.iter().zip(&ids) {
                let Some(r) = open.get(id) else { continue };
                if used.contains(a.as_str()) || used.contains(b.as_str()) {
                    later.push((a.clone(), b.clone()));
                    continue;
                }
                used.insert(a);
                used.insert(b);
                round.push((a, b, r));
            }
            if round.is_empty() {
                break;
            }
            let masters: Vec<&str> = used.iter().copied().collect();
            let reads = MergeReads::load(warehouse, &masters).await?;
            let version = next_version(warehouse, now).await?;
            let mut tables: Vec<StagedTable> = Vec::new();
            let mut written: HashSet<String> = HashSet::new();
            let mut outcomes = Vec::new();
            let mut removed = Removed::default();
            for (a, b, r) in round {
                // Gone meanwhile (merged by someone else): not ours to redo.
                if reads.masters.iter().filter(|m| m.0 == a || m.0 == b).count() < 2 {
                    continue;
                }
                let why = Why {
                    review: Some(r),
                    note: Some(note),
                    by,
                    rules,
                };
                let plan = plan_merge(warehouse, &reads, a, b, None, &why, now).await?;
                if plan.review_ids.iter().any(|id| written.contains(id)) {
                    later.push((a.to_string(), b.to_string()));
                    continue;
                }
                written.extend(plan.review_ids.iter().cloned());
                removed.extend(plan.removed);
                for t in plan.tables {
                    match tables.iter_mut().find(|o| o.table == t.table) {
                        Some(o) => o.batches.extend(t.batches),
                        None => tables.push(t),
                    }
                }
                outcomes.push(plan.outcome);
            }
            if outcomes.is_empty() {
                break;
            }
            apply_merges(warehouse, version, tables, &removed).await?;
            drop(reads);
            for m in &outcomes {
                log_merge(
                    m,
                    &Why {
                        review: None,
                        note: Some(note),
                        by,
                        rules,
                    },
                );
            }
            done.extend(outcomes);
            pending = later;
        }
        Ok(done)
    })
    .await
}

/// The latest `merge` event that absorbed `absorbed` into `survivor`: (event id, explanation).
async fn prior_merge(
    warehouse: &Warehouse,
    survivor: &str,
    absorbed: &str,
) -> Result<Option<(String, String)>, ReviewError> {
    if !warehouse.has_data("merges").await? {
        return Ok(None);
    }
    let rows = query(
        warehouse,
        &["merges"],
        &format!(
            "SELECT event_id, explanation FROM merges WHERE kind = 'merge' AND master_id = {} \
             AND other_master_id = {} ORDER BY created_at DESC LIMIT 1",
            lit(survivor),
            lit(absorbed)
        ),
    )
    .await?;
    let Some(b) = rows.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let (id, ex) = (text(b, "event_id")?, text(b, "explanation")?);
    Ok(Some((
        id.value(0).to_string(),
        opt_text(&ex, 0).unwrap_or_default(),
    )))
}

/// Move `keys` (source, source_record_id) of `master` to a new master with
/// id `new_master_id(first of them)` (by arrival).
pub async fn split(
    warehouse: &Warehouse,
    rules: &SurvivorshipConfig,
    master: &str,
    keys: &[(String, String)],
    note: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<SplitOutcome, ReviewError> {
    exclusive("split master", || async {
        let ctx = SplitCtx {
            rules,
            new_id: None,
            rule: "manual",
            undoes: None,
            reviews: &[],
            note,
            by,
        };
        split_once(warehouse, master, keys, &ctx, now).await
    })
    .await
}

/// Undo a `merge` event: its absorbed records go back to a master with the
/// absorbed id.
pub async fn unmerge(
    warehouse: &Warehouse,
    rules: &SurvivorshipConfig,
    event_id: &str,
    note: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<SplitOutcome, ReviewError> {
    exclusive("unmerge", || async {
        let not_found = || ReviewError::NotFound {
            what: "merge event",
            id: event_id.to_string(),
        };
        if !warehouse.has_data("merges").await? {
            return Err(not_found());
        }
        let rows = query(
            warehouse,
            &["merges"],
            &format!(
                "SELECT master_id, explanation FROM merges WHERE event_id = {} AND kind = 'merge'",
                lit(event_id)
            ),
        )
        .await?;
        let b = rows.iter().find(|b| b.num_rows() > 0).ok_or_else(not_found)?;
        let survivor = text(b, "master_id")?.value(0).to_string();
        let UndoInfo {
            absorbed,
            keys,
            reviews,
        } = undo_info(text(b, "explanation")?.value(0))?;
        if !master_rows(warehouse, &[&absorbed]).await?.is_empty() {
            return Err(ReviewError::Invalid(format!(
                "merge {event_id} is already undone: master {absorbed} exists again"
            )));
        }
        let ctx = SplitCtx {
            rules,
            new_id: Some(absorbed),
            rule: "unmerge",
            undoes: Some(event_id),
            reviews: &reviews,
            note,
            by,
        };
        split_once(warehouse, &survivor, &keys, &ctx, now).await
    })
    .await
}

/// What a `merge` row's explanation holds for its undo.
struct UndoInfo {
    absorbed: String,
    keys: Vec<(String, String)>,
    /// Review rows the merge changed (merges before this field: none known).
    reviews: Vec<ReviewUndo>,
}

/// The absorbed master, record keys and review changes a `merge` row's
/// explanation holds.
fn undo_info(explanation: &str) -> Result<UndoInfo, ReviewError> {
    let bad = |why: &str| ReviewError::Schema(format!("merge event explanation {why}; it cannot be undone"));
    let v: serde_json::Value = serde_json::from_str(explanation).map_err(|_| bad("is not JSON"))?;
    let absorbed = v["absorbed_master_id"]
        .as_str()
        .ok_or_else(|| bad("lacks absorbed_master_id"))?
        .to_string();
    let keys = v["records"]
        .as_array()
        .ok_or_else(|| bad("lacks records"))?
        .iter()
        .map(|r| {
            Some((
                r["source"].as_str()?.to_string(),
                r["source_record_id"].as_str()?.to_string(),
            ))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("has a record without source or source_record_id"))?;
    let reviews = match v.get("reviews") {
        None => Vec::new(),
        Some(r) => serde_json::from_value(r.clone()).map_err(|_| bad("has unreadable review changes"))?,
    };
    Ok(UndoInfo {
        absorbed,
        keys,
        reviews,
    })
}

struct SplitCtx<'a> {
    rules: &'a SurvivorshipConfig,
    new_id: Option<String>,
    rule: &'a str,
    undoes: Option<&'a str>,
    /// An unmerge: the review rows its merge changed, to put back.
    reviews: &'a [ReviewUndo],
    note: Option<&'a str>,
    by: &'a str,
}

async fn split_once(
    warehouse: &Warehouse,
    master: &str,
    keys: &[(String, String)],
    ctx: &SplitCtx<'_>,
    now: DateTime<Utc>,
) -> Result<SplitOutcome, ReviewError> {
    if keys.is_empty() {
        return Err(ReviewError::Invalid(
            "name at least one record to split out (--record SOURCE:RECORD_ID)".into(),
        ));
    }
    if master_rows(warehouse, &[master]).await?.is_empty() {
        return Err(missing_master(warehouse, master).await);
    }
    let records = records_of(warehouse, &[master]).await?;
    let (src, rid) = (text(&records, "source")?, text(&records, "source_record_id")?);
    let index: HashMap<(&str, &str), usize> = (0..records.num_rows())
        .map(|i| ((src.value(i), rid.value(i)), i))
        .collect();
    let mut moved = Vec::new();
    for (s, r) in keys {
        match index.get(&(s.as_str(), r.as_str())) {
            Some(&i) => moved.push(i),
            None => {
                return Err(ReviewError::Invalid(format!(
                    "record {s}:{r} is not a record of master {master}"
                )));
            }
        }
    }
    moved.sort_unstable();
    moved.dedup();
    if moved.len() == records.num_rows() {
        return Err(ReviewError::Invalid(format!(
            "those are all the records of master {master}; nothing would be left"
        )));
    }
    let new_id = match &ctx.new_id {
        Some(id) => id.clone(),
        // Rows come in arrival order, so this is the record that would have
        // created the person: undoing a merge by hand restores its id.
        None => new_master_id(src.value(moved[0]), rid.value(moved[0])),
    };
    if new_id == master {
        return Err(ReviewError::Invalid(format!(
            "the records include {}:{}, the one master {master} was created from; split the other records out instead",
            src.value(moved[0]),
            rid.value(moved[0])
        )));
    }
    if !master_rows(warehouse, &[&new_id]).await?.is_empty() {
        return Err(ReviewError::Invalid(format!(
            "master {new_id} (the id these records would get) already exists; merge into it instead"
        )));
    }
    let version = next_version(warehouse, now).await?;
    let event_id = hash_id(
        "e-",
        &["split", master, &new_id, &now.timestamp_micros().to_string()],
    );
    let moved_keys = record_keys(&records, &moved)?;
    let explanation = serde_json::json!({
        "new_master_id": new_id,
        "records": moved_keys.iter().map(|(s, r)| serde_json::json!({"source": s, "source_record_id": r})).collect::<Vec<_>>(),
        "undoes": ctx.undoes,
        "by": ctx.by,
        "note": ctx.note,
    });
    let moved_set: HashSet<usize> = moved.iter().copied().collect();
    let stay: Vec<usize> = (0..records.num_rows())
        .filter(|i| !moved_set.contains(i))
        .collect();
    let (golden, _) = golden(
        &records,
        &[
            (master.to_string(), stay.clone()),
            (new_id.clone(), moved.clone()),
        ],
        &event_id,
        ctx.rules,
    )?;
    let moved_rows = repoint(&records, &moved, &new_id)?;
    let (links, emptied) =
        split_links(warehouse, &records, master, &stay, &moved, &new_id, &event_id).await?;
    let crm_keys: HashSet<(String, String)> = {
        let (p, c) = (text(&records, "provider")?, text(&records, "crm_id")?);
        moved
            .iter()
            .filter(|&&i| !p.is_null(i) && !c.is_null(i))
            .map(|&i| (p.value(i).to_string(), c.value(i).to_string()))
            .collect()
    };
    let crm = repointed_crm_links(warehouse, master, Some(&crm_keys), &new_id, now).await?;
    // A project whose records all moved takes its open reminder along.
    let (reminders, _reminders_turn) = moving_reminders(
        warehouse,
        master,
        &new_id,
        Some(&emptied),
        &format!("split {event_id}"),
        now,
    )
    .await?;
    let merges = merges_row(
        &event_id,
        "split",
        master,
        &new_id,
        ctx.rule,
        None,
        &explanation.to_string(),
        now,
    )?;
    let payload = serde_json::json!({
        "event_id": hash_id("ev-", &[&event_id, SPLIT]),
        "kind": SPLIT,
        "occurred_at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "master_id": master,
        "new_master_id": new_id,
        "split_event_id": event_id,
        "undoes": ctx.undoes,
        "records_moved": moved.len(),
    });
    let outbox = outbox_row(SPLIT, &event_id, master, &payload, now)?;
    let mut tables = vec![
        append("outbox", outbox),
        upsert("merges", merges),
        upsert("records", moved_rows),
    ];
    if crm.num_rows() > 0 {
        tables.push(upsert("crm_links", crm));
    }
    if links.num_rows() > 0 {
        tables.push(upsert("project_links", links));
    }
    tables.extend(reminders);
    tables.push(upsert("masters", golden));
    if let Some(reviews) = restored_reviews(warehouse, ctx.reviews, now).await? {
        tables.push(upsert("review", reviews));
    }
    apply_all(warehouse, version, tables).await?;
    if !emptied.is_empty() {
        let projects = emptied.into_iter().map(datafusion::prelude::lit).collect();
        let pred = col("master_id")
            .eq(datafusion::prelude::lit(master.to_string()))
            .and(col("project").in_list(projects, false));
        delete(warehouse, "project_links", pred, version + 1).await?;
    }
    info!(
        event_id = %event_id,
        master_id = %master,
        new_master_id = %new_id,
        records_moved = moved.len(),
        rule = ctx.rule,
        by = ctx.by,
        "master split"
    );
    Ok(SplitOutcome {
        event_id,
        master_id: master.to_string(),
        new_master_id: new_id,
        records_moved: moved.len(),
    })
}

/// The master an absorbed id was merged into (following later merges),
/// with the merge event id; None if it never was.
pub async fn merged_into(warehouse: &Warehouse, id: &str) -> Result<Option<(String, String)>, ReviewError> {
    if !warehouse.has_data("merges").await? {
        return Ok(None);
    }
    let mut current = id.to_string();
    let mut found = None;
    // A chain of merges is short; the bound guards against a cycle of
    // merges and unmerges.
    for _ in 0..16 {
        let rows = query(
            warehouse,
            &["merges"],
            &format!(
                "SELECT master_id, event_id FROM merges WHERE kind = 'merge' AND other_master_id = {} \
                 ORDER BY created_at DESC LIMIT 1",
                lit(&current)
            ),
        )
        .await?;
        let Some(b) = rows.iter().find(|b| b.num_rows() > 0) else {
            break;
        };
        let into = text(b, "master_id")?.value(0).to_string();
        let ev = text(b, "event_id")?.value(0).to_string();
        if !master_rows(warehouse, &[&current]).await?.is_empty() {
            // Merged once but back (unmerged): not absorbed now.
            break;
        }
        found = Some((into.clone(), found.map_or(ev.clone(), |(_, e)| e)));
        current = into;
    }
    Ok(found)
}

/// Every `records` row of `masters`, in arrival order, with RECORDS_SCHEMA.
async fn records_of(warehouse: &Warehouse, masters: &[&str]) -> Result<RecordBatch, ReviewError> {
    let rows = query(
        warehouse,
        &["records"],
        &format!(
            "SELECT * FROM records WHERE master_id IN ({}) \
             ORDER BY ingested_at, source_file, source_row, source, source_record_id",
            lits(masters)
        ),
    )
    .await?;
    conform(&rows, &RECORDS_SCHEMA)
}

fn record_keys(records: &RecordBatch, rows: &[usize]) -> Result<Vec<(String, String)>, ReviewError> {
    let (s, r) = (text(records, "source")?, text(records, "source_record_id")?);
    Ok(rows
        .iter()
        .map(|&i| (s.value(i).to_string(), r.value(i).to_string()))
        .collect())
}

/// `rows` of `records` with their master set to `to`.
fn repoint(records: &RecordBatch, rows: &[usize], to: &str) -> Result<RecordBatch, ReviewError> {
    let keep: arrow::array::BooleanArray = (0..records.num_rows()).map(|i| Some(rows.contains(&i))).collect();
    let b = filter_record_batch(records, &keep)?;
    let n = b.num_rows();
    with_column(&b, "master_id", repeat_text(Some(to), n))
}

/// Golden records of `groups` from `records`, by the config's survivorship
/// (a record's time is its source's creation time, else when it was
/// ingested: the golden builder reads both).
fn golden(
    records: &RecordBatch,
    groups: &[(String, Vec<usize>)],
    event_id: &str,
    rules: &SurvivorshipConfig,
) -> Result<(RecordBatch, Vec<(String, serde_json::Value)>), ReviewError> {
    let stamp = RunStamp {
        run_id: event_id.to_string(),
        now_us: Utc::now().timestamp_micros(),
    };
    Ok(golden_from_records(records, groups, rules, &stamp)?)
}

/// One project link row, as plain values.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    project: String,
    /// The decision or run that wrote it last (`updated_run_id`).
    updated_by: Option<String>,
    status: Option<String>,
    owner: Option<String>,
    record_count: i64,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
}

async fn links_of(warehouse: &Warehouse, master: &str) -> Result<Vec<Link>, ReviewError> {
    Ok(links_of_many(warehouse, &[master])
        .await?
        .remove(master)
        .unwrap_or_default())
}

/// The project links of `masters`, per master, by project.
async fn links_of_many(
    warehouse: &Warehouse,
    masters: &[&str],
) -> Result<HashMap<String, Vec<Link>>, ReviewError> {
    if !warehouse.has_data("project_links").await? {
        return Ok(HashMap::new());
    }
    let rows = query(
        warehouse,
        &["project_links"],
        &format!(
            "SELECT * FROM project_links WHERE master_id IN ({}) ORDER BY master_id, project",
            lits(masters)
        ),
    )
    .await?;
    let b = conform(&rows, &PROJECT_LINKS_SCHEMA)?;
    let m = text(&b, "master_id")?;
    let (p, s, o) = (text(&b, "project")?, text(&b, "status")?, text(&b, "owner")?);
    let by = text(&b, "updated_run_id")?;
    let c = b
        .column_by_name("record_count")
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .cloned()
        .ok_or_else(|| ReviewError::Schema("project_links.record_count".into()))?;
    let (f, l) = (times(&b, "first_seen")?, times(&b, "last_seen")?);
    let mut out: HashMap<String, Vec<Link>> = HashMap::new();
    for i in 0..b.num_rows() {
        out.entry(m.value(i).to_string()).or_default().push(Link {
            project: p.value(i).to_string(),
            updated_by: opt_text(&by, i),
            status: opt_text(&s, i),
            owner: opt_text(&o, i),
            record_count: c.value(i),
            first_seen: (!f.is_null(i)).then(|| f.value(i)),
            last_seen: (!l.is_null(i)).then(|| l.value(i)),
        });
    }
    Ok(out)
}

/// A survivor's links combined with the absorbed master's, per project:
/// the survivor's status and owner win (the absorbed one's fill gaps),
/// counts add up, first/last seen widen.
fn combine_links(survivor: &[Link], absorbed: &[Link]) -> Vec<Link> {
    let mut by: BTreeMap<String, Link> = survivor.iter().map(|l| (l.project.clone(), l.clone())).collect();
    for l in absorbed {
        match by.get_mut(&l.project) {
            Some(s) => {
                s.status = s.status.take().or_else(|| l.status.clone());
                s.owner = s.owner.take().or_else(|| l.owner.clone());
                s.record_count += l.record_count;
                s.first_seen = [s.first_seen, l.first_seen].into_iter().flatten().min();
                s.last_seen = [s.last_seen, l.last_seen].into_iter().flatten().max();
            }
            None => {
                by.insert(l.project.clone(), l.clone());
            }
        }
    }
    by.into_values().collect()
}

fn links_batch(master: &str, links: &[Link], event_id: &str) -> Result<RecordBatch, ReviewError> {
    let n = links.len();
    let cols: Vec<ArrayRef> = vec![
        repeat_text(Some(master), n),
        Arc::new(
            links
                .iter()
                .map(|l| Some(l.project.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(links.iter().map(|l| l.status.as_deref()).collect::<StringArray>()),
        Arc::new(links.iter().map(|l| l.owner.as_deref()).collect::<StringArray>()),
        Arc::new(links.iter().map(|l| l.record_count).collect::<Int64Array>()),
        ts_col(links.iter().map(|l| l.first_seen)),
        ts_col(links.iter().map(|l| l.last_seen)),
        repeat_text(Some(event_id), n),
    ];
    Ok(RecordBatch::try_new(PROJECT_LINKS_SCHEMA.clone(), cols)?)
}

/// The survivor's project links after a merge, from both masters' links.
fn merged_links(s: &[Link], x: &[Link], survivor: &str, event_id: &str) -> Result<RecordBatch, ReviewError> {
    // Already combined by an earlier attempt of this merge: adding the
    // absorbed counts again would count them twice.
    if x.is_empty() || s.iter().any(|l| l.updated_by.as_deref() == Some(event_id)) {
        return links_batch(survivor, &[], event_id);
    }
    links_batch(survivor, &combine_links(s, x), event_id)
}

/// Links after a split: the master keeps its rows for projects it still has
/// records in (counts and times from those records); the new master gets a
/// row per project of the moved records, with the master's status and
/// owner. Returns the rows to upsert and the master's projects left empty.
async fn split_links(
    warehouse: &Warehouse,
    records: &RecordBatch,
    master: &str,
    stay: &[usize],
    moved: &[usize],
    new_id: &str,
    event_id: &str,
) -> Result<(RecordBatch, Vec<String>), ReviewError> {
    let old = links_of(warehouse, master).await?;
    let project = text(records, "project")?;
    let created = times(records, "source_created_at")?;
    let ingested = times(records, "ingested_at")?;
    let time = |i: usize| {
        if created.is_null(i) {
            (!ingested.is_null(i)).then(|| ingested.value(i))
        } else {
            Some(created.value(i))
        }
    };
    let tally = |rows: &[usize]| {
        let mut m: BTreeMap<String, (i64, Option<i64>, Option<i64>)> = BTreeMap::new();
        for &i in rows {
            if project.is_null(i) || project.value(i).is_empty() {
                continue;
            }
            let e = m.entry(project.value(i).to_string()).or_insert((0, None, None));
            e.0 += 1;
            e.1 = [e.1, time(i)].into_iter().flatten().min();
            e.2 = [e.2, time(i)].into_iter().flatten().max();
        }
        m
    };
    let (left, gone) = (tally(stay), tally(moved));
    let mut keep = Vec::new();
    let mut emptied = Vec::new();
    for l in &old {
        match left.get(&l.project) {
            Some(&(n, f, t)) => keep.push(Link {
                record_count: n,
                first_seen: f,
                last_seen: t,
                ..l.clone()
            }),
            None if gone.contains_key(&l.project) => emptied.push(l.project.clone()),
            None => {}
        }
    }
    let fresh: Vec<Link> = gone
        .iter()
        .map(|(p, &(n, f, t))| {
            let from = old.iter().find(|l| &l.project == p);
            Link {
                project: p.clone(),
                updated_by: None,
                status: from.and_then(|l| l.status.clone()),
                owner: from.and_then(|l| l.owner.clone()),
                record_count: n,
                first_seen: f,
                last_seen: t,
            }
        })
        .collect();
    let a = links_batch(master, &keep, event_id)?;
    let b = links_batch(new_id, &fresh, event_id)?;
    Ok((
        arrow::compute::concat_batches(&PROJECT_LINKS_SCHEMA, &[a, b])?,
        emptied,
    ))
}

/// `crm_links` rows of `from` (only those of `only` when given) moved to `to`.
async fn repointed_crm_links(
    warehouse: &Warehouse,
    from: &str,
    only: Option<&HashSet<(String, String)>>,
    to: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch, ReviewError> {
    if only.is_some_and(HashSet::is_empty) {
        return Ok(RecordBatch::new_empty(CRM_LINKS_SCHEMA.clone()));
    }
    repoint_crm(&crm_links_of(warehouse, &[from]).await?, from, only, to, now)
}

/// The CRM links of `masters`.
async fn crm_links_of(warehouse: &Warehouse, masters: &[&str]) -> Result<RecordBatch, ReviewError> {
    if !warehouse.has_data("crm_links").await? {
        return Ok(RecordBatch::new_empty(CRM_LINKS_SCHEMA.clone()));
    }
    let rows = query(
        warehouse,
        &["crm_links"],
        &format!("SELECT * FROM crm_links WHERE master_id IN ({})", lits(masters)),
    )
    .await?;
    conform(&rows, &CRM_LINKS_SCHEMA)
}

/// The CRM links of `from` among `crm` (all, or the `only` keys) moved to `to`.
fn repoint_crm(
    crm: &RecordBatch,
    from: &str,
    only: Option<&HashSet<(String, String)>>,
    to: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch, ReviewError> {
    let m = text(crm, "master_id")?;
    let mine: arrow::array::BooleanArray = (0..crm.num_rows()).map(|i| Some(m.value(i) == from)).collect();
    let b = filter_record_batch(crm, &mine)?;
    let b = match only {
        Some(keys) => {
            let (p, c) = (text(&b, "provider")?, text(&b, "crm_id")?);
            let keep: arrow::array::BooleanArray = (0..b.num_rows())
                .map(|i| Some(keys.contains(&(p.value(i).to_string(), c.value(i).to_string()))))
                .collect();
            filter_record_batch(&b, &keep)?
        }
        None => b,
    };
    let n = b.num_rows();
    let b = with_column(&b, "master_id", repeat_text(Some(to), n))?;
    with_column(
        &b,
        "updated_at",
        ts_col(std::iter::repeat_n(Some(now.timestamp_micros()), n)),
    )
}

#[allow(clippy::too_many_arguments)] // one row's columns
fn merges_row(
    event_id: &str,
    kind: &str,
    master: &str,
    other: &str,
    rule: &str,
    score: Option<f64>,
    explanation: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch, ReviewError> {
    let cols: Vec<ArrayRef> = vec![
        repeat_text(Some(event_id), 1),
        repeat_text(Some(kind), 1),
        repeat_text(Some(master), 1),
        repeat_text(Some(other), 1),
        repeat_text(None, 1),
        repeat_text(None, 1),
        repeat_text(Some(rule), 1),
        Arc::new(Float64Array::from(vec![score])),
        repeat_text(Some(explanation), 1),
        repeat_text(None, 1),
        ts_col([Some(now.timestamp_micros())]),
    ];
    Ok(RecordBatch::try_new(MERGES_SCHEMA.clone(), cols)?)
}

/// An outbox row for a master event. Its id derives from the decision's
/// event id, so a redone write is the same event. `pipeline` is empty: the
/// decision belongs to the warehouse, not one pipeline.
fn outbox_row(
    kind: &str,
    decision: &str,
    master: &str,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<RecordBatch, ReviewError> {
    let cols: Vec<ArrayRef> = vec![
        repeat_text(Some(&hash_id("ev-", &[decision, kind])), 1),
        repeat_text(Some(kind), 1),
        repeat_text(Some(""), 1),
        repeat_text(None, 1),
        repeat_text(Some(master), 1),
        repeat_text(None, 1),
        repeat_text(None, 1),
        ts_col([None]),
        Arc::new(Int64Array::from(vec![None::<i64>])),
        repeat_text(Some(&payload.to_string()), 1),
        ts_col([Some(now.timestamp_micros())]),
    ];
    Ok(RecordBatch::try_new(OUTBOX_SCHEMA.clone(), cols)?)
}

fn upsert(table: &str, b: RecordBatch) -> StagedTable {
    StagedTable {
        table: table.into(),
        mode: WriteMode::Upsert,
        batches: vec![b],
    }
}

fn append(table: &str, b: RecordBatch) -> StagedTable {
    StagedTable {
        table: table.into(),
        mode: WriteMode::Append,
        batches: vec![b],
    }
}

/// A txn version above every earlier one of this app id (deletes use the
/// next one too).
async fn next_version(warehouse: &Warehouse, now: DateTime<Utc>) -> Result<i64, ReviewError> {
    let last = warehouse.last_txn_version(APP_ID).await?.unwrap_or(0);
    Ok(now.timestamp_micros().max(last + 2))
}

/// A write under this module's txn version: `Ok(false)` means another
/// process committed that version to `table` first.
fn wrote(table: &str, done: Result<bool, leadflow_sinks::WarehouseError>) -> Result<(), ReviewError> {
    match done {
        Ok(true) => Ok(()),
        Ok(false) => Err(ReviewError::Conflict(table.into())),
        Err(e) => Err(e.into()),
    }
}

async fn apply_all(warehouse: &Warehouse, version: i64, tables: Vec<StagedTable>) -> Result<(), ReviewError> {
    for t in &tables {
        wrote(&t.table, warehouse.apply(t, APP_ID, version).await)?;
    }
    Ok(())
}

async fn delete(
    warehouse: &Warehouse,
    table: &str,
    predicate: Expr,
    version: i64,
) -> Result<(), ReviewError> {
    wrote(
        table,
        warehouse.delete_where(table, predicate, APP_ID, version).await,
    )
}

/// Take this process's write turn, then run `op`, redone from fresh state
/// when another process won the race.
async fn exclusive<T, F, Fut>(what: &str, op: F) -> Result<T, ReviewError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReviewError>>,
{
    let _turn = WRITE_LOCK.write().await;
    crate::retry::on_conflict(what, Duration::from_millis(100), op).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn merges_wait_for_runs_and_runs_share() {
        let run = run_turn().await;
        // A second run of another pipeline goes beside the first ...
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), run_turn()).await;
        assert!(other.is_ok(), "runs share the turn");
        drop(other);
        // ... a merge waits for them.
        let merge = tokio::time::timeout(std::time::Duration::from_millis(50), WRITE_LOCK.write()).await;
        assert!(merge.is_err(), "a merge must wait for the run");
        drop(run);
        let merge = tokio::time::timeout(std::time::Duration::from_millis(500), WRITE_LOCK.write()).await;
        assert!(merge.is_ok(), "the merge goes once the run is done");
    }

    fn link(p: &str, status: Option<&str>, owner: Option<&str>, n: i64, f: i64, l: i64) -> Link {
        Link {
            project: p.into(),
            updated_by: None,
            status: status.map(Into::into),
            owner: owner.map(Into::into),
            record_count: n,
            first_seen: Some(f),
            last_seen: Some(l),
        }
    }

    #[test]
    fn the_older_master_survives_unless_one_is_kept() {
        let t = |d| Some(Utc.with_ymd_and_hms(2026, 1, d, 0, 0, 0).unwrap());
        let found = vec![("m-b".to_string(), t(1)), ("m-a".to_string(), t(2))];
        assert_eq!(survivor(&found, None).unwrap(), ("m-b", "m-a"));
        assert_eq!(survivor(&found, Some("m-a")).unwrap(), ("m-a", "m-b"));
        assert!(matches!(
            survivor(&found, Some("m-x")),
            Err(ReviewError::Invalid(_))
        ));
        let unknown = vec![("m-a".to_string(), None), ("m-b".to_string(), t(5))];
        assert_eq!(survivor(&unknown, None).unwrap(), ("m-b", "m-a"));
        let tie = vec![("m-b".to_string(), t(1)), ("m-a".to_string(), t(1))];
        assert_eq!(survivor(&tie, None).unwrap(), ("m-a", "m-b"));
    }

    #[test]
    fn links_combine_per_project_with_the_survivors_status_and_owner() {
        let s = vec![link("Riverside", Some("hot"), None, 2, 10, 20)];
        let x = vec![
            link("Riverside", Some("cold"), Some("asha"), 1, 5, 30),
            link("Hilltop", None, Some("ravi"), 3, 7, 8),
        ];
        let c = combine_links(&s, &x);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], link("Hilltop", None, Some("ravi"), 3, 7, 8));
        assert_eq!(c[1], link("Riverside", Some("hot"), Some("asha"), 3, 5, 30));
    }

    #[test]
    fn undo_info_reads_what_a_merge_wrote_and_refuses_the_rest() {
        let e = serde_json::json!({
            "absorbed_master_id": "m-x",
            "records": [{"source": "drops", "source_record_id": "r1"}],
        });
        let u = undo_info(&e.to_string()).unwrap();
        assert_eq!(u.absorbed, "m-x");
        assert_eq!(u.keys, vec![("drops".to_string(), "r1".to_string())]);
        assert!(
            u.reviews.is_empty(),
            "a merge written before review undo knew none"
        );
        let undo = ReviewUndo {
            review_id: "rv-1".into(),
            set: "superseded".into(),
            was: Some("rejected".into()),
            was_decided_at: Some(7),
        };
        let mut e = e;
        e["reviews"] = serde_json::to_value(vec![undo.clone()]).unwrap();
        assert_eq!(undo_info(&e.to_string()).unwrap().reviews, vec![undo]);
        assert!(undo_info("linked with ...").is_err());
        assert!(undo_info(r#"{"absorbed_master_id":"m","records":[{"source":"s"}]}"#).is_err());
    }

    #[test]
    fn rows_fit_their_schemas() {
        let now = Utc::now();
        let m = merges_row("e-1", "merge", "m-a", "m-b", "manual", None, "{}", now).unwrap();
        assert_eq!(m.num_rows(), 1);
        let o = outbox_row(MERGED, "e-1", "m-a", &serde_json::json!({}), now).unwrap();
        assert_eq!(text(&o, "kind").unwrap().value(0), MERGED);
        assert_eq!(
            text(&o, "event_id").unwrap().value(0),
            outbox_row(MERGED, "e-1", "m-a", &serde_json::json!({}), now)
                .map(|b| text(&b, "event_id").unwrap().value(0).to_string())
                .unwrap()
        );
        let l = links_batch("m-a", &[link("P", None, None, 1, 1, 1)], "e-1").unwrap();
        assert_eq!(l.num_rows(), 1);
    }
}
