//! Delimited text (CSV, TSV, semicolon, pipe) into Arrow.
//!
//! The whole file is decoded once (borrowed when already UTF-8), then split
//! by the `csv` crate into reused `ByteRecord`s whose fields go straight into
//! Arrow `StringBuilder`s: no per-row allocation, no serde.

use ::csv::{ByteRecord, ReaderBuilder};
use arrow::record_batch::RecordBatch;

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
    let src = text.as_bytes();
    let body_start = usize::try_from(reader.position().byte()).unwrap_or(src.len());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let spans = split_body(src, body_start, quote, PARALLEL_MIN_BYTES, cores);
    let dialect = Dialect { delimiter, quote };
    let (body, _) = parse_body(
        src,
        body_start,
        spans,
        dialect,
        &headers,
        source_name,
        file,
        batch_size,
    )?;
    let Body {
        batches,
        rows,
        bad_rows,
    } = body;

    Ok(ParsedFile {
        file: file.to_string(),
        format: "csv",
        encoding: Some(decoded.encoding.name().to_string()),
        delimiter: Some(char::from(delimiter)),
        sheet: None,
        headers,
        batches,
        rows,
        bad_rows,
    })
}

/// Bodies smaller than this are parsed on one thread.
const PARALLEL_MIN_BYTES: usize = 4 << 20;

#[derive(Clone, Copy)]
struct Dialect {
    delimiter: u8,
    quote: u8,
}

/// Every row of the body: the spans in parallel when they are a valid
/// split, else the body in one piece. The flag says which happened.
#[allow(clippy::too_many_arguments)]
fn parse_body(
    src: &[u8],
    body_start: usize,
    spans: Vec<(usize, usize)>,
    dialect: Dialect,
    headers: &[String],
    source_name: &str,
    file: &str,
    batch_size: usize,
) -> Result<(Body, bool), FileParseError> {
    let parse = |&(start, end): &(usize, usize)| {
        parse_span(src, start, end, dialect, headers, source_name, file, batch_size)
    };
    let parts: Vec<SpanOutput> = if spans.len() == 1 {
        vec![parse(&spans[0])?]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = spans
                .iter()
                .map(|span| scope.spawn(move || parse(span)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("CSV span parser panicked"))
                .collect::<Result<Vec<_>, _>>()
        })?
    };
    // A split point is a guess (quote parity); it holds only if the span
    // before it ended exactly there (give or take line breaks: a CRLF
    // reader stops after the `\r`). Otherwise parse the body in one piece.
    let held = parts.windows(2).all(|w| {
        w[0].next_record <= w[1].start
            && src[w[0].next_record..w[1].start]
                .iter()
                .all(|&b| b == b'\r' || b == b'\n')
    });
    let parts = if held {
        parts
    } else {
        tracing::debug!(
            file,
            "CSV split points fell inside quoted fields; parsing in one piece"
        );
        vec![parse(&(body_start, src.len()))?]
    };

    // Line numbers: each span counted its own lines from 1.
    let mut line_base = 0u64;
    let mut body = Body {
        batches: Vec::new(),
        rows: 0,
        bad_rows: Vec::new(),
    };
    let mut prev_start = 0;
    for mut part in parts {
        line_base += memchr::memchr_iter(b'\n', &src[prev_start..part.start]).count() as u64;
        prev_start = part.start;
        for b in &mut part.bad_rows {
            b.row += line_base;
        }
        for batch in part.batches {
            body.batches.push(if line_base == 0 {
                batch
            } else {
                shift_rows(batch, line_base)
            });
        }
        body.rows += part.rows;
        body.bad_rows.extend(part.bad_rows);
    }
    Ok((body, held))
}

struct Body {
    batches: Vec<RecordBatch>,
    rows: u64,
    bad_rows: Vec<BadRow>,
}

/// Split the body `src[start..]` into spans for parallel parsing, one per
/// core: each split sits just after a line feed with an even number of
/// quote characters before it, i.e. (for well-formed CSV) outside any
/// quoted field. `parse_body` checks that guess against the parse.
fn split_body(
    src: &[u8],
    start: usize,
    quote: u8,
    min_bytes: usize,
    max_parts: usize,
) -> Vec<(usize, usize)> {
    let len = src.len() - start.min(src.len());
    if len < min_bytes || max_parts < 2 {
        return vec![(start, src.len())];
    }
    let parts = max_parts.min(len / (min_bytes / 2).max(1)).max(1);
    let mut spans = Vec::with_capacity(parts);
    let mut from = start;
    let mut quotes_before = 0usize;
    for k in 1..parts {
        let target = start + len / parts * k;
        if target <= from {
            continue;
        }
        quotes_before += memchr::memchr_iter(quote, &src[from..target]).count();
        // Walk line feeds from the target until one is outside quotes.
        let mut at = target;
        let mut split = None;
        while let Some(nl) = memchr::memchr(b'\n', &src[at..]).map(|i| at + i) {
            quotes_before += memchr::memchr_iter(quote, &src[at..nl]).count();
            at = nl + 1;
            if quotes_before.is_multiple_of(2) {
                split = Some(at);
                break;
            }
        }
        let Some(split) = split.filter(|&s| s < src.len()) else {
            break;
        };
        spans.push((from, split));
        from = split;
    }
    spans.push((from, src.len()));
    spans
}

/// Rows of one span of the body, with line numbers counted from the span's
/// first line as 1.
struct SpanOutput {
    start: usize,
    /// Absolute byte offset where the record after this span starts (the
    /// span's end when the split was clean), or the end of the text.
    next_record: usize,
    batches: Vec<RecordBatch>,
    rows: u64,
    bad_rows: Vec<BadRow>,
}

