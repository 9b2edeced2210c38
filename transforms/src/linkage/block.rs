//! Blocking: candidate pairs are records sharing a block key, found with a
//! DataFusion self-join of (key, record) rows. Blocks larger than the cap
//! are skipped so one common value cannot explode the pairs.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringBuilder, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::LinkageError;
use super::compare::{digits, fold_words, soundex};
use super::config::{BlockTransform, BlockingRule};
use super::frame::Frame;
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

/// Block keys of every row: `(key, row)`, the rule's index leading the key.
pub fn block_keys(frame: &Frame, rules: &[BlockingRule]) -> (Vec<String>, Vec<u32>) {
    let mut keys = Vec::new();
    let mut rows = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        for i in 0..frame.len {
            // Each part may have several values (a master's phones): every
            // combination is a key.
            let mut combos: Vec<String> = vec![format!("{r}")];
            for p in &rule.parts {
                let vals: Vec<String> = frame.raw[&p.column][i]
                    .iter()
                    .map(|v| transform(p.transform, v))
                    .filter(|v| !v.is_empty())
                    .collect();
                let mut next = Vec::with_capacity(combos.len() * vals.len());
                for c in &combos {
                    for v in &vals {
                        next.push(format!("{c}\u{1f}{v}"));
                    }
                }
                combos = next;
                if combos.is_empty() {
                    break;
                }
            }
            combos.sort();
            combos.dedup();
            for k in combos {
                keys.push(k);
                rows.push(i as u32);
            }
        }
    }
    (keys, rows)
}

/// Pairs `(a, b)`, `a < b`, sharing a key in a block of at most `cap`
/// rows, with `a < first_fixed` (rows from `first_fixed` on are existing
/// masters: pairs between two of them are not wanted). Sorted.
pub async fn candidate_pairs(
    keys: Vec<String>,
    rows: Vec<u32>,
    first_fixed: usize,
    cap: usize,
) -> Result<(Vec<(u32, u32)>, u64), LinkageError> {
    let mut kb = StringBuilder::with_capacity(keys.len(), keys.iter().map(|k| k.len()).sum());
    for k in &keys {
        kb.append_value(k);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("i", DataType::UInt32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(kb.finish()) as ArrayRef,
            Arc::new(UInt32Array::from(rows)) as ArrayRef,
        ],
    )?;
    let ctx = SessionContext::new();
    ctx.register_table(
        "block_keys",
        Arc::new(MemTable::try_new(schema, vec![vec![batch]])?),
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

const TRANSFORMS: &[(BlockTransform, &str)] = &[
    (BlockTransform::Exact, "exact"),
    (BlockTransform::Fold, "fold"),
    (BlockTransform::Phonetic, "phonetic"),
    (BlockTransform::Initial, "initial"),
    (BlockTransform::Last7, "last7"),
    (BlockTransform::EmailLocal, "email_local"),
    (BlockTransform::Digits, "digits"),
];

fn udf_name(t: BlockTransform) -> String {
    let n = TRANSFORMS
        .iter()
        .find(|(x, _)| *x == t)
        .map_or("exact", |(_, n)| n);
    format!("lf_block_{n}")
}

/// Register `lf_block_<transform>(text)` UDFs: a block key part in SQL,
/// null when the value has none (the same function as in Rust).
pub fn register_block_udfs(ctx: &SessionContext) {
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    for &(t, _) in TRANSFORMS {
        let f = Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let a = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
            let s = a.as_string::<i32>();
            let out: arrow::array::StringArray = s
                .iter()
                .map(|v| v.map(|v| transform(t, v)).filter(|k| !k.is_empty()))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        });
        ctx.register_udf(create_udf(
            &udf_name(t),
            vec![DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            f,
        ));
    }
}

/// SQL over `table` giving `(id, k)`: every block key of every row, in
/// the same form as [`block_keys`]. `renames` maps config columns to the
/// table's (`phone` -> `phones`); `lists` names the table's list columns
/// (unnested; a rule may use at most one).
pub fn keys_sql(
    rules: &[BlockingRule],
    table: &str,
    id: &str,
    renames: &[(&str, &str)],
    lists: &[&str],
) -> Result<String, LinkageError> {
    let mut selects = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        let cols: Vec<&str> = rule
            .parts
            .iter()
            .map(|p| {
                renames
                    .iter()
                    .find(|(from, _)| *from == p.column.as_str())
                    .map_or(p.column.as_str(), |(_, to)| *to)
            })
            .collect();
        let listed: Vec<&str> = cols.iter().copied().filter(|c| lists.contains(c)).collect();
        if listed.len() > 1 {
            return Err(LinkageError::Config(format!(
                "blocking rule `{}` uses more than one multi-valued column ({listed:?})",
                rule.name
            )));
        }
        let mut expr = format!("'{r}'");
        for (p, c) in rule.parts.iter().zip(&cols) {
            let col = if lists.contains(c) {
                "lf_v".to_string()
            } else {
                format!("\"{c}\"")
            };
            expr.push_str(&format!(" || chr(31) || {}({col})", udf_name(p.transform)));
        }
        let from = match listed.first() {
            Some(l) => {
                let mut keep: Vec<String> = vec![format!("\"{id}\"")];
                keep.extend(
                    cols.iter()
                        .filter(|c| !lists.contains(c))
                        .map(|c| format!("\"{c}\"")),
                );
                keep.sort();
                keep.dedup();
                format!(
                    "(SELECT {}, unnest(\"{l}\") AS lf_v FROM {table})",
                    keep.join(", ")
                )
            }
            None => table.to_string(),
        };
        selects.push(format!("SELECT \"{id}\" AS id, {expr} AS k FROM {from}"));
    }
    Ok(selects.join(" UNION ALL "))
}
