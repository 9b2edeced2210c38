//! `leadflow eval` and `leadflow train`: linkage quality against a truth
//! file, and models trained without labels.
//!
//! - `eval leads`: the real run (map, normalise, validate, link) of a lead
//!   CSV into a fresh warehouse, then pairwise precision / recall / F1 of
//!   `records.master_id` against `row,person_id` (a second file can follow
//!   into the same warehouse, scored on its own rows).
//! - `eval table`: any CSV linked with a linkage YAML (comparisons,
//!   blocking, thresholds; e.g. `bench/febrl.yaml`), deduplicated, or
//!   linked across the values of a column (`--link-column dataset`).
//! - `train`: u from random pairs, m by EM over the blocked pairs, of a
//!   CSV or of a warehouse's `records`; writes the model JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use leadflow_transforms::linkage::{self, Frame, LinkageConfig, Model, Scorer};

use crate::run::{RunOptions, run_pipeline, utf8};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error(transparent)]
    Linkage(#[from] linkage::LinkageError),
    #[error("{0}")]
    Other(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Pairwise figures: pairs of records put together vs truly together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub true_pairs: u64,
    pub predicted_pairs: u64,
    pub actual_pairs: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pairwise precision {:.4}, recall {:.4}, F1 {:.4} ({} of {} predicted pairs right, {} true pairs)",
            self.precision, self.recall, self.f1, self.true_pairs, self.predicted_pairs, self.actual_pairs
        )
    }
}

/// Score `(row, cluster)` assignments against `row -> person`. Only rows
/// both sides know count: a row the run rejected (no usable contact) is
/// neither a hit nor a miss, as in the bench.
pub fn pairwise<'a>(assigned: impl Iterator<Item = (i64, &'a str)>, truth: &HashMap<i64, String>) -> Scores {
    let mut by_cluster: HashMap<&str, u64> = HashMap::new();
    let mut by_both: HashMap<(&str, &str), u64> = HashMap::new();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (row, cluster) in assigned {
        let Some(p) = truth.get(&row) else { continue };
        *by_cluster.entry(cluster).or_default() += 1;
        *by_both.entry((cluster, p.as_str())).or_default() += 1;
        *seen.entry(p.as_str()).or_default() += 1;
    }
    let by_person = seen;
    let pairs = |n: &u64| n * n.saturating_sub(1) / 2;
    let tp: u64 = by_both.values().map(pairs).sum();
    let predicted: u64 = by_cluster.values().map(pairs).sum();
    let actual: u64 = by_person.values().map(pairs).sum();
    let precision = tp as f64 / predicted.max(1) as f64;
    let recall = tp as f64 / actual.max(1) as f64;
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Scores {
        true_pairs: tp,
        predicted_pairs: predicted,
        actual_pairs: actual,
        precision,
        recall,
        f1,
    }
}

/// A truth file: `row,person_id` (header first).
pub fn read_truth(path: &Path) -> Result<HashMap<i64, String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let (r, p) = line
            .split_once(',')
            .ok_or_else(|| file_err(path, format!("line {}: expected row,person_id", n + 1)))?;
        let row: i64 = r
            .trim()
            .parse()
            .map_err(|_| file_err(path, format!("line {}: row `{r}` is not a number", n + 1)))?;
        out.insert(row, p.trim().to_string());
    }
    Ok(out)
}

