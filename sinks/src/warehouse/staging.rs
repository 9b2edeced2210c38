//! The staging area: a run's changes written to disk before any table is
//! touched. A manifest written last (by rename) marks the staging complete;
//! without it, nothing was committed and the leftovers are discarded.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;

use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
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

#[derive(Serialize, Deserialize)]
struct Manifest {
    pipeline: String,
    run_id: String,
    app_id: String,
    version: i64,
    tables: Vec<(String, WriteMode)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WarehouseError + '_ {
    move |source| WarehouseError::Staging {
        path: path.to_path_buf(),
        source,
    }
}

impl StagedCommit {
    pub(super) fn save(&self, dir: &Path) -> Result<(), WarehouseError> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io(dir))?;
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        // One thread per table: a big run stages hundreds of MB.
        std::thread::scope(|scope| {
            let writers: Vec<_> = self
                .tables
                .iter()
                .map(|t| scope.spawn(move || Self::save_table(dir, t)))
                .collect();
            writers
                .into_iter()
                .try_for_each(|w| w.join().expect("staging writer does not panic"))
        })?;
        let manifest = Manifest {
            pipeline: self.pipeline.clone(),
            run_id: self.run_id.clone(),
            app_id: self.app_id.clone(),
            version: self.version,
            tables: self.tables.iter().map(|t| (t.table.clone(), t.mode)).collect(),
        };
        let tmp = dir.join("manifest.json.tmp");
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        fs::write(&tmp, json).map_err(io(&tmp))?;
        // fsync-free rename is enough here: a torn staging is simply re-run.
        fs::rename(&tmp, dir.join("manifest.json")).map_err(io(dir))?;
        Ok(())
    }

    fn save_table(dir: &Path, t: &StagedTable) -> Result<(), WarehouseError> {
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

    pub(super) fn load(
        dir: &Path,
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
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| WarehouseError::StagingFormat {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut tables = Vec::new();
        for (name, mode) in m.tables {
            if !specs.contains_key(name.as_str()) {
                return Err(WarehouseError::UnknownTable(name));
            }
            let p = dir.join(format!("{name}.arrow"));
            let mut batches = Vec::new();
            if fs::metadata(&p).map(|md| md.len() > 0).unwrap_or(false) {
                let reader = FileReader::try_new(File::open(&p).map_err(io(&p))?, None)?;
                for b in reader {
                    batches.push(b?);
                }
            }
            tables.push(StagedTable {
                table: name,
                mode,
                batches,
            });
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
