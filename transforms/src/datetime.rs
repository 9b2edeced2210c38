//! Dates as lead exports write them: ISO, "14/03/2025 09:30", Excel's ISO.
//! Exposed as the `lead_timestamp(text)` UDF: Timestamp(µs, UTC), null when
//! the text is not a date (never an error: one odd cell must not fail a run).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

const DATETIME_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d-%m-%Y %H:%M",
    "%d.%m.%Y %H:%M",
];
const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%d-%m-%Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%d %b %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
];

/// Parse a lead timestamp to microseconds since the epoch (UTC). Day-first
/// for slashed dates (the convention of most lead sources outside the US);
/// "03/14/2025" still parses because 14 cannot be a month.
pub fn parse_lead_datetime(raw: &str) -> Option<i64> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(t) = fast_iso(s.as_bytes()) {
        return Some(t);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%z") {
        return Some(dt.timestamp_micros());
    }
    for f in DATETIME_FORMATS {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    for f in DATE_FORMATS {
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%m/%d/%Y") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    None
}

/// The shape most exports write, `YYYY-MM-DD[( |T)HH:MM[:SS[.f]]]` without
/// a zone, read at fixed positions: chrono's `parse_from_str` interprets its
/// format string on every call, and trying ten formats was a visible cost on
/// a million rows. Anything else (or an impossible date) returns `None` and
/// takes the general path, which gives the same answer for these shapes.
fn fast_iso(b: &[u8]) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    if b.len() == 10 {
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    if !(b[10] == b' ' || b[10] == b'T') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let (sec, nanos) = match b.len() {
        16 => (0, 0),
        19 if b[16] == b':' => (num(17..19)?, 0),
        21..=29 if b[16] == b':' && b[19] == b'.' => {
            let digits = b.len() - 20;
            (num(17..19)?, num(20..b.len())? * 10u32.pow(9 - digits as u32))
        }
        _ => return None,
    };
    Some(
        date.and_hms_nano_opt(h, mi, sec, nanos)?
            .and_utc()
            .timestamp_micros(),
    )
}

/// `lead_timestamp(text)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LeadTimestamp {
    signature: Signature,
}

impl Default for LeadTimestamp {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl ScalarUDFImpl for LeadTimestamp {
    fn name(&self) -> &str {
        "lead_timestamp"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(ts_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(
                    v.as_deref().and_then(parse_lead_datetime),
                    Some("UTC".into()),
                )))
            }
            ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(
                None,
                Some("UTC".into()),
            ))),
            ColumnarValue::Array(a) => {
                let s = a.as_string::<i32>();
                let mut b = TimestampMicrosecondBuilder::with_capacity(s.len()).with_timezone("UTC");
                for i in 0..s.len() {
                    b.append_option(if s.is_null(i) {
                        None
                    } else {
                        parse_lead_datetime(s.value(i))
                    });
                }
                Ok(ColumnarValue::Array(Arc::new(b.finish()) as ArrayRef))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_position_iso_agrees_with_chrono() {
        for s in [
            "2025-01-01 00:09:57",
            "2025-03-14T09:30",
            "2025-03-14 09:30:05.123",
            "2025-03-14T09:30:05.123456789",
            "2025-03-14",
            "2024-02-29 23:59:59",
        ] {
            let fast = fast_iso(s.as_bytes());
            assert!(fast.is_some(), "{s}");
            let chrono = DATETIME_FORMATS
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|d| d.and_utc().timestamp_micros())
                .or_else(|| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros())
                });
            assert_eq!(fast, chrono, "{s}");
        }
        // Not this path's shapes: left to the general parser.
        for s in [
            "2025-02-30",
            "2025-03-14T09:30:05Z",
            "2025-3-14",
            "14/03/2025",
            "2025-03-14 9:30",
        ] {
            assert_eq!(fast_iso(s.as_bytes()), None, "{s}");
        }
        assert_eq!(
            parse_lead_datetime("2025-03-14T09:30:05Z"),
            Some(1_741_944_605_000_000)
        );
    }

    #[test]
    fn parses_what_exports_write() {
        let d =
            |s| parse_lead_datetime(s).map(|us| DateTime::from_timestamp_micros(us).unwrap().to_rfc3339());
        assert_eq!(d("2025-03-14"), Some("2025-03-14T00:00:00+00:00".into()));
        assert_eq!(d("2025-03-14T09:30:00"), Some("2025-03-14T09:30:00+00:00".into()));
        assert_eq!(d("14/03/2025 09:30"), Some("2025-03-14T09:30:00+00:00".into()));
        assert_eq!(d("03/14/2025"), Some("2025-03-14T00:00:00+00:00".into()));
        assert_eq!(
            d("2025-03-14T09:30:00+05:30"),
            Some("2025-03-14T04:00:00+00:00".into())
        );
        assert_eq!(d("14 Mar 2025"), Some("2025-03-14T00:00:00+00:00".into()));
        assert_eq!(d("yesterday"), None);
        assert_eq!(d(""), None);
    }
}
