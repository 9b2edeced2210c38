//! Text encoding and delimiter detection for delimited files.
//!
//! CRM exports come from everywhere: Excel "CSV UTF-8" (BOM), Excel "Unicode
//! text" (UTF-16LE with BOM, tab separated), old Windows tools (Windows-1252),
//! European locales (semicolons). Detection is cheap and runs once per file.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};

/// Candidate delimiters, in order of preference when scores tie.
pub const DELIMITER_CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];

/// How many records the delimiter detection looks at.
const SNIFF_RECORDS: usize = 20;
/// Upper bound on the bytes the delimiter detection reads.
const SNIFF_BYTES: usize = 64 * 1024;
/// Bytes inspected for NULs (binary / BOM-less UTF-16 detection).
const SNIFF_BINARY_BYTES: usize = 1024;

/// Text decoded from a file's bytes.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// The text, without BOM. Borrowed from the input when it already was UTF-8.
    pub text: Cow<'a, str>,
    /// The encoding that was used.
    pub encoding: &'static Encoding,
    /// Whether invalid sequences were replaced by U+FFFD.
    pub had_errors: bool,
}

/// Looks up an encoding by WHATWG label ("utf-8", "latin1", "windows-1252",
/// "utf-16le", ...).
pub fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    Encoding::for_label(label.trim().as_bytes())
}

/// Decodes `bytes`.
///
/// With `explicit`, that encoding is used (a BOM of the same encoding is
/// removed). Otherwise: a BOM decides (UTF-8, UTF-16LE/BE); else BOM-less
/// UTF-16 is recognised from its NUL pattern; else valid UTF-8 is borrowed
/// without a copy; else Windows-1252, the usual "ANSI" of Western Windows
/// machines (a superset of Latin-1 for printable text).
pub fn decode<'a>(bytes: &'a [u8], explicit: Option<&'static Encoding>) -> Decoded<'a> {
    if let Some(enc) = explicit {
        if enc == UTF_8 {
            return decode_utf8(strip_utf8_bom(bytes));
        }
        let (text, had_errors) = enc.decode_with_bom_removal(bytes);
        return Decoded {
            text,
            encoding: enc,
            had_errors,
        };
    }
    if let Some((enc, bom_len)) = Encoding::for_bom(bytes) {
        let rest = &bytes[bom_len..];
        if enc == UTF_8 {
            return decode_utf8(rest);
        }
        let (text, had_errors) = enc.decode_without_bom_handling(rest);
        return Decoded {
            text,
            encoding: enc,
            had_errors,
        };
    }
    if let Some(enc) = sniff_utf16_without_bom(bytes) {
        let (text, had_errors) = enc.decode_without_bom_handling(bytes);
        return Decoded {
            text,
            encoding: enc,
            had_errors,
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Decoded {
            text: Cow::Borrowed(s),
            encoding: UTF_8,
            had_errors: false,
        },
        Err(_) => {
            let (text, had_errors) = WINDOWS_1252.decode_without_bom_handling(bytes);
            Decoded {
                text,
                encoding: WINDOWS_1252,
                had_errors,
            }
        }
    }
}

fn strip_utf8_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn decode_utf8(bytes: &[u8]) -> Decoded<'_> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Decoded {
            text: Cow::Borrowed(s),
            encoding: UTF_8,
            had_errors: false,
        },
        Err(_) => Decoded {
            text: Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
            encoding: UTF_8,
            had_errors: true,
        },
    }
}

/// True when the start of the file has NUL bytes that are not explained by a
/// UTF-16 BOM or a UTF-16 NUL pattern: a text parser would produce garbage.
pub fn looks_binary(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(SNIFF_BINARY_BYTES)];
    if !head.contains(&0) {
        return false;
    }
    if let Some((enc, _)) = Encoding::for_bom(bytes)
        && (enc == UTF_16LE || enc == UTF_16BE)
    {
        return false;
    }
    sniff_utf16_without_bom(bytes).is_none()
}

