//! Country names → ISO 3166-1 alpha-2.
//!
//! The base table (all 249 ISO 3166-1 entries: alpha-2, alpha-3, English short and
//! official names, plus hand-maintained aliases, long forms and native names) is
//! embedded from `countries.tsv` and `country_aliases.tsv` and folded once into a
//! `HashMap` keyed on [`fold_key`]. Lookups are case-, space-, punctuation- and
//! diacritic-insensitive ("U.S.A." = "usa", "Côte d'Ivoire" = "cote divoire").

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use arrow::array::{Array, StringArray, StringBuilder};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use super::NormaliseError;

const ISO_TABLE: &str = include_str!("countries.tsv");
const ALIAS_TABLE: &str = include_str!("country_aliases.tsv");

struct BaseTable {
    /// folded key → alpha-2
    by_key: HashMap<String, &'static str>,
    /// alpha-2 → ISO short name
    names: HashMap<&'static str, &'static str>,
    /// alpha-2 → alpha-3
    alpha3: HashMap<&'static str, &'static str>,
    /// keys listed for two different codes (first one wins); a test keeps it empty
    conflicts: Vec<String>,
}

impl BaseTable {
    fn insert(&mut self, name: &str, code: &'static str) {
        let key = fold_key(name);
        if key.is_empty() {
            self.conflicts.push(format!("{name:?} folds to an empty key"));
            return;
        }
        match self.by_key.get(&key) {
            Some(existing) if *existing != code => self
                .conflicts
                .push(format!("{name:?} (key {key:?}) → {code}, already → {existing}")),
            Some(_) => {}
            None => {
                self.by_key.insert(key, code);
            }
        }
    }
}

static BASE: LazyLock<BaseTable> = LazyLock::new(|| {
    let mut t = BaseTable {
        by_key: HashMap::with_capacity(2048),
        names: HashMap::with_capacity(256),
        alpha3: HashMap::with_capacity(256),
        conflicts: Vec::new(),
    };
    let iso_rows: Vec<(&'static str, &'static str, &'static str)> = data_lines(ISO_TABLE)
        .map(|line| {
            let mut cols = line.split('\t');
            let a2 = cols.next().expect("alpha-2 column");
            let a3 = cols.next().expect("alpha-3 column");
            let names = cols.next().expect("names column");
            (a2, a3, names)
        })
        .collect();
    // Codes first, so that names can never shadow a code.
    for &(a2, a3, names) in &iso_rows {
        t.insert(a2, a2);
        t.insert(a3, a2);
        t.names.insert(a2, names.split('|').next().unwrap_or(a2));
        t.alpha3.insert(a2, a3);
    }
    for &(a2, _, names) in &iso_rows {
        for name in names.split('|') {
            t.insert(name, a2);
        }
    }
    for line in data_lines(ALIAS_TABLE) {
        let (code, names) = line.split_once('\t').expect("alias line: CODE<TAB>names");
        let Some((&code, _)) = t.names.get_key_value(code) else {
            t.conflicts.push(format!("alias line for unknown code {code:?}"));
            continue;
        };
        for name in names.split('|') {
            t.insert(name, code);
        }
    }
    t
});

fn data_lines(table: &'static str) -> impl Iterator<Item = &'static str> {
    table
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Fold a country name into its lookup key: transliterate to ASCII (deunicode),
/// lower-case, treat `&` as "and", split on anything that is not a letter or digit,
/// drop a leading "the", read "st"/"ste" as "saint"/"sainte", then join the words
/// with no separator. A flag emoji (two regional indicators) folds to its alpha-2.
///
/// Text with letters outside the Latin script ("Россия", "日本") gets a `~` in
/// front of its transliteration, so that it can never meet a Latin name or code
/// ("مصر" transliterates to "msr", Montserrat's alpha-3).
pub fn fold_key(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(code) = flag_to_alpha2(raw) {
        return code;
    }
    let ascii;
    let non_latin = !raw.is_ascii() && raw.chars().any(|c| c.is_alphabetic() && !is_latin(c));
    let text: &str = if raw.is_ascii() {
        raw
    } else {
        ascii = deunicode::deunicode(raw);
        &ascii
    };
    let mut words: Vec<String> = Vec::with_capacity(4);
    if non_latin {
        words.push("~".to_owned());
    }
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            cur.push(c.to_ascii_lowercase());
        } else {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            if c == '&' {
                words.push("and".to_owned());
            }
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    if words.len() > 1 && words[0] == "the" {
        words.remove(0);
    }
    if words.len() == 1 && words[0] == "~" {
        words.clear();
    }
    let mut key = String::with_capacity(text.len());
    for w in &words {
        key.push_str(match w.as_str() {
            "st" => "saint",
            "ste" => "sainte",
            other => other,
        });
    }
    key
}

/// Letters of the Latin script (ASCII, Latin-1, Latin Extended-A/B, IPA,
/// Latin Extended Additional).
fn is_latin(c: char) -> bool {
    matches!(c as u32, 0..=0x7F | 0xC0..=0x2AF | 0x1E00..=0x1EFF)
}

fn flag_to_alpha2(s: &str) -> Option<String> {
    const RI_A: u32 = 0x1F1E6;
    let mut chars = s.chars();
    let (a, b) = (chars.next()?, chars.next()?);
    if chars.next().is_some() {
        return None;
    }
    let letter = |c: char| {
        let v = c as u32;
        (RI_A..RI_A + 26)
            .contains(&v)
            .then(|| char::from(b'a' + (v - RI_A) as u8))
    };
    Some([letter(a)?, letter(b)?].iter().collect())
}

/// Is `code` (upper-case) one of the 249 ISO 3166-1 alpha-2 codes?
pub fn is_alpha2(code: &str) -> bool {
    BASE.names.contains_key(code)
}

/// The ISO 3166-1 English short name of an alpha-2 code (upper-case).
pub fn country_name(alpha2: &str) -> Option<&'static str> {
    BASE.names.get(alpha2).copied()
}

/// The ISO 3166-1 alpha-3 code of an alpha-2 code (upper-case).
pub fn alpha3(alpha2: &str) -> Option<&'static str> {
    BASE.alpha3.get(alpha2).copied()
}

/// Resolves free-text country values to ISO 3166-1 alpha-2 (upper case), with
/// user overrides (checked first) on top of the embedded table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CountryResolver {
    /// folded name → alpha-2
    overrides: BTreeMap<String, &'static str>,
}

