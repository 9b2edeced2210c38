//! Blocking: candidate pairs are records sharing a block key, found with a
//! DataFusion self-join of (key, record) rows. Keys are 64-bit hashes of the
//! rule and its parts' transformed values, computed in Rust straight from
//! Arrow columns (leads and masters alike), so the joins run on integers.
//! Blocks larger than the cap are skipped so one common value cannot
//! explode the pairs.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::LinkageError;
use super::compare::{digits, fold_words, soundex};
use super::config::{BlockTransform, BlockingRule};
use super::frame::{ColumnValues, Frame};
use crate::dedupe::names::fold_name;

/// The key part of one value, empty when it has none.
pub fn transform(t: BlockTransform, v: &str) -> String {
    match t {
        BlockTransform::Exact => v.trim().to_string(),
        BlockTransform::Fold => fold_words(v).replace(' ', ""),
        BlockTransform::Phonetic => soundex(v),
        BlockTransform::Initial => fold_name(v).chars().next().map(String::from).unwrap_or_default(),
        BlockTransform::Last7 => {
            let d = digits(v);
            if d.len() >= 7 {
                d[d.len() - 7..].to_string()
            } else {
                String::new()
            }
        }
        BlockTransform::EmailLocal => match v.trim().rsplit_once('@') {
            Some((l, _)) if l.len() >= 3 => l.to_lowercase().replace('.', ""),
            _ => String::new(),
        },
        BlockTransform::Digits => digits(v),
    }
}

/// Where one blocking part reads its values: the frame's prepared raw
/// values, or a batch column (text, or a list of text such as a master's
/// `phones`).
pub enum PartValues<'a> {
    Rows(&'a ColumnValues),
    Text(StringArray),
    List(ListArray),
    /// The batch has no such column: no values, so no key under the rule.
    Missing,
}

impl PartValues<'_> {
    /// A batch column as part values (cast to Utf8 / List<Utf8> once).
    pub fn of_column(c: Option<&ArrayRef>) -> Result<PartValues<'static>, LinkageError> {
        let Some(c) = c else {
            return Ok(PartValues::Missing);
        };
        Ok(match c.data_type() {
            DataType::List(_) | DataType::LargeList(_) => {
                let target = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
                PartValues::List(arrow::compute::cast(c, &target)?.as_list::<i32>().clone())
            }
            _ => PartValues::Text(
                arrow::compute::cast(c, &DataType::Utf8)?
                    .as_string::<i32>()
                    .clone(),
            ),
        })
    }

    /// Call `f` with each non-empty (trimmed) value of `row`.
    fn each(&self, row: usize, mut f: impl FnMut(&str)) {
        let mut text = |s: &StringArray, j: usize| {
            if s.is_valid(j) {
                let v = s.value(j).trim();
                if !v.is_empty() {
                    f(v)
                }
            }
        };
        match self {
            PartValues::Rows(v) => v[row].iter().for_each(|x| f(x)),
            PartValues::Text(s) => text(s, row),
            PartValues::List(l) => {
                if l.is_valid(row) {
                    let (from, to) = (
                        l.value_offsets()[row] as usize,
                        l.value_offsets()[row + 1] as usize,
                    );
                    let s = l.values().as_string::<i32>();
                    (from..to).for_each(|j| text(s, j));
                }
            }
            PartValues::Missing => {}
        }
    }
}

/// Block keys of one row under rule `r` (its parts' values): every
/// combination of the parts' transformed values, as a 64-bit hash chained
/// from the rule's index over each part (distinct rules never share a key).
fn row_keys(r: usize, parts: &[(BlockTransform, &PartValues)], row: usize, out: &mut Vec<u64>) {
    let mut combos = vec![xxh3_64(&(r as u64).to_le_bytes())];
    let mut next = Vec::new();
    for (t, vals) in parts {
        next.clear();
        vals.each(row, |v| {
            let k = transform(*t, v);
            if !k.is_empty() {
                next.extend(combos.iter().map(|c| xxh3_64_with_seed(k.as_bytes(), *c)));
            }
        });
        std::mem::swap(&mut combos, &mut next);
        if combos.is_empty() {
            return;
        }
    }
    combos.sort_unstable();
    combos.dedup();
    out.extend(combos);
}

