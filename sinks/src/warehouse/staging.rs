//! The staging area: a run's changes written to disk before any table is
//! touched. A manifest written last (by rename) marks the staging complete;
//! without it, nothing was committed and the leftovers are discarded.
//!
//! Appends are staged as what they will be: Parquet data files written
//! straight into the table's folder, invisible until a Delta commit adds
//! them, with their `Add` actions in the manifest. Upserts need the rows
//! to match against the table, so they are staged as Arrow IPC files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use serde::{Deserialize, Serialize};

use super::delta::{TableSpec, WarehouseError, WriteMode};

/// One table's changes in a commit.
#[derive(Debug, Clone)]
pub struct StagedTable {
    pub table: String,
    pub mode: WriteMode,
    pub batches: Vec<RecordBatch>,
}

/// All of a run's changes, applied in order with one (app id, version).
#[derive(Debug, Clone)]
pub struct StagedCommit {
    pub pipeline: String,
    pub run_id: String,
    pub app_id: String,
    pub version: i64,
    pub tables: Vec<StagedTable>,
}

/// A table's changes as the commit applies them.
#[derive(Debug, Clone)]
pub(super) enum Prepared {
    /// Rows to upsert (or an empty append that only records the txn).
    Rows(StagedTable),
    /// Parquet files already in the table's folder, to be added.
    Files {
        table: String,
        rows: usize,
        adds: Vec<Add>,
    },
}

impl Prepared {
    pub(super) fn table(&self) -> &str {
        match self {
            Prepared::Rows(t) => &t.table,
            Prepared::Files { table, .. } => table,
        }
    }

    pub(super) fn rows(&self) -> usize {
        match self {
            Prepared::Rows(t) => t.batches.iter().map(RecordBatch::num_rows).sum(),
            Prepared::Files { rows, .. } => *rows,
        }
    }
}

/// A commit read back from (or about to be written to) the staging area.
#[derive(Debug, Clone)]
pub(super) struct PreparedCommit {
    pub pipeline: String,
    pub run_id: String,
    pub app_id: String,
    pub version: i64,
    pub tables: Vec<Prepared>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    pipeline: String,
    run_id: String,
    app_id: String,
    version: i64,
    tables: Vec<ManifestTable>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ManifestTable {
    /// Rows in `<table>.arrow`, or, with `files`, Parquet files to add.
    Table {
        table: String,
        mode: WriteMode,
        #[serde(default)]
        rows: usize,
        #[serde(default)]
        files: Option<Vec<Add>>,
    },
    /// A manifest from before file staging: `[table, mode]`, rows in IPC.
    Legacy(String, WriteMode),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WarehouseError + '_ {
    move |source| WarehouseError::Staging {
        path: path.to_path_buf(),
        source,
    }
}

impl PreparedCommit {
    /// Starts an empty staging folder (any earlier, incomplete one is
    /// dropped: it never committed).
    pub(super) fn reset(dir: &Path) -> Result<(), WarehouseError> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        fs::create_dir_all(dir).map_err(io(dir))
    }

