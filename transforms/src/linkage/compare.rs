//! Comparison levels: each compared field of two records falls into one
//! level (0 = the strongest agreement), or none when a side is missing.

use smallvec::SmallVec;
use strsim::damerau_levenshtein;

use super::config::{ComparisonConfig, ComparisonKind};
use crate::dedupe::names::{fold_name, part_agrees_sounding, sound_alike};
use crate::similarity::jaro_winkler;

/// Level names of a comparison, strongest first.
pub fn level_labels(c: &ComparisonConfig) -> Vec<String> {
    use ComparisonKind as K;
    let fixed: &[&str] = match c.kind {
        K::PersonName => &[
            "exact",
            "swapped",
            "alike",
            "similar",
            "initial",
            "surname_only",
            "first_only",
            "partial",
            "differs",
        ],
        K::Phone => &["exact", "same_nsn", "last7", "differs"],
        K::Email => &["exact", "same_local", "same_domain", "differs"],
        K::Company => &["exact", "jw>=0.9", "differs"],
        K::City => &["exact", "jw>=0.88", "differs"],
        K::Country | K::Exact => &["exact", "differs"],
        K::Date => &["exact", "one_digit", "day_month_swapped", "same_month", "differs"],
        K::String => {
            let mut v = vec!["exact".to_string(), "one_edit".to_string()];
            v.extend(string_bands(c).iter().map(|t| format!("jw>={t}")));
            v.push("differs".into());
            return v;
        }
    };
    fixed.iter().map(|s| s.to_string()).collect()
}

fn string_bands(c: &ComparisonConfig) -> Vec<f64> {
    if c.similarity.is_empty() {
        vec![0.92, 0.8]
    } else {
        c.similarity.clone()
    }
}