/// Block keys of rows `0..len`: `(key, row)` pairs over every rule, where
/// `values(column)` gives a part's values. Rows are cut in chunks on the
/// rayon pool (the transforms allocate; 10^6 masters x 6 rules add up).
pub fn block_keys_of<'v>(
    rules: &[BlockingRule],
    len: usize,
    values: impl Fn(&str) -> &'v PartValues<'v>,
) -> (Vec<u64>, Vec<u32>) {
    use rayon::prelude::*;
    let rules: Vec<Vec<(BlockTransform, &PartValues)>> = rules
        .iter()
        .map(|rule| {
            rule.parts
                .iter()
                .map(|p| (p.transform, values(&p.column)))
                .collect()
        })
        .collect();
    let chunk = 16 * 1024;
    let parts: Vec<(Vec<u64>, Vec<u32>)> = (0..len.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let (mut keys, mut rows) = (Vec::new(), Vec::new());
            let mut one = Vec::new();
            for (r, parts) in rules.iter().enumerate() {
                for i in c * chunk..((c + 1) * chunk).min(len) {
                    one.clear();
                    row_keys(r, parts, i, &mut one);
                    rows.extend(std::iter::repeat_n(i as u32, one.len()));
                    keys.append(&mut one);
                }
            }
            (keys, rows)
        })
        .collect();
    let total = parts.iter().map(|p| p.0.len()).sum();
    let (mut keys, mut rows) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for (k, r) in parts {
        keys.extend(k);
        rows.extend(r);
    }
    (keys, rows)
}

/// Block keys of every row of a frame (see [`block_keys_of`]).
pub fn block_keys(frame: &Frame, rules: &[BlockingRule]) -> (Vec<u64>, Vec<u32>) {
    let cols: HashMap<&str, PartValues> = frame
        .raw
        .iter()
        .map(|(k, v)| (k.as_str(), PartValues::Rows(v)))
        .collect();
    block_keys_of(rules, frame.len, |c| cols.get(c).unwrap_or(&PartValues::Missing))
}

/// Block keys of a batch's rows: `renames` maps config columns to the
/// batch's (`phone` -> `phones` for masters). A column the batch lacks
/// gives no keys under the rules that read it.
pub fn batch_block_keys(
    batch: &RecordBatch,
    rules: &[BlockingRule],
    renames: &[(&str, &str)],
) -> Result<(Vec<u64>, Vec<u32>), LinkageError> {
    let mut cols: HashMap<&str, PartValues> = HashMap::new();
    for p in rules.iter().flat_map(|r| &r.parts) {
        let name = renames
            .iter()
            .find(|(from, _)| *from == p.column.as_str())
            .map_or(p.column.as_str(), |(_, to)| *to);
        if !cols.contains_key(p.column.as_str()) {
            cols.insert(
                p.column.as_str(),
                PartValues::of_column(batch.column_by_name(name))?,
            );
        }
    }
    Ok(block_keys_of(rules, batch.num_rows(), |c| {
        cols.get(c).unwrap_or(&PartValues::Missing)
    }))
}

/// A (key, row) table for DataFusion: `k` UInt64, `i` UInt32.
pub fn keys_batch(keys: Vec<u64>, rows: Vec<u32>) -> Result<RecordBatch, LinkageError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::UInt64, false),
        Field::new("i", DataType::UInt32, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt64Array::from(keys)) as ArrayRef,
            Arc::new(UInt32Array::from(rows)) as ArrayRef,
        ],
    )?)
}

