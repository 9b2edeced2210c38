//! Where the warehouse lives.

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
}

fn default_uri() -> String {
    "./warehouse".into()
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        Self { uri: default_uri() }
    }
}
