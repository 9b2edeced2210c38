//! Person names as people type them: "Dr. SHARMA, Priya  ", "priya sharma".

/// Honorifics dropped from the start of a name (folded, without dots).
const HONORIFICS: &[&str] = &[
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "shri", "sri", "smt", "kumari", "er",
    "adv", "capt", "col", "rev", "fr",
];

/// A name split into parts; `full` is "First [Middle] Last".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NameParts {
    pub first: Option<String>,
    pub last: Option<String>,
    pub full: Option<String>,
}

/// Collapse runs of whitespace and trim.
pub fn clean_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

fn is_honorific(token: &str) -> bool {
    let t = token.trim_end_matches('.').to_ascii_lowercase();
    HONORIFICS.contains(&t.as_str())
}

/// Title-case a name that was typed all upper or all lower case; leave mixed
/// case alone ("McDonald", "van der Berg" typed deliberately).
pub fn fix_case(s: &str) -> String {
    let has_upper = s.chars().any(char::is_uppercase);
    let has_lower = s.chars().any(char::is_lowercase);
    if has_upper && has_lower {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = c.is_whitespace() || c == '-' || c == '\'';
    }
    out
}

fn strip_honorifics(s: &str) -> String {
    let mut tokens: Vec<&str> = s.split_whitespace().collect();
    while tokens.len() > 1 && is_honorific(tokens[0]) {
        tokens.remove(0);
    }
    tokens.join(" ")
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

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Split one "Name" cell into first/last: "Last, First", honorifics, stray
/// spaces. Middle names stay in `full` only.
pub fn split_full_name(raw: &str) -> NameParts {
    let cleaned = clean_spaces(raw);
    if cleaned.is_empty() {
        return NameParts::default();
    }
    let (first_part, last_part) = match cleaned.split_once(',') {
        // "Sharma, Priya" (a trailing ", Jr" style suffix is rare in leads; the
        // comma form is far more often an export's "Last, First").
        Some((last, first)) if !first.trim().is_empty() && !last.trim().is_empty() => (
            strip_honorifics(first.trim()),
            Some(strip_honorifics(last.trim())),
        ),
        _ => (strip_honorifics(cleaned.trim_matches(',')), None),
    };
    let first_part = fix_case(&first_part);
    match last_part {
        Some(last) => {
            let last = fix_case(&last);
            let first = first_part.split(' ').next().unwrap_or("").to_string();
            let full = clean_spaces(&format!("{first_part} {last}"));
            NameParts {
                first: non_empty(first),
                last: non_empty(last),
                full: non_empty(full),
            }
        }
        None => {
            let tokens: Vec<&str> = first_part.split(' ').collect();
            let first = tokens.first().map(|s| s.to_string()).unwrap_or_default();
            let last = if tokens.len() > 1 {
                // The surname starts at the particles before the last word
                // ("Maria de la Cruz"), never at the first word.
                let mut start = tokens.len() - 1;
                while start > 1 && is_particle(tokens[start - 1]) {
                    start -= 1;
                }
                tokens[start..].join(" ")
            } else {
                String::new()
            };
            NameParts {
                first: non_empty(first),
                last: non_empty(last),
                full: non_empty(first_part),
            }
        }
    }
}

/// Clean a name that arrived in its own column (first or last).
pub fn clean_name_part(raw: &str) -> Option<String> {
    let s = strip_honorifics(&clean_spaces(raw));
    non_empty(fix_case(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<String>, Option<String>, Option<String>) {
        let p = split_full_name(s);
        (p.first, p.last, p.full)
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

    #[test]
    fn keeps_deliberate_mixed_case() {
        assert_eq!(clean_name_part("McDonald"), Some("McDonald".into()));
        assert_eq!(clean_name_part("o'brien"), Some("O'Brien".into()));
        assert_eq!(clean_name_part("   "), None);
    }
}