/// Company name without case, punctuation and legal suffixes.
pub fn normalise_company(s: &str) -> String {
    const SUFFIXES: &[&str] = &[
        "pvt",
        "private",
        "ltd",
        "limited",
        "inc",
        "incorporated",
        "llc",
        "llp",
        "gmbh",
        "corp",
        "corporation",
        "co",
        "company",
        "plc",
        "ag",
        "sa",
        "bv",
        "the",
        "and",
    ];
    let folded: String = deunicode::deunicode(s)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    folded
        .split_whitespace()
        .filter(|w| !SUFFIXES.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lower-case words of letters and digits, single spaces.
pub fn fold_words(s: &str) -> String {
    let t = if s.is_ascii() {
        s.to_string()
    } else {
        deunicode::deunicode(s)
    };
    t.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Digits of a string.
pub fn digits(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// Length of the country calling code at the start of E.164 digits (ITU
/// assignment: 1 and 7 are one digit, a fixed set of two-digit codes, the
/// rest three).
pub fn calling_code_len(d: &str) -> usize {
    let b = d.as_bytes();
    match b.first() {
        Some(b'1') | Some(b'7') => 1,
        Some(_) if b.len() >= 2 => {
            let two = &d[..2];
            const TWO: &[&str] = &[
                "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
                "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
                "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
            ];
            if TWO.contains(&two) { 2 } else { 3 }
        }
        _ => 0,
    }
}

const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.in",
    "yahoo.co.uk",
    "ymail.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "rediffmail.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "protonmail.com",
    "proton.me",
    "gmx.com",
    "gmx.de",
    "zoho.com",
    "mail.com",
    "qq.com",
    "163.com",
    "126.com",
    "yandex.com",
    "netvigator.com",
];

/// Prepare one record's raw column values for a comparison: the strings
/// the comparison works on. Empty result = missing. `raw[c]` holds the
/// values of the comparison's c-th column (several for a master's phones).
pub fn prepare(c: &ComparisonConfig, raw: &[&[String]]) -> Vec<String> {
    use ComparisonKind as K;
    let one = |f: &dyn Fn(&str) -> String| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in raw.first().copied().unwrap_or(&[]) {
            let p = f(v.trim());
            if !p.is_empty() && !out.contains(&p) {
                out.push(p);
            }
        }
        out
    };
    match c.kind {
        K::PersonName => {
            let get = |i: usize| {
                raw.get(i)
                    .and_then(|v| v.first())
                    .map(|s| fold_name(s))
                    .unwrap_or_default()
            };
            let (f, l) = (get(0), get(1));
            if f.is_empty() && l.is_empty() {
                return Vec::new();
            }
            let full = format!("{f} {l}");
            let (sf, sl) = (sound_alike(&f), sound_alike(&l));
            // Optional third column, the whole name: its folded words
            // (middle names and multi-word given names live only there).
            let words = raw
                .get(2)
                .and_then(|v| v.first())
                .map(|s| {
                    s.split(|c: char| c.is_whitespace() || c == ',' || c == '-')
                        .map(fold_name)
                        .filter(|w| !w.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![f, l, full, sf, sl, words]
        }
        K::Phone => one(&digits),
        K::Email => one(&|s| s.to_lowercase()),
        K::Company => one(&normalise_company),
        K::City | K::String => one(&fold_words),
        K::Country => one(&|s| s.to_uppercase()),
        K::Exact => one(&|s| s.to_string()),
        K::Date => one(&digits),
    }
}

/// The value whose frequency adjusts the exact level (term frequency).
pub fn tf_key<'a>(
    c: &ComparisonConfig,
    prepared: &'a [String],
    level: usize,
    other: &[String],
) -> Option<&'a str> {
    if level != 0 || prepared.is_empty() {
        return None;
    }
    match c.kind {
        ComparisonKind::PersonName => prepared.get(2).map(|s| s.as_str()),
        _ => prepared.iter().find(|v| other.contains(v)).map(|s| s.as_str()),
    }
}

/// The values a record contributes to term frequencies.
pub fn tf_values<'a>(c: &ComparisonConfig, prepared: &'a [String]) -> Vec<&'a str> {
    match c.kind {
        ComparisonKind::PersonName => {
            if prepared.len() > 2 && !prepared[0].is_empty() && !prepared[1].is_empty() {
                vec![prepared[2].as_str()]
            } else {
                Vec::new()
            }
        }
        _ => prepared.iter().map(|s| s.as_str()).collect(),
    }
}

/// The level of two prepared values, `None` when either side is missing.
pub fn compare(c: &ComparisonConfig, a: &[String], b: &[String]) -> Option<usize> {
    use ComparisonKind as K;
    if a.is_empty() || b.is_empty() {
        return None;
    }
    if c.kind == K::PersonName {
        return Some(compare_names(a, b));
    }
    let mut best: Option<usize> = None;
    for x in a {
        for y in b {
            let l = match c.kind {
                K::Phone => compare_phone(x, y),
                K::Email => compare_email(x, y),
                K::Company => banded(x, y, &[0.9]),
                K::City => banded(x, y, &[0.88]),
                K::Country | K::Exact => usize::from(x != y),
                K::String => compare_string(x, y, &string_bands(c)),
                K::Date => compare_date(x, y),
                K::PersonName => unreachable!(),
            };
            best = Some(best.map_or(l, |b: usize| b.min(l)));
            if l == 0 {
                return best;
            }
        }
    }
    best
}

fn banded(x: &str, y: &str, bands: &[f64]) -> usize {
    if x == y {
        return 0;
    }
    let s = jaro_winkler(x, y);
    bands
        .iter()
        .position(|&t| s >= t)
        .map_or(bands.len() + 1, |i| i + 1)
}

fn compare_string(x: &str, y: &str, bands: &[f64]) -> usize {
    if x == y {
        return 0;
    }
    if damerau_levenshtein(x, y) <= 1 {
        return 1;
    }
    let s = jaro_winkler(x, y);
    bands
        .iter()
        .position(|&t| s >= t)
        .map_or(bands.len() + 2, |i| i + 2)
}

fn compare_phone(x: &str, y: &str) -> usize {
    if x == y {
        return 0;
    }
    // Slices, not copies: this runs for every candidate pair.
    fn nsn(d: &str) -> &str {
        d.get(calling_code_len(d).min(d.len())..).unwrap_or("")
    }
    fn last7(d: &str) -> &str {
        d.get(d.len().saturating_sub(7)..).unwrap_or("")
    }
    if nsn(x) == nsn(y) && x.len() >= 8 {
        return 1;
    }
    if x.len() >= 7 && y.len() >= 7 && last7(x) == last7(y) {
        return 2;
    }
    3
}

fn compare_email(x: &str, y: &str) -> usize {
    if x == y {
        return 0;
    }
    // Local parts compare without dots (gmail keys have none), without
    // copying them: this runs for every candidate pair.
    fn undotted(l: &str) -> impl Iterator<Item = u8> + '_ {
        l.bytes().filter(|&c| c != b'.')
    }
    match (x.rsplit_once('@'), y.rsplit_once('@')) {
        (Some((lx, dx)), Some((ly, dy))) => {
            if undotted(lx).count() >= 3 && undotted(lx).eq(undotted(ly)) {
                1
            } else if dx == dy && !FREE_MAIL.contains(&dx) {
                2
            } else {
                3
            }
        }
        _ => 3,
    }
}

