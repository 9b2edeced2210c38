//! Errors of the `files` source.
//!
//! Two types on purpose: [`FilesError`] is about the drop itself (configuration,
//! listing, moving files) and usually stops the run; [`FileParseError`] is about
//! one file that cannot be read at all, which the pipeline quarantines before
//! moving on to the next file.

/// A problem with the drop as a whole: its configuration or its storage.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The configuration is invalid; every problem found is listed.
    #[error("files source '{source_name}': invalid configuration:\n  - {}", problems.join("\n  - "))]
    InvalidConfig {
        source_name: String,
        problems: Vec<String>,
    },
    /// A storage operation (list, get, copy, put, delete) failed.
    ///
    /// `message` has already had storage option values scrubbed from it.
    #[error("files source '{source_name}': cannot {operation} {location}: {message}")]
    Store {
        source_name: String,
        operation: &'static str,
        location: String,
        message: String,
    },
}

/// A file that cannot be parsed at all (as opposed to single bad rows, which
/// are reported as [`crate::files::BadRow`] while the rest of the file loads).
///
/// Every message names the file and says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileParseError {
    #[error("{file}: the file is empty; expected a header row followed by data rows")]
    Empty { file: String },

    #[error("{file}: no header row: every row in the file is blank")]
    NoHeader { file: String },

    #[error(
        "{file}: looks like binary data, not delimited text (NUL bytes in the first KB); \
         if it is a spreadsheet, give it an .xlsx/.xls/.ods extension or set `format: excel`"
    )]
    Binary { file: String },

    #[error(
        "{file}: unknown file type '{extension}'; rename it to .csv/.tsv/.txt/.xlsx/.xls/.ods \
         or set `format: csv` or `format: excel`"
    )]
    UnknownFormat { file: String, extension: String },

    #[error(
        "{file}: unknown encoding '{label}'; use a WHATWG label such as utf-8, windows-1252, \
         iso-8859-1, utf-16le"
    )]
    UnknownEncoding { file: String, label: String },

    #[error("{file}: invalid csv options: {message}")]
    InvalidOptions { file: String, message: String },

    #[error("{file}: cannot read as CSV near line {line}: {message}")]
    Csv {
        file: String,
        line: u64,
        message: String,
    },

    #[error(
        "{file}: cannot open as a workbook ({message}); the file is corrupt, \
         password-protected, or not really an Excel/ODS file"
    )]
    CorruptWorkbook { file: String, message: String },

    #[error("{file}: the workbook has no sheets")]
    NoSheets { file: String },

    #[error(
        "{file}: sheet '{sheet}' not found; the workbook has: {}",
        quote_list(available)
    )]
    SheetNotFound {
        file: String,
        sheet: String,
        available: Vec<String>,
    },

    #[error("{file}: cannot read sheet '{sheet}': {message}")]
    Sheet {
        file: String,
        sheet: String,
        message: String,
    },

    #[error("{file}: sheet '{sheet}' is empty")]
    EmptySheet { file: String, sheet: String },

    #[error(
        "{file}: header_row {header_row} is beyond the end of sheet '{sheet}' \
         (its last non-empty row is {last_row}); fix `excel.header_row`"
    )]
    HeaderRowBeyondSheet {
        file: String,
        sheet: String,
        header_row: u32,
        last_row: u32,
    },
}

fn quote_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_config_lists_every_problem() {
        let e = FilesError::InvalidConfig {
            source_name: "crm".into(),
            problems: vec!["bad glob".into(), "header_row must be >= 1".into()],
        };
        let msg = e.to_string();
        assert!(msg.contains("'crm'"), "{msg}");
        assert!(msg.contains("- bad glob"), "{msg}");
        assert!(msg.contains("- header_row must be >= 1"), "{msg}");
    }

    #[test]
    fn sheet_not_found_lists_sheets() {
        let e = FileParseError::SheetNotFound {
            file: "/in/a.xlsx".into(),
            sheet: "Leads".into(),
            available: vec!["Sheet1".into(), "Data".into()],
        };
        assert_eq!(
            e.to_string(),
            "/in/a.xlsx: sheet 'Leads' not found; the workbook has: 'Sheet1', 'Data'"
        );
    }
}
