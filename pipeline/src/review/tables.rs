//! Reading warehouse rows into one shape (Delta may hand text back as
//! views and times in other units) and small row builders.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, TimeZone, Utc};
use datafusion::prelude::SessionContext;
use leadflow_sinks::Warehouse;
use xxhash_rust::xxh3::xxh3_128;

use super::ReviewError;

/// A SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `'a', 'b', ...` for an IN list.
pub fn lits(v: &[&str]) -> String {
    v.iter().map(|s| lit(s)).collect::<Vec<_>>().join(", ")
}

/// Deterministic ids from parts, NUL-separated so ("ab","c") != ("a","bc").
pub fn hash_id(prefix: &str, parts: &[&str]) -> String {
    format!("{prefix}{:032x}", xxh3_128(parts.join("\0").as_bytes()))
}

/// Run `sql` over `tables` of the warehouse.
pub async fn query(
    warehouse: &Warehouse,
    tables: &[&str],
    sql: &str,
) -> Result<Vec<RecordBatch>, ReviewError> {
    let ctx = SessionContext::new();
    warehouse.register(&ctx, tables).await?;
    Ok(warehouse.query(&ctx, sql).await?)
}

/// Query rows recast to `schema` (same column names; missing nullable
/// columns become nulls) and concatenated into one batch.
pub fn conform(batches: &[RecordBatch], schema: &SchemaRef) -> Result<RecordBatch, ReviewError> {
    let mut parts = Vec::with_capacity(batches.len());
    for b in batches {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            cols.push(match b.column_by_name(f.name()) {
                Some(c) => arrow::compute::cast(c, f.data_type())?,
                None if f.is_nullable() => arrow::array::new_null_array(f.data_type(), b.num_rows()),
                None => {
                    return Err(ReviewError::Schema(format!(
                        "warehouse rows lack column `{}`",
                        f.name()
                    )));
                }
            });
        }
        parts.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(arrow::compute::concat_batches(schema, &parts)?)
}

pub fn text(b: &RecordBatch, name: &str) -> Result<StringArray, ReviewError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| ReviewError::Schema(format!("warehouse rows lack column `{name}`")))?;
    Ok(arrow::compute::cast(c, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

pub fn times(b: &RecordBatch, name: &str) -> Result<TimestampMicrosecondArray, ReviewError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| ReviewError::Schema(format!("warehouse rows lack column `{name}`")))?;
    let t = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))?;
    Ok(t.as_primitive::<TimestampMicrosecondType>().clone())
}

pub fn opt_text(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

pub fn at(a: &TimestampMicrosecondArray, i: usize) -> Option<DateTime<Utc>> {
    (!a.is_null(i))
        .then(|| Utc.timestamp_micros(a.value(i)).single())
        .flatten()
}

/// The batch with column `name` replaced.
pub fn with_column(b: &RecordBatch, name: &str, col: ArrayRef) -> Result<RecordBatch, ReviewError> {
    let idx = b
        .schema()
        .index_of(name)
        .map_err(|_| ReviewError::Schema(format!("rows lack column `{name}`")))?;
    let mut cols = b.columns().to_vec();
    cols[idx] = col;
    Ok(RecordBatch::try_new(b.schema(), cols)?)
}

/// A text column of `n` copies of `v`.
pub fn repeat_text(v: Option<&str>, n: usize) -> ArrayRef {
    Arc::new(std::iter::repeat_n(v, n).collect::<StringArray>())
}

/// A UTC timestamp column.
pub fn ts_col(v: impl IntoIterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(v).with_timezone("UTC"))
}

/// Every row as a JSON object of text values (for `show` and the API).
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>, ReviewError> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let cols = (0..b.num_columns())
            .map(|c| text(b, schema.field(c).name()))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            let mut o = serde_json::Map::new();
            for (f, c) in schema.fields().iter().zip(&cols) {
                o.insert(
                    f.name().clone(),
                    opt_text(c, i).map_or(serde_json::Value::Null, Into::into),
                );
            }
            out.push(serde_json::Value::Object(o));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn literals_are_quoted_and_ids_stable() {
        assert_eq!(lit("O'Brien"), "'O''Brien'");
        assert_eq!(lits(&["a", "b"]), "'a', 'b'");
        assert_eq!(hash_id("x-", &["ab", "c"]), hash_id("x-", &["ab", "c"]));
        assert_ne!(hash_id("x-", &["ab", "c"]), hash_id("x-", &["a", "bc"]));
    }

    #[test]
    fn conform_casts_views_and_fills_missing_nullable_columns() {
        let view: ArrayRef = Arc::new(arrow::array::StringViewArray::from(vec!["a", "b"]));
        let b = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8View, false)])),
            vec![view],
        )
        .unwrap();
        let target: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
        ]));
        let c = conform(std::slice::from_ref(&b), &target).unwrap();
        assert_eq!(c.num_rows(), 2);
        assert_eq!(c.column(0).data_type(), &DataType::Utf8);
        assert_eq!(c.column(1).null_count(), 2);
        let strict: SchemaRef = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]));
        assert!(conform(&[b], &strict).is_err());
        let rows = json_rows(&[c]).unwrap();
        assert_eq!(rows[1]["id"], "b");
        assert!(rows[1]["note"].is_null());
    }
}