/// BOM-less UTF-16 of mostly-ASCII text has a NUL in every other byte: the
/// high byte (odd positions for LE, even for BE). Binary data has NULs
/// everywhere.
fn sniff_utf16_without_bom(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = &bytes[..bytes.len().min(SNIFF_BINARY_BYTES) & !1];
    if head.len() < 4 {
        return None;
    }
    let pairs = head.len() / 2;
    let (mut even_zero, mut odd_zero) = (0usize, 0usize);
    for pair in head.chunks_exact(2) {
        even_zero += usize::from(pair[0] == 0);
        odd_zero += usize::from(pair[1] == 0);
    }
    // Require most pairs to show the pattern, and none the opposite one.
    if even_zero == 0 && odd_zero * 10 >= pairs * 7 {
        Some(UTF_16LE)
    } else if odd_zero == 0 && even_zero * 10 >= pairs * 7 {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// Picks the delimiter among [`DELIMITER_CANDIDATES`] from the first records
/// of `text`: the one whose field count (> 1) is the same on the most
/// records, then the one giving more fields. Delimiters inside quoted fields
/// do not count; quoted line breaks do not end a record. `None` when no
/// candidate splits the lines (a one-column file).
pub fn detect_delimiter(text: &str, quote: u8) -> Option<u8> {
    let sample = &text.as_bytes()[..text.len().min(SNIFF_BYTES)];
    let truncated = sample.len() < text.len();

    // Field counts per record, for all candidates in one pass.
    let mut records: Vec<[usize; 4]> = Vec::with_capacity(SNIFF_RECORDS);
    let mut current = [1usize; 4];
    let mut in_quotes = false;
    let mut record_has_content = false;
    for &b in sample {
        if b == quote {
            // A doubled quote toggles twice: net effect is right.
            in_quotes = !in_quotes;
            record_has_content = true;
        } else if in_quotes {
            continue;
        } else if b == b'\n' {
            if record_has_content {
                records.push(current);
                if records.len() == SNIFF_RECORDS {
                    break;
                }
            }
            current = [1; 4];
            record_has_content = false;
        } else if b != b'\r' {
            record_has_content = true;
            if let Some(i) = DELIMITER_CANDIDATES.iter().position(|&d| d == b) {
                current[i] += 1;
            }
        }
    }
    // The last record counts only if the text really ended there.
    if record_has_content && !in_quotes && !truncated && records.len() < SNIFF_RECORDS {
        records.push(current);
    }
    if records.is_empty() {
        return None;
    }

    let mut best: Option<(usize, usize, u8)> = None; // (agreeing records, fields, delimiter)
    for (i, &delim) in DELIMITER_CANDIDATES.iter().enumerate() {
        let (fields, agreeing) = mode(records.iter().map(|r| r[i]));
        if fields <= 1 {
            continue;
        }
        let better = match best {
            None => true,
            Some((a, f, _)) => agreeing > a || (agreeing == a && fields > f),
        };
        if better {
            best = Some((agreeing, fields, delim));
        }
    }
    best.map(|(_, _, d)| d)
}

/// Most frequent value and its frequency (the larger value on ties).
fn mode(values: impl Iterator<Item = usize>) -> (usize, usize) {
    let mut counts: Vec<(usize, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(value, _)| *value == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(value, n)| (n, value))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_borrowed_and_bom_stripped() {
        let plain = "a,b\n1,2\n".as_bytes();
        let d = decode(plain, None);
        assert!(matches!(d.text, Cow::Borrowed(_)));
        assert_eq!(d.encoding, UTF_8);

        let with_bom = b"\xEF\xBB\xBFname\nZo\xC3\xAB\n";
        let d = decode(with_bom, None);
        assert_eq!(d.text, "name\nZoë\n");
        assert!(matches!(d.text, Cow::Borrowed(_)));
    }

    #[test]
    fn utf16_with_and_without_bom() {
        let text = "name\tcity\nZoë\tMünchen\n";
        let mut le = vec![0xFF, 0xFE];
        le.extend(text.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let d = decode(&le, None);
        assert_eq!(d.encoding, UTF_16LE);
        assert_eq!(d.text, text);
        assert!(!looks_binary(&le));

        let be: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        let d = decode(&be, None);
        assert_eq!(d.encoding, UTF_16BE);
        assert_eq!(d.text, text);
        assert!(!looks_binary(&be));
    }

    #[test]
    fn invalid_utf8_falls_back_to_windows_1252() {
        // "Zoë;Café" in Windows-1252: ë = 0xEB, é = 0xE9.
        let bytes = b"name;city\nZo\xEB;Caf\xE9\n";
        let d = decode(bytes, None);
        assert_eq!(d.encoding, WINDOWS_1252);
        assert_eq!(d.text, "name;city\nZoë;Café\n");
    }

    #[test]
    fn explicit_encoding_overrides_detection() {
        // Valid UTF-8 bytes, but the user says Latin-1: "Ã«" is what they asked for.
        let bytes = "Zoë".as_bytes();
        let d = decode(bytes, encoding_for_label("latin1"));
        assert_eq!(d.encoding, WINDOWS_1252);
        assert_eq!(d.text, "ZoÃ«");
        assert!(encoding_for_label("no-such-encoding").is_none());
        assert_eq!(encoding_for_label(" UTF-16LE "), Some(UTF_16LE));
    }

    #[test]
    fn binary_detection() {
        let mut zip_like = b"PK\x03\x04\x14\x00\x06\x00".to_vec();
        zip_like.extend_from_slice(&[0, 0, 0x21, 0, 0x5c, 0x11, 0, 0, 7, 0, 0]);
        assert!(looks_binary(&zip_like));
        assert!(!looks_binary(b"a,b\n1,2\n"));
    }

    #[test]
    fn detects_comma_semicolon_tab_pipe() {
        assert_eq!(detect_delimiter("a,b,c\n1,2,3\n", b'"'), Some(b','));
        assert_eq!(detect_delimiter("a;b;c\n1;2,5;3\n4;5;6\n", b'"'), Some(b';'));
        assert_eq!(detect_delimiter("a\tb\n1\t2\n", b'"'), Some(b'\t'));
        assert_eq!(detect_delimiter("a|b|c\n1|2|3", b'"'), Some(b'|'));
        assert_eq!(detect_delimiter("name\nAnn\nBob\n", b'"'), None);
    }

    #[test]
    fn delimiters_inside_quotes_do_not_count() {
        // Commas appear more often than semicolons, but only inside quotes.
        let text = "name;note\n\"Smith, John\";\"a, b, c\"\n\"Doe, Jane\";\"x,\ny, z\"\n";
        assert_eq!(detect_delimiter(text, b'"'), Some(b';'));
    }

    #[test]
    fn consistency_beats_raw_count() {
        // Comma gives 3 fields on one line and 2 on others; semicolon is steady at 2.
        let text = "name;company\nAnn;Acme, Inc, EU\nBob;Foo\nCid;Bar\n";
        assert_eq!(detect_delimiter(text, b'"'), Some(b';'));
    }
}
