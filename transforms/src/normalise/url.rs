//! Website URLs: "www.Example.com" → "https://www.example.com".
//!
//! Rules: blank and placeholder text ("n/a", "-", "none", …) → `None`; no scheme →
//! "https://"; an explicit "http://" stays http (the site may not have TLS); only
//! http and https are accepted; the host is lower-cased (IDN → punycode by the
//! `url` crate) and must be a domain with a dot and an alphabetic TLD of at least 2
//! letters (IP addresses, "localhost" and user:password@ forms → `None`); path and
//! query keep their case; a fragment is dropped; a path that is only "/" is
//! dropped ("https://x.com/" → "https://x.com").

use std::collections::HashMap;

use ::url::{Host, Position, Url};
use arrow::array::{Array, StringArray, StringBuilder};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Normalise one website URL; `None` when it is blank or not a URL.
pub fn normalise_url(raw: &str) -> Option<String> {
    let s = raw.trim();
    if s.is_empty() || super::is_null_token(s) || s.chars().any(char::is_whitespace) {
        return None;
    }
    let lower_head: String = s.chars().take(8).collect::<String>().to_ascii_lowercase();
    let with_scheme;
    let text = if lower_head.starts_with("http://") || lower_head.starts_with("https://") {
        s
    } else if s.contains("://") {
        return None; // ftp://, file://, …
    } else {
        with_scheme = format!("https://{}", s.trim_start_matches('/'));
        &with_scheme
    };
    let mut url = Url::parse(text).ok()?;
    if !url.username().is_empty() || url.password().is_some() {
        return None; // "john@acme.com" is an e-mail, not a website
    }
    let Some(Host::Domain(host)) = url.host() else {
        return None;
    };
    let trimmed = host.trim_end_matches('.');
    let (_, tld) = trimmed.rsplit_once('.')?;
    let tld_ok = tld.starts_with("xn--") || (tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    if !tld_ok || trimmed.split('.').any(str::is_empty) {
        return None;
    }
    if trimmed.len() != host.len() {
        let trimmed = trimmed.to_owned();
        url.set_host(Some(&trimmed)).ok()?;
    }
    url.set_fragment(None);
    if url.path() == "/" {
        return Some(format!(
            "{}{}",
            &url[..Position::BeforePath],
            &url[Position::AfterPath..]
        ));
    }
    Some(url.into())
}

/// Normalise a column of website URLs; null, blank and non-URLs become null.
/// Each distinct value is parsed once: a company's site repeats on every
/// lead from it (the 1M bench: 495,428 websites, 180 distinct).
pub fn normalise_url_array(raw: &StringArray) -> StringArray {
    let mut out = StringBuilder::with_capacity(raw.len(), raw.len() * 24);
    let mut seen: HashMap<&str, Option<String>, Xxh3DefaultBuilder> = HashMap::default();
    for v in raw.iter() {
        match v {
            None => out.append_null(),
            Some(v) => out.append_option(seen.entry(v).or_insert_with(|| normalise_url(v)).as_deref()),
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Option<String> {
        normalise_url(s)
    }

    #[test]
    fn bare_and_explicit() {
        let cases = [
            ("www.Example.com", "https://www.example.com"),
            ("example.com/path", "https://example.com/path"),
            ("Example.com/Some/Path?Q=1", "https://example.com/Some/Path?Q=1"),
            ("example.com/", "https://example.com"),
            ("http://Example.com", "http://example.com"),
            ("http://example.com/", "http://example.com"),
            ("HTTPS://X.COM", "https://x.com"),
            ("https://x.com/?a=B", "https://x.com?a=B"),
            ("https://x.com/about#team", "https://x.com/about"),
            ("  www.acme.io  ", "https://www.acme.io"),
            ("//cdn.acme.io/a", "https://cdn.acme.io/a"),
            ("acme.co.uk:8080/x", "https://acme.co.uk:8080/x"),
            ("www.acme.io.", "https://www.acme.io"),
        ];
        for (raw, want) in cases {
            assert_eq!(n(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn not_urls() {
        for raw in [
            "",
            "  ",
            "n/a",
            "N/A",
            "-",
            "none",
            "None",
            "null",
            "acme",
            "www acme com",
            "acme .com",
            "localhost",
            "192.168.0.1",
            "ftp://acme.com",
            "john@acme.com",
            "mailto:john@acme.com",
            "acme.c",
            "acme.123",
            "http://",
        ] {
            assert_eq!(n(raw), None, "{raw}");
        }
    }

    #[test]
    fn array_version() {
        let arr = StringArray::from(vec![
            Some("www.acme.io"),
            None,
            Some("n/a"),
            Some("www.acme.io"),
            Some("acme.io/"),
            Some("n/a"),
        ]);
        let out = normalise_url_array(&arr);
        assert_eq!(out.value(0), "https://www.acme.io");
        assert!(out.is_null(1) && out.is_null(2));
        // Repeats give the same answer as their first occurrence.
        assert_eq!(out.value(3), "https://www.acme.io");
        assert_eq!(out.value(4), "https://acme.io");
        assert!(out.is_null(5));
    }
}