fn compare_date(x: &str, y: &str) -> usize {
    if x == y {
        return 0;
    }
    if x.len() == y.len() && x.chars().zip(y.chars()).filter(|(a, b)| a != b).count() == 1 {
        return 1;
    }
    if x.len() == 8 && y.len() == 8 {
        // YYYYMMDD: day and month swapped, or same year and month.
        if x[..4] == y[..4] && x[4..6] == y[6..8] && x[6..8] == y[4..6] {
            return 2;
        }
        if x[..6] == y[..6] {
            return 3;
        }
    }
    4
}

/// Names prepared as `[first, last, "first last", sound(first),
/// sound(last), words of the full name]`: the parts' level, improved by the
/// full names' words when those say more ("Li Ka Ming" / "Ka Ming Li").
fn compare_names(a: &[String], b: &[String]) -> usize {
    let parts = compare_name_parts(a, b);
    if parts <= 1 {
        return parts;
    }
    match (a.get(5), b.get(5)) {
        (Some(x), Some(y)) if !x.is_empty() && !y.is_empty() => parts.min(compare_words(x, y)),
        _ => parts,
    }
}

/// Full names as words: the same words in another order, or the same
/// letters in the same order split otherwise, the surname at either end
/// ("kaming li" / "ka ming li" / "li ka ming") = swapped (1); a shared word
/// and the rest alike (Jaro-Winkler >= 0.92) = alike (2). The same letters
/// in another order are a typo ("mathtew" / "matthew"), not a swap.
fn compare_words<'a>(x: &'a str, y: &'a str) -> usize {
    // Most candidate pairs are other people: without the same letters
    // (which the same words also need) and without a shared word, nothing
    // below can match, so skip its allocations.
    let letters = |s: &str| s.bytes().filter(|&c| c != b' ').count();
    let (lx, ly) = (letters(x), letters(y));
    let shares_a_word = x.split(' ').any(|w| shared_word(w, y.split(' ')));
    if lx != ly && !shares_a_word {
        return 8;
    }
    // Sorted words, on the stack for names of up to 8 words: this runs for
    // most pairs that share a surname, i.e. most candidate pairs.
    let sorted = |s: &'a str| {
        let mut w: SmallVec<[&str; 8]> = s.split(' ').collect();
        w.sort_unstable();
        w
    };
    let (wx, wy) = (sorted(x), sorted(y));
    if wx == wy {
        return 1;
    }
    // x's words rotated to start at byte k, spaces dropped, against y's
    // letters: walked in place, nothing joined.
    let rotation_is_y = |k: usize| {
        let (head, tail) = x.split_at(k);
        tail.bytes()
            .chain(head.bytes())
            .filter(|&c| c != b' ')
            .eq(y.bytes().filter(|&c| c != b' '))
    };
    let mut word_starts =
        (0..x.len()).filter(|&k| x.as_bytes()[k] != b' ' && (k == 0 || x.as_bytes()[k - 1] == b' '));
    if lx == ly && ly >= 6 && word_starts.any(rotation_is_y) {
        return 1;
    }
    if !shares_a_word {
        return 8;
    }
    // The rest of each side, joined, must be alike (on the stack up to 64
    // letters; whole UTF-8 words joined are UTF-8).
    let rest = |w: &[&str], other: &[&str]| -> SmallVec<[u8; 64]> {
        w.iter()
            .filter(|t| !shared_word(t, other.iter().copied()))
            .flat_map(|t| t.bytes())
            .collect()
    };
    let (rx, ry) = (rest(&wx, &wy), rest(&wy, &wx));
    match (std::str::from_utf8(&rx), std::str::from_utf8(&ry)) {
        (Ok(rx), Ok(ry)) if rx.len() >= 3 && ry.len() >= 3 && jaro_winkler(rx, ry) >= 0.92 => 2,
        _ => 8,
    }
}

