//! The warehouse: one folder of Delta tables. Each run's changes are first
//! staged, then applied table by table as MERGE/append commits that carry a
//! Delta transaction id (`txn`: app id + version), so a commit interrupted
//! at any point is finished by the next run and nothing is applied twice.

mod config;
mod data_files;
mod delta;
mod rewrite;
mod staging;

pub use config::WarehouseConfig;
pub use delta::{
    EncodedAhead, TableSpec, VacuumOptions, VacuumOutcome, Warehouse, WarehouseError, WriteMode,
};
pub use rewrite::RewriteError;
pub use staging::{StagedCommit, StagedTable};
