//! Person names as people type them: "Dr. SHARMA, Priya  ", "priya sharma".

/// Honorifics dropped from the start of a name (folded, without dots).
const HONORIFICS: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "shri", "sri", "smt", "kumari", "er",
    "adv", "capt", "col", "rev", "fr",
];

/// Collapse runs of whitespace and trim, into `out`.
fn clean_spaces_into(s: &str, out: &mut String) {
    out.clear();
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
}

fn is_honorific(token: &str) -> bool {
    let t = token.trim_end_matches('.');
    HONORIFICS.iter().any(|h| h.eq_ignore_ascii_case(t))
}

/// Title-case a name that was typed all upper or all lower case; leave mixed
/// case alone ("McDonald", "van der Berg" typed deliberately). The result is
/// `s` itself or written into `buf`.
fn fix_case<'a>(s: &'a str, buf: &'a mut String) -> &'a str {
    let has_upper = s.chars().any(char::is_uppercase);
    let has_lower = s.chars().any(char::is_lowercase);
    if has_upper && has_lower {
        return s;
    }
    buf.clear();
    let mut start = true;
    for c in s.chars() {
        if start {
            buf.extend(c.to_uppercase());
        } else {
            buf.extend(c.to_lowercase());
        }
        start = c.is_whitespace() || c == '-' || c == '\'';
    }
    buf
}

/// Leading honorifics dropped, never the last word ("Dr." alone stays).
/// `s` is single-spaced (cleaned), so the result is a slice of it.
fn strip_honorifics(s: &str) -> &str {
    let mut s = s.trim();
    while let Some((head, rest)) = s.split_once(' ')
        && is_honorific(head)
    {
        s = rest;
    }
    s
}

/// Surname particles: "Ludwig van Beethoven" has the surname "van
/// Beethoven", so a lead typed as one "Name" cell agrees with the same lead
/// from a CRM's separate last-name field.
const SURNAME_PARTICLES: &[&str] = &[
    "van", "von", "der", "den", "de", "del", "della", "dela", "di", "da", "das", "dos", "du", "la", "le",
    "ter", "ten", "bin", "binti", "al", "el", "ibn", "st", "st.",
];

fn is_particle(token: &str) -> bool {
    SURNAME_PARTICLES.iter().any(|p| p.eq_ignore_ascii_case(token))
}

fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

/// A lead's name parts (`full` is "First [Middle] Last"), borrowed from a
/// [`NameBuffers`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NamePartsRef<'a> {
    pub first: Option<&'a str>,
    pub last: Option<&'a str>,
    pub full: Option<&'a str>,
}

/// Scratch text for cleaning and splitting names, reused row after row:
/// done with owned strings, one name cost about ten allocations (1M rows
/// in the mapping stage).
#[derive(Debug, Default)]
pub struct NameBuffers {
    first_clean: String,
    first_case: String,
    last_clean: String,
    last_case: String,
    full: String,
    split: SplitBuffers,
}

#[derive(Debug, Default)]
struct SplitBuffers {
    clean: String,
    first: String,
    last: String,
    full: String,
}

impl NameBuffers {
    /// A lead's first, last and full name from whichever of its first-name,
    /// last-name and full-name cells it has: parts cleaned, a lone full
    /// name split, a missing full name joined from the parts.
    pub fn lead_name(
        &mut self,
        first: Option<&str>,
        last: Option<&str>,
        full: Option<&str>,
    ) -> NamePartsRef<'_> {
        let NameBuffers {
            first_clean,
            first_case,
            last_clean,
            last_case,
            full: full_buf,
            split,
        } = self;
        let first = first.and_then(move |raw| clean_part(raw, first_clean, first_case));
        let last = last.and_then(move |raw| clean_part(raw, last_clean, last_case));
        if first.is_none()
            && last.is_none()
            && let Some(full) = full
        {
            return split.split(full);
        }
        let full = match full {
            Some(raw) => {
                clean_spaces_into(raw, full_buf);
                Some(full_buf.as_str())
            }
            None => {
                full_buf.clear();
                full_buf.push_str(first.unwrap_or(""));
                if first.is_some() && last.is_some() {
                    full_buf.push(' ');
                }
                full_buf.push_str(last.unwrap_or(""));
                non_empty(full_buf)
            }
        };
        NamePartsRef { first, last, full }
    }
}

/// A name that arrived in its own column (first or last), cleaned.
fn clean_part<'a>(raw: &str, clean: &'a mut String, case: &'a mut String) -> Option<&'a str> {
    clean_spaces_into(raw, clean);
    let clean: &'a str = clean;
    non_empty(fix_case(strip_honorifics(clean), case))
}

