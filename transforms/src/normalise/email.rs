//! E-mail addresses: cleaning, a practical validity check and a dedupe key.
//!
//! Cleaning: trim, drop "mailto:" (and any "?subject=…"), take the address out of
//! "Name <addr>", strip surrounding `<>`, quotes and trailing `,;.`, lower-case.
//! Valid = the `email_address` crate accepts it AND practical rules hold: exactly
//! one '@', no whitespace, no quoted local part, no "..", local part not starting
//! or ending with '.', domain of dot-separated labels (letters, digits, '-', not at
//! a label's ends) with a TLD of at least 2 letters (or an "xn--" IDN TLD).
//! Key (valid addresses only): drop a "+tag" from the local part; for gmail.com
//! and googlemail.com also drop dots and use gmail.com.

use arrow::array::{Array, BooleanArray, BooleanBuilder, StringArray, StringBuilder};
use email_address::EmailAddress;

/// The result of normalising one e-mail address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailResult {
    /// The cleaned, lower-cased address, also when invalid (for reject reasons);
    /// `None` only when nothing is left after cleaning.
    pub email: Option<String>,
    /// Dedupe key; only for valid addresses.
    pub key: Option<String>,
    pub valid: bool,
}

/// Normalise one e-mail address.
pub fn normalise_email(raw: &str) -> EmailResult {
    let (mut email, mut key) = (String::new(), String::new());
    match normalise_into(raw, &mut email, &mut key) {
        None => EmailResult::default(),
        Some(valid) => EmailResult {
            email: Some(email),
            key: valid.then_some(key),
            valid,
        },
    }
}