#[allow(clippy::too_many_arguments)]
fn parse_span(
    src: &[u8],
    start: usize,
    end: usize,
    dialect: Dialect,
    headers: &[String],
    source_name: &str,
    file: &str,
    batch_size: usize,
) -> Result<SpanOutput, FileParseError> {
    let width = headers.len();
    // The reader sees the rest of the text, so a record crossing `end` is
    // read whole; it is then left to the next span.
    let text = &src[start..];
    let span_len = end - start;
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .from_reader(text);
    let mut record = ByteRecord::new();
    let mut out = BatchBuilder::new(headers, source_name, file, batch_size);
    let mut rows = 0u64;
    let mut bad_rows = Vec::new();
    let mut next_record = src.len();
    loop {
        let more = reader
            .read_byte_record(&mut record)
            .map_err(|e| FileParseError::Csv {
                file: file.to_string(),
                line: reader.position().line() + memchr::memchr_iter(b'\n', &src[..start]).count() as u64,
                message: e.to_string(),
            })?;
        if !more {
            break;
        }
        let at = record.position().map_or(0, |p| p.byte() as usize);
        // A record's position may sit on the line break before it (a CRLF
        // reader stops after the `\r`): its first byte decides its span.
        let first_byte = at
            + text[at.min(text.len())..]
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
        if first_byte >= span_len {
            next_record = start + at;
            break;
        }
        if is_blank(record.iter()) {
            continue;
        }
        rows += 1;
        let line = start_line(&record, text);
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
    Ok(SpanOutput {
        start,
        next_record,
        batches: out.finish(),
        rows,
        bad_rows,
    })
}

/// Add `by` to a batch's `_source_row` column.
fn shift_rows(batch: RecordBatch, by: u64) -> RecordBatch {
    let idx = batch.num_columns() - 1;
    let rows = batch
        .column(idx)
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()
        .expect("_source_row is the last column, UInt64");
    let shifted: arrow::array::UInt64Array = rows.unary(|r| r + by);
    let mut columns = batch.columns().to_vec();
    columns[idx] = std::sync::Arc::new(shifted);
    RecordBatch::try_new(batch.schema(), columns).expect("same schema, same length")
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

    /// A messy body: quoted fields with delimiters, quotes and line breaks,
    /// blank lines, ragged rows.
    fn messy(rows: usize, eol: &str) -> String {
        let mut data = format!("name,note,phone{eol}");
        for i in 0..rows {
            match i % 7 {
                0 => data.push_str(&format!(
                    "\"Sharma, Priya {i}\",\"line one{eol}line two\",9876{i}{eol}"
                )),
                1 => data.push_str(&format!("Ann {i},\"say \"\"hi\"\"\",555{i}{eol}{eol}")),
                2 => data.push_str(&format!("ragged {i},x{eol}")),
                3 => data.push_str(&format!("Bob {i},,{eol}{eol}{eol}")),
                _ => data.push_str(&format!("Cy {i},plain note,+44 20 {i}{eol}")),
            }
        }
        data
    }

    /// The body parsed in `max_parts` spans: (output, whether the split held).
    fn parse_spans(data: &str, max_parts: usize) -> (ParsedFile, bool) {
        let src = data.as_bytes();
        let body_start = src.iter().position(|&b| b == b'\n').unwrap() + 1;
        let headers: Vec<String> = ["name", "note", "phone"].map(String::from).to_vec();
        let spans = split_body(src, body_start, b'"', 256, max_parts);
        let dialect = Dialect {
            delimiter: b',',
            quote: b'"',
        };
        let (body, held) =
            parse_body(src, body_start, spans, dialect, &headers, "crm", "f.csv", 100).unwrap();
        let file = ParsedFile {
            file: "f.csv".into(),
            format: "csv",
            encoding: None,
            delimiter: Some(','),
            sheet: None,
            headers,
            batches: body.batches,
            rows: body.rows,
            bad_rows: body.bad_rows,
        };
        (file, held)
    }

    fn same(a: &ParsedFile, b: &ParsedFile) {
        for c in ["name", "note", "phone", "_source"] {
            assert_eq!(col(a, c), col(b, c), "column {c}");
        }
        assert_eq!(row_numbers(a), row_numbers(b));
        assert_eq!(a.rows, b.rows);
        let bad = |p: &ParsedFile| {
            p.bad_rows
                .iter()
                .map(|r| (r.row, r.values.clone(), r.reason.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bad(a), bad(b));
    }

    #[test]
    fn parallel_spans_match_one_piece_lf_and_crlf() {
        for eol in ["\n", "\r\n"] {
            let data = messy(700, eol);
            let (one, _) = parse_spans(&data, 1);
            let (many, held) = parse_spans(&data, 7);
            assert!(held, "well-formed CSV must split cleanly ({eol:?})");
            assert!(
                many.batches.len() > one.batches.len(),
                "several spans were parsed"
            );
            same(&one, &many);
            // And through the public entry, which parses it in one piece.
            let whole = parse_csv(
                "crm",
                "f.csv",
                data.as_bytes(),
                &CsvOptions::default(),
                false,
                100,
            )
            .unwrap();
            same(&one, &whole);
            assert_eq!(one.rows, 700);
            assert_eq!(one.bad_rows.len(), 100);
        }
    }

    #[test]
    fn a_stray_quote_makes_the_split_fall_back() {
        // `5" screen` is a literal quote in an unquoted field: quote parity
        // is off from there on, so guessed splits land inside "quoted" text.
        let mut data = String::from("name,note,phone\nTV,5\" screen,1\n");
        data.push_str(&messy(700, "\n")[16..]);
        let (one, _) = parse_spans(&data, 1);
        let (many, held) = parse_spans(&data, 7);
        assert!(!held);
        same(&one, &many);
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
