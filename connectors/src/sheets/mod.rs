//! The `google_sheets` source: one tab or A1 range of a Google Sheet, read
//! with google-sheets4 as the user sees it (formatted values), with a
//! service-account key (yup-oauth2, JWT bearer grant).
//!
//! Columns are found by header name each run, so moved columns keep
//! working. Rows are identified by a configured id column, else by a
//! fingerprint of their values; the state saved with each commit holds a
//! content hash per row identity, so only new and edited rows go
//! downstream.

mod config;
mod source;

pub use config::{
    DEFAULT_ALIASES, DEFAULT_BASE_URL, DEFAULT_TOKEN_URI, ID_COLUMN, SCOPE, SheetsConfig, SheetsCredentials,
};
pub use source::{SheetHeader, SheetsSource};
