//! Upsert by rewriting only the files that hold a staged key.
//!
//! Why not delta-rs's MERGE: it joins the staged rows with the whole target
//! (every column of every file) and derives each output row through CASE
//! expressions. A run that updates 100k of 1M masters spent ~3 s of its
//! commit there (BENCHMARKS.md). Here only the key columns are read to find
//! the files holding a staged key; those files are read once, their rows
//! minus the staged keys plus the staged rows are written as new files, and
//! one commit removes the touched files and adds the new ones. That is the
//! result of MERGE's update-all / insert-all on the key, without the join.
//!
//! The plan declines (the caller then runs MERGE) for tables this path does
//! not understand: partition columns, deletion vectors, a file without a
//! required key column (column mapping), file paths outside the table
//! folder, or staged rows that repeat a key (MERGE reports those). A
//! nullable key column a file predates (added to the table later) reads as
//! null there, as the table reads it; null keys match null keys.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, BooleanArray, new_null_array};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use deltalake::DeltaTable;
use deltalake::kernel::Remove;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};

use super::delta::TableSpec;

/// What a rewrite changes: the files it removes and the rows of those files
/// that stay (to be written again beside the staged rows).
pub(super) struct Rewrite {
    pub removes: Vec<Remove>,
    pub kept: Vec<RecordBatch>,
    /// Rows of the table replaced by a staged row.
    pub updated: usize,
}

/// Why a rewrite could not be planned; the caller reports it as a table error.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("rewrite task failed: {0}")]
    Task(String),
}

/// Plan the rewrite of `table` (in folder `dir`) for `staged` rows, or
/// `None` when MERGE must do it (see the module comment).
pub(super) async fn plan(
    table: &DeltaTable,
    dir: &Path,
    spec: &TableSpec,
    staged: &[RecordBatch],
) -> Result<Option<Rewrite>, RewriteError> {
    let Ok(snapshot) = table.snapshot() else {
        return Ok(None);
    };
    if !snapshot.metadata().partition_columns().is_empty() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for f in snapshot.log_data().iter() {
        let remove = f.remove_action(true);
        let path = remove.path.clone();
        if remove.deletion_vector.is_some() || path.contains("://") || path.starts_with('/') {
            return Ok(None);
        }
        files.push((dir.join(&path), remove));
    }
    let keys = KeySet::new(spec)?;
    let Some(staged_keys) = keys.collect(staged)? else {
        return Ok(None);
    };
    let staged_keys = std::sync::Arc::new(staged_keys);
    let keys = std::sync::Arc::new(keys);

    // One blocking task per file: Parquet decoding is CPU work.
    let mut pending = tokio::task::JoinSet::new();
    for (i, (path, _)) in files.iter().enumerate() {
        let (path, keys, staged_keys) = (path.clone(), keys.clone(), staged_keys.clone());
        let schema = spec.schema.clone();
        pending.spawn_blocking(move || (i, keys.rewrite_file(&path, &schema, &staged_keys)));
    }
    let mut results: Vec<Option<FileRewrite>> = (0..files.len()).map(|_| None).collect();
    while let Some(joined) = pending.join_next().await {
        let (i, r) = joined.map_err(|e| RewriteError::Task(e.to_string()))?;
        match r? {
            FileOutcome::Untouched => {}
            FileOutcome::Unsupported => return Ok(None),
            FileOutcome::Touched(rw) => results[i] = Some(rw),
        }
    }
    let mut plan = Rewrite {
        removes: Vec::new(),
        kept: Vec::new(),
        updated: 0,
    };
    // File order, whatever finished first: the new files come out the same.
    for ((_, remove), rw) in files.into_iter().zip(results) {
        if let Some(rw) = rw {
            plan.removes.push(remove);
            plan.kept.extend(rw.kept);
            plan.updated += rw.replaced;
        }
    }
    Ok(Some(plan))
}

struct FileRewrite {
    kept: Vec<RecordBatch>,
    replaced: usize,
}

enum FileOutcome {
    Untouched,
    Touched(FileRewrite),
    Unsupported,
}

/// The key columns of a table and their row encoding (one byte string per
/// key tuple, whatever the number of key columns).
struct KeySet {
    names: Vec<&'static str>,
    types: Vec<arrow::datatypes::DataType>,
    /// A nullable key column may be missing from older files (all null there).
    nullable: Vec<bool>,
    converter: RowConverter,
}