impl CountryResolver {
    /// Build a resolver. `overrides` maps a user-given name to an alpha-2 code
    /// (any case); every override whose target is not a real alpha-2 code, or whose
    /// name folds to nothing, is reported in one [`NormaliseError::CountryOverrides`].
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Self, NormaliseError> {
        let mut map = BTreeMap::new();
        let mut bad = Vec::new();
        for (name, target) in overrides {
            let code = target.trim().to_ascii_uppercase();
            let key = fold_key(name);
            match BASE.names.get_key_value(code.as_str()) {
                Some((&code, _)) if !key.is_empty() => {
                    map.insert(key, code);
                }
                Some(_) => bad.push(format!("{name:?} → {target:?} (empty name)")),
                None => bad.push(format!("{name:?} → {target:?} (not an ISO 3166-1 alpha-2 code)")),
            }
        }
        if bad.is_empty() {
            Ok(Self { overrides: map })
        } else {
            Err(NormaliseError::CountryOverrides(bad))
        }
    }

    /// Resolve `raw` to an upper-case alpha-2 code; `None` when unknown or blank.
    ///
    /// Placeholders ("n/a", "#N/A", "-", "none", "null", "nil") give `None`, but
    /// "NA" is Namibia here (`blank_to_null` nulls it first in the pipeline).
    pub fn resolve(&self, raw: &str) -> Option<&'static str> {
        let trimmed = raw.trim();
        if super::is_null_token(trimmed) && !trimmed.eq_ignore_ascii_case("na") {
            return None;
        }
        let key = fold_key(trimmed);
        if key.is_empty() {
            return None;
        }
        if let Some(code) = self.overrides.get(&key) {
            return Some(code);
        }
        BASE.by_key.get(&key).copied()
    }
}