/// [`normalise_email`] into buffers the caller reuses (a column's worth of
/// addresses allocates nothing per value): `None` when nothing is left after
/// cleaning, else whether the address is valid, with `email` holding the
/// cleaned address and, when valid, `key` the dedupe key.
fn normalise_into(raw: &str, email: &mut String, key: &mut String) -> Option<bool> {
    let cleaned = clean(raw);
    if cleaned.is_empty() {
        return None;
    }
    email.clear();
    if cleaned.is_ascii() {
        email.push_str(cleaned);
        email.make_ascii_lowercase();
    } else {
        email.push_str(&cleaned.to_lowercase());
    }
    let valid = is_practical(email) && EmailAddress::is_valid(email);
    if valid {
        key.clear();
        dedupe_key_into(email, key);
    }
    Some(valid)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

fn clean(raw: &str) -> &str {
    const QUOTES: &[char] = &['"', '\'', '`', '‘', '’', '“', '”'];
    let mut s = raw.trim();
    // "John Doe <john@x.com>"
    if s.ends_with('>')
        && let Some(open) = s.rfind('<')
    {
        s = &s[open + 1..s.len() - 1];
    }
    loop {
        let before = s.len();
        s = s.trim();
        s = s.trim_matches(QUOTES);
        s = s.trim_start_matches('<').trim_end_matches('>');
        s = s.trim_end_matches([',', ';', '.']);
        if let Some(rest) = strip_prefix_ci(s, "mailto:") {
            s = rest;
            if let Some(q) = s.find('?') {
                s = &s[..q];
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

fn is_practical(email: &str) -> bool {
    if email.chars().any(char::is_whitespace) || email.contains("..") || email.contains('"') {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') {
        return false;
    }
    if domain.len() > 253 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    // At least two labels, each well formed; the last one is the TLD.
    let mut labels = 0;
    let mut tld = "";
    for l in domain.split('.') {
        if !label_ok(l) {
            return false;
        }
        labels += 1;
        tld = l;
    }
    if labels < 2 {
        return false;
    }
    tld.starts_with("xn--") || (tld.chars().count() >= 2 && tld.chars().all(char::is_alphabetic))
}

/// The dedupe key of a valid, cleaned address, appended to `out`.
fn dedupe_key_into(email: &str, out: &mut String) {
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    let local = match local.find('+') {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    };
    if domain == "gmail.com" || domain == "googlemail.com" {
        out.extend(local.chars().filter(|&c| c != '.'));
        out.push_str("@gmail.com");
    } else {
        out.push_str(local);
        out.push('@');
        out.push_str(domain);
    }
}

/// Whole-column results of [`normalise_email_array`].
#[derive(Debug, Clone)]
pub struct EmailColumns {
    pub email: StringArray,
    pub key: StringArray,
    pub valid: BooleanArray,
}

/// Normalise a column of e-mail addresses. Null, blank (or nothing left after
/// cleaning) gives null in every output, including `valid`.
pub fn normalise_email_array(raw: &StringArray) -> EmailColumns {
    let len = raw.len();
    let mut email = StringBuilder::with_capacity(len, len * 24);
    let mut key = StringBuilder::with_capacity(len, len * 24);
    let mut valid = BooleanBuilder::with_capacity(len);
    let (mut cleaned, mut dedupe) = (String::new(), String::new());
    for v in raw.iter() {
        match v.and_then(|v| normalise_into(v, &mut cleaned, &mut dedupe)) {
            None => {
                email.append_null();
                key.append_null();
                valid.append_null();
            }
            Some(ok) => {
                email.append_value(&cleaned);
                if ok {
                    key.append_value(&dedupe);
                } else {
                    key.append_null();
                }
                valid.append_value(ok);
            }
        }
    }
    EmailColumns {
        email: email.finish(),
        key: key.finish(),
        valid: valid.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        for raw in [
            "John.Doe@Example.COM",
            "  john.doe@example.com ",
            "mailto:John.Doe@example.com",
            "MAILTO:john.doe@example.com?subject=Hi",
            "<john.doe@example.com>",
            "\"john.doe@example.com\"",
            "'<john.doe@example.com>'",
            "John Doe <john.doe@example.com>",
            "\"Doe, John\" <John.Doe@example.com>",
            "john.doe@example.com;",
        ] {
            let r = normalise_email(raw);
            assert_eq!(r.email.as_deref(), Some("john.doe@example.com"), "{raw}");
            assert!(r.valid, "{raw}");
            assert_eq!(r.key.as_deref(), Some("john.doe@example.com"), "{raw}");
        }
    }

    #[test]
    fn invalid() {
        for raw in [
            "john@",
            "a b@c.com",
            "x@y",
            "john..doe@x.com",
            "@example.com",
            "john@@example.com",
            "john@example",
            "john@example.c",
            "john@example.123",
            "john@-example.com",
            "john@example..com",
            ".john@example.com",
            "john.@example.com",
            "john@[1.2.3.4]",
            "plainaddress",
            "john@exa mple.com",
        ] {
            let r = normalise_email(raw);
            assert!(!r.valid, "{raw} should be invalid");
            assert_eq!(r.key, None, "{raw}");
            assert!(r.email.is_some(), "{raw}: cleaned text kept");
        }
        assert_eq!(normalise_email("A B@C.com").email.as_deref(), Some("a b@c.com"));
        assert_eq!(normalise_email("   "), EmailResult::default());
        assert_eq!(normalise_email("<>"), EmailResult::default());
    }

    #[test]
    fn keys() {
        let k = |s: &str| normalise_email(s).key;
        assert_eq!(k("John.Doe+x@Gmail.com").as_deref(), Some("johndoe@gmail.com"));
        assert_eq!(
            k("j.o.h.n.doe@googlemail.com").as_deref(),
            Some("johndoe@gmail.com")
        );
        assert_eq!(
            k("johndoe+news+more@gmail.com").as_deref(),
            Some("johndoe@gmail.com")
        );
        assert_eq!(k("John.Doe+crm@Acme.io").as_deref(), Some("john.doe@acme.io"));
        assert_eq!(k("john.doe@acme.io").as_deref(), Some("john.doe@acme.io"));
        assert_eq!(k("+tag@acme.io").as_deref(), Some("+tag@acme.io"));
        // the cleaned address keeps dots and tags
        assert_eq!(
            normalise_email("John.Doe+x@Gmail.com").email.as_deref(),
            Some("john.doe+x@gmail.com")
        );
        // IDN and long TLDs
        assert!(normalise_email("info@müller.de").valid);
        assert!(normalise_email("a@b.photography").valid);
        assert!(normalise_email("a@b.xn--p1ai").valid);
    }

    /// The column path (buffers reused value to value) gives what the
    /// one-value function gives, for every shape the tests above name.
    #[test]
    fn array_matches_one_value_at_a_time() {
        let raws = [
            "John.Doe@Example.COM",
            "MAILTO:john.doe@example.com?subject=Hi",
            "\"Doe, John\" <John.Doe@example.com>",
            "john@",
            "a b@c.com",
            "john@example.123",
            "john@-example.com",
            ".john@example.com",
            "John.Doe+x@Gmail.com",
            "j.o.h.n.doe@googlemail.com",
            "+tag@acme.io",
            "INFO@MÜLLER.DE",
            "a@b.xn--p1ai",
            "<>",
            "   ",
            "x@y",
        ];
        let arr: StringArray = raws.iter().map(|r| Some(*r)).chain([None]).collect();
        let out = normalise_email_array(&arr);
        for (i, raw) in raws.iter().enumerate() {
            let one = normalise_email(raw);
            let got = EmailResult {
                email: (!out.email.is_null(i)).then(|| out.email.value(i).to_string()),
                key: (!out.key.is_null(i)).then(|| out.key.value(i).to_string()),
                valid: !out.valid.is_null(i) && out.valid.value(i),
            };
            assert_eq!(got, one, "{raw}");
        }
        assert!(out.email.is_null(raws.len()) && out.valid.is_null(raws.len()));
    }

    #[test]
    fn array_version() {
        let arr = StringArray::from(vec![Some("John.Doe+x@Gmail.com"), None, Some(" "), Some("john@")]);
        let out = normalise_email_array(&arr);
        assert_eq!(out.email.value(0), "john.doe+x@gmail.com");
        assert_eq!(out.key.value(0), "johndoe@gmail.com");
        assert!(out.valid.value(0));
        for i in [1, 2] {
            assert!(out.email.is_null(i) && out.key.is_null(i) && out.valid.is_null(i));
        }
        assert_eq!(out.email.value(3), "john@");
        assert!(out.key.is_null(3));
        assert!(!out.valid.value(3));
    }
}
