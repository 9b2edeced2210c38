//! Delta tables: open or create, query through DataFusion, write with
//! transaction ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionContext, col};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, MergePredicate, SaveMode};
use deltalake::writer::RecordBatchWriter;
use tracing::{debug, info};
use url::Url;

use super::config::WarehouseConfig;
use super::data_files;
use super::rewrite;
use super::staging::{Prepared, PreparedCommit, StagedCommit, StagedTable};

/// Rows per Parquet file of an append: big enough for good compression and
/// few files, small enough that a 1M-row table spreads over both cores.
const ROWS_PER_FILE: usize = 262_144;

/// Calls of `encode_files` in this process, part of each file name.
static FILE_BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("warehouse uri `{uri}`: {reason}")]
    Uri { uri: String, reason: String },
    #[error("warehouse table `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("warehouse table `{table}`: {source}")]
    Query {
        table: String,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("unknown warehouse table `{0}`")]
    UnknownTable(String),
    #[error("staging area {path}: {source}")]
    Staging {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("staging area {path}: {reason}")]
    StagingFormat { path: PathBuf, reason: String },
    #[error("warehouse table `{table}`: {source}")]
    Rewrite {
        table: String,
        #[source]
        source: rewrite::RewriteError,
    },
    #[error("warehouse table `{table}`: writing a data file: {source}")]
    DataFile {
        table: String,
        #[source]
        source: data_files::DataFileError,
    },
    #[error("warehouse write task failed: {0}")]
    Task(String),
    #[error(
        "warehouse table `{table}`: a retention of {retain} is shorter than the table's own ({min}, \
         `delta.deletedFileRetentionDuration`): a run committing meanwhile could lose its new files \
         and older versions could no longer be read; retain longer, or stop every run and skip the \
         retention check; nothing was deleted"
    )]
    VacuumRetention {
        table: String,
        retain: String,
        min: String,
    },
    #[error(
        "pipeline {pipelines}: a commit is staged but not applied (a run is committing now, or one \
         stopped during its commit); a vacuum now could delete files it still needs. Run the pipeline \
         again to finish it, then vacuum; nothing was deleted"
    )]
    PendingCommit { pipelines: String },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

/// See [`Warehouse::write_start`].
struct WriteStart {
    table: DeltaTable,
    spec: TableSpec,
    props: CommitProperties,
    /// The table holds no data file yet.
    empty: bool,
}

/// A table of the warehouse: its name, Arrow schema and key columns.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: &'static str,
    pub schema: SchemaRef,
    pub keys: &'static [&'static str],
}

/// Columns of a table's next append being encoded on a thread of their own
/// ([`Warehouse::encode_ahead`]), for [`Warehouse::commit_with`]. Dropped
/// unused (a run that fails before its commit, a table upserted), it
/// cancels the tasks not started, so no thread keeps encoding for nothing.
#[derive(Debug)]
pub struct EncodedAhead {
    table: String,
    rows: usize,
    /// The table schema the columns were encoded for.
    schema: SchemaRef,
    /// Taken by the commit that uses it; still here when dropped unused.
    work: Option<Arc<data_files::AheadWork>>,
}

impl Drop for EncodedAhead {
    fn drop(&mut self) {
        if let Some(work) = &self.work {
            work.cancel();
        }
    }
}

/// How a staged table is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// MERGE on the key columns: update matched rows, insert the others.
    Upsert,
    /// Plain append: the caller knows none of the keys exist yet.
    Append,
}

impl WriteMode {
    /// Upsert when some of the rows may already be in the table, else append.
    pub fn upsert_if(some_exist: bool) -> Self {
        if some_exist {
            WriteMode::Upsert
        } else {
            WriteMode::Append
        }
    }
}

/// A folder of Delta tables. Cheap to clone (a path and the table specs).
#[derive(Clone)]
pub struct Warehouse {
    root: PathBuf,
    specs: HashMap<&'static str, TableSpec>,
    /// An entity's view: these tables live in the entity's own folder.
    entity: Option<Arc<EntityTables>>,
}

/// The tables of a second entity type (channel partners, ...): same specs,
/// their own folder `entities/<name>/` under the warehouse root.
struct EntityTables {
    dir: PathBuf,
    tables: Vec<&'static str>,
}

/// Parquet settings for a write. Delta-rs encodes a table's file on one
/// thread, so encoding work is the commit's critical path. A sample of the
/// first batch decides per column:
/// - dictionary encoding only where values repeat (ids, phones, e-mails and
///   timestamps are nearly unique: Parquet would intern them into a
///   dictionary only to throw it away at its size limit);
/// - Snappy only where it pays: a nearly-unique column whose sample shrinks
///   by less than a fifth (hashed ids, timestamps) is written uncompressed,
///   since compressing it costs as much CPU as a compressible column and
///   saves almost nothing (BENCHMARKS.md, fourteenth session).
///
/// Statistics are kept per column chunk, which is what Delta's file
/// skipping uses. Every column keeps its min/max: Python `deltalake` readers
/// prune files by the log's statistics and returned no rows for an e-mail
/// filter when that column's min/max and null count were left out
/// (BENCHMARKS.md, sixth session).
fn writer_properties(batches: &[RecordBatch]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Chunk);
    if let Some(first) = batches.iter().find(|b| b.num_rows() > 0) {
        let rows = first.num_rows().min(SAMPLE_ROWS);
        for (field, column) in first.schema().fields().iter().zip(first.columns()) {
            let Some(sample) = ColumnSample::of(field.name(), &column.slice(0, rows)) else {
                continue;
            };
            if sample.values >= 256 && sample.distinct * 2 > sample.values {
                b = b.set_column_dictionary_enabled(sample.path.clone(), false);
                if sample.compresses_poorly() {
                    b = b.set_column_compression(sample.path, Compression::UNCOMPRESSED);
                }
            }
        }
    }
    b.build()
}

/// Rows of the first batch that decide a column's encoding.
const SAMPLE_ROWS: usize = 2048;

/// A column's first rows as Parquet's PLAIN encoding lays them out, and how
/// many of them differ.
struct ColumnSample {
    path: ColumnPath,
    values: usize,
    distinct: usize,
    plain: Vec<u8>,
}

impl ColumnSample {
    /// Text, lists of text (their element column) and fixed-width numbers
    /// (integers, floats, timestamps); other types keep the defaults.
    fn of(name: &str, column: &arrow::array::ArrayRef) -> Option<Self> {
        use arrow::array::Array as _;
        // Distinct values counted by a 64-bit hash of their bytes (a
        // heuristic: a rare collision changes nothing that matters).
        let mut seen = std::collections::HashSet::new();
        let mut plain = Vec::new();
        let mut values = 0usize;
        let mut text = |t: &arrow::array::StringArray, plain: &mut Vec<u8>| {
            for v in t.iter().flatten() {
                values += 1;
                seen.insert(xxhash_rust::xxh3::xxh3_64(v.as_bytes()));
                plain.extend_from_slice(&(v.len() as u32).to_le_bytes());
                plain.extend_from_slice(v.as_bytes());
            }
        };
        let path = match column.data_type() {
            DataType::Utf8 => {
                text(column.as_string::<i32>(), &mut plain);
                ColumnPath::from(name)
            }
            // Parquet's three-level list: <name>.list.<item field's name>.
            DataType::List(item) if item.data_type() == &DataType::Utf8 => {
                let list = column.as_list::<i32>();
                let offsets = list.value_offsets();
                let (start, end) = (offsets[0] as usize, offsets[list.len()] as usize);
                text(
                    list.values().slice(start, end - start).as_string::<i32>(),
                    &mut plain,
                );
                ColumnPath::new(vec![name.into(), "list".into(), item.name().clone()])
            }
            other => {
                let width = other.primitive_width()?;
                let data = column.to_data();
                let bytes = &data.buffers()[0].as_slice()[data.offset() * width..][..data.len() * width];
                for (i, v) in bytes.chunks_exact(width).enumerate() {
                    if column.is_valid(i) {
                        values += 1;
                        seen.insert(xxhash_rust::xxh3::xxh3_64(v));
                        plain.extend_from_slice(v);
                    }
                }
                ColumnPath::from(name)
            }
        };
        Some(Self {
            path,
            values,
            distinct: seen.len(),
            plain,
        })
    }

    /// Snappy saves less than a fifth of the sample's bytes.
    fn compresses_poorly(&self) -> bool {
        if self.plain.len() < 4096 {
            return false;
        }
        let packed = snap::raw::Encoder::new()
            .compress_vec(&self.plain)
            .map_or(self.plain.len(), |c| c.len());
        packed * 5 > self.plain.len() * 4
    }
}