/// Resolve a whole column; unknown and null values become null. Repeated values
/// are resolved once per call.
pub fn normalise_country_array(resolver: &CountryResolver, raw: &StringArray) -> StringArray {
    let mut memo: HashMap<&str, Option<&'static str>, Xxh3DefaultBuilder> =
        HashMap::with_hasher(Xxh3DefaultBuilder);
    let mut out = StringBuilder::with_capacity(raw.len(), raw.len() * 2);
    for v in raw.iter() {
        let code = v.and_then(|s| *memo.entry(s).or_insert_with(|| resolver.resolve(s)));
        out.append_option(code);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Option<&'static str> {
        CountryResolver::default().resolve(s)
    }

    #[test]
    fn table_is_complete_and_consistent() {
        assert_eq!(BASE.names.len(), 249);
        assert!(BASE.conflicts.is_empty(), "{:#?}", BASE.conflicts);
        // every code resolves to itself, and every alpha-3 to its alpha-2
        for (&a2, &a3) in &BASE.alpha3 {
            assert_eq!(r(a2), Some(a2));
            assert_eq!(r(&a2.to_lowercase()), Some(a2));
            assert_eq!(r(a3), Some(a2));
            assert_eq!(r(country_name(a2).unwrap()), Some(a2));
        }
    }

    #[test]
    fn seed_cases() {
        assert_eq!(r("hong kong sar"), Some("HK"));
        assert_eq!(r("UK"), Some("GB"));
        assert_eq!(r("U.S.A."), Some("US"));
        assert_eq!(r("Deutschland"), Some("DE"));
        assert_eq!(r("Korea, Republic of"), Some("KR"));
        assert_eq!(r("DEU"), Some("DE"));
    }

    #[test]
    fn variants() {
        let cases = [
            ("hk", "HK"),
            ("usa", "US"),
            ("united states of america", "US"),
            ("America", "US"),
            ("  United   States ", "US"),
            ("Côte d'Ivoire", "CI"),
            ("Cote dIvoire", "CI"),
            ("ivory coast", "CI"),
            ("Hong Kong SAR", "HK"),
            ("hong kong sar china", "HK"),
            ("Hong Kong S.A.R.", "HK"),
            ("Macau SAR", "MO"),
            ("Macao", "MO"),
            ("South Korea", "KR"),
            ("Republic of Korea", "KR"),
            ("North Korea", "KP"),
            ("Russia", "RU"),
            ("Russian Federation", "RU"),
            ("Vietnam", "VN"),
            ("Viet Nam", "VN"),
            ("Iran", "IR"),
            ("Syria", "SY"),
            ("Laos", "LA"),
            ("Czechia", "CZ"),
            ("Czech Republic", "CZ"),
            ("Türkiye", "TR"),
            ("Turkey", "TR"),
            ("Holland", "NL"),
            ("The Netherlands", "NL"),
            ("Great Britain", "GB"),
            ("England", "GB"),
            ("Scotland", "GB"),
            ("Wales", "GB"),
            ("Northern Ireland", "GB"),
            ("UAE", "AE"),
            ("KSA", "SA"),
            ("Bharat", "IN"),
            ("España", "ES"),
            ("Espana", "ES"),
            ("Italia", "IT"),
            ("Nederland", "NL"),
            ("Schweiz", "CH"),
            ("Suisse", "CH"),
            ("Österreich", "AT"),
            ("Brasil", "BR"),
            ("México", "MX"),
            ("Nippon", "JP"),
            ("日本", "JP"),
            ("中国", "CN"),
            ("Polska", "PL"),
            ("Sverige", "SE"),
            ("Norge", "NO"),
            ("Danmark", "DK"),
            ("Suomi", "FI"),
            ("România", "RO"),
            ("Ελλάδα", "GR"),
            ("Россия", "RU"),
            ("भारत", "IN"),
            ("대한민국", "KR"),
            ("Việt Nam", "VN"),
            ("St. Kitts & Nevis", "KN"),
            ("Saint Lucia", "LC"),
            ("Trinidad and Tobago", "TT"),
            ("Bosnia & Herzegovina", "BA"),
            ("the bahamas", "BS"),
            ("Congo", "CG"),
            ("DR Congo", "CD"),
            ("Åland Islands", "AX"),
            ("Curacao", "CW"),
            ("🇩🇪", "DE"),
            ("Taiwan", "TW"),
            ("Bolivia", "BO"),
            ("مصر", "EG"),
            ("MSR", "MS"),
            ("na", "NA"),
            ("Ellada", "GR"),
            ("Palestine", "PS"),
        ];
        for (raw, want) in cases {
            assert_eq!(r(raw), Some(want), "{raw}");
        }
    }

    #[test]
    fn unknown_is_none() {
        for raw in [
            "", "  ", "Atlantis", "n/a", "#N/A", "-", "XX", "Europe", "🙂", "日",
        ] {
            assert_eq!(r(raw), None, "{raw}");
        }
    }

    #[test]
    fn overrides_win_and_are_validated() {
        let mut o = BTreeMap::new();
        o.insert("Blighty".to_owned(), "gb".to_owned());
        o.insert("Korea".to_owned(), "KP".to_owned());
        let res = CountryResolver::new(&o).unwrap();
        assert_eq!(res.resolve("blighty"), Some("GB"));
        assert_eq!(res.resolve("KOREA"), Some("KP"));
        assert_eq!(res.resolve("Germany"), Some("DE"));

        o.insert("Atlantis".to_owned(), "AT1".to_owned());
        o.insert("Narnia".to_owned(), "UK".to_owned());
        o.insert("...".to_owned(), "DE".to_owned());
        let err = CountryResolver::new(&o).unwrap_err();
        let NormaliseError::CountryOverrides(bad) = &err else {
            panic!("{err}")
        };
        assert_eq!(bad.len(), 3, "{bad:?}");
        let msg = err.to_string();
        assert!(msg.contains("Atlantis") && msg.contains("Narnia"), "{msg}");
    }

    #[test]
    fn array_version() {
        let arr = StringArray::from(vec![
            Some("UK"),
            None,
            Some("uk"),
            Some("nowhere"),
            Some("Deutschland"),
            Some("UK"),
        ]);
        let out = normalise_country_array(&CountryResolver::default(), &arr);
        let got: Vec<Option<&str>> = out.iter().collect();
        assert_eq!(
            got,
            vec![Some("GB"), None, Some("GB"), None, Some("DE"), Some("GB")]
        );
    }
}