impl KeySet {
    fn new(spec: &TableSpec) -> Result<Self, RewriteError> {
        let mut types = Vec::with_capacity(spec.keys.len());
        let mut nullable = Vec::with_capacity(spec.keys.len());
        for k in spec.keys {
            let field = spec.schema.field_with_name(k)?;
            types.push(field.data_type().clone());
            nullable.push(field.is_nullable());
        }
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        Ok(Self {
            names: spec.keys.to_vec(),
            types,
            nullable,
            converter,
        })
    }

    /// The key columns of `batch` in the table's types (a missing nullable
    /// one as nulls), or `None` when the batch lacks a required one.
    fn columns(&self, batch: &RecordBatch) -> Result<Option<Vec<ArrayRef>>, RewriteError> {
        let mut out = Vec::with_capacity(self.names.len());
        for ((name, ty), nullable) in self.names.iter().zip(&self.types).zip(&self.nullable) {
            let Some(c) = batch.column_by_name(name) else {
                if *nullable {
                    out.push(new_null_array(ty, batch.num_rows()));
                    continue;
                }
                return Ok(None);
            };
            out.push(if c.data_type() == ty {
                c.clone()
            } else {
                cast(c, ty)?
            });
        }
        Ok(Some(out))
    }

    /// The staged rows' keys, or `None` when one repeats.
    fn collect(&self, staged: &[RecordBatch]) -> Result<Option<HashSet<Box<[u8]>>>, RewriteError> {
        let mut set = HashSet::with_capacity(staged.iter().map(RecordBatch::num_rows).sum());
        for b in staged {
            let Some(cols) = self.columns(b)? else {
                return Ok(None);
            };
            let rows = self.converter.convert_columns(&cols)?;
            for r in rows.iter() {
                if !set.insert(Box::<[u8]>::from(r.as_ref())) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(set))
    }

    /// Reads the key columns of one file; when a staged key is there, reads
    /// the whole file and keeps the rows that are not replaced, in the
    /// table's schema (columns added to the table after the file was
    /// written come back as nulls). The footer is parsed once and the key
    /// pass's mask serves the full read.
    fn rewrite_file(
        &self,
        path: &Path,
        schema: &SchemaRef,
        staged: &HashSet<Box<[u8]>>,
    ) -> Result<FileOutcome, RewriteError> {
        let read_err = |e: &dyn std::fmt::Display| RewriteError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|e| read_err(&e))?;
        let metadata = ArrowReaderMetadata::load(&file, Default::default()).map_err(|e| read_err(&e))?;
        let reader = |projection: ProjectionMask| {
            let file = file.try_clone().map_err(|e| read_err(&e))?;
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone())
                .with_projection(projection)
                .build()
                .map_err(|e| read_err(&e))
        };
        let mut roots = Vec::with_capacity(self.names.len());
        for (name, nullable) in self.names.iter().zip(&self.nullable) {
            match metadata.schema().index_of(name) {
                Ok(i) => roots.push(i),
                Err(_) if *nullable => {}
                Err(_) => return Ok(FileOutcome::Unsupported),
            }
        }
        // true = the row's key is staged (the row is replaced).
        let mut replaced = Vec::new();
        for b in reader(ProjectionMask::roots(metadata.parquet_schema(), roots))? {
            let b = b.map_err(|e| read_err(&e))?;
            let Some(cols) = self.columns(&b)? else {
                return Ok(FileOutcome::Unsupported);
            };
            let rows = self.converter.convert_columns(&cols)?;
            replaced.extend(rows.iter().map(|r| staged.contains(r.as_ref())));
        }
        let count = replaced.iter().filter(|x| **x).count();
        if count == 0 {
            return Ok(FileOutcome::Untouched);
        }
        let mut kept = Vec::new();
        let mut offset = 0;
        for b in reader(ProjectionMask::all())? {
            let b = b.map_err(|e| read_err(&e))?;
            let rows = &replaced[offset..offset + b.num_rows()];
            offset += b.num_rows();
            let keep = BooleanArray::from(rows.iter().map(|x| !x).collect::<Vec<_>>());
            let b = filter_record_batch(&b, &keep)?;
            if b.num_rows() > 0 {
                kept.push(conform(&b, schema)?);
            }
        }
        Ok(FileOutcome::Touched(FileRewrite {
            kept,
            replaced: count,
        }))
    }
}

/// `batch` in the table's schema: columns by name, cast where the file's
/// type differs (a list's item name, say), nulls for columns the file
/// predates.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, RewriteError> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        columns.push(match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => c.clone(),
            Some(c) => cast(c, f.data_type())?,
            None => new_null_array(f.data_type(), batch.num_rows()),
        });
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