/// MERGE's match on the key columns (`target` / `source` aliases); a
/// nullable key (a column added later) matches null to null. The rewrite
/// records the same text as its commit's merge predicate.
fn key_predicate(spec: &TableSpec) -> datafusion::prelude::Expr {
    use datafusion::logical_expr::{Operator, binary_expr};
    spec.keys
        .iter()
        .map(|k| {
            let (t, s) = (col(format!("target.{k}")), col(format!("source.{k}")));
            let nullable = spec.schema.field_with_name(k).is_ok_and(|f| f.is_nullable());
            if nullable {
                binary_expr(t, Operator::IsNotDistinctFrom, s)
            } else {
                t.eq(s)
            }
        })
        .reduce(datafusion::prelude::Expr::and)
        .expect("tables have keys")
}

/// `key = value AND ...` per row of `keys` (the table's key columns), ORed.
fn keys_predicate(spec: &TableSpec, keys: &RecordBatch) -> Result<datafusion::prelude::Expr, WarehouseError> {
    use datafusion::scalar::ScalarValue;
    let mut any: Option<datafusion::prelude::Expr> = None;
    for i in 0..keys.num_rows() {
        let mut row: Option<datafusion::prelude::Expr> = None;
        for k in spec.keys {
            let c = keys.column_by_name(k).ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "table {}: rows to remove lack key column {k}",
                    spec.name
                ))
            })?;
            let v = ScalarValue::try_from_array(c, i).map_err(|source| WarehouseError::Query {
                table: spec.name.to_string(),
                source,
            })?;
            let eq = col(*k).eq(datafusion::prelude::lit(v));
            row = Some(match row {
                Some(r) => r.and(eq),
                None => eq,
            });
        }
        if let Some(r) = row {
            any = Some(match any {
                Some(a) => a.or(r),
                None => r,
            });
        }
    }
    Ok(any.unwrap_or_else(|| datafusion::prelude::lit(false)))
}

fn table_url(dir: &Path) -> Result<Url, WarehouseError> {
    Url::from_directory_path(dir).map_err(|()| WarehouseError::Uri {
        uri: dir.display().to_string(),
        reason: "not an absolute local path".into(),
    })
}

/// How `Warehouse::vacuum` decides which files are old enough to delete.
#[derive(Debug, Clone, Copy, Default)]
pub struct VacuumOptions {
    /// Keep files removed from the table less than this long ago (default:
    /// each table's `delta.deletedFileRetentionDuration`, 7 days unless set).
    pub retain: Option<std::time::Duration>,
    /// Accept `retain` below the table's own retention. Only with no run
    /// writing: a commit in progress can lose its new files, and versions
    /// older than `retain` can no longer be read.
    pub skip_retention_check: bool,
    /// List what would be deleted; delete nothing.
    pub dry_run: bool,
}

/// What `Warehouse::vacuum` deleted (or, in a dry run, would delete) from
/// one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VacuumOutcome {
    /// The table's folder under the warehouse root (`masters`,
    /// `entities/partners/masters`).
    pub table: String,
    pub files: usize,
    pub bytes: u64,
}

