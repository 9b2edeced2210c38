//! Sinks: the warehouse (Delta Lake tables) and, later, event outputs.

pub mod warehouse;

pub use warehouse::{
    StagedCommit, StagedTable, TableSpec, Warehouse, WarehouseConfig, WarehouseError, WriteMode,
};