impl SplitBuffers {
    /// Split one "Name" cell into first/last: "Last, First", honorifics,
    /// stray spaces. Middle names stay in `full` only.
    fn split(&mut self, raw: &str) -> NamePartsRef<'_> {
        let SplitBuffers {
            clean,
            first,
            last,
            full,
        } = self;
        clean_spaces_into(raw, clean);
        let clean: &str = clean;
        if clean.is_empty() {
            return NamePartsRef::default();
        }
        let (first_part, last_part) = match clean.split_once(',') {
            // "Sharma, Priya" (a trailing ", Jr" style suffix is rare in leads; the
            // comma form is far more often an export's "Last, First").
            Some((l, f)) if !f.trim().is_empty() && !l.trim().is_empty() => {
                (strip_honorifics(f), Some(strip_honorifics(l)))
            }
            _ => (strip_honorifics(clean.trim_matches(',')), None),
        };
        let first_part = fix_case(first_part, first);
        let given = first_part.split(' ').next().unwrap_or("");
        match last_part {
            Some(l) => {
                let l = fix_case(l, last);
                full.clear();
                full.push_str(first_part);
                if !first_part.is_empty() && !l.is_empty() {
                    full.push(' ');
                }
                full.push_str(l);
                NamePartsRef {
                    first: non_empty(given),
                    last: non_empty(l),
                    full: non_empty(full),
                }
            }
            None => {
                // The surname starts at the particles before the last word
                // ("Maria de la Cruz"), never at the first word; `cut` is
                // the space before it.
                let surname = match first_part.rfind(' ') {
                    None => "",
                    Some(mut cut) => {
                        while let Some(prev) = first_part[..cut].rfind(' ')
                            && is_particle(&first_part[prev + 1..cut])
                        {
                            cut = prev;
                        }
                        &first_part[cut + 1..]
                    }
                };
                NamePartsRef {
                    first: non_empty(given),
                    last: non_empty(surname),
                    full: non_empty(first_part),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<String>, Option<String>, Option<String>) {
        let mut buffers = SplitBuffers::default();
        let p = buffers.split(s);
        let owned = |v: Option<&str>| v.map(str::to_string);
        (owned(p.first), owned(p.last), owned(p.full))
    }

    #[test]
    fn splits_first_last() {
        assert_eq!(
            parts("  Priya   Sharma "),
            (
                Some("Priya".into()),
                Some("Sharma".into()),
                Some("Priya Sharma".into())
            )
        );
    }

    #[test]
    fn splits_last_comma_first_with_honorific() {
        assert_eq!(
            parts("Dr. SHARMA, PRIYA"),
            (
                Some("Priya".into()),
                Some("Sharma".into()),
                Some("Priya Sharma".into())
            )
        );
        assert_eq!(
            parts("Mehta, Vikram Raj"),
            (
                Some("Vikram".into()),
                Some("Mehta".into()),
                Some("Vikram Raj Mehta".into())
            )
        );
    }

    #[test]
    fn middle_names_and_single_names() {
        assert_eq!(parts("Mr. anil kumar sharma").0, Some("Anil".into()));
        assert_eq!(parts("Mr. anil kumar sharma").1, Some("Sharma".into()));
        assert_eq!(
            parts("Madonna"),
            (Some("Madonna".into()), None, Some("Madonna".into()))
        );
        // Surname particles belong to the surname, never the first word.
        assert_eq!(parts("Ludwig van Beethoven").1, Some("van Beethoven".into()));
        assert_eq!(parts("maria de la cruz").1, Some("De La Cruz".into()));
        assert_eq!(parts("Maria De La Cruz").0, Some("Maria".into()));
        assert_eq!(parts("De Silva").1, Some("Silva".into()));
        assert_eq!(parts("Anil Kumar Sharma").1, Some("Sharma".into()));
        // An honorific alone is kept: it is all there is.
        assert_eq!(parts("Dr.").0, Some("Dr.".into()));
    }

    fn clean_name_part(raw: &str) -> Option<String> {
        let (mut clean, mut case) = (String::new(), String::new());
        clean_part(raw, &mut clean, &mut case).map(str::to_string)
    }

    #[test]
    fn keeps_deliberate_mixed_case() {
        assert_eq!(clean_name_part("McDonald"), Some("McDonald".into()));
        assert_eq!(clean_name_part("o'brien"), Some("O'Brien".into()));
        assert_eq!(clean_name_part("   "), None);
    }
}
