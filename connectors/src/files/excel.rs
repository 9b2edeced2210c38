//! Spreadsheets (xlsx, xlsm, xlsb, xls, ods) into Arrow, through calamine.
//!
//! Cells become the text the user sees in the spreadsheet, not calamine's
//! typed values: an Excel phone number is a float (919876543210.0) and a date
//! is a serial number (45730.0), and neither should reach the CRM like that.
//!
//! Known limitation: a numeric cell shown with a number format such as
//! "00000000000" (leading zeros added by formatting) arrives as the bare
//! number: calamine does not expose cell number formats, so "09876543210"
//! typed into such a cell reads "9876543210". Phones stored as text keep their
//! leading zero.

use std::fmt::Write as _;
use std::io::Cursor;

use bytes::Bytes;
use calamine::{
    Data, Ods, Reader, Sheets, Xls, Xlsb, Xlsx, open_workbook_auto_from_rs, open_workbook_from_rs,
};

use super::batch::{BatchBuilder, clean_headers};
use super::config::ExcelOptions;
use super::error::FileParseError;
use super::source::ParsedFile;

/// Parses a workbook. `extension` (lower case) only refines the reported
/// format and error messages; the workbook type is detected from the content.
pub fn parse_excel(
    source_name: &str,
    file: &str,
    bytes: &Bytes,
    opts: &ExcelOptions,
    extension: &str,
    batch_size: usize,
) -> Result<ParsedFile, FileParseError> {
    let err_file = || file.to_string();
    if bytes.is_empty() {
        return Err(FileParseError::Empty { file: err_file() });
    }
    let mut workbook = open_workbook_auto_from_rs(Cursor::new(bytes.clone())).map_err(|_| {
        FileParseError::CorruptWorkbook {
            file: err_file(),
            message: open_error_detail(bytes, extension),
        }
    })?;
    let format = match (&workbook, extension) {
        (Sheets::Xlsx(_), "xlsm") => "xlsm",
        (Sheets::Xlsx(_), _) => "xlsx",
        (Sheets::Xlsb(_), _) => "xlsb",
        (Sheets::Xls(_), _) => "xls",
        (Sheets::Ods(_), _) => "ods",
    };

    let names = workbook.sheet_names();
    let sheet = match opts.sheet.as_deref() {
        Some(wanted) => names
            .iter()
            .find(|n| n.as_str() == wanted)
            // Forgive case and stray spaces: "leads " for "Leads" is not worth a failed run.
            .or_else(|| {
                names
                    .iter()
                    .find(|n| n.trim().eq_ignore_ascii_case(wanted.trim()))
            })
            .cloned()
            .ok_or_else(|| FileParseError::SheetNotFound {
                file: err_file(),
                sheet: wanted.to_string(),
                available: names.clone(),
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| FileParseError::NoSheets { file: err_file() })?,
    };
    let range = workbook
        .worksheet_range(&sheet)
        .map_err(|e| FileParseError::Sheet {
            file: err_file(),
            sheet: sheet.clone(),
            message: e.to_string(),
        })?;
    let (Some((row0, col0)), Some((row_last, _))) = (range.start(), range.end()) else {
        return Err(FileParseError::EmptySheet {
            file: err_file(),
            sheet,
        });
    };
    let header_row = opts.header_row.max(1);
    if header_row - 1 > row_last {
        return Err(FileParseError::HeaderRowBeyondSheet {
            file: err_file(),
            sheet,
            header_row,
            last_row: row_last + 1,
        });
    }

    // Rows of the range are sheet rows row0.., so skip those above the header row,
    // then blank ones: the header is the first non-blank row from `header_row`.
    let skip = (header_row - 1).saturating_sub(row0) as usize;
    let mut rows_iter = range
        .rows()
        .enumerate()
        .skip(skip)
        .filter(|(_, cells)| !is_blank_row(cells));
    let Some((_, header_cells)) = rows_iter.next() else {
        return Err(FileParseError::NoHeader { file: err_file() });
    };
    let data_rows: Vec<(usize, &[Data])> = rows_iter.collect();

    // The used range often holds columns with neither a header nor a value
    // (a title cell above, formatted empty cells, spacer columns): drop them.
    let range_width = header_cells.len();
    let mut used: Vec<bool> = header_cells.iter().map(|c| !is_blank_cell(c)).collect();
    for (_, cells) in &data_rows {
        for (j, cell) in cells.iter().enumerate().take(range_width) {
            if !used[j] && !is_blank_cell(cell) {
                used[j] = true;
            }
        }
    }
    let keep: Vec<usize> = (0..range_width).filter(|&j| used[j]).collect();

    let mut buf = String::new();
    let raw_headers: Vec<String> = keep
        .iter()
        .map(|&j| {
            let text = cell_text(&header_cells[j], &mut buf).trim();
            if text.is_empty() {
                // Name blank headers after the spreadsheet column the user sees.
                format!("column_{}", col0 as usize + j + 1)
            } else {
                text.to_string()
            }
        })
        .collect();
    let headers = clean_headers(&raw_headers);

    let mut out = BatchBuilder::new(&headers, source_name, file, batch_size);
    let mut rows = 0u64;
    for (idx, cells) in data_rows {
        rows += 1;
        for (col, &j) in keep.iter().enumerate() {
            let text = match cells.get(j) {
                Some(c) => cell_text(c, &mut buf),
                None => "",
            };
            out.push(col, text);
        }
        out.finish_row(u64::from(row0) + idx as u64 + 1);
    }

    Ok(ParsedFile {
        file: file.to_string(),
        format,
        encoding: None,
        delimiter: None,
        sheet: Some(sheet),
        headers,
        batches: out.finish(),
        rows,
        bad_rows: Vec::new(),
    })
}

/// The auto-detecting opener only says "Cannot detect file format"; the
/// reader matching the extension says what is actually wrong.
fn open_error_detail(bytes: &Bytes, extension: &str) -> String {
    let rs = || Cursor::new(bytes.clone());
    let detail = match extension {
        "xlsx" | "xlsm" => open_workbook_from_rs::<Xlsx<_>, _>(rs())
            .err()
            .map(|e| e.to_string()),
        "xlsb" => open_workbook_from_rs::<Xlsb<_>, _>(rs())
            .err()
            .map(|e| e.to_string()),
        "xls" => open_workbook_from_rs::<Xls<_>, _>(rs())
            .err()
            .map(|e| e.to_string()),
        "ods" => open_workbook_from_rs::<Ods<_>, _>(rs())
            .err()
            .map(|e| e.to_string()),
        _ => None,
    };
    detail.unwrap_or_else(|| "not an xlsx, xlsm, xlsb, xls or ods workbook".to_string())
}

fn is_blank_row(cells: &[Data]) -> bool {
    cells.iter().all(is_blank_cell)
}

fn is_blank_cell(cell: &Data) -> bool {
    match cell {
        Data::Empty => true,
        Data::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The cell as the user sees it. Strings are borrowed; other values are
/// written into `buf` (reused across cells to avoid an allocation per cell).
pub fn cell_text<'a>(cell: &'a Data, buf: &'a mut String) -> &'a str {
    buf.clear();
    match cell {
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => return s,
        Data::Empty => {}
        Data::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Data::Float(f) => write_float(*f, buf),
        Data::Bool(true) => buf.push_str("TRUE"),
        Data::Bool(false) => buf.push_str("FALSE"),
        Data::Error(e) => {
            let _ = write!(buf, "{e}");
        }
        Data::DateTime(dt) => {
            if dt.is_duration() {
                write_duration(dt.as_f64(), buf);
            } else {
                match dt.as_datetime() {
                    Some(ndt) => write_datetime(ndt, dt.as_f64(), buf),
                    None => write_float(dt.as_f64(), buf),
                }
            }
        }
    }
    buf
}

/// Integral values print as integers (phones, ids: "919876543210", never
/// "9.19876E+11"); others as the shortest text that round-trips after
/// rounding to Excel's 15 significant digits, so 0.1+0.2 shows "0.3" like
/// Excel does. `f64` Display never uses exponent notation.
fn write_float(x: f64, buf: &mut String) {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        let _ = write!(buf, "{}", x as i64);
    } else if x.is_finite() {
        let rounded: f64 = format!("{x:.14e}").parse().unwrap_or(x);
        let _ = write!(buf, "{rounded}");
    } else {
        let _ = write!(buf, "{x}");
    }
}

fn write_datetime(ndt: chrono::NaiveDateTime, serial: f64, buf: &mut String) {
    use chrono::Timelike;
    let has_ms = ndt.nanosecond() >= 1_000_000;
    let fmt = if (0.0..1.0).contains(&serial) {
        // A time of day without a date (serial 0.xx).
        if has_ms { "%H:%M:%S%.3f" } else { "%H:%M:%S" }
    } else if ndt.time() == chrono::NaiveTime::MIN {
        "%Y-%m-%d"
    } else if has_ms {
        "%Y-%m-%dT%H:%M:%S%.3f"
    } else {
        "%Y-%m-%dT%H:%M:%S"
    };
    let _ = write!(buf, "{}", ndt.format(fmt));
}

/// Durations as Excel's `[h]:mm:ss` (hours may exceed 24).
fn write_duration(days: f64, buf: &mut String) {
    let total = (days * 86_400.0).round() as i64;
    let sign = if total < 0 { "-" } else { "" };
    let total = total.abs();
    let _ = write!(
        buf,
        "{sign}{}:{:02}:{:02}",
        total / 3600,
        (total / 60) % 60,
        total % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt64Type;
    use calamine::{CellErrorType, ExcelDateTime, ExcelDateTimeType};
    use rust_xlsxwriter::{ExcelDateTime as XlsxDate, Format, Workbook};

    fn text(cell: Data) -> String {
        let mut buf = String::new();
        cell_text(&cell, &mut buf).to_string()
    }

    fn col(p: &ParsedFile, name: &str) -> Vec<String> {
        p.batches
            .iter()
            .flat_map(|b| {
                let a = b.column_by_name(name).unwrap().as_string::<i32>().clone();
                (0..a.len()).map(|i| a.value(i).to_string()).collect::<Vec<_>>()
            })
            .collect()
    }

    fn rows(p: &ParsedFile) -> Vec<u64> {
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

    /// Sheet "Summary" (first), sheet "Leads" with typed cells, sheet "Report"
    /// with a title above the header.
    fn leads_workbook() -> Vec<u8> {
        let mut wb = Workbook::new();
        let date = Format::new().set_num_format("dd/mm/yyyy");
        let datetime = Format::new().set_num_format("dd/mm/yyyy hh:mm");

        let s = wb.add_worksheet();
        s.set_name("Summary").unwrap();
        s.write_string(0, 0, "total").unwrap();
        s.write_number(1, 0, 2).unwrap();

        let s = wb.add_worksheet();
        s.set_name("Leads").unwrap();
        for (c, h) in [
            "name",
            "phone",
            "phone_text",
            "signup",
            "score",
            "active",
            "seen_at",
            "",
        ]
        .iter()
        .enumerate()
        {
            s.write_string(0, c as u16, *h).unwrap();
        }
        s.write_string(1, 0, "Zoë").unwrap();
        s.write_number(1, 1, 919876543210.0).unwrap();
        s.write_string(1, 2, "09876543210").unwrap();
        s.write_datetime_with_format(1, 3, XlsxDate::from_ymd(2025, 3, 14).unwrap(), &date)
            .unwrap();
        s.write_number(1, 4, 3.75).unwrap();
        s.write_boolean(1, 5, true).unwrap();
        let at = XlsxDate::from_ymd(2025, 3, 14)
            .unwrap()
            .and_hms(9, 30, 0)
            .unwrap();
        s.write_datetime_with_format(1, 6, at, &datetime).unwrap();
        s.write_string(1, 7, "extra").unwrap();
        // Row 3 left blank on purpose; row 4 has the second lead.
        s.write_string(3, 0, "Bob").unwrap();
        s.write_number(3, 1, 4420794601.0).unwrap();
        s.write_number(3, 4, 12).unwrap();

        let s = wb.add_worksheet();
        s.set_name("Report").unwrap();
        s.write_string(0, 0, "Leads export, March").unwrap();
        s.write_string(2, 1, "email").unwrap();
        s.write_string(2, 2, "email").unwrap();
        s.write_string(3, 1, "a@x.io").unwrap();
        s.write_string(3, 2, "b@x.io").unwrap();
        wb.save_to_buffer().unwrap()
    }

    fn parse(bytes: Vec<u8>, sheet: Option<&str>, header_row: u32) -> Result<ParsedFile, FileParseError> {
        let opts = ExcelOptions {
            sheet: sheet.map(str::to_string),
            header_row,
        };
        parse_excel("crm", "/in/leads.xlsx", &Bytes::from(bytes), &opts, "xlsx", 100)
    }

    #[test]
    fn values_as_the_user_sees_them() {
        let p = parse(leads_workbook(), Some("Leads"), 1).unwrap();
        assert_eq!(p.format, "xlsx");
        assert_eq!(p.sheet.as_deref(), Some("Leads"));
        assert_eq!(
            p.headers,
            [
                "name",
                "phone",
                "phone_text",
                "signup",
                "score",
                "active",
                "seen_at",
                "column_8"
            ]
        );
        assert_eq!(col(&p, "name"), ["Zoë", "Bob"]);
        assert_eq!(col(&p, "phone"), ["919876543210", "4420794601"]);
        assert_eq!(col(&p, "phone_text"), ["09876543210", ""]);
        assert_eq!(col(&p, "signup"), ["2025-03-14", ""]);
        assert_eq!(col(&p, "score"), ["3.75", "12"]);
        assert_eq!(col(&p, "active"), ["TRUE", ""]);
        assert_eq!(col(&p, "seen_at"), ["2025-03-14T09:30:00", ""]);
        // Real sheet rows: header row 1, Zoë row 2, blank row 3 skipped, Bob row 4.
        assert_eq!(rows(&p), [2, 4]);
        assert_eq!(p.rows, 2);
        assert_eq!(col(&p, "_source_file"), ["/in/leads.xlsx", "/in/leads.xlsx"]);
    }

    #[test]
    fn first_sheet_by_default_and_sheet_by_name_case_insensitive() {
        let p = parse(leads_workbook(), None, 1).unwrap();
        assert_eq!(p.sheet.as_deref(), Some("Summary"));
        assert_eq!(col(&p, "total"), ["2"]);
        let p = parse(leads_workbook(), Some("leads"), 1).unwrap();
        assert_eq!(p.sheet.as_deref(), Some("Leads"));
    }

    #[test]
    fn header_row_and_offset_range() {
        // Header on row 3, data in columns B..C (column A only has the title,
        // so it is dropped): row numbers are the sheet's.
        let p = parse(leads_workbook(), Some("Report"), 3).unwrap();
        assert_eq!(p.headers, ["email", "email_2"]);
        assert_eq!(col(&p, "email_2"), ["b@x.io"]);
        assert_eq!(rows(&p), [4]);
        // header_row 2 is blank: the first non-blank row from there is the header.
        let p = parse(leads_workbook(), Some("Report"), 2).unwrap();
        assert_eq!(p.headers, ["email", "email_2"]);
    }

    #[test]
    fn missing_sheet_lists_the_sheets() {
        let e = parse(leads_workbook(), Some("Contacts"), 1).unwrap_err();
        assert!(matches!(e, FileParseError::SheetNotFound { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("'Contacts' not found") && msg.contains("'Summary', 'Leads', 'Report'"),
            "{msg}"
        );
    }

    #[test]
    fn header_row_beyond_sheet() {
        let e = parse(leads_workbook(), Some("Leads"), 50).unwrap_err();
        assert_eq!(
            e,
            FileParseError::HeaderRowBeyondSheet {
                file: "/in/leads.xlsx".into(),
                sheet: "Leads".into(),
                header_row: 50,
                last_row: 4
            }
        );
    }

    #[test]
    fn corrupt_workbook_is_an_error_naming_the_file() {
        let mut bytes = leads_workbook();
        bytes.truncate(bytes.len() / 2);
        let e = parse(bytes, None, 1).unwrap_err();
        assert!(matches!(e, FileParseError::CorruptWorkbook { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("/in/leads.xlsx: cannot open as a workbook"),
            "{e}"
        );

        let e = parse(b"name,email\nAnn,a@x.io\n".to_vec(), None, 1).unwrap_err();
        assert!(matches!(e, FileParseError::CorruptWorkbook { .. }), "{e:?}");
    }

    #[test]
    fn cell_formatting_rules() {
        assert_eq!(text(Data::Float(919876543210.0)), "919876543210");
        assert_eq!(text(Data::Float(-42.0)), "-42");
        assert_eq!(text(Data::Float(0.1 + 0.2)), "0.3");
        assert_eq!(text(Data::Float(1234.5678)), "1234.5678");
        assert_eq!(text(Data::Float(0.000125)), "0.000125");
        assert!(!text(Data::Float(1e16)).contains('e'));
        assert_eq!(text(Data::Int(7)), "7");
        assert_eq!(text(Data::Bool(false)), "FALSE");
        assert_eq!(text(Data::Error(CellErrorType::Div0)), "#DIV/0!");
        assert_eq!(text(Data::Empty), "");
        assert_eq!(text(Data::DateTimeIso("2025-03-14".into())), "2025-03-14");
        let dt = |v: f64, t: ExcelDateTimeType| Data::DateTime(ExcelDateTime::new(v, t, false));
        // 45730 = 2025-03-14 in the 1900 date system.
        assert_eq!(text(dt(45730.0, ExcelDateTimeType::DateTime)), "2025-03-14");
        assert_eq!(
            text(dt(45730.5, ExcelDateTimeType::DateTime)),
            "2025-03-14T12:00:00"
        );
        assert_eq!(text(dt(0.75, ExcelDateTimeType::DateTime)), "18:00:00");
        assert_eq!(text(dt(1.5, ExcelDateTimeType::TimeDelta)), "36:00:00");
    }
}
