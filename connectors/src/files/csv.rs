//! Delimited text (CSV, TSV, semicolon, pipe) into Arrow.
//!
//! The whole file is decoded once (borrowed when already UTF-8), then split
//! by the `csv` crate into reused `ByteRecord`s whose fields go straight into
//! Arrow `StringBuilder`s: no per-row allocation, no serde.

use ::csv::{ByteRecord, ReaderBuilder};

use super::batch::{BatchBuilder, clean_headers, is_blank};
use super::config::CsvOptions;
use super::encoding::{decode, detect_delimiter, encoding_for_label, looks_binary};
use super::error::FileParseError;
use super::source::{BadRow, ParsedFile};

/// Parses delimited text. `tab_default`: the delimiter to assume is tab when
/// none is configured (`.tsv` files).
pub fn parse_csv(
    source_name: &str,
    file: &str,
    bytes: &[u8],
    opts: &CsvOptions,
    tab_default: bool,
    batch_size: usize,
) -> Result<ParsedFile, FileParseError> {
    let err_file = || file.to_string();
    if bytes.is_empty() {
        return Err(FileParseError::Empty { file: err_file() });
    }
    let explicit = match opts.encoding.as_deref() {
        Some(label) => Some(
            encoding_for_label(label).ok_or_else(|| FileParseError::UnknownEncoding {
                file: err_file(),
                label: label.to_string(),
            })?,
        ),
        None => None,
    };
    let explicit_utf16 = explicit.is_some_and(|e| e.name().starts_with("UTF-16"));
    if !explicit_utf16 && looks_binary(bytes) {
        return Err(FileParseError::Binary { file: err_file() });
    }
    let quote = ascii_option(opts.quote, "quote", file)?;

    let decoded = decode(bytes, explicit);
    if decoded.had_errors {
        // Not fatal: the bad bytes become U+FFFD and show up in the data.
        tracing::warn!(
            file,
            encoding = decoded.encoding.name(),
            "invalid byte sequences for the encoding were replaced; set csv.encoding if it is wrong"
        );
    }
    let text: &str = &decoded.text;
    if text.trim().is_empty() {
        return Err(FileParseError::Empty { file: err_file() });
    }

    let delimiter = match opts.delimiter {
        Some(d) => ascii_option(d, "delimiter", file)?,
        None if tab_default => b'\t',
        None => detect_delimiter(text, quote).unwrap_or(b','),
    };
    if delimiter == quote {
        return Err(FileParseError::InvalidOptions {
            file: err_file(),
            message: "delimiter and quote are the same character".into(),
        });
    }

    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .quote(quote)
        .from_reader(text.as_bytes());
    let mut record = ByteRecord::new();
    let read_err = |e: ::csv::Error, line: u64| FileParseError::Csv {
        file: file.to_string(),
        line,
        message: e.to_string(),
    };

    // Header: the first non-blank record.
    let headers = loop {
        let more = reader.read_byte_record(&mut record).map_err(|e| read_err(e, 1))?;
        if !more {
            return Err(FileParseError::NoHeader { file: err_file() });
        }
        if !is_blank(record.iter()) {
            let raw: Vec<String> = record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            break clean_headers(&raw);
        }
    };
    let width = headers.len();

    let mut out = BatchBuilder::new(&headers, source_name, file, batch_size);
    let mut rows = 0u64;
    let mut bad_rows = Vec::new();
    let src = text.as_bytes();
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| read_err(e, reader.position().line()))?;
        if !more {
            break;
        }
        if is_blank(record.iter()) {
            continue;
        }
        rows += 1;
        let line = start_line(&record, src);
        let n = record.len();
        if n != width {
            // "a,b,c,," for 3 headers is an editor's trailing separators, not data.
            let tolerated = n > width && is_blank(record.iter().skip(width));
            if !tolerated {
                bad_rows.push(BadRow {
                    row: line,
                    values: record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect(),
                    reason: format!("ragged row: {n} fields, header has {width}"),
                });
                continue;
            }
        }
        for (col, field) in record.iter().take(width).enumerate() {
            // Fields of UTF-8 text split at ASCII bytes are UTF-8; the batch
            // builder checks each column once per batch.
            out.push_bytes(col, field);
        }
        out.finish_row(line);
    }

    Ok(ParsedFile {
        file: file.to_string(),
        format: "csv",
        encoding: Some(decoded.encoding.name().to_string()),
        delimiter: Some(char::from(delimiter)),
        sheet: None,
        headers,
        batches: out.finish(),
        rows,
        bad_rows,
    })
}