/// A word of two letters or more that `other` has too.
fn shared_word<'a>(w: &str, mut other: impl Iterator<Item = &'a str>) -> bool {
    w.len() >= 2 && other.any(|v| v == w)
}

fn compare_name_parts(a: &[String], b: &[String]) -> usize {
    let (af, al, bf, bl) = (&a[0], &a[1], &b[0], &b[1]);
    let both = |x: &str, y: &str| !x.is_empty() && !y.is_empty();
    if both(af, bf) && both(al, bl) {
        if af == bf && al == bl {
            return 0;
        }
        if af == bl && al == bf {
            return 1;
        }
        // "Kaming Li" / "Ka Ming Li": same letters, words split elsewhere
        // (compared as concatenations without building them).
        let joined_eq = |x1: &str, x2: &str| {
            x1.len() + x2.len() == bf.len() + bl.len()
                && x1.bytes().chain(x2.bytes()).eq(bf.bytes().chain(bl.bytes()))
        };
        if joined_eq(af, al) || joined_eq(al, af) {
            return 1;
        }
        // The sound-alike forms (a[3], a[4]) were made with the frame.
        let alike = |x: &str, y: &str, sx: &str, sy: &str| {
            x == y
                || (x.len() > 1
                    && y.len() > 1
                    && (part_agrees_sounding(x, y, sx, sy, 0.92) || (sx == sy && sx.len() >= 3)))
        };
        let first_alike = alike(af, bf, &a[3], &b[3]);
        let last_alike = alike(al, bl, &a[4], &b[4]);
        if first_alike && last_alike {
            return 2;
        }
        let similar = |x: &str, y: &str, sx: &str, sy: &str| {
            x.len() > 1 && y.len() > 1 && part_agrees_sounding(x, y, sx, sy, 0.85)
        };
        let (first_similar, last_similar) = (similar(af, bf, &a[3], &b[3]), similar(al, bl, &a[4], &b[4]));
        if first_similar && last_similar {
            return 3;
        }
        let initial = (af.len() == 1 || bf.len() == 1) && af.as_bytes()[0] == bf.as_bytes()[0];
        if initial && last_similar {
            return 4;
        }
        if alike(af, bl, &a[3], &b[4]) && alike(al, bf, &a[4], &b[3]) {
            return 1;
        }
        if last_similar {
            return 5;
        }
        if first_similar {
            return 6;
        }
        return 8;
    }
    // One part missing on a side: compare what both have.
    let pairs = [
        (af, bf, &a[3], &b[3]),
        (al, bl, &a[4], &b[4]),
        (af, bl, &a[3], &b[4]),
        (al, bf, &a[4], &b[3]),
    ];
    for (x, y, sx, sy) in pairs {
        if both(x, y) {
            return if part_agrees_sounding(x, y, sx, sy, 0.85) {
                7
            } else {
                8
            };
        }
    }
    8
}

