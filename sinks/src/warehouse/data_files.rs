//! Parquet data files for a table, written by us rather than by delta-rs's
//! `RecordBatchWriter`, for two reasons measured on the 1M-row bench
//! (BENCHMARKS.md, fifteenth session):
//! - each column chunk of each file is its own task on the rayon pool, so
//!   the commit keeps both cores busy to its end (delta-rs encodes a file's
//!   columns one after the other, and the last big file ran alone);
//! - the encoded pages go from the column chunks straight to the file, with
//!   none of the async writer's intermediate buffers.
//!
//! Columns known before the rest of the table can be encoded ahead of the
//! commit (`AheadWork`, for `Warehouse::encode_ahead`).
//!
//! The `Add` actions carry the statistics delta-rs would have written (the
//! same columns, the same JSON): Delta readers prune files by them, and
//! `Warehouse::row_count` reads `numRecords`. A unit test writes the same
//! rows both ways and compares.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, new_null_array};
use arrow::datatypes::{Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::Timelike as _;
use deltalake::kernel::Add;
use deltalake::parquet::arrow::ArrowSchemaConverter;
use deltalake::parquet::arrow::add_encoded_arrow_schema_to_metadata;
use deltalake::parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use deltalake::parquet::basic::{LogicalType, TimeUnit, Type as PhysicalType};
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::file::statistics::Statistics;
use deltalake::parquet::file::writer::SerializedFileWriter;
use deltalake::parquet::schema::types::{SchemaDescPtr, SchemaDescriptor};
use serde_json::{Map, Value};

/// Columns with statistics when the table names none: Delta's default.
const DEFAULT_INDEXED_COLUMNS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error("column `{column}`: {reason}")]
    Column { column: String, reason: String },
    #[error("parquet: {0}")]
    Parquet(#[from] ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("data file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which leaf columns get min/max/null-count statistics, as delta-rs picks
/// them from the table's configuration: the named
/// `delta.dataSkippingStatsColumns`, else the first
/// `delta.dataSkippingNumIndexedCols` top-level fields (default 32).
#[derive(Debug, Clone)]
pub(super) enum StatsColumns {
    Named(Vec<String>),
    First(usize),
}

impl StatsColumns {
    pub(super) fn from_configuration(config: &HashMap<String, String>) -> Self {
        if let Some(v) = config.get("delta.dataSkippingStatsColumns") {
            return Self::Named(
                v.split(',')
                    .map(|s| s.trim().trim_matches('`').to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        }
        // delta-rs reads the number as unsigned: "-1" (all columns) falls
        // back to the default there, and so it does here.
        let n = config
            .get("delta.dataSkippingNumIndexedCols")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_INDEXED_COLUMNS, |n| n as usize);
        Self::First(n)
    }
}

/// Column chunks encoded before the commit (see `Warehouse::encode_ahead`):
/// per file, per top-level field, the field's chunks if it was encoded.
pub(super) type Chunks = Vec<Vec<Option<Vec<ArrowColumnChunk>>>>;

/// A table's Arrow and Parquet schemas and its encoding settings.
pub(super) struct Encoder {
    schema: SchemaRef,
    parquet_schema: SchemaDescPtr,
    props: Arc<WriterProperties>,
    factory: ArrowRowGroupWriterFactory,
    /// Leaf columns per top-level field (a list is one leaf, a struct many).
    leaves_per_field: Vec<usize>,
    stats_leaves: Vec<usize>,
}

impl Encoder {
    pub(super) fn new(
        schema: &SchemaRef,
        props: WriterProperties,
        stats: &StatsColumns,
    ) -> Result<Self, DataFileError> {
        let mut props = props;
        add_encoded_arrow_schema_to_metadata(schema, &mut props);
        let parquet_schema = Arc::new(
            ArrowSchemaConverter::new()
                .with_coerce_types(props.coerce_types())
                .convert(schema)?,
        );
        let props = Arc::new(props);
        // The factory only reads the schema and properties off a file writer.
        let factory = ArrowRowGroupWriterFactory::new(
            &SerializedFileWriter::new(std::io::sink(), parquet_schema.root_schema_ptr(), props.clone())?,
            schema.clone(),
        );
        let mut leaves_per_field = vec![0usize; schema.fields().len()];
        for c in parquet_schema.columns() {
            let top = &c.path().parts()[0];
            let i = schema.index_of(top).map_err(|e| DataFileError::Column {
                column: top.clone(),
                reason: e.to_string(),
            })?;
            leaves_per_field[i] += 1;
        }
        let stats_leaves = stats_leaves(&parquet_schema, stats);
        Ok(Self {
            schema: schema.clone(),
            parquet_schema,
            props,
            factory,
            leaves_per_field,
            stats_leaves,
        })
    }

    /// A new row group's column writers, grouped by top-level field.
    fn writers(&self) -> Result<Vec<Vec<ArrowColumnWriter>>, DataFileError> {
        let mut all = self.factory.create_column_writers(0)?.into_iter();
        Ok(self
            .leaves_per_field
            .iter()
            .map(|&n| all.by_ref().take(n).collect())
            .collect())
    }

    /// One field's column chunks for the rows of `arrays`, in order.
    fn encode<'a>(
        &self,
        field: usize,
        mut writers: Vec<ArrowColumnWriter>,
        arrays: impl IntoIterator<Item = &'a ArrayRef>,
    ) -> Result<Vec<ArrowColumnChunk>, DataFileError> {
        let f = self.schema.field(field);
        for a in arrays {
            for (w, leaf) in writers.iter_mut().zip(compute_leaves(f, a)?) {
                w.write(&leaf)?;
            }
        }
        Ok(writers
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Writes `files` (each a list of batches in the table's schema, one
    /// Parquet file with one row group each) into `root`, every column
    /// chunk not in `ahead` encoded as its own task on the rayon pool.
    /// Returns one `Add` per file, in `files` order.
    pub(super) fn write(
        &self,
        root: &Path,
        files: Vec<Vec<RecordBatch>>,
        ahead: Option<Chunks>,
        name_of: impl Fn(usize) -> String + Sync,
    ) -> Result<Vec<Add>, DataFileError> {
        use rayon::prelude::*;
        let mut ahead = ahead.unwrap_or_default();
        ahead.resize_with(files.len(), Vec::new);
        type FileWork = (usize, Vec<RecordBatch>, Vec<Option<Vec<ArrowColumnChunk>>>);
        let mut work: Vec<FileWork> = files
            .into_iter()
            .zip(ahead)
            .enumerate()
            .map(|(i, (f, a))| (i, f, a))
            .collect();
        // The biggest files first, so the last tasks to start are small.
        let weight = |f: &[RecordBatch]| f.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
        work.sort_by_cached_key(|(_, f, _)| std::cmp::Reverse(weight(f)));
        let mut adds: Vec<(usize, Add)> = work
            .into_par_iter()
            .map(|(i, batches, mut done)| {
                done.resize_with(self.schema.fields().len(), || None);
                let tasks: Vec<_> = self.writers()?.into_iter().zip(done).enumerate().collect();
                let chunks: Vec<Vec<ArrowColumnChunk>> = tasks
                    .into_par_iter()
                    .map(|(f, (ws, done))| match done {
                        Some(chunks) => Ok(chunks),
                        None => self.encode(f, ws, batches.iter().map(|b| b.column(f))),
                    })
                    .collect::<Result<_, DataFileError>>()?;
                let path = name_of(i);
                let full = root.join(&path);
                let md = write_file(
                    &full,
                    &self.parquet_schema,
                    &self.props,
                    chunks.into_iter().flatten(),
                )?;
                let size = std::fs::metadata(&full)
                    .map_err(|source| DataFileError::Io {
                        path: full.display().to_string(),
                        source,
                    })?
                    .len() as i64;
                Ok((i, add(path, size, &md, &self.stats_leaves)))
            })
            .collect::<Result<_, DataFileError>>()?;
        adds.sort_by_key(|(i, _)| *i);
        Ok(adds.into_iter().map(|(_, a)| a).collect())
    }
}

/// Column chunks of a table's next append, encoded before its commit as
/// tasks (one file's one column each) that two kinds of worker take in
/// turn: a background thread at the lowest priority, which therefore runs
/// only where the run leaves a core idle, and the commit, which takes every
/// task not started yet onto the rayon pool (`finish`).
pub(super) struct AheadWork {
    encoder: Encoder,
    tasks: usize,
    state: std::sync::Mutex<AheadState>,
    idle: std::sync::Condvar,
}

type AheadTask = (usize, usize, ArrayRef, Vec<ArrowColumnWriter>);

struct AheadState {
    /// Not started: (file, field, the file's rows of the column, the
    /// field's column writers of that file).
    todo: Vec<AheadTask>,
    running: usize,
    done: Chunks,
    failed: Option<DataFileError>,
}

impl AheadWork {
    /// Tasks for `columns` (top-level field index, the whole column), cut
    /// into files of `rows_per_file` rows as the commit cuts them.
    pub(super) fn new(
        encoder: Encoder,
        columns: &[(usize, ArrayRef)],
        rows_per_file: usize,
    ) -> Result<Self, DataFileError> {
        let rows = columns.first().map_or(0, |(_, a)| a.len());
        let fields = encoder.schema.fields().len();
        let mut todo = Vec::new();
        let mut done: Chunks = Vec::new();
        for (file, start) in (0..rows).step_by(rows_per_file.max(1)).enumerate() {
            let n = rows_per_file.min(rows - start);
            done.push((0..fields).map(|_| None).collect());
            // One set of writers per file, as the commit makes them.
            let mut writers = encoder.writers()?;
            todo.extend(
                columns
                    .iter()
                    .map(|(f, a)| (file, *f, a.slice(start, n), std::mem::take(&mut writers[*f]))),
            );
        }
        // Popped from the end: the first file's first column first.
        todo.reverse();
        Ok(Self {
            encoder,
            tasks: todo.len(),
            state: std::sync::Mutex::new(AheadState {
                todo,
                running: 0,
                done,
                failed: None,
            }),
            idle: std::sync::Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run(&self, (file, field, values, writers): AheadTask) {
        let chunks = self.encoder.encode(field, writers, [&values]);
        let mut st = self.lock();
        match chunks {
            Ok(c) => st.done[file][field] = Some(c),
            Err(e) => {
                st.failed.get_or_insert(e);
            }
        }
        st.running -= 1;
        self.idle.notify_all();
    }

    /// Drops the tasks not started yet: their chunks will not be used.
    pub(super) fn cancel(&self) {
        self.lock().todo.clear();
    }

    /// Tasks not started yet.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.lock().todo.len()
    }

    /// The background worker: takes tasks until none is left.
    pub(super) fn work(&self) {
        loop {
            let task = {
                let mut st = self.lock();
                match st.todo.pop() {
                    Some(t) => {
                        st.running += 1;
                        t
                    }
                    None => return,
                }
            };
            self.run(task);
        }
    }

    /// The commit's turn: every task not started runs now on the rayon
    /// pool, then the chunks are handed over once the background worker's
    /// last task is done.
    pub(super) fn finish(&self) -> Result<Chunks, DataFileError> {
        use rayon::prelude::*;
        let rest = {
            let mut st = self.lock();
            st.running += st.todo.len();
            std::mem::take(&mut st.todo)
        };
        tracing::debug!(
            tasks = self.tasks,
            taken_by_commit = rest.len(),
            "columns encoded ahead"
        );
        rest.into_par_iter().for_each(|task| self.run(task));
        let mut st = self.lock();
        while st.running > 0 {
            st = self
                .idle
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if let Some(e) = st.failed.take() {
            return Err(e);
        }
        Ok(std::mem::take(&mut st.done))
    }
}

impl std::fmt::Debug for AheadWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AheadWork").finish_non_exhaustive()
    }
}

/// Lowers the calling thread to the lowest scheduling priority (Linux: a
/// thread's own nice value), so it takes only CPU no other thread wants.
pub(super) fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

fn write_file(
    path: &Path,
    parquet_schema: &SchemaDescriptor,
    props: &Arc<WriterProperties>,
    chunks: impl IntoIterator<Item = ArrowColumnChunk>,
) -> Result<ParquetMetaData, DataFileError> {
    let io = |source| DataFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::create(path).map_err(io)?;
    let mut w = SerializedFileWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        parquet_schema.root_schema_ptr(),
        props.clone(),
    )?;
    let mut rg = w.next_row_group()?;
    for c in chunks {
        c.append_to_row_group(&mut rg)?;
    }
    rg.close()?;
    Ok(w.close()?)
}

/// The batches' columns in the table's order and types (cast where a type
/// differs only in representation), checked for nulls where the table
/// allows none: what delta-rs's writer checked before encoding.
pub(super) fn conform(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, DataFileError> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    for f in batch.schema().fields() {
        if schema.field_with_name(f.name()).is_err() {
            return Err(DataFileError::Column {
                column: f.name().clone(),
                reason: "not in the table's schema".into(),
            });
        }
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => conform_column(f, c),
            None => conform_column(f, &new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// One column in its table field's type, checked for nulls where the
/// field allows none.
pub(super) fn conform_column(field: &Field, c: &ArrayRef) -> Result<ArrayRef, DataFileError> {
    let c = if c.data_type() == field.data_type() {
        c.clone()
    } else {
        arrow::compute::cast(c, field.data_type())?
    };
    if !field.is_nullable() && c.null_count() > 0 {
        return Err(DataFileError::Column {
            column: field.name().clone(),
            reason: format!("{} null values in a column that allows none", c.null_count()),
        });
    }
    Ok(c)
}

/// Leaf indexes with statistics, chosen as delta-rs chooses them.
fn stats_leaves(parquet_schema: &SchemaDescriptor, stats: &StatsColumns) -> Vec<usize> {
    let columns = parquet_schema.columns();
    match stats {
        StatsColumns::Named(names) => (0..columns.len())
            .filter(|&i| names.iter().any(|n| n == columns[i].name()))
            .collect(),
        StatsColumns::First(limit) => {
            let mut admitted: HashSet<&str> = HashSet::new();
            let mut out = Vec::new();
            for (i, c) in columns.iter().enumerate() {
                let top = c.path().parts()[0].as_str();
                if !admitted.contains(top) {
                    if admitted.len() >= *limit {
                        break;
                    }
                    admitted.insert(top);
                }
                out.push(i);
            }
            out
        }
    }
}

fn add(path: String, size: i64, md: &ParquetMetaData, stats_leaves: &[usize]) -> Add {
    let modification_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Add {
        path,
        size,
        partition_values: HashMap::new(),
        modification_time,
        data_change: true,
        stats: Some(stats_json(md, stats_leaves).to_string()),
        ..Default::default()
    }
}

/// Delta's per-file statistics: `numRecords`, and per flat leaf column its
/// `nullCount` and, where the Parquet statistics hold them, `minValues` /
/// `maxValues` (timestamps cut to milliseconds, as the protocol asks).
/// Leaves inside lists are left out, as delta-rs leaves them out.
fn stats_json(md: &ParquetMetaData, leaves: &[usize]) -> Value {
    let schema = md.file_metadata().schema_descr();
    let (mut mins, mut maxs, mut nulls) = (Map::new(), Map::new(), Map::new());
    for &i in leaves {
        let c = schema.column(i);
        if c.max_rep_level() > 0 || c.path().parts().len() != 1 {
            continue;
        }
        let logical = c.logical_type_ref().cloned().or(match c.converted_type() {
            deltalake::parquet::basic::ConvertedType::UTF8 => Some(LogicalType::String),
            deltalake::parquet::basic::ConvertedType::DATE => Some(LogicalType::Date),
            _ => None,
        });
        // delta-rs skips binary (not text) columns entirely.
        if c.physical_type() == PhysicalType::BYTE_ARRAY && logical != Some(LogicalType::String) {
            continue;
        }
        let mut seen = false;
        let (mut lo, mut hi, mut null_count): (Option<Scalar>, Option<Scalar>, u64) = (None, None, 0);
        for rg in md.row_groups() {
            let Some(s) = rg.column(i).statistics() else {
                continue;
            };
            seen = true;
            null_count += s.null_count_opt().unwrap_or_default();
            if s.min_bytes_opt().is_none() || s.max_bytes_opt().is_none() {
                continue;
            }
            if let Some(v) = Scalar::of(s, logical.as_ref(), true) {
                lo = Some(match lo {
                    Some(l) if l.partial_cmp(&v) == Some(std::cmp::Ordering::Less) => l,
                    _ => v,
                });
            }
            if let Some(v) = Scalar::of(s, logical.as_ref(), false) {
                hi = Some(match hi {
                    Some(h) if h.partial_cmp(&v) == Some(std::cmp::Ordering::Greater) => h,
                    _ => v,
                });
            }
        }
        if !seen {
            continue;
        }
        let key = c.name().to_string();
        if let Some(v) = lo {
            mins.insert(key.clone(), v.into_json());
        }
        if let Some(v) = hi {
            maxs.insert(key.clone(), v.into_json());
        }
        nulls.insert(key, Value::from(null_count as i64));
    }
    let mut out = Map::new();
    out.insert("numRecords".into(), Value::from(md.file_metadata().num_rows()));
    out.insert("minValues".into(), Value::Object(mins));
    out.insert("maxValues".into(), Value::Object(maxs));
    out.insert("nullCount".into(), Value::Object(nulls));
    Value::Object(out)
}

/// A statistic as the logical value it stands for (ordered as that value).
#[derive(Debug, PartialEq, PartialOrd)]
enum Scalar {
    Boolean(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    Date(chrono::NaiveDate),
    /// A time, and whether it is UTC (else without time zone).
    Timestamp(chrono::NaiveDateTime, bool),
    String(String),
}

impl Scalar {
    fn of(s: &Statistics, logical: Option<&LogicalType>, min: bool) -> Option<Self> {
        macro_rules! pick {
            ($v:expr) => {
                if min { *$v.min_opt()? } else { *$v.max_opt()? }
            };
        }
        Some(match (s, logical) {
            (Statistics::Boolean(v), _) => Self::Boolean(pick!(v)),
            (Statistics::Int32(v), Some(LogicalType::Date)) => Self::Date(
                chrono::NaiveDate::from_ymd_opt(1970, 1, 1)? + chrono::Duration::days(i64::from(pick!(v))),
            ),
            (Statistics::Int32(_), Some(LogicalType::Decimal { .. })) => return None,
            (Statistics::Int32(v), _) => Self::Int32(pick!(v)),
            (Statistics::Int64(v), Some(LogicalType::Timestamp(t))) => {
                let v = pick!(v);
                let at = match t.unit {
                    TimeUnit::MILLIS => chrono::DateTime::from_timestamp_millis(v),
                    TimeUnit::MICROS => chrono::DateTime::from_timestamp_micros(v),
                    TimeUnit::NANOS => chrono::DateTime::from_timestamp(
                        v.div_euclid(1_000_000_000),
                        v.rem_euclid(1_000_000_000) as u32,
                    ),
                }?
                .naive_utc();
                Self::Timestamp(at, t.is_adjusted_to_u_t_c)
            }
            (Statistics::Int64(_), Some(LogicalType::Decimal { .. })) => return None,
            (Statistics::Int64(v), _) => Self::Int64(pick!(v)),
            (Statistics::Float(v), _) => Self::Float32(pick!(v)),
            (Statistics::Double(v), _) => Self::Float64(pick!(v)),
            (Statistics::ByteArray(v), Some(LogicalType::String)) => {
                let bytes = if min { v.min_bytes_opt() } else { v.max_bytes_opt() }.unwrap_or_default();
                Self::String(String::from_utf8(bytes.to_vec()).ok()?)
            }
            _ => return None,
        })
    }

    fn into_json(self) -> Value {
        match self {
            Self::Boolean(v) => Value::Bool(v),
            Self::Int32(v) => Value::from(v),
            Self::Int64(v) => Value::from(v),
            Self::Float32(v) => Value::from(v),
            Self::Float64(v) => Value::from(v),
            Self::Date(v) => Value::from(v.format("%Y-%m-%d").to_string()),
            Self::Timestamp(v, utc) => {
                // Milliseconds at most, the fraction only when there is one.
                let format = match (utc, v.nanosecond() == 0) {
                    (true, true) => "%Y-%m-%dT%H:%M:%SZ",
                    (true, false) => "%Y-%m-%dT%H:%M:%S%.3fZ",
                    (false, true) => "%Y-%m-%d %H:%M:%S",
                    (false, false) => "%Y-%m-%d %H:%M:%S%.3f",
                };
                Value::from(v.format(format).to_string())
            }
            Self::String(v) => Value::from(v),
        }
    }
}