/// 1-based line on which `record` starts, as a text editor shows it.
///
/// The csv crate positions a record right after the previous one, before
/// any blank lines it skipped, so count those here.
fn start_line(record: &ByteRecord, src: &[u8]) -> u64 {
    let Some(pos) = record.position() else {
        return 0;
    };
    let mut line = pos.line();
    let start = usize::try_from(pos.byte()).unwrap_or(usize::MAX);
    for &b in src.get(start..).unwrap_or_default() {
        match b {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
    }
    line
}

fn ascii_option(c: char, what: &str, file: &str) -> Result<u8, FileParseError> {
    match u8::try_from(c) {
        Ok(b) if b.is_ascii() && b != b'\n' && b != b'\r' => Ok(b),
        _ => Err(FileParseError::InvalidOptions {
            file: file.to_string(),
            message: format!("{what} must be a single ASCII character other than a line break, got {c:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt64Type;

    fn parse(bytes: &[u8]) -> ParsedFile {
        parse_csv("crm", "/in/f.csv", bytes, &CsvOptions::default(), false, 1000).unwrap()
    }

    /// Column `name` of all batches as strings.
    fn col(p: &ParsedFile, name: &str) -> Vec<String> {
        p.batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap().as_string::<i32>().clone();
                (0..a.len()).map(|i| a.value(i).to_string()).collect::<Vec<_>>()
            })
            .collect()
    }

    fn row_numbers(p: &ParsedFile) -> Vec<u64> {
        p.batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("_source_row")
                    .unwrap()
                    .as_primitive::<UInt64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn utf8_bom_stripped_from_first_header() {
        let p = parse(b"\xEF\xBB\xBFemail,name\na@x.io,Ann\n");
        assert_eq!(p.headers, ["email", "name"]);
        assert_eq!(p.encoding.as_deref(), Some("UTF-8"));
        assert_eq!(col(&p, "email"), ["a@x.io"]);
    }

    #[test]
    fn utf16le_with_bom_tab_separated() {
        // What Excel's "Unicode Text" export produces.
        let text = "name\tcity\r\nZoë\tMünchen\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let p = parse(&bytes);
        assert_eq!(p.encoding.as_deref(), Some("UTF-16LE"));
        assert_eq!(p.delimiter, Some('\t'));
        assert_eq!(col(&p, "name"), ["Zoë"]);
        assert_eq!(col(&p, "city"), ["München"]);
    }

    #[test]
    fn windows_1252_decoded() {
        let p = parse(b"name,city\nZo\xEB,K\xF6ln\n");
        assert_eq!(p.encoding.as_deref(), Some("windows-1252"));
        assert_eq!(col(&p, "name"), ["Zoë"]);
        assert_eq!(col(&p, "city"), ["Köln"]);
    }

    #[test]
    fn semicolon_and_tab_detected() {
        let p = parse(b"name;amount\nAnn;1,5\nBob;2,25\n");
        assert_eq!(p.delimiter, Some(';'));
        assert_eq!(col(&p, "amount"), ["1,5", "2,25"]);

        let p = parse(b"name\temail\nAnn\ta@x.io\n");
        assert_eq!(p.delimiter, Some('\t'));
        assert_eq!(col(&p, "email"), ["a@x.io"]);
    }

    #[test]
    fn tsv_defaults_to_tab_and_configured_delimiter_wins() {
        // Looks comma-separated, but the .tsv default says tab: one column.
        let p = parse_csv("crm", "f.tsv", b"a,b\n1,2\n", &CsvOptions::default(), true, 10).unwrap();
        assert_eq!(p.headers, ["a,b"]);
        let opts = CsvOptions {
            delimiter: Some('|'),
            ..CsvOptions::default()
        };
        let p = parse_csv("crm", "f.csv", b"a|b\n1|2\n", &opts, false, 10).unwrap();
        assert_eq!(p.headers, ["a", "b"]);
    }

    #[test]
    fn quoted_multiline_field_and_row_numbers() {
        let data = b"name,note\nAnn,\"line one\nline two, with comma\"\nBob,\"say \"\"hi\"\"\"\n";
        let p = parse(data);
        assert_eq!(col(&p, "note"), ["line one\nline two, with comma", "say \"hi\""]);
        // Bob starts on line 4 because Ann's note spans lines 2-3.
        assert_eq!(row_numbers(&p), [2, 4]);
        assert_eq!(p.rows, 2);
    }

    #[test]
    fn blank_lines_skipped_and_numbered_as_in_the_file() {
        let p = parse(b"\n\nname,email\r\n\r\nAnn,a@x.io\r\n,\r\n  ,  \r\nBob,b@x.io\r\n\r\n");
        assert_eq!(col(&p, "name"), ["Ann", "Bob"]);
        // Header on line 3; Ann line 5; "," and "  ,  " are blank rows 6-7.
        assert_eq!(row_numbers(&p), [5, 8]);
        assert_eq!(p.rows, 2);
        assert!(p.bad_rows.is_empty());
    }

    #[test]
    fn ragged_row_becomes_bad_row_others_land() {
        let p = parse(b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12,,\n13,14,15\n");
        assert_eq!(col(&p, "a"), ["1", "10", "13"]);
        assert_eq!(row_numbers(&p), [2, 5, 6]);
        assert_eq!(p.rows, 5);
        assert_eq!(p.bad_rows.len(), 2);
        assert_eq!(p.bad_rows[0].row, 3);
        assert_eq!(p.bad_rows[0].values, ["4", "5"]);
        assert_eq!(p.bad_rows[0].reason, "ragged row: 2 fields, header has 3");
        assert_eq!(p.bad_rows[1].row, 4);
        assert_eq!(p.bad_rows[1].reason, "ragged row: 4 fields, header has 3");
    }

    #[test]
    fn duplicate_and_blank_headers() {
        let p = parse(b"Email,,email, Name \nx,y,z,w\n");
        assert_eq!(p.headers, ["Email", "column_2", "email_2", "Name"]);
        assert_eq!(col(&p, "email_2"), ["z"]);
        let schema = p.batches[0].schema();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "Email",
                "column_2",
                "email_2",
                "Name",
                "_source",
                "_source_file",
                "_source_row"
            ]
        );
        assert_eq!(col(&p, "_source"), ["crm"]);
        assert_eq!(col(&p, "_source_file"), ["/in/f.csv"]);
    }

    #[test]
    fn empty_values_stay_empty_strings() {
        let p = parse(b"a,b\n,x\n");
        assert_eq!(col(&p, "a"), [""]);
        assert_eq!(p.batches[0].column(0).null_count(), 0);
    }

    #[test]
    fn header_only_file_has_headers_and_no_rows() {
        let p = parse(b"a,b\n");
        assert_eq!(p.headers, ["a", "b"]);
        assert_eq!(p.rows, 0);
        assert!(p.batches.is_empty());
    }

    #[test]
    fn unparseable_files_are_errors_naming_the_file() {
        let opts = CsvOptions::default();
        let err = |b: &[u8]| parse_csv("crm", "/in/bad.csv", b, &opts, false, 10).unwrap_err();
        assert!(matches!(err(b""), FileParseError::Empty { .. }));
        assert!(matches!(err(b"\xEF\xBB\xBF  \n"), FileParseError::Empty { .. }));
        assert!(matches!(err(b",,\n ,\n"), FileParseError::NoHeader { .. }));
        let e = err(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00!\x00binary");
        assert!(matches!(e, FileParseError::Binary { .. }));
        assert!(e.to_string().starts_with("/in/bad.csv: "), "{e}");

        let bad_enc = CsvOptions {
            encoding: Some("klingon".into()),
            ..CsvOptions::default()
        };
        let e = parse_csv("crm", "/in/bad.csv", b"a\n1\n", &bad_enc, false, 10).unwrap_err();
        assert!(e.to_string().contains("klingon"), "{e}");
    }

    #[test]
    fn many_rows_split_into_batches() {
        let mut data = String::from("id,email\n");
        for i in 0..2500 {
            data.push_str(&format!("{i},u{i}@x.io\n"));
        }
        let p = parse_csv(
            "crm",
            "f.csv",
            data.as_bytes(),
            &CsvOptions::default(),
            false,
            1000,
        )
        .unwrap();
        assert_eq!(p.batches.len(), 3);
        assert_eq!(p.rows, 2500);
        let rows = row_numbers(&p);
        assert_eq!(rows.first(), Some(&2));
        assert_eq!(rows.last(), Some(&2501));
    }
}
