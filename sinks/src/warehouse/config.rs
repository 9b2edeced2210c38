//! Where the warehouse lives.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The warehouse: a folder of Delta tables (`masters`, `records`, ...),
/// readable by Spark, Trino, DuckDB or Python `deltalake`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// Local folder (relative to the config file, or absolute) or `file://` URL.
    /// Object-store warehouses (s3://, gs://, az://) are not built yet.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// How often runs vacuum the warehouse: after a run's commit, once this
    /// long has passed since the last vacuum, the data files no table
    /// version within the tables' retention reads (what upserts rewrote,
    /// what crashed runs wrote and never committed) are deleted, as
    /// `leadflow vacuum` does, e.g. "24h"; "0s" turns it off. Default 24h.
    /// Safe beside other runs: files are kept for each table's
    /// `delta.deletedFileRetentionDuration` (7 days unless set).
    #[serde(default = "default_vacuum_every", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub vacuum_every: Duration,
}

fn default_uri() -> String {
    "./warehouse".into()
}

fn default_vacuum_every() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl WarehouseConfig {
    /// Problems as (key under `warehouse`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.vacuum_every.is_zero() && self.vacuum_every < Duration::from_secs(60) {
            out.push(("vacuum_every", "must be 0s (off) or at least 1m".into()));
        }
        out
    }
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        Self {
            uri: default_uri(),
            vacuum_every: default_vacuum_every(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs vacuum daily by default; it can be turned off, but not made so
    /// frequent that every run lists the whole warehouse.
    #[test]
    fn vacuum_every_is_off_or_at_least_a_minute() {
        assert_eq!(
            WarehouseConfig::default().vacuum_every,
            Duration::from_secs(24 * 3600)
        );
        let with = |every: u64| {
            WarehouseConfig {
                vacuum_every: Duration::from_secs(every),
                ..Default::default()
            }
            .problems()
        };
        assert!(with(0).is_empty());
        assert!(with(6 * 3600).is_empty());
        let p = with(10);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "vacuum_every");
    }
}
