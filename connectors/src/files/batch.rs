//! Arrow batch assembly shared by the CSV and spreadsheet readers.
//!
//! Every value is kept as text (`Utf8`) exactly as the user sees it; typing
//! and blank-to-null happen later, in the mapping stage, where the rules live.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, BinaryBuilder, StringArray, UInt64Builder};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

/// Column holding the source name.
pub const SOURCE_COLUMN: &str = "_source";
/// Column holding the file's display path.
pub const SOURCE_FILE_COLUMN: &str = "_source_file";
/// Column holding the row number as the user sees it in the file.
pub const SOURCE_ROW_COLUMN: &str = "_source_row";

/// Cleans raw header cells: trims, strips a stray BOM, names blank headers
/// `column_<n>` (`n` = 1-based column position) and de-duplicates
/// case-insensitively with `_2`, `_3` suffixes (SQL engines downstream fold or
/// compare names case-insensitively, so "Email" and "email" would collide).
pub fn clean_headers<S: AsRef<str>>(raw: &[S]) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::with_capacity(raw.len());
    let mut out = Vec::with_capacity(raw.len());
    for (i, cell) in raw.iter().enumerate() {
        let name = cell.as_ref().trim_start_matches('\u{feff}').trim();
        let base = if name.is_empty() {
            format!("column_{}", i + 1)
        } else {
            name.to_string()
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while !seen.insert(candidate.to_lowercase()) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// True when every field is empty or whitespace.
pub fn is_blank<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> bool {
    fields
        .into_iter()
        .all(|f| f.iter().all(|b| b.is_ascii_whitespace()))
}

/// Builds `RecordBatch`es of `batch_size` rows: one Utf8 column per header,
/// then `_source`, `_source_file`, `_source_row`.
///
/// Values are collected as bytes and checked as UTF-8 once per column and
/// batch (one pass over a large buffer instead of one call per field).
pub struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<BinaryBuilder>,
    source_row: UInt64Builder,
    source_name: String,
    file: String,
    batch_size: usize,
    len: usize,
    batches: Vec<RecordBatch>,
}

impl BatchBuilder {
    pub fn new(headers: &[String], source_name: &str, file: &str, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        let mut fields: Vec<Field> = headers
            .iter()
            .map(|h| Field::new(h, DataType::Utf8, true))
            .collect();
        fields.push(Field::new(SOURCE_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(SOURCE_FILE_COLUMN, DataType::Utf8, false));
        fields.push(Field::new(SOURCE_ROW_COLUMN, DataType::UInt64, false));
        // Start small and let builders grow: many drops are a few hundred rows,
        // and a 65536-row preallocation per column would dominate their cost.
        // Later batches are sized from the previous one (see `flush`).
        let rows = batch_size.min(1024);
        Self {
            columns: (0..headers.len())
                .map(|_| BinaryBuilder::with_capacity(rows, rows * 16))
                .collect(),
            source_row: UInt64Builder::with_capacity(rows),
            schema: Arc::new(Schema::new(fields)),
            source_name: source_name.to_string(),
            file: file.to_string(),
            batch_size,
            len: 0,
            batches: Vec::new(),
        }
    }

    /// Appends the value of column `col` for the current row. Call for every
    /// column in order, then [`Self::finish_row`].
    #[inline]
    pub fn push(&mut self, col: usize, value: &str) {
        self.columns[col].append_value(value.as_bytes());
    }

    /// Like [`Self::push`] for bytes that should be UTF-8 (split from UTF-8
    /// text at ASCII delimiters). Invalid sequences, should any slip through,
    /// become U+FFFD at flush time.
    #[inline]
    pub fn push_bytes(&mut self, col: usize, value: &[u8]) {
        self.columns[col].append_value(value);
    }

    /// Ends the current row.
    #[inline]
    pub fn finish_row(&mut self, row: u64) {
        self.source_row.append_value(row);
        self.len += 1;
        if self.len == self.batch_size {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        let n = self.len;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 3);
        for c in &mut self.columns {
            // Size the next batch's buffers like this one: no regrowth on
            // homogeneous data.
            let bytes = c.values_slice().len();
            let next = BinaryBuilder::with_capacity(n, bytes + bytes / 8);
            arrays.push(Arc::new(to_utf8(std::mem::replace(c, next).finish())));
        }
        arrays.push(Arc::new(repeated(&self.source_name, n)));
        arrays.push(Arc::new(repeated(&self.file, n)));
        arrays.push(Arc::new(
            std::mem::replace(&mut self.source_row, UInt64Builder::with_capacity(n)).finish(),
        ));
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("builders are filled in lockstep with the schema");
        self.batches.push(batch);
        self.len = 0;
    }

    /// Flushes the last partial batch and returns all batches.
    pub fn finish(mut self) -> Vec<RecordBatch> {
        self.flush();
        self.batches
    }
}

fn to_utf8(bin: BinaryArray) -> StringArray {
    match StringArray::try_from_binary(bin.clone()) {
        Ok(a) => a,
        Err(_) => bin.iter().map(|v| v.map(String::from_utf8_lossy)).collect(),
    }
}

/// `value` repeated `n` times, built directly from buffers.
fn repeated(value: &str, n: usize) -> StringArray {
    let len = value.len();
    let offsets: Vec<i32> = (0..=n).map(|i| (i * len) as i32).collect();
    StringArray::new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from(value.repeat(n).into_bytes()),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt64Type;

    #[test]
    fn headers_trimmed_blank_named_duplicates_suffixed() {
        let raw = ["\u{feff}Name ", "", "Email", "email", " ", "Email_2", "Email"];
        assert_eq!(
            clean_headers(&raw),
            vec![
                "Name",
                "column_2",
                "Email",
                "email_2",
                "column_5",
                "Email_2_2",
                "Email_3"
            ]
        );
    }

    #[test]
    fn batches_split_at_batch_size_with_metadata_columns() {
        let headers = vec!["a".to_string(), "b".to_string()];
        let mut b = BatchBuilder::new(&headers, "crm", "/in/x.csv", 2);
        for row in 0..5u64 {
            b.push(0, &format!("a{row}"));
            b.push_bytes(1, if row == 4 { b"\xFF" } else { b"" });
            b.finish_row(row + 2);
        }
        let batches = b.finish();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let last = &batches[2];
        assert_eq!(last.schema().field(2).name(), "_source");
        assert_eq!(last.column(0).as_string::<i32>().value(0), "a4");
        // Invalid UTF-8 never makes it into a Utf8 column.
        assert_eq!(last.column(1).as_string::<i32>().value(0), "\u{FFFD}");
        // Empty stays an empty string, not null: blank handling is the mapping's job.
        assert_eq!(batches[0].column(1).as_string::<i32>().value(0), "");
        assert_eq!(batches[0].column(1).null_count(), 0);
        assert_eq!(last.column(2).as_string::<i32>().value(0), "crm");
        assert_eq!(last.column(3).as_string::<i32>().value(0), "/in/x.csv");
        assert_eq!(last.column(4).as_primitive::<UInt64Type>().value(0), 6);
    }

    #[test]
    fn blank_detection() {
        assert!(is_blank([b"".as_slice(), b"  ".as_slice(), b"\t".as_slice()]));
        assert!(!is_blank([b"".as_slice(), b" x".as_slice()]));
    }
}
