//! Sinks: the warehouse (Delta Lake tables) and the event outputs (file,
//! webhook, NATS JetStream).

pub mod events;
pub mod warehouse;

pub use events::{EventOutput, EventsConfig};
pub use warehouse::{
    EncodedAhead, StagedCommit, StagedTable, TableSpec, VacuumOptions, VacuumOutcome, Warehouse,
    WarehouseConfig, WarehouseError, WriteMode,
};

/// Did a write lose a race with another writer of the same Delta table?
/// Such a write changed nothing and may be retried from fresh state.
pub fn is_commit_conflict(e: &WarehouseError) -> bool {
    use deltalake::DeltaTableError as D;
    use deltalake::kernel::transaction::TransactionError as T;
    match e {
        WarehouseError::Delta { source, .. } => matches!(
            source,
            D::VersionAlreadyExists(_)
                | D::Transaction {
                    source: T::CommitConflict(_) | T::VersionAlreadyExists(_) | T::MaxCommitAttempts(_)
                }
        ),
        _ => false,
    }
}