    /// Writes one table's rows as `<table>.arrow`.
    pub(super) fn save_rows(dir: &Path, t: &StagedTable) -> Result<(), WarehouseError> {
        let path = dir.join(format!("{}.arrow", t.table));
        let file = File::create(&path).map_err(io(&path))?;
        if let Some(schema) = t.batches.first().map(|b| b.schema()) {
            let mut w = FileWriter::try_new(BufWriter::new(file), &schema)?;
            for b in &t.batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Ok(())
    }

    /// Writes the manifest, which makes the staging complete. Every
    /// table's rows or files must already be on disk.
    pub(super) fn save_manifest(&self, dir: &Path) -> Result<(), WarehouseError> {
        let manifest = Manifest {
            pipeline: self.pipeline.clone(),
            run_id: self.run_id.clone(),
            app_id: self.app_id.clone(),
            version: self.version,
            tables: self
                .tables
                .iter()
                .map(|p| match p {
                    Prepared::Rows(t) => ManifestTable::Table {
                        table: t.table.clone(),
                        mode: t.mode,
                        rows: p.rows(),
                        files: None,
                    },
                    Prepared::Files { table, rows, adds } => ManifestTable::Table {
                        table: table.clone(),
                        mode: WriteMode::Append,
                        rows: *rows,
                        files: Some(adds.clone()),
                    },
                })
                .collect(),
        };
        let tmp = dir.join("manifest.json.tmp");
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        fs::write(&tmp, json).map_err(io(&tmp))?;
        // fsync-free rename is enough here: a torn staging is simply re-run.
        fs::rename(&tmp, dir.join("manifest.json")).map_err(io(dir))?;
        Ok(())
    }

    /// Stages a commit whose tables are all rows (tests, and the shape a
    /// caller hands over before any file is written).
    #[cfg(test)]
    pub(super) fn save_all_rows(commit: &StagedCommit, dir: &Path) -> Result<(), WarehouseError> {
        Self::reset(dir)?;
        for t in &commit.tables {
            Self::save_rows(dir, t)?;
        }
        PreparedCommit {
            pipeline: commit.pipeline.clone(),
            run_id: commit.run_id.clone(),
            app_id: commit.app_id.clone(),
            version: commit.version,
            tables: commit.tables.iter().cloned().map(Prepared::Rows).collect(),
        }
        .save_manifest(dir)
    }

    /// Reads a complete staging back; `None` (and the folder dropped) when
    /// there is none or it never completed.
    pub(super) fn load(
        dir: &Path,
        table_dir: &dyn Fn(&str) -> std::path::PathBuf,
        specs: &HashMap<&'static str, TableSpec>,
    ) -> Result<Option<Self>, WarehouseError> {
        let path = dir.join("manifest.json");
        if !path.exists() {
            if dir.exists() {
                // Staging never completed: nothing was applied, start over.
                fs::remove_dir_all(dir).map_err(io(dir))?;
            }
            return Ok(None);
        }
        let text = fs::read(&path).map_err(io(&path))?;
        let bad = |reason: String| WarehouseError::StagingFormat {
            path: path.clone(),
            reason,
        };
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        let mut tables = Vec::new();
        for entry in m.tables {
            let (name, mode, rows, files) = match entry {
                ManifestTable::Table {
                    table,
                    mode,
                    rows,
                    files,
                } => (table, mode, rows, files),
                ManifestTable::Legacy(table, mode) => (table, mode, 0, None),
            };
            if !specs.contains_key(name.as_str()) {
                return Err(WarehouseError::UnknownTable(name));
            }
            if let Some(adds) = files {
                // The files were written before the manifest; one missing
                // means the table folder was tampered with since.
                for a in &adds {
                    let f = table_dir(&name).join(&a.path);
                    if !f.exists() {
                        return Err(bad(format!(
                            "staged data file {} of table `{name}` is missing; remove the staging folder to \
                             drop the interrupted run (its sources are read again)",
                            f.display()
                        )));
                    }
                }
                tables.push(Prepared::Files {
                    table: name,
                    rows,
                    adds,
                });
                continue;
            }
            let p = dir.join(format!("{name}.arrow"));
            let mut batches = Vec::new();
            if fs::metadata(&p).map(|md| md.len() > 0).unwrap_or(false) {
                let reader = FileReader::try_new(File::open(&p).map_err(io(&p))?, None)?;
                for b in reader {
                    batches.push(b?);
                }
            }
            tables.push(Prepared::Rows(StagedTable {
                table: name,
                mode,
                batches,
            }));
        }
        Ok(Some(Self {
            pipeline: m.pipeline,
            run_id: m.run_id,
            app_id: m.app_id,
            version: m.version,
            tables,
        }))
    }

    pub(super) fn clear(dir: &Path) -> Result<(), WarehouseError> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        Ok(())
    }
}