/// A CSV as one batch of text columns (empty cells are null).
pub fn read_csv(path: &Path) -> Result<RecordBatch, EvalError> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| file_err(path, e))?;
    let headers: Vec<String> = r
        .headers()
        .map_err(|e| file_err(path, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::new(); headers.len()];
    for rec in r.records() {
        let rec = rec.map_err(|e| file_err(path, e))?;
        for (c, v) in rec.iter().enumerate() {
            let v = v.trim();
            cols[c].push((!v.is_empty()).then(|| v.to_string()));
        }
    }
    let schema = Arc::new(Schema::new(
        headers
            .iter()
            .map(|h| Field::new(h, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    RecordBatch::try_new(schema, arrays).map_err(|e| file_err(path, e))
}

/// A linkage YAML (the `dedupe.linkage` section's shape), minus the
/// comparisons and blocking rules that read a `drop`ped column.
pub fn read_linkage(path: &Path, drop: &[String]) -> Result<LinkageConfig, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let mut c: LinkageConfig = serde_norway::from_str(&text).map_err(|e| file_err(path, e))?;
    c.comparisons
        .retain(|x| !x.columns.iter().any(|col| drop.contains(col)));
    c.blocking
        .retain(|r| !r.parts.iter().any(|p| drop.contains(&p.column)));
    let names: Vec<String> = c.comparisons.iter().map(|x| x.name.clone()).collect();
    c.veto.retain(|v| {
        v.split_once('.')
            .is_some_and(|(n, _)| names.iter().any(|x| x == n))
    });
    Ok(c)
}

/// Train a model on a batch of records: blocked pairs, u, EM.
pub async fn train_batch(
    config: &LinkageConfig,
    batch: &RecordBatch,
    group: Option<&[u32]>,
    labels: &[(u32, u32)],
    name: &str,
) -> Result<(Model, linkage::TrainReport), EvalError> {
    let frame = Frame::new(config, &[(batch, &[])])?;
    let start = Model::for_config(config).unwrap_or_else(|_| Model::initial(&config.comparisons, 1e-4));
    let at = chrono::Utc::now().to_rfc3339();
    Ok(linkage::train(config, &start, &frame, group, labels, name, &at).await?)
}

/// What `eval table` measured.
pub struct TableEval {
    pub records: usize,
    pub candidate_pairs: usize,
    pub skipped_blocks: u64,
    pub links: usize,
    pub reviews: usize,
    pub trained: Option<linkage::TrainReport>,
    pub scores: Scores,
    pub seconds: f64,
}

/// Link a CSV with a linkage config and score it. Without a model in the
/// config, one is trained on the file first (no labels used).
pub async fn eval_table(
    file: &Path,
    truth: &Path,
    mut config: LinkageConfig,
    link_column: Option<&str>,
) -> Result<TableEval, EvalError> {
    let t = Instant::now();
    let batch = read_csv(file)?;
    let truth = read_truth(truth)?;
    let group: Option<Vec<u32>> = match link_column {
        Some(col) => {
            let c = batch
                .column_by_name(col)
                .ok_or_else(|| file_err(file, format!("no column `{col}`")))?;
            let s = c.as_string::<i32>();
            let mut ids: HashMap<String, u32> = HashMap::new();
            Some(
                (0..s.len())
                    .map(|i| {
                        let n = ids.len() as u32;
                        let v = if s.is_null(i) { "" } else { s.value(i) };
                        *ids.entry(v.to_string()).or_insert(n)
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let mut trained = None;
    let model = if config.model.is_some() {
        Model::for_config(&config)?
    } else {
        config.model = None;
        let (m, r) = train_batch(&config, &batch, group.as_deref(), &[], "eval").await?;
        trained = Some(r);
        m
    };
    let frame = Frame::new(&config, &[(&batch, &[])])?;
    let scorer = Scorer::new(config.clone(), model)?.for_population(frame.len as u64);
    let class: Vec<Option<u32>> = match &group {
        Some(g) => g.iter().map(|&x| Some(x)).collect(),
        None => vec![None; frame.len],
    };
    let linked = linkage::link_frame(&scorer, &frame, frame.len, group.as_deref(), &class, &[]).await?;
    let roots: Vec<String> = linked.clustering.root.iter().map(|r| r.to_string()).collect();
    let scores = pairwise(
        roots.iter().enumerate().map(|(i, r)| (i as i64 + 2, r.as_str())),
        &truth,
    );
    Ok(TableEval {
        records: frame.len,
        candidate_pairs: linked.pairs.len(),
        skipped_blocks: linked.skipped_blocks,
        links: linked.clustering.joined_by.iter().filter(|j| j.is_some()).count(),
        reviews: linked.clustering.review.len(),
        trained,
        scores,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// One lead file's run in `eval leads`.
pub struct LeadsEval {
    pub label: String,
    pub rows: usize,
    pub seconds: f64,
    pub masters_new: u64,
    pub matched_existing: u64,
    pub merged_in_batch: u64,
    /// This file's records scored among themselves.
    pub scores: Scores,
    /// All files so far together (from the second file on).
    pub cumulative: Option<Scores>,
}

fn eval_config(dir: &Path, drops: &str, mode: &str, model: Option<&Path>) -> Result<PathBuf, EvalError> {
    let path = dir.join(format!("{drops}.yaml"));
    let model = match model {
        Some(m) => {
            let abs = std::fs::canonicalize(m).map_err(|e| file_err(m, e))?;
            format!("\n      linkage:\n        model: \"{}\"", abs.display())
        }
        None => String::new(),
    };
    let yaml = format!(
        "warehouse:\n  uri: ./warehouse\npipelines:\n  - name: eval\n    defaults:\n      phone_region: IN\n      project: Eval\n    dedupe:\n      mode: {mode}{model}\n    sources:\n      - name: {drops}\n        files:\n          path: ./{drops}\n          pattern: \"*.csv\"\n"
    );
    std::fs::write(&path, yaml).map_err(|e| file_err(&path, e))?;
    Ok(path)
}

/// Run lead files (each with its truth) one after the other into a fresh
/// warehouse in `dir` and score each file's records.
pub async fn eval_leads(
    files: &[(PathBuf, PathBuf)],
    dir: &Path,
    mode: &str,
    model: Option<&Path>,
    dump: Option<&Path>,
) -> Result<Vec<LeadsEval>, EvalError> {
    let _ = std::fs::remove_dir_all(dir.join("warehouse"));
    let mut out = Vec::new();
    // Every file so far, rows keyed by (file, row): scores the links of a
    // later file's records to the earlier files' people too.
    let mut all_rows: Vec<(i64, String)> = Vec::new();
    let mut all_truth: HashMap<i64, String> = HashMap::new();
    for (k, (file, truth_path)) in files.iter().enumerate() {
        let drops = format!("file{}", k + 1);
        let drop_dir = dir.join(&drops);
        let _ = std::fs::remove_dir_all(&drop_dir);
        std::fs::create_dir_all(&drop_dir).map_err(|e| file_err(&drop_dir, e))?;
        std::fs::copy(file, drop_dir.join("leads.csv")).map_err(|e| file_err(file, e))?;
        let cfg = eval_config(dir, &drops, mode, model)?;
        let loaded = crate::config::load(&cfg).map_err(|e| EvalError::Other(e.to_string()))?;
        let wh = crate::open_warehouse(&loaded)
            .await
            .map_err(|e| EvalError::Other(e.to_string()))?;
        let t = Instant::now();
        let opts = RunOptions {
            trigger: "eval".into(),
            ..Default::default()
        };
        let r = run_pipeline(&loaded, &loaded.config.pipelines[0], &wh, &opts).await;
        let seconds = t.elapsed().as_secs_f64();
        if let Some(e) = &r.error {
            return Err(EvalError::Other(format!("run of {} failed: {e}", file.display())));
        }
        let ctx = SessionContext::new();
        wh.register(&ctx, &["records"])
            .await
            .map_err(|e| EvalError::Other(e.to_string()))?;
        let batches = ctx
            .sql(&format!(
                "SELECT source_row, master_id FROM records WHERE source = '{drops}'"
            ))
            .await
            .map_err(|e| EvalError::Other(e.to_string()))?
            .collect()
            .await
            .map_err(|e| EvalError::Other(e.to_string()))?;
        let truth = read_truth(truth_path)?;
        let mut rows: Vec<(i64, String)> = Vec::new();
        for b in &batches {
            let n = arrow::compute::cast(b.column(0), &DataType::Int64)
                .map_err(|e| EvalError::Other(e.to_string()))?;
            let n = n.as_primitive::<arrow::datatypes::Int64Type>();
            let m = utf8(b.column(1)).map_err(|e| EvalError::Other(e.to_string()))?;
            rows.extend((0..b.num_rows()).map(|i| (n.value(i), m.value(i).to_string())));
        }
        let scores = pairwise(rows.iter().map(|(r, m)| (*r, m.as_str())), &truth);
        let base = (k as i64 + 1) << 40;
        all_rows.extend(rows.iter().map(|(r, m)| (base + r, m.clone())));
        all_truth.extend(truth.iter().map(|(r, p)| (base + r, p.clone())));
        let cumulative =
            (k > 0).then(|| pairwise(all_rows.iter().map(|(r, m)| (*r, m.as_str())), &all_truth));
        if let Some(path) = dump {
            let path = path.with_extension(format!("{}.csv", k + 1));
            let mut text = String::from("row,master_id,person_id\n");
            for (r, m) in &rows {
                text.push_str(&format!("{r},{m},{}\n", truth.get(r).map_or("", |p| p.as_str())));
            }
            std::fs::write(&path, text).map_err(|e| file_err(&path, e))?;
        }
        out.push(LeadsEval {
            label: file.display().to_string(),
            rows: rows.len(),
            seconds,
            masters_new: r.masters_new,
            matched_existing: r.matched_existing,
            merged_in_batch: r.merged_in_batch,
            scores,
            cumulative,
        });
    }
    Ok(out)
}

/// Train on a warehouse's `records` (up to `sample` rows) with a
/// pipeline's linkage config.
pub async fn train_warehouse(
    loaded: &crate::config::LoadedConfig,
    pipeline: &crate::config::PipelineConfig,
    sample: usize,
) -> Result<(Model, linkage::TrainReport), EvalError> {
    let other = |e: &dyn std::fmt::Display| EvalError::Other(e.to_string());
    let wh = crate::open_warehouse(loaded).await.map_err(|e| other(&e))?;
    let wh = crate::warehouse_for(&wh, pipeline.entity.as_deref())
        .await
        .map_err(|e| other(&e))?;
    let labelled = wh.has_data("review").await.map_err(|e| other(&e))?;
    let ctx = SessionContext::new();
    let tables: &[&str] = if labelled {
        &["records", "review", "merges"]
    } else {
        &["records"]
    };
    wh.register(&ctx, tables).await.map_err(|e| other(&e))?;
    let config = &pipeline.dedupe.linkage;
    let cols: Vec<String> = linkage::frame::needed_columns(config)
        .iter()
        .map(String::as_str)
        .chain(["source", "source_record_id"])
        .map(|c| format!("r.\"{c}\""))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let cols = cols.join(", ");
    let sql = |q: String| {
        let ctx = &ctx;
        async move {
            ctx.sql(&q)
                .await
                .map_err(|e| other(&e))?
                .collect()
                .await
                .map_err(|e| other(&e))
        }
    };
    let mut batches = sql(format!(
        "SELECT {cols} FROM records r WHERE r.deleted_at IS NULL LIMIT {sample}"
    ))
    .await?;
    // Labels: the two records of each review a person approved (not the
    // merges a run made itself for a record linked strongly to both).
    let mut pairs: Vec<(String, String, String, String)> = Vec::new();
    if labelled {
        let mut by_runs: std::collections::HashSet<String> = std::collections::HashSet::new();
        for b in &sql(
            "SELECT explanation FROM merges WHERE kind = 'merge' AND explanation LIKE '%\"by\":\"leadflow run %'".to_string(),
        )
        .await?
        {
            let e = utf8(b.column(0)).map_err(|e| other(&e))?;
            for i in 0..b.num_rows() {
                let v: serde_json::Value = serde_json::from_str(e.value(i)).unwrap_or_default();
                if v["by"].as_str().is_some_and(|by| by.starts_with("leadflow run "))
                    && let Some(id) = v["review_id"].as_str()
                {
                    by_runs.insert(id.to_string());
                }
            }
        }
        let reviewed = sql(
            "SELECT v.source, v.source_record_id, v.other_source, v.other_source_record_id, v.review_id \
             FROM review v WHERE v.status = 'approved' AND v.source IS NOT NULL AND v.other_source IS NOT NULL"
                .to_string(),
        )
        .await?;
        for b in &reviewed {
            let t: Vec<_> = (0..5)
                .map(|c| utf8(b.column(c)))
                .collect::<Result<_, _>>()
                .map_err(|e| other(&e))?;
            for i in (0..b.num_rows()).filter(|&i| !by_runs.contains(t[4].value(i))) {
                pairs.push((
                    t[0].value(i).to_string(),
                    t[1].value(i).to_string(),
                    t[2].value(i).to_string(),
                    t[3].value(i).to_string(),
                ));
            }
        }
        if !pairs.is_empty() {
            // Their records, wherever the sample stopped.
            batches.extend(
                sql(format!(
                    "SELECT {cols} FROM records r JOIN review v ON v.status = 'approved' AND \
                     ((r.source = v.source AND r.source_record_id = v.source_record_id) OR \
                     (r.source = v.other_source AND r.source_record_id = v.other_source_record_id))"
                ))
                .await?,
            );
        }
    }
    let Some(first) = batches.first() else {
        return Err(EvalError::Other(
            "the warehouse holds no records to train on".into(),
        ));
    };
    let batch = arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| other(&e))?;
    let column = |name: &str| -> Result<StringArray, EvalError> {
        let c = batch
            .column_by_name(name)
            .ok_or_else(|| other(&format!("records lack {name}")))?;
        utf8(c).map_err(|e| other(&e))
    };
    let (src, rid) = (column("source")?, column("source_record_id")?);
    // One row per record: a labelled record may also be in the sample.
    let mut row_of: HashMap<(&str, &str), u32> = HashMap::new();
    let mut keep = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let next = row_of.len() as u32;
        let new = match row_of.entry((src.value(i), rid.value(i))) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(next);
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        };
        keep.push(new);
    }
    let labels: Vec<(u32, u32)> = pairs
        .iter()
        .filter_map(|(s1, r1, s2, r2)| {
            Some((
                *row_of.get(&(s1.as_str(), r1.as_str()))?,
                *row_of.get(&(s2.as_str(), r2.as_str()))?,
            ))
        })
        .collect();
    let batch = arrow::compute::filter_record_batch(&batch, &arrow::array::BooleanArray::from(keep))
        .map_err(|e| other(&e))?;
    train_batch(
        config,
        &batch,
        None,
        &labels,
        &format!(
            "trained on {} records of pipeline {}",
            batch.num_rows(),
            pipeline.name
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_counts_pairs() {
        let truth: HashMap<i64, String> = [(2, "a"), (3, "a"), (4, "a"), (5, "b"), (6, "b")]
            .into_iter()
            .map(|(r, p)| (r, p.to_string()))
            .collect();
        // Clusters: {2,3}, {4}, {5,6} -> 2 of 2 predicted right, 4 true pairs.
        let s = pairwise(
            [(2, "x"), (3, "x"), (4, "y"), (5, "z"), (6, "z")].into_iter(),
            &truth,
        );
        assert_eq!((s.true_pairs, s.predicted_pairs, s.actual_pairs), (2, 2, 4));
        assert!((s.precision - 1.0).abs() < 1e-12);
        assert!((s.recall - 0.5).abs() < 1e-12);
        // One wrong merge: {2,3,5}
        let s = pairwise([(2, "x"), (3, "x"), (5, "x")].into_iter(), &truth);
        assert_eq!((s.true_pairs, s.predicted_pairs), (1, 3));
    }
}
