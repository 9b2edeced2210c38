//! Configuration of the `files` source (a file drop).
//!
//! The `///` docs here become the JSON Schema descriptions users see in their
//! editor, so they are written for the person filling in the YAML.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default glob: everything, then only files with a known extension are read.
pub const DEFAULT_PATTERN: &str = "**/*";
/// Default quarantine folder, relative to `path`.
pub const DEFAULT_QUARANTINE: &str = "_quarantine";
/// Default rows per Arrow batch.
pub const DEFAULT_BATCH_SIZE: usize = 65_536;

/// A folder (local or object storage) where CRM exports are dropped as CSV or
/// spreadsheet files.
#[derive(Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesSourceConfig {
    /// Local folder (relative or absolute path, or file:// URL) or object-store URL:
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix
    /// (also abfs://, https://account.blob.core.windows.net/container/prefix).
    pub path: String,

    /// Glob matched (case-insensitively) against the path relative to `path`, e.g.
    /// "*.csv" (top level only) or "**/*.{csv,xlsx}" (any depth). Default: "**/*";
    /// only files with a known extension are read: csv, tsv, txt, xlsx, xlsm, xlsb,
    /// xls, ods.
    #[serde(default = "default_pattern")]
    pub pattern: String,

    /// Force a format instead of using the file extension: csv | excel.
    #[serde(default)]
    pub format: Option<FileFormat>,

    /// Options for delimited text files.
    #[serde(default)]
    pub csv: CsvOptions,

    /// Options for spreadsheets (xlsx, xlsm, xlsb, xls, ods).
    #[serde(default)]
    pub excel: ExcelOptions,

    /// Where processed files are moved: a folder relative to `path`, an absolute
    /// path, or a URL. Not set: files stay where they are.
    #[serde(default)]
    pub archive: Option<String>,

    /// Where files that cannot be parsed at all are moved, with a
    /// `<name>.reason.txt` beside them. Default "_quarantine" (relative to `path`);
    /// null: such files stay where they are.
    #[serde(default = "default_quarantine")]
    pub quarantine: Option<String>,

    /// Object-store options (credentials, region, endpoint ...), e.g.
    /// `aws_region`, `aws_access_key_id`, `google_service_account`,
    /// `azure_storage_account_key`. Values are secrets: they are never logged.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,

    /// Rows per Arrow batch (default 65536).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

/// How to read a file, when its extension should not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Delimited text (comma, semicolon, tab, pipe).
    Csv,
    /// A spreadsheet: xlsx, xlsm, xlsb, xls or ods (detected from the content).
    Excel,
}

/// Options for delimited text files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// Field delimiter, one ASCII character. Not set: detected among , ; tab |
    /// (.tsv files default to tab).
    #[serde(default)]
    pub delimiter: Option<char>,

    /// Text encoding, as a WHATWG label: "utf-8", "windows-1252", "iso-8859-1",
    /// "utf-16le" ... Not set: detected (BOM, then UTF-8, else Windows-1252).
    #[serde(default)]
    pub encoding: Option<String>,

    /// Quote character, one ASCII character (default `"`).
    #[serde(default = "default_quote")]
    pub quote: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: None,
            encoding: None,
            quote: default_quote(),
        }
    }
}

/// Options for spreadsheets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExcelOptions {
    /// Sheet to read, by name. Not set: the first sheet.
    #[serde(default)]
    pub sheet: Option<String>,

    /// 1-based row number of the header row (default 1). Blank rows at that
    /// position are skipped: the first non-blank row from there is the header.
    #[serde(default = "default_header_row")]
    pub header_row: u32,
}

impl Default for ExcelOptions {
    fn default() -> Self {
        Self {
            sheet: None,
            header_row: default_header_row(),
        }
    }
}

impl FilesSourceConfig {
    /// A config with every option at its default, reading `path`.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            pattern: default_pattern(),
            format: None,
            csv: CsvOptions::default(),
            excel: ExcelOptions::default(),
            archive: None,
            quarantine: default_quarantine(),
            storage_options: BTreeMap::new(),
            batch_size: default_batch_size(),
        }
    }
}

// Manual Debug: storage_options values are credentials; show the keys only.
impl fmt::Debug for FilesSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted: BTreeMap<&str, &str> = self
            .storage_options
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("FilesSourceConfig")
            .field("path", &self.path)
            .field("pattern", &self.pattern)
            .field("format", &self.format)
            .field("csv", &self.csv)
            .field("excel", &self.excel)
            .field("archive", &self.archive)
            .field("quarantine", &self.quarantine)
            .field("storage_options", &redacted)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

fn default_pattern() -> String {
    DEFAULT_PATTERN.to_string()
}

fn default_quarantine() -> Option<String> {
    Some(DEFAULT_QUARANTINE.to_string())
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}

fn default_quote() -> char {
    '"'
}

fn default_header_row() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_minimal_json() {
        let c: FilesSourceConfig = serde_json::from_str(r#"{"path": "./in"}"#).unwrap();
        assert_eq!(c.pattern, "**/*");
        assert_eq!(c.quarantine.as_deref(), Some("_quarantine"));
        assert_eq!(c.batch_size, 65_536);
        assert_eq!(c.csv.quote, '"');
        assert_eq!(c.excel.header_row, 1);
        assert!(c.archive.is_none() && c.format.is_none());
    }

    #[test]
    fn quarantine_can_be_disabled_with_null() {
        let c: FilesSourceConfig = serde_json::from_str(r#"{"path": "./in", "quarantine": null}"#).unwrap();
        assert!(c.quarantine.is_none());
    }

    #[test]
    fn unknown_fields_rejected_at_every_level() {
        assert!(serde_json::from_str::<FilesSourceConfig>(r#"{"path":"x","patern":"*"}"#).is_err());
        assert!(serde_json::from_str::<FilesSourceConfig>(r#"{"path":"x","csv":{"delim":";"}}"#).is_err());
        assert!(
            serde_json::from_str::<FilesSourceConfig>(r#"{"path":"x","excel":{"sheet_name":"a"}}"#).is_err()
        );
    }

    #[test]
    fn format_and_tab_delimiter_parse() {
        let c: FilesSourceConfig = serde_json::from_str(
            r#"{"path":"x","format":"excel","csv":{"delimiter":"\t","encoding":"utf-16le"}}"#,
        )
        .unwrap();
        assert_eq!(c.format, Some(FileFormat::Excel));
        assert_eq!(c.csv.delimiter, Some('\t'));
    }

    #[test]
    fn debug_redacts_storage_option_values() {
        let mut c = FilesSourceConfig::new("s3://b/p");
        c.storage_options
            .insert("aws_secret_access_key".into(), "SUPERSECRET".into());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("SUPERSECRET"), "{dbg}");
        assert!(dbg.contains("aws_secret_access_key"), "{dbg}");
    }

    #[test]
    fn json_schema_carries_docs() {
        let schema = schemars::schema_for!(FilesSourceConfig);
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("Where processed files are moved"), "{text}");
        assert!(text.contains("WHATWG label"), "{text}");
    }
}
