//! The `files` source: a folder (local or object storage) where CRM exports
//! are dropped as CSV/TSV or spreadsheets (xlsx, xlsm, xlsb, xls, ods).
//!
//! Flow, driven by the pipeline: [`FileDrop::new`] validates the config,
//! [`FileDrop::list`] finds files, [`FileDrop::fetch`] reads and hashes one,
//! [`parse_file`] (sync, CPU bound: run it in `spawn_blocking`) turns it into
//! Arrow batches of text columns, then [`FileDrop::archive`] or
//! [`FileDrop::quarantine`] moves it away.

mod batch;
mod config;
mod csv;
mod encoding;
mod error;
mod excel;
mod source;

pub(crate) use batch::clean_headers;
pub use batch::{SOURCE_COLUMN, SOURCE_FILE_COLUMN, SOURCE_ROW_COLUMN};
pub use config::{
    CsvOptions, DEFAULT_BATCH_SIZE, DEFAULT_PATTERN, DEFAULT_QUARANTINE, ExcelOptions, FileFormat,
    FilesSourceConfig,
};
pub use error::{FileParseError, FilesError};
pub use source::{
    BadRow, CSV_EXTENSIONS, EXCEL_EXTENSIONS, FetchedFile, FileDrop, FileEntry, ParsedFile, content_hash,
    parse_file,
};