/// Pairs `(a, b)`, `a < b`, sharing a key in a block of at most `cap`
/// rows, with `a < first_fixed` (rows from `first_fixed` on are existing
/// masters: pairs between two of them are not wanted). Sorted. The keys are
/// hashes, so the self-join is on integers, not text.
pub async fn candidate_pairs(
    keys: Vec<u64>,
    rows: Vec<u32>,
    first_fixed: usize,
    cap: usize,
) -> Result<(Vec<(u32, u32)>, u64), LinkageError> {
    let batch = keys_batch(keys, rows)?;
    let ctx = SessionContext::new();
    ctx.register_table(
        "block_keys",
        Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?),
    )?;
    let skipped = ctx
        .sql(&format!(
            "SELECT count(*) FROM (SELECT k FROM block_keys GROUP BY k HAVING count(*) > {cap})"
        ))
        .await?
        .collect()
        .await?;
    let skipped = skipped
        .first()
        .map(|b| b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) as u64)
        .unwrap_or(0);
    let sql = format!(
        "WITH ok AS (SELECT k FROM block_keys GROUP BY k HAVING count(*) BETWEEN 2 AND {cap}),
              kk AS (SELECT b.k, b.i FROM block_keys b JOIN ok ON b.k = ok.k)
         SELECT DISTINCT x.i AS a, y.i AS b FROM kk x JOIN kk y ON x.k = y.k AND x.i < y.i
         WHERE x.i < {first_fixed}"
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for b in &batches {
        let (a, c) = (
            b.column(0).as_primitive::<UInt32Type>(),
            b.column(1).as_primitive::<UInt32Type>(),
        );
        pairs.extend(a.values().iter().zip(c.values().iter()).map(|(x, y)| (*x, *y)));
    }
    pairs.sort_unstable();
    Ok((pairs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkage::config::BlockPart;
    use arrow::array::{ListBuilder, StringBuilder};

    fn rule(name: &str, parts: &[(&str, BlockTransform)]) -> BlockingRule {
        BlockingRule {
            name: name.into(),
            parts: parts
                .iter()
                .map(|(c, t)| BlockPart {
                    column: (*c).into(),
                    transform: *t,
                })
                .collect(),
        }
    }

    /// A master's list column and a lead's text column give the same keys
    /// for the same values, and every combination of a list's values is a key.
    #[test]
    fn batch_keys_match_frame_keys_and_cover_list_values() {
        let rules = vec![
            rule("phone", &[("phone", BlockTransform::Exact)]),
            rule(
                "name_city",
                &[
                    ("last_name", BlockTransform::Phonetic),
                    ("city", BlockTransform::Exact),
                ],
            ),
        ];
        let leads = RecordBatch::try_from_iter(vec![
            (
                "phone",
                Arc::new(StringArray::from(vec![Some("+911"), Some("+912"), None])) as ArrayRef,
            ),
            (
                "last_name",
                Arc::new(StringArray::from(vec![Some("Sharma"), None, Some("Sharmaa")])) as ArrayRef,
            ),
            (
                "city",
                Arc::new(StringArray::from(vec![Some("Pune"), Some("Pune"), Some("Pune")])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut phones = ListBuilder::new(StringBuilder::new());
        phones.values().append_value("+912");
        phones.values().append_value(" +911 ");
        phones.append(true);
        phones.append(false);
        let masters = RecordBatch::try_from_iter(vec![
            ("phones", Arc::new(phones.finish()) as ArrayRef),
            (
                "last_name",
                Arc::new(StringArray::from(vec![None, Some("sharma")])) as ArrayRef,
            ),
            (
                "city",
                Arc::new(StringArray::from(vec![None::<&str>, Some("Pune")])) as ArrayRef,
            ),
        ])
        .unwrap();
        let (lk, lr) = batch_block_keys(&leads, &rules, &[]).unwrap();
        let (mk, mr) = batch_block_keys(&masters, &rules, &[("phone", "phones")]).unwrap();
        let keys_of = |k: &[u64], r: &[u32], row: u32| -> Vec<u64> {
            let mut v: Vec<u64> = k
                .iter()
                .zip(r)
                .filter(|(_, x)| **x == row)
                .map(|(k, _)| *k)
                .collect();
            v.sort_unstable();
            v
        };
        // lead 0: phone +911, Sharma/Pune; lead 1: +912; lead 2: Sharmaa/Pune (same soundex)
        let l0 = keys_of(&lk, &lr, 0);
        let l1 = keys_of(&lk, &lr, 1);
        let l2 = keys_of(&lk, &lr, 2);
        assert_eq!((l0.len(), l1.len(), l2.len()), (2, 1, 1));
        assert!(l0.contains(&l2[0]), "phonetic surname + city shared");
        // master 0 holds both phones: one key each; master 1 the name key
        let m0 = keys_of(&mk, &mr, 0);
        let m1 = keys_of(&mk, &mr, 1);
        assert_eq!(m0.len(), 2);
        assert!(m0.contains(&l1[0]) && l0.iter().any(|k| m0.contains(k)));
        assert_eq!(m1, l2);
        // a rule's key never equals another rule's key for the same text
        let same = vec![
            rule("a", &[("city", BlockTransform::Exact)]),
            rule("b", &[("city", BlockTransform::Exact)]),
        ];
        let (k, _) = batch_block_keys(&leads, &same, &[]).unwrap();
        assert_ne!(k[0], k[3]);
    }

    #[tokio::test]
    async fn pairs_respect_the_cap_and_the_fixed_rows() {
        // key 1: rows 0,1,5 (5 is a master); key 2: rows 5,6 (two masters);
        // key 3: rows 0..=4 (over a cap of 4)
        let mut keys = vec![1, 1, 1, 2, 2];
        let mut rows = vec![0, 1, 5, 5, 6];
        for r in 0..5 {
            keys.push(3);
            rows.push(r);
        }
        let (pairs, skipped) = candidate_pairs(keys, rows, 5, 4).await.unwrap();
        assert_eq!(pairs, vec![(0, 1), (0, 5), (1, 5)]);
        assert_eq!(skipped, 1);
    }
}
