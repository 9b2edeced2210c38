//! A frame: the records of a linkage (a run's leads, then candidate
//! masters), their raw column values and their prepared comparison values.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use rayon::prelude::*;

use super::LinkageError;
use super::compare::{prepare, tf_values};
use super::config::LinkageConfig;

/// Values of one column: per row, zero or more non-empty strings.
pub type ColumnValues = Vec<Vec<String>>;

/// Value -> records holding it. xxh3, not SipHash: looked up for every
/// exactly agreeing pair.
pub type TermCounts = HashMap<String, u32, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

pub struct Frame {
    /// Rows in all.
    pub len: usize,
    /// Raw values of every column a comparison or a blocking rule reads.
    pub raw: HashMap<String, ColumnValues>,
    /// Per comparison (config order), per row: the prepared values.
    pub prepared: Vec<ColumnValues>,
    /// Per comparison with term frequencies: value -> records holding it,
    /// and the number of values counted.
    pub tf: Vec<Option<(TermCounts, u64)>>,
}

/// Read one column as text values per row (Utf8 or a list of Utf8; other
/// types are cast to text).
fn column_values(c: &ArrayRef) -> Result<ColumnValues, LinkageError> {
    let text = |a: &ArrayRef| -> Result<ArrayRef, LinkageError> {
        Ok(match a.data_type() {
            DataType::Utf8 => a.clone(),
            _ => arrow::compute::cast(a, &DataType::Utf8)?,
        })
    };
    match c.data_type() {
        DataType::List(_) => {
            let l = c.as_list::<i32>();
            let mut out = Vec::with_capacity(l.len());
            for i in 0..l.len() {
                if l.is_null(i) {
                    out.push(Vec::new());
                    continue;
                }
                let v = text(&l.value(i))?;
                let s = v.as_string::<i32>();
                out.push(
                    s.iter()
                        .flatten()
                        .map(str::trim)
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect(),
                );
            }
            Ok(out)
        }
        _ => {
            let v = text(c)?;
            let s = v.as_string::<i32>();
            Ok(s.iter()
                .map(|x| match x.map(str::trim) {
                    Some(t) if !t.is_empty() => vec![t.to_string()],
                    _ => Vec::new(),
                })
                .collect())
        }
    }
}

/// Columns the config reads.
pub fn needed_columns(config: &LinkageConfig) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    let all = config.comparisons.iter().flat_map(|c| c.columns.iter()).chain(
        config
            .blocking
            .iter()
            .flat_map(|r| r.parts.iter().map(|p| &p.column)),
    );
    for c in all {
        if !cols.contains(c) {
            cols.push(c.clone());
        }
    }
    cols
}

impl Frame {
    /// Stack `parts` (the run's rows first): each part is a batch and how
    /// its columns are named where they differ from the config's (config
    /// column -> batch column, e.g. `phone` -> `phones` for masters). The
    /// first part must hold every column; a later part lacking one has no
    /// values there.
    pub fn new(
        config: &LinkageConfig,
        parts: &[(&RecordBatch, &[(&str, &str)])],
    ) -> Result<Frame, LinkageError> {
        let cols = needed_columns(config);
        let mut raw: HashMap<String, ColumnValues> = HashMap::new();
        let len: usize = parts.iter().map(|(b, _)| b.num_rows()).sum();
        for col in &cols {
            let mut all: ColumnValues = Vec::with_capacity(len);
            for (k, (batch, renames)) in parts.iter().enumerate() {
                let name = renames
                    .iter()
                    .find(|(from, _)| *from == col.as_str())
                    .map_or(col.as_str(), |(_, to)| *to);
                match batch.column_by_name(name) {
                    Some(c) => all.extend(column_values(c)?),
                    None if k == 0 => return Err(LinkageError::MissingColumn(col.clone())),
                    None => all.extend(std::iter::repeat_n(Vec::new(), batch.num_rows())),
                }
            }
            raw.insert(col.clone(), all);
        }
        let prepared: Vec<ColumnValues> = config
            .comparisons
            .iter()
            .map(|c| {
                let inputs: Vec<&ColumnValues> = c.columns.iter().map(|n| &raw[n]).collect();
                (0..len)
                    .into_par_iter()
                    .map(|i| {
                        let vals: Vec<&[String]> = inputs.iter().map(|v| v[i].as_slice()).collect();
                        prepare(c, &vals)
                    })
                    .collect()
            })
            .collect();
        let tf = config
            .comparisons
            .iter()
            .zip(&prepared)
            .map(|(c, p)| {
                c.term_frequency.then(|| {
                    let mut counts = TermCounts::default();
                    let mut total = 0u64;
                    for row in p {
                        for v in tf_values(c, row) {
                            *counts.entry(v.to_string()).or_default() += 1;
                            total += 1;
                        }
                    }
                    (counts, total)
                })
            })
            .collect();
        Ok(Frame {
            len,
            raw,
            prepared,
            tf,
        })
    }
}