/// A Soundex code: first letter + three digits (Robert/Rupert R163).
pub fn soundex(s: &str) -> String {
    let f = fold_name(s);
    let mut chars = f.chars().filter(|c| c.is_ascii_alphabetic());
    let Some(first) = chars.next() else {
        return String::new();
    };
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => '1',
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => '2',
        'd' | 't' => '3',
        'l' => '4',
        'm' | 'n' => '5',
        'r' => '6',
        'h' | 'w' => '-',
        _ => '0',
    };
    let mut out = String::with_capacity(4);
    out.push(first.to_ascii_uppercase());
    let mut last = code(first);
    for c in chars {
        let d = code(c);
        if d == '-' {
            continue;
        }
        if d != '0' && d != last {
            out.push(d);
            if out.len() == 4 {
                break;
            }
        }
        last = d;
    }
    while out.len() < 4 {
        out.push('0');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkage::config::LinkageConfig;

    fn c(kind: ComparisonKind) -> ComparisonConfig {
        LinkageConfig::lead_comparisons()
            .into_iter()
            .find(|x| x.kind == kind)
            .unwrap()
    }

    fn name(first: &str, last: &str) -> Vec<String> {
        let (f, l) = (vec![first.to_string()], vec![last.to_string()]);
        prepare(&c(ComparisonKind::PersonName), &[&f, &l])
    }

    fn level(kind: ComparisonKind, a: &[String], b: &[String]) -> Option<String> {
        let cfg = c(kind);
        compare(&cfg, a, b).map(|l| level_labels(&cfg)[l].clone())
    }

    #[test]
    fn name_levels() {
        let k = ComparisonKind::PersonName;
        let l = |a: (&str, &str), b: (&str, &str)| level(k, &name(a.0, a.1), &name(b.0, b.1)).unwrap();
        assert_eq!(l(("Priya", "Sharma"), ("PRIYA", "sharma")), "exact");
        assert_eq!(l(("Sharma", "Priya"), ("Priya", "Sharma")), "swapped");
        assert_eq!(l(("Preeti", "Sharma"), ("Priti", "Sharma")), "alike");
        assert_eq!(l(("Bob", "Smith"), ("Robert", "Smith")), "alike", "nickname");
        assert_eq!(l(("P", "Sharma"), ("Priya", "Sharma")), "initial");
        assert_eq!(l(("Anil", "Sharma"), ("Sunita", "Sharma")), "surname_only");
        assert_eq!(l(("Priya", "Sharma"), ("Priya", "Fernandes")), "first_only");
        assert_eq!(l(("Priya", ""), ("Priya", "Sharma")), "partial");
        assert_eq!(l(("Ravi", "Kumar"), ("Meera", "Nair")), "differs");
        let full = |f: &str, l: &str, full: &str| {
            let (f, l, w) = (vec![f.to_string()], vec![l.to_string()], vec![full.to_string()]);
            prepare(&c(ComparisonKind::PersonName), &[&f, &l, &w])
        };
        // Each side as "first|last|full", the level, and why.
        let cases = [
            (
                "Li|Ming|Li Ka Ming",
                "Ka|Li|Ka Ming Li",
                "swapped",
                "words reordered",
            ),
            (
                "Kaming|Li|Kaming Li",
                "Ka|Li|Ka Ming Li",
                "swapped",
                "given name split",
            ),
            (
                "Kaming|Li|Kaming Li",
                "Li|Ka Ming|Li Ka Ming",
                "swapped",
                "surname first, split",
            ),
            // The same letters in another order are a typo, not a swap.
            (
                "Mathtew|Walker|Mathtew Walker",
                "Matthew|Walker|Matthew Walker",
                "alike",
                "typo",
            ),
            (
                "Gaytari|D'Souza|Gaytari D'Souza",
                "Gayatri|D'Souza|Gayatri D'Souza",
                "alike",
                "typo",
            ),
            (
                "Ka-Mig|Li|Ka-Mig Li",
                "Li|Ming|Li Ka Ming",
                "alike",
                "shared word, rest alike",
            ),
            (
                "Anil|Sharma|Anil Sharma",
                "Sunita|Sharma|Sunita Sharma",
                "surname_only",
                "siblings",
            ),
        ];
        let side = |s: &str| {
            let p: Vec<&str> = s.split('|').collect();
            full(p[0], p[1], p[2])
        };
        for (a, b, want, why) in cases {
            assert_eq!(level(k, &side(a), &side(b)).unwrap(), want, "{a} / {b}: {why}");
        }
        assert_eq!(
            level(k, &name("", ""), &name("Ravi", "Kumar")),
            None,
            "missing is neutral"
        );
    }

    #[test]
    fn phone_email_company_levels() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let p = c(ComparisonKind::Phone);
        let ph = |a: &str, b: &str| {
            level(
                ComparisonKind::Phone,
                &prepare(&p, &[&s(&[a])]),
                &prepare(&p, &[&s(&[b])]),
            )
            .unwrap()
        };
        assert_eq!(ph("+919820012345", "+919820012345"), "exact");
        assert_eq!(ph("+919820012345", "+449820012345"), "same_nsn");
        assert_eq!(ph("+919820012345", "+919830012345"), "last7");
        assert_eq!(ph("+919820012345", "+919820099999"), "differs");
        // A master's several phones: the best level counts.
        let many = prepare(&p, &[&s(&["+911111111111", "+919820012345"])]);
        assert_eq!(
            level(
                ComparisonKind::Phone,
                &many,
                &prepare(&p, &[&s(&["+919820012345"])])
            )
            .unwrap(),
            "exact"
        );
        let e = |a: &str, b: &str| level(ComparisonKind::Email, &s(&[a]), &s(&[b])).unwrap();
        assert_eq!(e("priya@acme.in", "priya@acme.in"), "exact");
        assert_eq!(e("priya.sharma@gmail.com", "priya.sharma@acme.in"), "same_local");
        assert_eq!(
            e("priyasharma@gmail.com", "priya.sharma@acme.in"),
            "same_local",
            "dots ignored"
        );
        assert_eq!(e("priya@acme.in", "ravi@acme.in"), "same_domain");
        assert_eq!(e("priya@gmail.com", "ravi@gmail.com"), "differs", "free mail");
        assert_eq!(normalise_company("Acme Pvt. Ltd."), "acme");
        assert_eq!(normalise_company("ACME Inc"), "acme");
        assert_eq!(normalise_company("Müller GmbH"), "muller");
        assert_eq!(calling_code_len("919820012345"), 2);
        assert_eq!(calling_code_len("14155550100"), 1);
        assert_eq!(calling_code_len("85291234567"), 3);
    }

    #[test]
    fn string_and_date_levels() {
        let sc = ComparisonConfig {
            name: "suburb".into(),
            kind: ComparisonKind::String,
            columns: vec!["suburb".into()],
            term_frequency: false,
            similarity: vec![],
        };
        let s = |x: &str| vec![x.to_string()];
        let lab = level_labels(&sc);
        assert_eq!(lab, vec!["exact", "one_edit", "jw>=0.92", "jw>=0.8", "differs"]);
        assert_eq!(
            lab[compare(&sc, &s("kingston"), &s("kingstone")).unwrap()],
            "one_edit"
        );
        assert_eq!(
            lab[compare(&sc, &s("kingston"), &s("paddington")).unwrap()],
            "differs"
        );
        let dc = ComparisonConfig {
            kind: ComparisonKind::Date,
            ..sc.clone()
        };
        let dl = level_labels(&dc);
        let d = |a: &str, b: &str| dl[compare(&dc, &s(a), &s(b)).unwrap()].clone();
        assert_eq!(d("19560412", "19560412"), "exact");
        assert_eq!(d("19560412", "19560413"), "one_digit");
        assert_eq!(d("19560412", "19561204"), "day_month_swapped");
        assert_eq!(d("19560412", "19560429"), "same_month");
        assert_eq!(d("19560412", "19870101"), "differs");
        assert_eq!(soundex("Robert"), "R163");
        assert_eq!(soundex("Rupert"), "R163");
        assert_eq!(soundex("Sharma"), soundex("Sharmaa"));
    }
}