impl Warehouse {
    /// Open the warehouse at `config.uri` (relative paths resolve against
    /// `base`), creating any missing table.
    pub async fn open(
        config: &WarehouseConfig,
        base: &Path,
        specs: Vec<TableSpec>,
    ) -> Result<Self, WarehouseError> {
        let root = Self::resolve(&config.uri, base)?;
        std::fs::create_dir_all(&root).map_err(|source| WarehouseError::Staging {
            path: root.clone(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| WarehouseError::Staging {
            path: root.clone(),
            source,
        })?;
        let wh = Self {
            root,
            specs: specs.into_iter().map(|s| (s.name, s)).collect(),
            entity: None,
        };
        let mut names: Vec<&str> = wh.specs.keys().copied().collect();
        names.sort();
        for name in names {
            wh.ensure(name).await?;
        }
        Ok(wh)
    }

    /// The local folder a warehouse uri names.
    pub fn resolve(uri: &str, base: &Path) -> Result<PathBuf, WarehouseError> {
        if let Some(rest) = uri.strip_prefix("file://") {
            return Ok(PathBuf::from(rest));
        }
        if uri.contains("://") {
            return Err(WarehouseError::Uri {
                uri: uri.into(),
                reason: "only local folders and file:// are supported for the warehouse so far".into(),
            });
        }
        let p = Path::new(uri);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The same warehouse seen by an entity type other than leads: the
    /// `tables` named here (masters, records, ...) are the entity's own,
    /// under `entities/<entity>/`, created if missing; every other table
    /// (runs, ledgers, reminders, outbox) stays shared.
    pub async fn for_entity(&self, entity: &str, tables: &[&'static str]) -> Result<Self, WarehouseError> {
        for t in tables {
            self.spec(t)?;
        }
        let wh = Self {
            root: self.root.clone(),
            specs: self.specs.clone(),
            entity: Some(Arc::new(EntityTables {
                dir: self.root.join("entities").join(entity),
                tables: tables.to_vec(),
            })),
        };
        for t in tables {
            wh.ensure(t).await?;
        }
        Ok(wh)
    }

    /// The folder of table `name` (the entity's own for its tables).
    fn dir(&self, name: &str) -> PathBuf {
        match &self.entity {
            Some(e) if e.tables.contains(&name) => e.dir.join(name),
            _ => self.root.join(name),
        }
    }

    fn spec(&self, name: &str) -> Result<&TableSpec, WarehouseError> {
        self.specs
            .get(name)
            .ok_or_else(|| WarehouseError::UnknownTable(name.into()))
    }

    fn delta_err(table: &str) -> impl FnOnce(deltalake::DeltaTableError) -> WarehouseError + '_ {
        move |source| WarehouseError::Delta {
            table: table.to_string(),
            source,
        }
    }

    /// Delete the data files of `names` that no version within the
    /// retention reads any more: files an upsert rewrote or a run replaced,
    /// and files a crashed run wrote but never committed (Delta's VACUUM in
    /// its full mode, which also lists the folder). Tables never written
    /// are skipped. With `dry_run` nothing is deleted and the outcome says
    /// what would be.
    pub async fn vacuum(
        &self,
        names: &[&str],
        opts: VacuumOptions,
    ) -> Result<Vec<VacuumOutcome>, WarehouseError> {
        use deltalake::operations::vacuum::VacuumMode;
        // A staged commit not yet applied (a run committing now, or one
        // that stopped during its commit) names data files the log does not
        // hold yet: never vacuum under it.
        let pending = self.pending_commits()?;
        if !pending.is_empty() {
            return Err(WarehouseError::PendingCommit {
                pipelines: pending.join(", "),
            });
        }
        // Beyond chrono's range (~292 million years) is "keep everything".
        let retain = opts
            .retain
            .map(|r| chrono::Duration::from_std(r).unwrap_or(chrono::Duration::MAX));
        // Every table checked before any is vacuumed: a refused retention
        // deletes nothing anywhere.
        let mut tables = Vec::with_capacity(names.len());
        for &name in names {
            let table = self.table(name).await?;
            if table.version().is_none() {
                continue;
            }
            if let Some(r) = opts.retain
                && !opts.skip_retention_check
            {
                use deltalake::table::config::TablePropertiesExt as _;
                let min = table
                    .snapshot()
                    .map_err(Self::delta_err(name))?
                    .table_config()
                    .deleted_file_retention_duration();
                if r < min {
                    return Err(WarehouseError::VacuumRetention {
                        table: name.into(),
                        retain: humantime_serde::re::humantime::format_duration(r).to_string(),
                        min: humantime_serde::re::humantime::format_duration(min).to_string(),
                    });
                }
            }
            tables.push((name, table));
        }
        let mut out = Vec::with_capacity(tables.len());
        for (name, table) in tables {
            let dir = self.dir(name);
            let builder = |t: DeltaTable, dry_run: bool| {
                let mut b = t
                    .vacuum()
                    .with_mode(VacuumMode::Full)
                    .with_dry_run(dry_run)
                    .with_enforce_retention_duration(!opts.skip_retention_check);
                if let Some(r) = retain {
                    b = b.with_retention_period(r);
                }
                b
            };
            // Listed first, sizes read while the files are still there. The
            // list repeats files an earlier vacuum already deleted (their
            // removal stays in the log): only files still there count.
            let (table, listed) = builder(table, true).await.map_err(Self::delta_err(name))?;
            let sizes: HashMap<String, u64> = listed
                .files_deleted
                .into_iter()
                .filter_map(|f| std::fs::metadata(dir.join(&f)).ok().map(|m| (f, m.len())))
                .collect();
            let removed: Vec<String> = if sizes.is_empty() {
                Vec::new()
            } else if opts.dry_run {
                sizes.keys().cloned().collect()
            } else {
                builder(table, false)
                    .await
                    .map_err(Self::delta_err(name))?
                    .1
                    .files_deleted
                    .into_iter()
                    .filter(|f| sizes.contains_key(f))
                    .collect()
            };
            let bytes = removed.iter().map(|f| sizes[f]).sum();
            let table = dir
                .strip_prefix(&self.root)
                .unwrap_or(&dir)
                .to_string_lossy()
                .into_owned();
            debug!(table = %table, files = removed.len(), bytes, dry_run = opts.dry_run, "vacuumed");
            out.push(VacuumOutcome {
                table,
                files: removed.len(),
                bytes,
            });
        }
        Ok(out)
    }

    /// Load a table at its latest version.
    pub async fn table(&self, name: &str) -> Result<DeltaTable, WarehouseError> {
        self.spec(name)?;
        let url = table_url(&self.dir(name))?;
        DeltaTable::try_from_url(url).await.map_err(Self::delta_err(name))
    }

    async fn ensure(&self, name: &str) -> Result<(), WarehouseError> {
        let spec = self.spec(name)?;
        let dir = self.dir(name);
        std::fs::create_dir_all(&dir).map_err(|source| WarehouseError::Staging {
            path: dir.clone(),
            source,
        })?;
        let table = self.table(name).await?;
        if table.version().is_some() {
            return Self::add_missing_columns(table, spec, name).await;
        }
        let schema: StructType =
            spec.schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| WarehouseError::Delta {
                    table: name.into(),
                    source: deltalake::DeltaTableError::from(e),
                })?;
        info!(table = name, "creating warehouse table");
        table
            .create()
            .with_columns(schema.fields().cloned())
            .with_table_name(name)
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(Self::delta_err(name))?;
        Ok(())
    }

    /// Columns a newer release added to a table's spec (nullable, at the
    /// end) are added to a table an older release created; its rows read
    /// them as null. Anything else about the schema is left as it is.
    async fn add_missing_columns(
        table: DeltaTable,
        spec: &TableSpec,
        name: &str,
    ) -> Result<(), WarehouseError> {
        let Ok(snapshot) = table.snapshot() else {
            return Ok(());
        };
        let have = snapshot.schema();
        let missing: Vec<_> = spec
            .schema
            .fields()
            .iter()
            .filter(|f| f.is_nullable() && have.field(f.name()).is_none())
            .map(|f| f.as_ref().clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let missing = arrow::datatypes::Schema::new(missing);
        let missing: StructType = (&missing).try_into_kernel().map_err(|e| WarehouseError::Delta {
            table: name.into(),
            source: deltalake::DeltaTableError::from(e),
        })?;
        info!(
            table = name,
            columns = missing.fields().len(),
            "adding new columns to an existing table"
        );
        table
            .add_columns()
            .with_fields(missing.fields().cloned().collect::<Vec<_>>())
            .await
            .map_err(Self::delta_err(name))?;
        Ok(())
    }

    /// Does the table hold any data file? Lets a run skip lookups against
    /// tables that are still empty (the first load of a warehouse).
    pub async fn has_data(&self, name: &str) -> Result<bool, WarehouseError> {
        let table = self.table(name).await?;
        Ok(table
            .snapshot()
            .map(|s| s.log_data().num_files() > 0)
            .unwrap_or(false))
    }

    /// Rows of a table from its log's file statistics (no data read), or
    /// `None` when a file has no row count there.
    pub async fn row_count(&self, name: &str) -> Result<Option<u64>, WarehouseError> {
        let table = self.table(name).await?;
        let Ok(snapshot) = table.snapshot() else {
            return Ok(Some(0));
        };
        Ok(snapshot
            .log_data()
            .iter()
            .map(|f| f.num_records().map(|n| n as u64))
            .sum())
    }

    /// Is the warehouse there and readable? (for readiness checks)
    pub async fn test(&self) -> Result<(), WarehouseError> {
        self.table("runs").await.map(|_| ())
    }

    /// Register tables in a DataFusion session under their names.
    pub async fn register(&self, ctx: &SessionContext, names: &[&str]) -> Result<(), WarehouseError> {
        for name in names {
            let table = self.table(name).await?;
            let provider = table
                .table_provider()
                .await
                .map_err(|source| WarehouseError::Query {
                    table: name.to_string(),
                    source,
                })?;
            ctx.deregister_table(*name)
                .map_err(|source| WarehouseError::Query {
                    table: name.to_string(),
                    source,
                })?;
            ctx.register_table(*name, provider)
                .map_err(|source| WarehouseError::Query {
                    table: name.to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The last version committed to `table` by `app_id`, if any.
    pub async fn txn_version(&self, table: &str, app_id: &str) -> Result<Option<i64>, WarehouseError> {
        let t = self.table(table).await?;
        Self::loaded_txn_version(&t, table, app_id).await
    }

    async fn loaded_txn_version(
        t: &DeltaTable,
        table: &str,
        app_id: &str,
    ) -> Result<Option<i64>, WarehouseError> {
        let state = t.snapshot().map_err(Self::delta_err(table))?;
        state
            .transaction_version(t.log_store().as_ref(), app_id)
            .await
            .map_err(Self::delta_err(table))
    }

    /// Has `app_id` already committed `version` (or a later one) to this
    /// loaded table? Then a re-applied commit skips it.
    async fn committed(
        table: &DeltaTable,
        name: &str,
        app_id: &str,
        version: i64,
    ) -> Result<bool, WarehouseError> {
        let done = Self::loaded_txn_version(table, name, app_id).await?;
        if done.is_some_and(|d| d >= version) {
            debug!(table = name, version, "already committed, skipping");
            return Ok(true);
        }
        Ok(false)
    }

    /// The highest version `app_id` committed to any table.
    pub async fn last_txn_version(&self, app_id: &str) -> Result<Option<i64>, WarehouseError> {
        let mut max = None;
        let mut names: Vec<&str> = self.specs.keys().copied().collect();
        names.sort();
        for name in names {
            max = max.max(self.txn_version(name, app_id).await?);
        }
        Ok(max)
    }

    /// What a write of `name` under `txn(app_id, version)` starts from, or
    /// `None` when this app id already committed that version (or a later
    /// one) to it. One load of the table serves the check and the write.
    async fn write_start(
        &self,
        name: &str,
        app_id: &str,
        version: i64,
    ) -> Result<Option<WriteStart>, WarehouseError> {
        let spec = self.spec(name)?.clone();
        let table = self.table(name).await?;
        if Self::committed(&table, name, app_id, version).await? {
            return Ok(None);
        }
        let props =
            CommitProperties::default().with_application_transaction(Transaction::new(app_id, version));
        let empty = table
            .snapshot()
            .map(|s| s.log_data().num_files() == 0)
            .unwrap_or(false);
        Ok(Some(WriteStart {
            table,
            spec,
            props,
            empty,
        }))
    }

    /// Apply one staged table unless this app id already committed this
    /// version (or a later one) to it. Returns whether it wrote.
    pub async fn apply(
        &self,
        staged: &StagedTable,
        app_id: &str,
        version: i64,
    ) -> Result<bool, WarehouseError> {
        self.write(staged, None, app_id, version).await
    }

    /// Upsert `staged` and drop the rows whose keys are in `remove` (a batch
    /// of the table's key columns), in one commit under `txn(app_id,
    /// version)`; false when that version is already committed. One rewrite
    /// of the touched files instead of an upsert and then a delete (a merge
    /// of masters: the survivor's new golden record in, the absorbed one
    /// out).
    pub async fn replace(
        &self,
        staged: &StagedTable,
        remove: &RecordBatch,
        app_id: &str,
        version: i64,
    ) -> Result<bool, WarehouseError> {
        self.write(staged, Some(remove).filter(|r| r.num_rows() > 0), app_id, version)
            .await
    }

    /// [`Self::apply`], and with `remove` [`Self::replace`].
    async fn write(
        &self,
        staged: &StagedTable,
        remove: Option<&RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<bool, WarehouseError> {
        let name = staged.table.as_str();
        let Some(WriteStart {
            table,
            spec,
            props,
            empty,
        }) = self.write_start(name, app_id, version).await?
        else {
            return Ok(false);
        };
        let rows: usize = staged.batches.iter().map(RecordBatch::num_rows).sum();
        // Nothing to match against (or nothing to write or remove): an
        // append is the same result, much cheaper, and still records the
        // txn version.
        let mode = if empty || (rows == 0 && remove.is_none()) {
            WriteMode::Append
        } else if remove.is_some() {
            WriteMode::Upsert
        } else {
            staged.mode
        };
        match mode {
            // An empty write still commits, to record the txn version.
            WriteMode::Append => {
                table
                    .write(staged.batches.clone())
                    .with_writer_properties(writer_properties(&staged.batches))
                    .with_save_mode(SaveMode::Append)
                    .with_commit_properties(props)
                    .await
                    .map_err(Self::delta_err(name))?;
            }
            WriteMode::Upsert => {
                if !self
                    .upsert_by_rewrite(&table, name, &spec, staged, remove, rows, props.clone())
                    .await?
                {
                    if rows > 0 {
                        Self::upsert_by_merge(table, name, &spec, staged, props).await?;
                    }
                    // The removed keys by a plain delete (the txn version
                    // is recorded by the merge, or not at all: a table the
                    // rewrite declines is not one leadflow writes).
                    if let Some(remove) = remove {
                        self.table(name)
                            .await?
                            .delete()
                            .with_predicate(keys_predicate(&spec, remove)?)
                            .await
                            .map_err(Self::delta_err(name))?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// Upsert by delta-rs's MERGE (update all / insert all on the key): the
    /// fallback for tables `upsert_by_rewrite` declines.
    async fn upsert_by_merge(
        table: DeltaTable,
        name: &str,
        spec: &TableSpec,
        staged: &StagedTable,
        props: CommitProperties,
    ) -> Result<(), WarehouseError> {
        let ctx = SessionContext::new();
        let source = ctx
            .read_batches(staged.batches.clone())
            .map_err(|source| WarehouseError::Query {
                table: name.into(),
                source,
            })?;
        let predicate = key_predicate(spec);
        let columns: Vec<String> = spec.schema.fields().iter().map(|f| f.name().clone()).collect();
        let (_, metrics) = table
            .merge(source, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .with_writer_properties(writer_properties(&staged.batches))
            .with_commit_properties(props)
            .when_matched_update(|u| {
                columns
                    .iter()
                    .fold(u, |u, c| u.update(c.as_str(), col(format!("source.{c}"))))
            })
            .map_err(Self::delta_err(name))?
            .when_not_matched_insert(|i| {
                columns
                    .iter()
                    .fold(i, |i, c| i.set(c.as_str(), col(format!("source.{c}"))))
            })
            .map_err(Self::delta_err(name))?
            .await
            .map_err(Self::delta_err(name))?;
        debug!(
            table = name,
            inserted = metrics.num_target_rows_inserted,
            updated = metrics.num_target_rows_updated,
            "merged"
        );
        Ok(())
    }

    /// Upsert by rewriting the files that hold a staged key (`rewrite.rs`
    /// says why not MERGE), dropping the rows of the `remove` keys too.
    /// Returns false, having written nothing, when the table needs MERGE.
    #[allow(clippy::too_many_arguments)] // one write's parts
    async fn upsert_by_rewrite(
        &self,
        table: &DeltaTable,
        name: &str,
        spec: &TableSpec,
        staged: &StagedTable,
        remove: Option<&RecordBatch>,
        rows: usize,
        props: CommitProperties,
    ) -> Result<bool, WarehouseError> {
        let rewrite_err = |source| WarehouseError::Rewrite {
            table: name.to_string(),
            source,
        };
        let mut keys = staged.batches.clone();
        keys.extend(remove.cloned());
        let Some(plan) = rewrite::plan(table, &self.dir(name), spec, &keys)
            .await
            .map_err(rewrite_err)?
        else {
            return Ok(false);
        };
        let (removed, kept_rows) = (
            plan.removes.len(),
            plan.kept.iter().map(RecordBatch::num_rows).sum::<usize>(),
        );
        let mut batches = plan.kept;
        batches.extend(staged.batches.iter().cloned());
        let adds = self.encode_files(table, name, &batches, None).await?;
        let operation = match remove {
            // Rows go: the log says so.
            Some(_) => DeltaOperation::Delete {
                predicate: Some(key_predicate(spec).to_string()),
            },
            None => DeltaOperation::Merge {
                // No pruning predicate: for conflict checks the whole table was read.
                predicate: None,
                merge_predicate: Some(key_predicate(spec).to_string()),
                matched_predicates: vec![MergePredicate {
                    action_type: "update".into(),
                    predicate: None,
                }],
                not_matched_predicates: vec![MergePredicate {
                    action_type: "insert".into(),
                    predicate: None,
                }],
                not_matched_by_source_predicates: Vec::new(),
            },
        };
        let mut actions: Vec<Action> = plan.removes.into_iter().map(Action::Remove).collect();
        actions.extend(adds.into_iter().map(Action::Add));
        Self::commit_actions(table, name, props, actions, operation).await?;
        debug!(
            table = name,
            staged = rows,
            rows_matched = plan.updated,
            removed_keys = remove.map_or(0, RecordBatch::num_rows),
            files_rewritten = removed,
            rows_kept = kept_rows,
            "upserted by rewrite"
        );
        Ok(true)
    }

    /// Delete the rows of `table` matching `predicate`, under
    /// `txn(app_id, version)` unless that version is already committed
    /// (then nothing happens and it returns false). For writes outside runs
    /// that remove rows, e.g. the master absorbed by a merge.
    pub async fn delete_where(
        &self,
        table: &str,
        predicate: datafusion::prelude::Expr,
        app_id: &str,
        version: i64,
    ) -> Result<bool, WarehouseError> {
        let t = self.table(table).await?;
        if Self::committed(&t, table, app_id, version).await? {
            return Ok(false);
        }
        let props =
            CommitProperties::default().with_application_transaction(Transaction::new(app_id, version));
        let (_, metrics) = t
            .delete()
            .with_predicate(predicate)
            .with_commit_properties(props)
            .await
            .map_err(Self::delta_err(table))?;
        debug!(table, deleted = metrics.num_deleted_rows, "deleted");
        Ok(true)
    }

    /// Stage a commit, then apply it table by table, then drop the staging.
    /// `after_table` is called after each table (tests use it to simulate a
    /// crash mid-commit).
    pub async fn commit(
        &self,
        commit: &StagedCommit,
        after_table: impl FnMut(&str),
    ) -> Result<(), WarehouseError> {
        self.commit_with(commit, Vec::new(), after_table).await
    }

    /// [`Warehouse::commit`] with columns encoded ahead (see
    /// [`Warehouse::encode_ahead`]): a table appended as files with the rows
    /// they were encoded for takes their chunks; otherwise they are dropped.
    pub async fn commit_with(
        &self,
        commit: &StagedCommit,
        ahead: Vec<EncodedAhead>,
        mut after_table: impl FnMut(&str),
    ) -> Result<(), WarehouseError> {
        let dir = self.staging_dir(&commit.pipeline);
        let prepared = self.stage(commit, ahead, &dir).await?;
        self.apply_prepared(&prepared, &mut after_table).await?;
        PreparedCommit::clear(&dir)
    }

    /// Writes a commit's changes to disk: appends (or upserts into a table
    /// without data files, which is the same result) as Parquet files in
    /// the table's folder, encoded in chunks on all cores; other upserts as
    /// IPC rows. The manifest, written last, makes the staging complete.
    async fn stage(
        &self,
        commit: &StagedCommit,
        mut ahead: Vec<EncodedAhead>,
        dir: &Path,
    ) -> Result<PreparedCommit, WarehouseError> {
        PreparedCommit::reset(dir)?;
        let mut pending = tokio::task::JoinSet::new();
        for (i, t) in commit.tables.iter().enumerate() {
            let (wh, t, dir) = (self.clone(), t.clone(), dir.to_path_buf());
            let early = ahead
                .iter()
                .position(|a| a.table == t.table)
                .map(|k| ahead.swap_remove(k));
            pending.spawn(async move { (i, wh.stage_table(t, early, &dir).await) });
        }
        let mut tables: Vec<Option<Prepared>> = vec![None; commit.tables.len()];
        let mut failed = None;
        while let Some(joined) = pending.join_next().await {
            let (i, result) = joined.map_err(|e| WarehouseError::Task(e.to_string()))?;
            match result {
                Ok(p) => tables[i] = Some(p),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let prepared = PreparedCommit {
            pipeline: commit.pipeline.clone(),
            run_id: commit.run_id.clone(),
            app_id: commit.app_id.clone(),
            version: commit.version,
            tables: tables
                .into_iter()
                .map(|p| p.expect("every table staged"))
                .collect(),
        };
        prepared.save_manifest(dir)?;
        Ok(prepared)
    }

    async fn stage_table(
        &self,
        t: StagedTable,
        ahead: Option<EncodedAhead>,
        dir: &Path,
    ) -> Result<Prepared, WarehouseError> {
        let rows: usize = t.batches.iter().map(RecordBatch::num_rows).sum();
        let as_files = rows > 0 && (t.mode == WriteMode::Append || !self.has_data(&t.table).await?);
        if !as_files {
            if let Some(a) = ahead {
                drop(a);
                debug!(table = %t.table, "columns encoded ahead unused: the table is upserted");
            }
            let dir = dir.to_path_buf();
            return tokio::task::spawn_blocking(move || {
                PreparedCommit::save_rows(&dir, &t)?;
                Ok(Prepared::Rows(t))
            })
            .await
            .map_err(|e| WarehouseError::Task(e.to_string()))?;
        }
        let table = self.table(&t.table).await?;
        let adds = self.encode_files(&table, &t.table, &t.batches, ahead).await?;
        Ok(Prepared::Files {
            table: t.table,
            rows,
            adds,
        })
    }

    /// Encodes rows as Parquet files in the table's folder, one file per
    /// chunk of [`ROWS_PER_FILE`] rows, each chunk on its own task so a big
    /// table does not leave a core idle. Nothing is visible until the Adds
    /// are committed; files of a run that dies before its manifest are
    /// never referenced (`VACUUM` removes them).
    #[cfg(test)]
    async fn write_files(&self, name: &str, batches: &[RecordBatch]) -> Result<Vec<Add>, WarehouseError> {
        let table = self.table(name).await?;
        self.encode_files(&table, name, batches, None).await
    }

    /// The schema delta-rs's writer would encode `table` with, and the
    /// table's choice of statistics columns.
    fn file_schema(
        table: &DeltaTable,
        name: &str,
    ) -> Result<(SchemaRef, data_files::StatsColumns), WarehouseError> {
        let schema = RecordBatchWriter::for_table(table)
            .map_err(Self::delta_err(name))?
            .arrow_schema();
        let snapshot = table.snapshot().map_err(Self::delta_err(name))?;
        let stats = data_files::StatsColumns::from_configuration(snapshot.metadata().configuration());
        Ok((schema, stats))
    }

    /// Starts encoding some columns of `table`'s next append on a thread of
    /// its own, while the run computes the rest. `columns` are whole columns
    /// (name, values), every one as long as the append will be. The run
    /// calls it for `records` before linking: most of its columns come from
    /// the leads alone, and the link stage leaves a core idle for part of
    /// its time (BENCHMARKS.md, fifteenth session). Hand the result to
    /// [`Warehouse::commit_with`].
    pub async fn encode_ahead(
        &self,
        table: &str,
        columns: Vec<(String, ArrayRef)>,
    ) -> Result<EncodedAhead, WarehouseError> {
        let ahead = self.ahead_tasks(table, columns).await?;
        let worker = ahead.work.clone().expect("not taken yet");
        std::thread::Builder::new()
            .name(format!("encode-{table}"))
            .spawn(move || {
                data_files::lowest_priority();
                worker.work();
            })
            .map_err(|e| WarehouseError::Task(e.to_string()))?;
        Ok(ahead)
    }

    /// The tasks of [`Warehouse::encode_ahead`], with no thread taking them
    /// yet.
    async fn ahead_tasks(
        &self,
        table: &str,
        columns: Vec<(String, ArrayRef)>,
    ) -> Result<EncodedAhead, WarehouseError> {
        let t = self.table(table).await?;
        let (schema, stats) = Self::file_schema(&t, table)?;
        let data_err = |source| WarehouseError::DataFile {
            table: table.to_string(),
            source,
        };
        let rows = columns.first().map_or(0, |(_, a)| a.len());
        let mut fields = Vec::with_capacity(columns.len());
        let mut indexed = Vec::with_capacity(columns.len());
        for (name, values) in columns {
            let i = schema.index_of(&name).map_err(|e| {
                data_err(data_files::DataFileError::Column {
                    column: name.clone(),
                    reason: e.to_string(),
                })
            })?;
            if values.len() != rows {
                return Err(data_err(data_files::DataFileError::Column {
                    column: name,
                    reason: format!("{} values where the other columns have {rows}", values.len()),
                }));
            }
            let field = schema.field(i);
            indexed.push((i, data_files::conform_column(field, &values).map_err(data_err)?));
            fields.push(field.clone());
        }
        // The sample that picks each column's encoding: the same first rows
        // the commit would sample, so the same choice.
        let sample = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(fields)),
            indexed.iter().map(|(_, a)| a.clone()).collect(),
        )?;
        let props = writer_properties(std::slice::from_ref(&sample));
        let work = Arc::new(
            data_files::AheadWork::new(
                data_files::Encoder::new(&schema, props, &stats).map_err(data_err)?,
                &indexed,
                ROWS_PER_FILE,
            )
            .map_err(data_err)?,
        );
        Ok(EncodedAhead {
            table: table.to_string(),
            rows,
            schema,
            work: Some(work),
        })
    }

    /// Encodes rows as Parquet files in the table's folder, one file per
    /// chunk of [`ROWS_PER_FILE`] rows, each column chunk of each file its
    /// own task (`data_files`), so a big table does not leave a core idle.
    /// Column chunks encoded ahead for exactly these rows are taken as they
    /// are. Nothing is visible until the Adds are committed; files of a run
    /// that dies before its manifest are never referenced (`VACUUM`
    /// removes them).
    async fn encode_files(
        &self,
        table: &DeltaTable,
        name: &str,
        batches: &[RecordBatch],
        ahead: Option<EncodedAhead>,
    ) -> Result<Vec<Add>, WarehouseError> {
        let props = writer_properties(batches);
        let (schema, stats) = Self::file_schema(table, name)?;
        let data_err = |source| WarehouseError::DataFile {
            table: name.to_string(),
            source,
        };
        let mut files: Vec<Vec<RecordBatch>> = vec![Vec::new()];
        let mut in_file = 0;
        for b in batches {
            let b = data_files::conform(&schema, b).map_err(data_err)?;
            let mut offset = 0;
            while offset < b.num_rows() {
                if in_file == ROWS_PER_FILE {
                    files.push(Vec::new());
                    in_file = 0;
                }
                let n = (b.num_rows() - offset).min(ROWS_PER_FILE - in_file);
                files.last_mut().expect("one file").push(b.slice(offset, n));
                (offset, in_file) = (offset + n, in_file + n);
            }
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let ahead = match ahead {
            Some(mut a) if a.rows == rows && a.schema == schema => a.work.take(),
            Some(a) => {
                drop(a);
                debug!(table = name, "columns encoded ahead unused: other rows or schema");
                None
            }
            None => None,
        };
        let root = self.dir(name);
        // Unique per call: staged files of an interrupted run are never reused.
        let token = xxhash_rust::xxh3::xxh3_128(
            format!(
                "{name}\u{1f}{}\u{1f}{:?}\u{1f}{}",
                std::process::id(),
                std::time::SystemTime::now(),
                FILE_BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            )
            .as_bytes(),
        );
        let task_name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let err = |source| WarehouseError::DataFile {
                table: task_name.clone(),
                source,
            };
            let early = ahead.map(|work| work.finish()).transpose().map_err(err)?;
            data_files::Encoder::new(&schema, props, &stats)
                .and_then(|e| {
                    e.write(&root, files, early, |i| {
                        format!("part-{i:05}-{token:032x}-c000.parquet")
                    })
                })
                .map_err(err)
        })
        .await
        .map_err(|e| WarehouseError::Task(e.to_string()))?
    }

    /// Adds staged Parquet files to a table in one commit with the run's
    /// txn, unless that version is already there. Returns whether it wrote.
    async fn apply_files(
        &self,
        name: &str,
        adds: &[Add],
        app_id: &str,
        version: i64,
    ) -> Result<bool, WarehouseError> {
        let table = self.table(name).await?;
        if Self::committed(&table, name, app_id, version).await? {
            return Ok(false);
        }
        let props =
            CommitProperties::default().with_application_transaction(Transaction::new(app_id, version));
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        Self::commit_actions(
            &table,
            name,
            props,
            adds.iter().cloned().map(Action::Add).collect(),
            operation,
        )
        .await?;
        Ok(true)
    }

    /// Commit actions we built ourselves (staged files, a rewrite's removes
    /// and adds) on top of `table`'s loaded version.
    async fn commit_actions(
        table: &DeltaTable,
        name: &str,
        props: CommitProperties,
        actions: Vec<Action>,
        operation: DeltaOperation,
    ) -> Result<(), WarehouseError> {
        let snapshot = table.snapshot().map_err(Self::delta_err(name))?;
        CommitBuilder::from(props)
            .with_actions(actions)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(Self::delta_err(name))?;
        Ok(())
    }

    async fn apply_one(&self, p: &Prepared, app_id: &str, version: i64) -> Result<bool, WarehouseError> {
        match p {
            Prepared::Rows(t) => self.apply(t, app_id, version).await,
            Prepared::Files { table, adds, .. } => self.apply_files(table, adds, app_id, version).await,
        }
    }

    async fn apply_prepared(
        &self,
        commit: &PreparedCommit,
        after_table: &mut impl FnMut(&str),
    ) -> Result<(), WarehouseError> {
        // Data tables are independent (each carries its own txn version), so
        // they are applied concurrently (an upsert's MERGE encodes on its own
        // worker). The ledger and then `runs` follow, in that order.
        let (data, tail): (Vec<&Prepared>, Vec<&Prepared>) = commit
            .tables
            .iter()
            .partition(|t| t.table() != "source_files" && t.table() != "runs");
        let mut pending = tokio::task::JoinSet::new();
        for t in data {
            let (wh, t) = (self.clone(), t.clone());
            let (app_id, version) = (commit.app_id.clone(), commit.version);
            pending.spawn(async move {
                let r = wh.apply_one(&t, &app_id, version).await;
                (t, r)
            });
        }
        let mut failed = None;
        while let Some(joined) = pending.join_next().await {
            let (t, result) = joined.map_err(|e| WarehouseError::Task(e.to_string()))?;
            match result {
                Ok(wrote) => {
                    info!(table = %t.table(), wrote, rows = t.rows(), "table committed");
                    after_table(t.table());
                }
                // Let the other tables finish (each is txn-guarded), then fail.
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        for t in tail {
            let wrote = self.apply_one(t, &commit.app_id, commit.version).await?;
            info!(table = %t.table(), wrote, rows = t.rows(), "table committed");
            after_table(t.table());
        }
        Ok(())
    }

    /// Finish a commit an earlier run staged but did not complete. Returns
    /// the run id it finished, if any.
    pub async fn recover(&self, pipeline: &str) -> Result<Option<String>, WarehouseError> {
        let dir = self.staging_dir(pipeline);
        let Some(commit) = PreparedCommit::load(&dir, &|t: &str| self.dir(t), &self.specs)? else {
            return Ok(None);
        };
        info!(run_id = %commit.run_id, version = commit.version, "finishing an interrupted commit");
        self.apply_prepared(&commit, &mut |_| {}).await?;
        PreparedCommit::clear(&dir)?;
        Ok(Some(commit.run_id))
    }

    /// The warehouse's own tables (leads and shared), whatever entity view
    /// this is.
    pub fn shared(&self) -> Self {
        Self {
            root: self.root.clone(),
            specs: self.specs.clone(),
            entity: None,
        }
    }

    fn vacuum_marker(&self) -> PathBuf {
        self.root.join("_leadflow").join("vacuumed_at")
    }

    /// Has `every` passed since the last vacuum? A warehouse never vacuumed
    /// starts counting now (its marker is written, the answer is no), so a
    /// new warehouse is not vacuumed by its first run.
    pub fn vacuum_due(&self, every: std::time::Duration) -> Result<bool, WarehouseError> {
        let path = self.vacuum_marker();
        let last = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok());
        match last {
            Some(at) => {
                let since = chrono::Utc::now().signed_duration_since(at);
                Ok(since.to_std().is_ok_and(|d| d >= every))
            }
            None => {
                self.mark_vacuumed()?;
                Ok(false)
            }
        }
    }

    /// Record that the whole warehouse was vacuumed now.
    pub fn mark_vacuumed(&self) -> Result<(), WarehouseError> {
        let path = self.vacuum_marker();
        let io = |source| WarehouseError::Staging {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("marker has a folder")).map_err(io)?;
        std::fs::write(&path, chrono::Utc::now().to_rfc3339()).map_err(io)
    }

    /// Pipelines with a staged commit not yet applied (its manifest is
    /// there), sorted.
    pub fn pending_commits(&self) -> Result<Vec<String>, WarehouseError> {
        let root = self.staging_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(WarehouseError::Staging { path: root, source }),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|source| WarehouseError::Staging {
                path: root.clone(),
                source,
            })?;
            if e.path().join("manifest.json").is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// One folder per pipeline with a commit being staged or applied.
    fn staging_root(&self) -> PathBuf {
        self.root.join("_leadflow").join("staging")
    }

    fn staging_dir(&self, pipeline: &str) -> PathBuf {
        self.staging_root().join(pipeline)
    }

    /// Read a query's result into batches.
    pub async fn query(&self, ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, WarehouseError> {
        let df = ctx.sql(sql).await.map_err(|source| WarehouseError::Query {
            table: "query".into(),
            source,
        })?;
        df.collect().await.map_err(|source| WarehouseError::Query {
            table: "query".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn spec() -> TableSpec {
        TableSpec {
            name: "people",
            schema: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("n", DataType::Int64, true),
            ])),
            keys: &["id"],
        }
    }

    fn rows(ids: &[impl AsRef<str>], n: i64) -> RecordBatch {
        RecordBatch::try_new(
            spec().schema,
            vec![
                Arc::new(StringArray::from_iter_values(ids.iter().map(AsRef::as_ref))),
                Arc::new(Int64Array::from(vec![n; ids.len()])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn every_column_keeps_its_statistics_even_nearly_unique_text() {
        let n = 1000;
        let schema = Arc::new(Schema::new(vec![Field::new("email", DataType::Utf8, true)]));
        let emails: StringArray = (0..n).map(|i| Some(format!("p{i}@example.com"))).collect();
        let batch = RecordBatch::try_new(schema, vec![Arc::new(emails)]).unwrap();
        let props = writer_properties(&[batch]);
        let email = ColumnPath::from("email");
        assert!(!props.dictionary_enabled(&email), "unique text: no dictionary");
        assert_eq!(props.statistics_enabled(&email), EnabledStatistics::Chunk);
    }

    #[test]
    fn hashed_ids_and_unique_times_skip_dictionary_and_snappy_but_text_keeps_snappy() {
        use arrow::array::{ListBuilder, StringBuilder, TimestampMicrosecondArray};
        let n = 3000u64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("email", DataType::Utf8, true),
            Field::new(
                "seen",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("status", DataType::Utf8, true),
            Field::new(
                "emails",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
        ]));
        let hex = |i: u64| format!("m-{:032x}", xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()));
        let ids: StringArray = (0..n).map(|i| Some(hex(i))).collect();
        let emails: StringArray = (0..n).map(|i| Some(format!("person.{i}@example.com"))).collect();
        let seen: TimestampMicrosecondArray = (0..n)
            .map(|i| {
                Some(1_700_000_000_000_000 + (xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) >> 24) as i64)
            })
            .collect();
        let status: StringArray = (0..n)
            .map(|i| Some(["new", "hot", "cold"][i as usize % 3]))
            .collect();
        let mut lists = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "element",
            DataType::Utf8,
            true,
        )));
        for i in 0..n {
            lists.values().append_value(hex(i));
            lists.append(true);
        }
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(ids),
                Arc::new(emails),
                Arc::new(seen),
                Arc::new(status),
                Arc::new(lists.finish()),
            ],
        )
        .unwrap();
        let props = writer_properties(&[batch]);
        let path = ColumnPath::from;
        let element = ColumnPath::new(vec!["emails".into(), "list".into(), "element".into()]);
        for p in [path("id"), path("seen"), element] {
            assert!(!props.dictionary_enabled(&p), "{p}: unique values, no dictionary");
            assert_eq!(
                props.compression(&p),
                Compression::UNCOMPRESSED,
                "{p}: snappy saves little"
            );
            assert_eq!(props.statistics_enabled(&p), EnabledStatistics::Chunk);
        }
        assert!(!props.dictionary_enabled(&path("email")));
        assert_eq!(
            props.compression(&path("email")),
            Compression::SNAPPY,
            "text compresses"
        );
        assert!(
            props.dictionary_enabled(&path("status")),
            "repeated values keep the dictionary"
        );
        assert_eq!(props.compression(&path("status")), Compression::SNAPPY);
    }

    /// Run `r1` of pipeline `p` (app `app`, version 1) writing one table.
    fn one_table(table: &str, mode: WriteMode, batches: Vec<RecordBatch>) -> StagedCommit {
        StagedCommit {
            pipeline: "p".into(),
            run_id: "r1".into(),
            app_id: "app".into(),
            version: 1,
            tables: vec![StagedTable {
                table: table.into(),
                mode,
                batches,
            }],
        }
    }

    async fn open(dir: &Path, spec: TableSpec) -> Warehouse {
        let cfg = WarehouseConfig {
            uri: dir.display().to_string(),
            ..Default::default()
        };
        Warehouse::open(&cfg, dir, vec![spec]).await.unwrap()
    }

    async fn count(wh: &Warehouse, sql: &str) -> i64 {
        let ctx = SessionContext::new();
        wh.register(&ctx, &["people"]).await.unwrap();
        let b = wh.query(&ctx, sql).await.unwrap();
        b[0].column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }

    #[tokio::test]
    async fn a_txn_version_is_applied_once_and_upserts_replace() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        let t = StagedTable {
            table: "people".into(),
            mode: WriteMode::Upsert,
            batches: vec![rows(&["a", "b"], 1)],
        };
        assert!(wh.apply(&t, "app", 1).await.unwrap());
        assert!(
            !wh.apply(&t, "app", 1).await.unwrap(),
            "same version again is skipped"
        );
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 2);
        let t2 = StagedTable {
            table: "people".into(),
            mode: WriteMode::Upsert,
            batches: vec![rows(&["b", "c"], 2)],
        };
        assert!(wh.apply(&t2, "app", 2).await.unwrap());
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 3);
        assert_eq!(count(&wh, "SELECT sum(n) FROM people").await, 1 + 2 + 2);
        assert_eq!(
            wh.row_count("people").await.unwrap(),
            Some(3),
            "from the log's statistics"
        );
        assert_eq!(wh.last_txn_version("app").await.unwrap(), Some(2));
        assert_eq!(wh.last_txn_version("other").await.unwrap(), None);
    }

    /// A nullable key column (like `crm_links.account`): null matches null,
    /// by the rewrite and by the MERGE fallback alike.
    #[tokio::test]
    async fn a_null_key_part_matches_null_in_rewrite_and_merge() {
        let spec = || TableSpec {
            name: "people",
            schema: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("n", DataType::Int64, true),
                Field::new("tag", DataType::Utf8, true),
            ])),
            keys: &["id", "tag"],
        };
        let batch = |ids: &[&str], tags: &[Option<&str>], n: i64| {
            RecordBatch::try_new(
                spec().schema,
                vec![
                    Arc::new(StringArray::from(ids.to_vec())),
                    Arc::new(Int64Array::from(vec![n; ids.len()])),
                    Arc::new(StringArray::from(tags.to_vec())),
                ],
            )
            .unwrap()
        };
        let staged = |b: RecordBatch| StagedTable {
            table: "people".into(),
            mode: WriteMode::Upsert,
            batches: vec![b],
        };
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        wh.apply(&staged(batch(&["a", "b"], &[None, Some("x")], 1)), "app", 1)
            .await
            .unwrap();
        // (a, null) and (b, x) are replaced; (b, null) is a new key.
        let t = staged(batch(&["a", "b", "b"], &[None, Some("x"), None], 2));
        wh.apply(&t, "app", 2).await.unwrap();
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 3);
        assert_eq!(count(&wh, "SELECT sum(n) FROM people").await, 6);
        // The same through MERGE.
        let table = wh.table("people").await.unwrap();
        let t = staged(batch(&["a"], &[None], 10));
        Warehouse::upsert_by_merge(table, "people", &spec(), &t, CommitProperties::default())
            .await
            .unwrap();
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 3);
        assert_eq!(count(&wh, "SELECT sum(n) FROM people").await, 14);
    }

    fn files(table: &DeltaTable) -> Vec<String> {
        let mut f: Vec<String> = table
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect();
        f.sort();
        f
    }

    #[tokio::test]
    async fn an_upsert_rewrites_only_the_files_holding_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        for (v, ids) in [(1, ["a", "b"]), (2, ["c", "d"])] {
            let t = StagedTable {
                table: "people".into(),
                mode: WriteMode::Append,
                batches: vec![rows(&ids, 1)],
            };
            assert!(wh.apply(&t, "app", v).await.unwrap());
        }
        let before = files(&wh.table("people").await.unwrap());
        assert_eq!(before.len(), 2);
        // The table gains a column later: files written before lack it.
        let mut fields = spec().schema.fields().to_vec();
        fields.push(Arc::new(Field::new("note", DataType::Utf8, true)));
        let wider = TableSpec {
            schema: Arc::new(Schema::new(fields)),
            ..spec()
        };
        let wh = open(dir.path(), wider.clone()).await;
        let staged = RecordBatch::try_new(
            wider.schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["b", "e"])),
                Arc::new(Int64Array::from(vec![5, 5])),
                Arc::new(StringArray::from(vec!["x", "y"])),
            ],
        )
        .unwrap();
        let t = StagedTable {
            table: "people".into(),
            mode: WriteMode::Upsert,
            batches: vec![staged],
        };
        assert!(wh.apply(&t, "app", 3).await.unwrap());
        let table = wh.table("people").await.unwrap();
        let after = files(&table);
        let kept: Vec<&String> = before.iter().filter(|f| after.contains(f)).collect();
        assert_eq!(
            kept.len(),
            1,
            "the file of c, d is untouched: {before:?} -> {after:?}"
        );
        assert_eq!(after.len(), 2, "one untouched + one rewritten");
        use futures::TryStreamExt as _;
        let ops: Vec<_> = table.history(Some(1)).try_collect().await.unwrap();
        assert_eq!(ops[0].operation.as_deref(), Some("MERGE"));
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 5);
        assert_eq!(count(&wh, "SELECT sum(n) FROM people").await, 1 + 5 + 1 + 1 + 5);
        assert_eq!(
            count(&wh, "SELECT count(*) FROM people WHERE note IS NULL").await,
            3
        );
        assert_eq!(
            count(&wh, "SELECT count(*) FROM people WHERE id = 'b' AND note = 'x'").await,
            1
        );
        // Re-applied (a recovered commit): the txn guard skips it.
        assert!(!wh.apply(&t, "app", 3).await.unwrap());
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 5);
    }

    #[tokio::test]
    async fn a_replace_upserts_and_removes_keys_in_one_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        for (v, ids) in [(1, ["a", "b"]), (2, ["c", "d"]), (3, ["e", "f"])] {
            let t = StagedTable {
                table: "people".into(),
                mode: WriteMode::Append,
                batches: vec![rows(&ids, 1)],
            };
            assert!(wh.apply(&t, "app", v).await.unwrap());
        }
        let before = files(&wh.table("people").await.unwrap());
        // b updated, c removed (a merge: survivor in, absorbed out).
        let t = StagedTable {
            table: "people".into(),
            mode: WriteMode::Upsert,
            batches: vec![rows(&["b"], 7)],
        };
        let remove =
            RecordBatch::try_from_iter([("id", Arc::new(StringArray::from(vec!["c"])) as ArrayRef)]).unwrap();
        assert!(wh.replace(&t, &remove, "app", 4).await.unwrap());
        let table = wh.table("people").await.unwrap();
        use futures::TryStreamExt as _;
        let ops: Vec<_> = table.history(Some(1)).try_collect().await.unwrap();
        assert_eq!(ops[0].operation.as_deref(), Some("DELETE"), "one commit");
        assert_eq!(table.version(), Some(4), "0 creates, 1-3 append, 4 the replace");
        let after = files(&table);
        assert!(
            before.iter().filter(|f| after.contains(f)).count() == 1,
            "the file of e, f is untouched: {before:?} -> {after:?}"
        );
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 5);
        assert_eq!(count(&wh, "SELECT count(*) FROM people WHERE id = 'c'").await, 0);
        assert_eq!(count(&wh, "SELECT sum(n) FROM people").await, 1 + 7 + 1 + 1 + 1);
        // Redone (a retried merge): the txn guard skips it.
        assert!(!wh.replace(&t, &remove, "app", 4).await.unwrap());
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 5);
    }

    #[tokio::test]
    async fn a_delete_removes_matching_rows_once_per_txn_version() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        let t = StagedTable {
            table: "people".into(),
            mode: WriteMode::Append,
            batches: vec![rows(&["a", "b", "c"], 1)],
        };
        assert!(wh.apply(&t, "app", 1).await.unwrap());
        let gone = || col("id").eq(datafusion::prelude::lit("b"));
        assert!(wh.delete_where("people", gone(), "app", 2).await.unwrap());
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 2);
        assert_eq!(count(&wh, "SELECT count(*) FROM people WHERE id = 'b'").await, 0);
        // The same version again (a redone operation) deletes nothing.
        let again = StagedTable {
            table: "people".into(),
            mode: WriteMode::Append,
            batches: vec![rows(&["b"], 1)],
        };
        assert!(wh.apply(&again, "app", 3).await.unwrap());
        assert!(!wh.delete_where("people", gone(), "app", 2).await.unwrap());
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 3);
        assert_eq!(wh.txn_version("people", "app").await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn a_staged_commit_is_finished_by_recover() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        let commit = one_table("people", WriteMode::Append, vec![rows(&["a"], 1)]);
        // Stage only, as a run that crashed before applying anything.
        PreparedCommit::save_all_rows(&commit, &wh.staging_dir("p")).unwrap();
        let done = wh.recover("p").await.unwrap().expect("a pending commit");
        assert_eq!(done, "r1");
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 1);
        assert!(wh.recover("p").await.unwrap().is_none(), "staging cleared");
        // A staging folder without a manifest never committed: dropped.
        std::fs::create_dir_all(wh.staging_dir("p")).unwrap();
        assert!(wh.recover("p").await.unwrap().is_none());
        assert!(!wh.staging_dir("p").exists());
    }

    #[tokio::test]
    async fn staged_append_files_are_invisible_until_committed_and_committed_once() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        let ids: Vec<String> = (0..1000).map(|i| format!("id{i}")).collect();
        let commit = one_table(
            "people",
            WriteMode::Upsert,
            vec![rows(&ids[..600], 1), rows(&ids[600..], 2)],
        );
        // Staged as a crash right after the manifest would leave it.
        let staged = wh.stage(&commit, Vec::new(), &wh.staging_dir("p")).await.unwrap();
        let Prepared::Files { rows: n, adds, .. } = &staged.tables[0] else {
            panic!("an upsert into an empty table is staged as files")
        };
        assert_eq!((*n, adds.len()), (1000, 1));
        assert_eq!(
            count(&wh, "SELECT count(*) FROM people").await,
            0,
            "files not yet added"
        );
        assert_eq!(wh.recover("p").await.unwrap().as_deref(), Some("r1"));
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 1000);
        assert_eq!(count(&wh, "SELECT sum(n) FROM people").await, 600 + 2 * 400);
        // The same staging applied again (a crash after the commit, before
        // the staging was cleared) adds nothing.
        std::fs::create_dir_all(wh.staging_dir("p")).unwrap();
        staged.save_manifest(&wh.staging_dir("p")).unwrap();
        assert_eq!(wh.recover("p").await.unwrap().as_deref(), Some("r1"));
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 1000);
        // A table with data takes upserts as rows again.
        let again = StagedCommit {
            version: 2,
            tables: vec![StagedTable {
                table: "people".into(),
                mode: WriteMode::Upsert,
                batches: vec![rows(&["id1", "new"], 5)],
            }],
            ..commit
        };
        wh.commit(&again, |_| {}).await.unwrap();
        assert_eq!(count(&wh, "SELECT count(*) FROM people").await, 1001);
        assert_eq!(
            count(&wh, "SELECT sum(n) FROM people").await,
            600 + 2 * 400 - 1 + 5 + 5
        );
    }

    #[tokio::test]
    async fn a_big_append_is_split_into_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        let ids: Vec<String> = (0..ROWS_PER_FILE + 10).map(|i| format!("{i}")).collect();
        let adds = wh.write_files("people", &[rows(&ids, 1)]).await.unwrap();
        assert_eq!(adds.len(), 2);
        let commit = one_table("people", WriteMode::Append, vec![rows(&ids, 1)]);
        wh.commit(&commit, |_| {}).await.unwrap();
        assert_eq!(
            count(&wh, "SELECT count(*) FROM people").await,
            (ROWS_PER_FILE + 10) as i64
        );
    }

    /// Our data files carry the statistics delta-rs's writer gives the same
    /// rows: every type our tables use, nulls, an all-null column, lists
    /// (left out), sub-millisecond times (cut), more than 32 columns (the
    /// rest left out); and the rows read back as written.
    #[tokio::test]
    async fn data_files_carry_the_statistics_delta_rs_writes() {
        use arrow::array::{
            BooleanArray, Float64Array, ListBuilder, StringBuilder, TimestampMicrosecondArray,
        };
        use deltalake::writer::DeltaWriter as _;
        let mut fields = vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new(
                "at",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
            Field::new("none", DataType::Utf8, true),
        ];
        for i in 0..30 {
            fields.push(Field::new(format!("c{i:02}"), DataType::Utf8, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let spec = TableSpec {
            name: "wide",
            schema: schema.clone(),
            keys: &["id"],
        };
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec).await;
        let n = 5000;
        let mut tags = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "element",
            DataType::Utf8,
            true,
        )));
        for i in 0..n {
            if i % 3 != 0 {
                tags.values().append_value(format!("t{}", i % 7));
            }
            tags.append(i % 11 != 0);
        }
        let mut columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("id-{i:05}")),
            )),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 5 != 0).then(|| format!("Zoë {}", n - i))),
            )),
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 4 != 0).then_some(i as i64 * 7 - 9000)),
            )),
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 6 != 0).then_some(i as f64 / 3.0 - 40.5)),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| (i % 9 != 0).then_some(i % 2 == 0)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    (0..n)
                        .map(|i| (i % 8 != 0).then_some(1_750_000_000_000_000 + i as i64 * 1_234_567 + 789)),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(tags.finish()),
            Arc::new(StringArray::new_null(n)),
        ];
        for c in 0..30 {
            columns.push(Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("v{c}-{}", (i * 31) % 97)),
            )));
        }
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let table = wh.table("wide").await.unwrap();
        let mut theirs = RecordBatchWriter::for_table(&table)
            .unwrap()
            .with_writer_properties(writer_properties(std::slice::from_ref(&batch)));
        theirs.write(batch.clone()).await.unwrap();
        let theirs = theirs.flush().await.unwrap();
        let ours = wh
            .write_files("wide", std::slice::from_ref(&batch))
            .await
            .unwrap();
        assert_eq!((theirs.len(), ours.len()), (1, 1));
        let stats = |a: &Add| serde_json::from_str::<serde_json::Value>(a.stats.as_deref().unwrap()).unwrap();
        let (theirs, ours) = (stats(&theirs[0]), stats(&ours[0]));
        assert_eq!(ours, theirs);
        // What the comparison covers: 32 columns, the list left out.
        assert_eq!(ours["nullCount"].as_object().unwrap().len(), 31);
        assert_eq!(ours["maxValues"]["at"], theirs["maxValues"]["at"]);
        assert!(ours["minValues"].get("none").is_none() && ours["nullCount"]["none"] == n as i64);

        // Committed, the rows read back as written.
        let commit = one_table("wide", WriteMode::Append, vec![batch.clone()]);
        wh.commit(&commit, |_| {}).await.unwrap();
        let ctx = SessionContext::new();
        wh.register(&ctx, &["wide"]).await.unwrap();
        let back = ctx
            .sql("SELECT * FROM wide ORDER BY id")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
        assert_eq!(back.num_rows(), n);
        for (i, f) in batch.schema().fields().iter().enumerate() {
            let got = arrow::compute::cast(back.column_by_name(f.name()).unwrap(), f.data_type()).unwrap();
            assert_eq!(&got.to_data(), &batch.column(i).to_data(), "column {}", f.name());
        }
    }

    /// Columns encoded ahead give the same files as a plain commit: the
    /// same rows back, the same statistics; and rows other than the ones
    /// encoded ahead leave the chunks unused.
    #[tokio::test]
    async fn columns_encoded_ahead_give_the_same_files() {
        let ids: Vec<String> = (0..ROWS_PER_FILE + 10).map(|i| format!("{i:07}")).collect();
        let batch = rows(&ids, 4);
        let stats = |adds: &[Add]| -> Vec<serde_json::Value> {
            adds.iter()
                .map(|a| serde_json::from_str(a.stats.as_deref().unwrap()).unwrap())
                .collect()
        };
        let (plain_dir, ahead_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let plain = open(plain_dir.path(), spec()).await;
        let plain_stats = stats(
            &plain
                .write_files("people", std::slice::from_ref(&batch))
                .await
                .unwrap(),
        );

        let wh = open(ahead_dir.path(), spec()).await;
        let ahead = wh
            .encode_ahead("people", vec![("id".into(), batch.column(0).clone())])
            .await
            .unwrap();
        let table = wh.table("people").await.unwrap();
        let adds = wh
            .encode_files(&table, "people", std::slice::from_ref(&batch), Some(ahead))
            .await
            .unwrap();
        assert_eq!(adds.len(), 2);
        assert_eq!(stats(&adds), plain_stats);

        // Chunks for other rows are not used (the file would be wrong).
        let other = wh
            .encode_ahead("people", vec![("id".into(), batch.column(0).slice(0, 10))])
            .await
            .unwrap();
        let adds = wh
            .encode_files(&table, "people", std::slice::from_ref(&batch), Some(other))
            .await
            .unwrap();
        assert_eq!(stats(&adds), plain_stats);

        let commit = one_table("people", WriteMode::Append, vec![batch.clone()]);
        let ahead = wh
            .encode_ahead("people", vec![("id".into(), batch.column(0).clone())])
            .await
            .unwrap();
        wh.commit_with(&commit, vec![ahead], |_| {}).await.unwrap();
        assert_eq!(
            count(&wh, "SELECT count(DISTINCT id) FROM people WHERE n = 4").await,
            (ROWS_PER_FILE + 10) as i64
        );
        assert_eq!(
            count(&wh, "SELECT count(*) FROM people WHERE id = '0262153'").await,
            1
        );
    }

    /// Columns encoded ahead and dropped unused (a run that failed before
    /// its commit) leave no task for the background thread.
    #[tokio::test]
    async fn columns_encoded_ahead_and_dropped_unused_are_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let wh = open(dir.path(), spec()).await;
        let ids: Vec<String> = (0..ROWS_PER_FILE * 2).map(|i| format!("{i:07}")).collect();
        // No thread takes these tasks: two files of one column, both pending.
        let ahead = wh
            .ahead_tasks("people", vec![("id".into(), rows(&ids, 4).column(0).clone())])
            .await
            .unwrap();
        let work = ahead.work.clone().unwrap();
        assert_eq!(work.pending(), 2);
        drop(ahead);
        assert_eq!(work.pending(), 0);
    }
}
