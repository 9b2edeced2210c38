//! Phone numbers → E.164 with libphonenumber metadata (the `phonenumber` crate).
//!
//! Cleaning before parsing: labels ("tel:", "Ph:", "Mob."), `tel:` URI parameters,
//! extensions ("x123", "ext. 12", "#12", kept out of E.164), Excel damage
//! ("9.19876543210E+11", "919876543210.0"), "(0)" after a country code, and any
//! separators. What is parsed is only `[+]digits`.
//!
//! Parsing order for a number without '+': with the region (row hint, else the
//! default); if that gives no valid number, "00…" is read as an international
//! prefix, and then the digits are tried as if a '+' had been typed
//! ("919876543210" → +91 98765 43210). That last guess is accepted only when its
//! country code is the region's own, when there is no region, or when there are at
//! least 11 digits (too long for a national number almost everywhere).
//!
//! A parse that succeeds does not mean a valid number: only valid numbers get an
//! `e164`, a `kind` and a `region`.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use arrow::array::{Array, BooleanArray, BooleanBuilder, StringArray, StringBuilder};
use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Database};
use phonenumber::{PhoneNumber, Type};
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Arrays longer than this are split into chunks normalised in parallel.
// DataFusion already runs one partition per core; splitting a 16k batch
// again only adds threads that each warm up their own regex caches. Rayon
// helps callers that hand over one big array.
const PARALLEL_THRESHOLD: usize = 64 * 1024;

/// Parse an ISO 3166-1 alpha-2 code (any case, surrounding spaces ignored) into a
/// phonenumber region. `None` for unknown codes and for ISO codes that have no
/// telephone metadata (e.g. "AQ"). "UK" is accepted as GB.
pub fn parse_region(code: &str) -> Option<Id> {
    let &[a, b] = code.trim().as_bytes() else {
        return None;
    };
    let upper = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    match &upper {
        b"UK" => Some(Id::GB),
        _ => std::str::from_utf8(&upper).ok()?.parse().ok(),
    }
}

/// The result of normalising one phone number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhoneResult {
    /// E.164 form ("+919876543210"); only for valid numbers.
    pub e164: Option<String>,
    /// The number parsed and is valid per libphonenumber metadata.
    pub valid: bool,
    /// Number type (see [`kind_name`]); only for valid numbers.
    pub kind: Option<&'static str>,
    /// Alpha-2 of the number's own country (may differ from the hint); only for
    /// valid numbers.
    pub region: Option<String>,
}

/// The snake_case name used for a phonenumber [`Type`]: "mobile", "fixed_line",
/// "fixed_line_or_mobile", "toll_free", "premium_rate", "shared_cost", "voip",
/// "personal_number", "pager", "uan", "voicemail", "unknown" (and, rarely,
/// "emergency", "short_code", "standard_rate", "carrier", "no_international").
pub fn kind_name(t: Type) -> &'static str {
    match t {
        Type::FixedLine => "fixed_line",
        Type::Mobile => "mobile",
        Type::FixedLineOrMobile => "fixed_line_or_mobile",
        Type::TollFree => "toll_free",
        Type::PremiumRate => "premium_rate",
        Type::SharedCost => "shared_cost",
        Type::PersonalNumber => "personal_number",
        Type::Voip => "voip",
        Type::Pager => "pager",
        Type::Uan => "uan",
        Type::Emergency => "emergency",
        Type::Voicemail => "voicemail",
        Type::ShortCode => "short_code",
        Type::StandardRate => "standard_rate",
        Type::Carrier => "carrier",
        Type::NoInternational => "no_international",
        Type::Unknown => "unknown",
    }
}

/// Normalise one phone number. The region used for numbers typed without an
/// international prefix is `country_hint`, else `default_region`.
pub fn normalise_phone(raw: &str, country_hint: Option<Id>, default_region: Option<Id>) -> PhoneResult {
    let Some(cleaned) = clean(raw) else {
        return PhoneResult::default();
    };
    let region = country_hint.or(default_region);
    if let Some(fast) = fast_resolve(&cleaned, region) {
        return fast;
    }
    slow_normalise(&cleaned, region)
}

/// The full path through `phonenumber::parse_with` (and our fallbacks).
fn slow_normalise(cleaned: &Cleaned, region: Option<Id>) -> PhoneResult {
    match resolve(cleaned, region) {
        Some((n, t, region)) => PhoneResult {
            e164: Some(e164(n.code().value(), n.national())),
            valid: true,
            kind: Some(kind_name(t)),
            region,
        },
        None => PhoneResult::default(),
    }
}

/// A number reduced to what is parsed: digits, with or without a leading '+'.
#[derive(Debug, PartialEq, Eq)]
struct Cleaned {
    plus: bool,
    digits: String,
}

/// Parse `text` and return the number with its type when it is valid.
///
/// `phonenumber::is_valid(n)` is exactly `n.number_type(&DATABASE) != Unknown`
/// (both look up the same metadata and run `validator::number_type`), so the type
/// is computed once and serves as the validity check.
/// phonenumber's default database keeps every compiled regex in one
/// mutex-guarded LRU cache of 100 entries shared by all threads. Measured on
/// 100k generated leads: past 100 patterns every parse recompiles regexes,
/// and with more than one thread the lock is contended, ~30 µs per number
/// instead of ~3. So each thread gets its own database (same metadata,
/// libphonenumber's PhoneNumberMetadata.xml as the crate ships it, Apache-2.0),
/// with a cache large enough for every pattern.
static METADATA_XML: &str = include_str!("PhoneNumberMetadata.xml");

thread_local! {
    static DB: Database = {
        let db = Database::parse(METADATA_XML).unwrap_or_else(|_| DATABASE.clone());
        if let Ok(mut cache) = db.cache().lock() {
            cache.set_capacity(20_000);
        }
        db
    };
}

/// A valid number, its type and its region (alpha-2; `None` for
/// non-geographic numbers).
type Valid = (PhoneNumber, Type, Option<String>);

fn parse_valid(region: Option<Id>, text: &str) -> Option<Valid> {
    DB.with(|db| {
        // phonenumber has panicked on odd input before (rust-phonenumber#43);
        // never let one bad cell take down a batch.
        let n = catch_unwind(AssertUnwindSafe(|| phonenumber::parse_with(db, region, text)))
            .ok()?
            .ok()?;
        let (t, region) = number_type_and_region(db, &n);
        (t != Type::Unknown).then_some((n, t, region))
    })
}

/// One descriptor of a region (general, mobile, ...) compiled by us.
struct Desc {
    lengths: Vec<u16>,
    re: regex::Regex,
}

impl Desc {
    fn new(d: &phonenumber::metadata::Descriptor) -> Option<Self> {
        // Same semantics as `Descriptor::is_match`: a possible length, and a
        // match starting at 0 (leftmost-first, so `^` is equivalent).
        let re = regex::RegexBuilder::new(&format!("^(?:{})", d.national_number().as_str()))
            .ignore_whitespace(true)
            .build()
            .ok()?;
        Some(Self {
            lengths: d.possible_length().to_vec(),
            re,
        })
    }

    fn is_match(&self, value: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(value.len() as u16))) && self.re.is_match(value)
    }
}

/// A region's descriptors in `phonenumber::validator::number_type` order.
struct RegionTypes {
    general: Desc,
    special: Vec<(Type, Desc)>,
    fixed: Option<Desc>,
    mobile: Option<Desc>,
    fixed_is_mobile: bool,
    /// [`region_of`] the metadata, kept: parsing the id per number showed
    /// in the profile.
    region: Option<String>,
    /// The region's international (IDD) prefix, compiled as the crate
    /// compiles it ("00" for India, Britain and most of the world).
    idd: Option<regex::Regex>,
    /// The region's country calling code as text ("91").
    code: String,
}

impl RegionTypes {
    fn new(m: &phonenumber::metadata::Metadata) -> Option<Self> {
        let d = m.descriptors();
        let desc = |x: Option<&phonenumber::metadata::Descriptor>| x.and_then(Desc::new);
        let special = [
            (Type::PremiumRate, d.premium_rate()),
            (Type::TollFree, d.toll_free()),
            (Type::SharedCost, d.shared_cost()),
            (Type::Voip, d.voip()),
            (Type::PersonalNumber, d.personal_number()),
            (Type::Pager, d.pager()),
            (Type::Uan, d.uan()),
            (Type::Voicemail, d.voicemail()),
        ]
        .into_iter()
        .filter_map(|(t, x)| desc(x).map(|c| (t, c)))
        .collect();
        Some(Self {
            general: Desc::new(d.general())?,
            special,
            fixed: desc(d.fixed_line()),
            mobile: desc(d.mobile()),
            fixed_is_mobile: d.fixed_line().map(|x| x.national_number().as_str())
                == d.mobile().map(|x| x.national_number().as_str()),
            region: region_of(m),
            code: m.country_code().to_string(),
            idd: m.international_prefix().and_then(|re| {
                regex::RegexBuilder::new(re.as_str())
                    .ignore_whitespace(true)
                    .build()
                    .ok()
            }),
        })
    }

    fn number_type(&self, value: &str) -> Type {
        if !self.general.is_match(value) {
            return Type::Unknown;
        }
        if let Some((t, _)) = self.special.iter().find(|(_, d)| d.is_match(value)) {
            return *t;
        }
        if self.fixed.as_ref().is_some_and(|d| d.is_match(value)) {
            if self.fixed_is_mobile || self.mobile.as_ref().is_some_and(|d| d.is_match(value)) {
                return Type::FixedLineOrMobile;
            }
            return Type::FixedLine;
        }
        if self.mobile.as_ref().is_some_and(|d| d.is_match(value)) {
            return Type::Mobile;
        }
        Type::Unknown
    }
}

thread_local! {
    static TYPES: std::cell::RefCell<HashMap<String, Option<std::rc::Rc<RegionTypes>>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The common shapes without the crate's parser: `+CC NSN`, or a national
/// number (with or without the trunk prefix) of the given region, validated
/// against the region's compiled patterns. Anything else, anything invalid
/// here, and regions whose national prefix rewrites digits go the full way.
/// A test compares both paths on random numbers of a dozen countries.
fn fast_resolve(c: &Cleaned, region: Option<Id>) -> Option<PhoneResult> {
    DB.with(|db| {
        let d = c.digits.as_str();
        if d.len() < 4 || d.len() > 17 {
            return None;
        }
        let check = |meta: &phonenumber::metadata::Metadata, nsn: &str| -> Option<PhoneResult> {
            if meta.national_prefix_transform_rule().is_some() || nsn.is_empty() {
                return None;
            }
            let types = region_types(meta)?;
            // Non-geographic numbers (+800, +881, ...) have no region: the
            // full path gives them none.
            let region = types.region.as_deref()?;
            // The crate validates the national number without leading zeros.
            let t = types.number_type(nsn.trim_start_matches('0'));
            if t == Type::Unknown || nsn.starts_with('0') && meta.id() != "IT" {
                return None;
            }
            Some(PhoneResult {
                e164: Some(e164(meta.country_code(), nsn)),
                valid: true,
                kind: Some(kind_name(t)),
                region: Some(region.to_owned()),
            })
        };
        // `+CC NSN`: the first country code that exists, then the first
        // region of the code the number is valid for (as the crate does).
        let international = |d: &str| -> Option<PhoneResult> {
            for cc_len in 1..=3.min(d.len().saturating_sub(1)) {
                let Ok(cc) = d[..cc_len].parse::<u16>() else {
                    return None;
                };
                if let Some(metas) = db.by_code(&cc) {
                    return metas.into_iter().find_map(|m| check(m, &d[cc_len..]));
                }
            }
            None
        };
        if c.plus {
            return international(d);
        }
        let meta = db.by_id(region?.as_ref())?;
        let types = region_types(meta)?;
        if d.starts_with("00") {
            // "0091 98765 43210" read with region IN: like the crate, strip
            // the region's international prefix where it matches at the start
            // and is not followed by a 0 (no country code starts with 0), and
            // read the rest as `+CC NSN`. Anything else: the full parser.
            let end = types.idd.as_ref()?.find(d).filter(|m| m.start() == 0)?.end();
            let rest = &d[end..];
            return if rest.is_empty() || rest.starts_with('0') {
                None
            } else {
                international(rest)
            };
        }
        // "91-93971 75471" read with region IN starts with the region's own
        // country code. The crate drops the code when the digits as they
        // stand are no number of the region (the general pattern fails, or
        // the length is not possible) and reads the rest as that country's
        // number; where that is valid, it is the answer. Otherwise (or when
        // the code stays) the digits are read nationally, as the full path's
        // trunk-prefix fallback (`resolve`) reads them.
        if let Some(rest) = d.strip_prefix(types.code.as_str()) {
            let general = meta.descriptors().general();
            if !types.general.is_match(d) || !possible_length(general, d.len()) {
                let metas = db.by_code(&meta.country_code())?;
                if let Some(found) = metas.iter().find_map(|m| check(m, rest)) {
                    return Some(found);
                }
                // Declined rather than invalid, or a region without a trunk
                // prefix (no national fallback there): the full path decides.
                if rest.is_empty()
                    || rest.starts_with('0')
                    || meta.national_prefix().is_none_or(str::is_empty)
                    || metas.iter().any(|m| m.national_prefix_transform_rule().is_some())
                {
                    return None;
                }
            }
        }
        let nsn = match meta.national_prefix() {
            Some(p) if !p.is_empty() && d.starts_with(p) => &d[p.len()..],
            _ => d,
        };
        if meta.national_prefix_transform_rule().is_some() {
            return None;
        }
        // Like the crate: the number belongs to the first region of its
        // country code it is valid for (a Canadian number read with region
        // US is still Canadian, and the reverse).
        db.by_code(&meta.country_code())?
            .into_iter()
            .find_map(|m| check(m, nsn))
    })
}

/// `phonenumber::validator::length(meta, number, Type::Unknown).is_possible()`
/// for a national number of `len` digits, step by step as the crate has it.
fn possible_length(general: &phonenumber::metadata::Descriptor, len: usize) -> bool {
    let len = len as u16;
    let possible = general.possible_length();
    let (Some(&min), Some(&max)) = (possible.first(), possible.last()) else {
        return false;
    };
    if general.possible_local_length().contains(&len) || len == min {
        return true;
    }
    if len < min || len > max {
        return false;
    }
    possible.contains(&len)
}

fn region_types(meta: &phonenumber::metadata::Metadata) -> Option<std::rc::Rc<RegionTypes>> {
    TYPES.with(|t| {
        // Hot path: look up without allocating the key.
        if let Some(found) = t.borrow().get(meta.id()) {
            return found.clone();
        }
        let built = RegionTypes::new(meta).map(std::rc::Rc::new);
        t.borrow_mut().insert(meta.id().to_string(), built.clone());
        built
    })
}

/// `PhoneNumber::number_type`, with each region's patterns compiled once per
/// thread into plain `regex::Regex`es: phonenumber looks every pattern up in
/// its LRU cache (hashing the pattern text) on every use, and that lookup
/// was most of the cost of validating a number. Also the region as
/// `Country::id` gives it, from the same metadata lookup in this thread's
/// database (`Country::id` looks up again in the crate's global one).
fn number_type_and_region(db: &Database, n: &PhoneNumber) -> (Type, Option<String>) {
    let Some(meta) = n.metadata(db) else {
        return (Type::Unknown, None);
    };
    match region_types(meta) {
        // Same input the crate uses: the national number without leading zeros.
        Some(t) => (t.number_type(&n.national().value().to_string()), t.region.clone()),
        None => (n.number_type(db), region_of(meta)),
    }
}

/// The region of a metadata entry as `Country::id` gives it: alpha-2, or
/// `None` for the non-geographic entries ("001").
fn region_of(meta: &phonenumber::metadata::Metadata) -> Option<String> {
    meta.id().parse::<Id>().ok().map(|id| id.as_ref().to_owned())
}

/// E.164 text: "+<code><national>". The crate's formatter would also match
/// format patterns against its global database (a second copy of the
/// metadata, compiled once more, behind one lock).
fn e164(code: u16, national: impl std::fmt::Display) -> String {
    format!("+{code}{national}")
}

fn region_code(region: Id) -> Option<u16> {
    DB.with(|db| db.by_id(region.as_ref()).map(|m| m.country_code()))
}

fn resolve(c: &Cleaned, region: Option<Id>) -> Option<Valid> {
    let d = c.digits.as_str();
    if c.plus {
        let mut s = String::with_capacity(d.len() + 1);
        s.push('+');
        s.push_str(d);
        return parse_valid(region, &s);
    }
    if region.is_some()
        && let Some(found) = parse_valid(region, d)
    {
        return Some(found);
    }
    // "91672 34567" with region IN: a national number that happens to start
    // with the country code. phonenumber strips the "91" and finds nothing
    // valid; libphonenumber reads it nationally. Say so with the trunk prefix.
    if let Some(r) = region
        && !d.starts_with('0')
        && let Some(prefix) = DB.with(|db| {
            db.by_id(r.as_ref())
                .and_then(|m| m.national_prefix().map(str::to_owned))
        })
        && let Some(found) = parse_valid(region, &format!("{prefix}{d}"))
    {
        return Some(found);
    }
    // "0044…", "0091-…": an international prefix the region's rules did not read.
    if let Some(rest) = d.strip_prefix("00")
        && !rest.starts_with('0')
    {
        return parse_valid(None, &format!("+{rest}"));
    }
    // "919876543210": the country code typed without '+'.
    let (n, t, r) = parse_valid(None, &format!("+{d}"))?;
    let own_code = region.and_then(region_code);
    let accept = region.is_none() || own_code == Some(n.code().value()) || d.len() >= 11;
    accept.then_some((n, t, r))
}

/// Strip labels, URI parameters, extensions and Excel damage; keep `[+]digits`.
/// `None` when nothing usable is left.
fn clean(raw: &str) -> Option<Cleaned> {
    let mut s = raw.trim();
    if s.is_empty() {
        return None;
    }
    s = strip_label(s);
    // tel: URI parameters (";ext=12;phone-context=…")
    if let Some(i) = s.find(';') {
        s = &s[..i];
    }
    s = first_number(s);
    s = strip_extension(s);
    let expanded;
    match expand_excel(s) {
        Excel::No => {}
        Excel::Expanded(e) => {
            expanded = e;
            s = &expanded;
        }
        Excel::Lossy => return None,
    }
    let mut plus = false;
    let mut digits = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        // "+44 (0) 20 …": the national trunk prefix in brackets after a country code
        if plus && !digits.is_empty() && rest.starts_with("(0)") {
            rest = &rest[3..];
            continue;
        }
        if c == '+' && digits.is_empty() {
            plus = true;
        } else if let Some(v) = digit_value(c) {
            digits.push(char::from(b'0' + v));
        }
        rest = &rest[c.len_utf8()..];
    }
    if digits.is_empty() {
        return None;
    }
    Some(Cleaned { plus, digits })
}

/// "98765 43210, 91234 56789" → the first number. A separator (',', '|', '/')
/// splits only when both sides hold at least 7 digits, so "030/1234567" stays.
fn first_number(s: &str) -> &str {
    let digits = |p: &str| p.bytes().filter(u8::is_ascii_digit).count();
    for sep in [',', '|', '/'] {
        if let Some((first, rest)) = s.split_once(sep)
            && digits(first) >= 7
            && digits(rest) >= 7
        {
            return first.trim();
        }
    }
    s
}

/// ASCII digits plus the common other decimal digit blocks (full-width,
/// Arabic-Indic, Extended Arabic-Indic, Devanagari, Bengali).
fn digit_value(c: char) -> Option<u8> {
    if c.is_ascii_digit() {
        return Some(c as u8 - b'0');
    }
    let v = c as u32;
    for zero in [0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6] {
        if (zero..zero + 10).contains(&v) {
            return Some((v - zero) as u8);
        }
    }
    None
}

const LABELS: &[&str] = &[
    "telephone",
    "mobile",
    "phone",
    "tel",
    "tél",
    "ph",
    "mob",
    "cell",
    "fax",
    "call",
    "whatsapp",
    "wa",
    "office",
    "work",
    "home",
    "direct",
    "m",
    "t",
    "p",
    "o",
    "h",
    "w",
    "d",
];

/// "Tel: …", "Ph. …", "mobile - …", "tel:+1…".
fn strip_label(s: &str) -> &str {
    let alpha_end = s
        .char_indices()
        .find(|(_, c)| !c.is_alphabetic())
        .map_or(s.len(), |(i, _)| i);
    if alpha_end == 0 || alpha_end == s.len() {
        return s;
    }
    let word = s[..alpha_end].to_lowercase();
    if !LABELS.contains(&word.as_str()) {
        return s;
    }
    let after = &s[alpha_end..];
    let rest = after.trim_start_matches([':', '.', '-', ' ', '\t', '=', '#']);
    // a one-letter label needs a separator ("m: 0987…"), not "t0987…"
    if rest.len() == after.len() {
        return s;
    }
    rest
}

/// Cut a trailing extension: "… x123", "… ext. 12", "… extension 7", "… #12".
fn strip_extension(s: &str) -> &str {
    let body = s.trim_end();
    let without_digits = body.trim_end_matches(|c: char| c.is_ascii_digit());
    if without_digits.len() == body.len() || body.len() - without_digits.len() > 7 {
        return s;
    }
    let before = without_digits.trim_end_matches([' ', '.', ':', '=', '-']);
    let lower = before.to_ascii_lowercase();
    for marker in ["extension", "extn", "ext", "x", "#"] {
        if lower.ends_with(marker) {
            let number = before[..before.len() - marker.len()].trim_end_matches([' ', ',', ';']);
            if number.chars().filter(char::is_ascii_digit).count() >= 5 {
                return number;
            }
        }
    }
    s
}

/// What [`expand_excel`] made of a value.
#[derive(Debug, PartialEq, Eq)]
enum Excel {
    /// Not a number damaged by a spreadsheet.
    No,
    /// The integer the spreadsheet meant.
    Expanded(String),
    /// Scientific notation that lost digits ("9.19877E+11"): unusable.
    Lossy,
}

/// "9.19876543210E+11" → "919876543210"; "91 9876543210.0" → "91 9876543210".
/// Scientific notation is expanded only when it is an exact integer with at most
/// two padding zeros: "9.19877E+11" is a display that lost digits, not a number
/// ending in 000000.
fn expand_excel(s: &str) -> Excel {
    if let Some(i) = s.find(['e', 'E']) {
        let (mantissa, exp) = (s[..i].trim(), s[i + 1..].trim());
        let Ok(exp) = exp.strip_prefix('+').unwrap_or(exp).parse::<i32>() else {
            return Excel::No;
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || !(0..=20).contains(&exp)
        {
            return Excel::No;
        }
        let exp = exp as usize;
        let mut out = String::with_capacity(int.len() + exp);
        out.push_str(int);
        if frac.len() <= exp {
            if exp - frac.len() > 2 {
                return Excel::Lossy;
            }
            out.push_str(frac);
            out.extend(std::iter::repeat_n('0', exp - frac.len()));
        } else {
            let (keep, dropped) = frac.split_at(exp);
            if !dropped.bytes().all(|b| b == b'0') {
                return Excel::Lossy; // not an integer
            }
            out.push_str(keep);
        }
        return Excel::Expanded(out);
    }
    // A single trailing ".0…": a number that went through a float column.
    if let Some((head, tail)) = s.rsplit_once('.')
        && !head.contains('.')
        && !tail.is_empty()
        && tail.bytes().all(|b| b == b'0')
        && head.ends_with(|c: char| c.is_ascii_digit())
    {
        return Excel::Expanded(head.to_owned());
    }
    Excel::No
}

/// Whole-column results of [`normalise_phone_array`].
#[derive(Debug, Clone)]
pub struct PhoneColumns {
    pub e164: StringArray,
    pub valid: BooleanArray,
    pub kind: StringArray,
    pub region: StringArray,
}

/// Normalise a column of phone numbers. Per row the region is the row's hint
/// (alpha-2; unknown codes are ignored), else `default_region`. Null or blank
/// input gives null in every output (including `valid`). Repeated (value, region)
/// pairs are parsed once per chunk; arrays longer than 16k rows are split into
/// chunks normalised in parallel on the rayon pool, results kept in order.
pub fn normalise_phone_array(
    raw: &StringArray,
    country_hints: Option<&StringArray>,
    default_region: Option<Id>,
) -> PhoneColumns {
    if let Some(h) = country_hints {
        assert_eq!(h.len(), raw.len(), "country_hints must be as long as raw");
    }
    let len = raw.len();
    if len <= PARALLEL_THRESHOLD {
        return normalise_chunk(raw, country_hints, default_region);
    }
    let parts = rayon::current_num_threads().max(1) * 4;
    let chunk = len.div_ceil(parts).max(PARALLEL_THRESHOLD / 4);
    let ranges: Vec<(usize, usize)> = (0..len)
        .step_by(chunk)
        .map(|start| (start, chunk.min(len - start)))
        .collect();
    let results: Vec<PhoneColumns> = ranges
        .into_par_iter()
        .map(|(start, n)| {
            let raw = raw.slice(start, n);
            let hints = country_hints.map(|h| h.slice(start, n));
            normalise_chunk(&raw, hints.as_ref(), default_region)
        })
        .collect();
    PhoneColumns {
        e164: concat_strings(results.iter().map(|r| &r.e164)),
        valid: concat_bools(results.iter().map(|r| &r.valid)),
        kind: concat_strings(results.iter().map(|r| &r.kind)),
        region: concat_strings(results.iter().map(|r| &r.region)),
    }
}

fn concat_strings<'a>(parts: impl Iterator<Item = &'a StringArray>) -> StringArray {
    let parts: Vec<&dyn Array> = parts.map(|a| a as &dyn Array).collect();
    let out = arrow::compute::concat(&parts).expect("concat of equal-typed arrays");
    out.as_any().downcast_ref::<StringArray>().expect("Utf8").clone()
}

fn concat_bools<'a>(parts: impl Iterator<Item = &'a BooleanArray>) -> BooleanArray {
    let parts: Vec<&dyn Array> = parts.map(|a| a as &dyn Array).collect();
    let out = arrow::compute::concat(&parts).expect("concat of equal-typed arrays");
    out.as_any()
        .downcast_ref::<BooleanArray>()
        .expect("Boolean")
        .clone()
}

fn normalise_chunk(
    raw: &StringArray,
    hints: Option<&StringArray>,
    default_region: Option<Id>,
) -> PhoneColumns {
    let len = raw.len();
    let mut memo: HashMap<(&str, Option<Id>), u32, Xxh3DefaultBuilder> =
        HashMap::with_capacity_and_hasher(len.min(4096), Xxh3DefaultBuilder);
    let mut distinct: Vec<PhoneResult> = Vec::new();
    // Hints repeat far more than numbers; remember the last one parsed.
    let mut last_hint: Option<(&str, Option<Id>)> = None;

    let mut e164 = StringBuilder::with_capacity(len, len * 13);
    let mut valid = BooleanBuilder::with_capacity(len);
    let mut kind = StringBuilder::with_capacity(len, len * 6);
    let mut region = StringBuilder::with_capacity(len, len * 2);

    for i in 0..len {
        let value = if raw.is_valid(i) { raw.value(i) } else { "" };
        if value.trim().is_empty() {
            e164.append_null();
            valid.append_null();
            kind.append_null();
            region.append_null();
            continue;
        }
        let hint = match hints {
            Some(h) if h.is_valid(i) => {
                let code = h.value(i);
                match last_hint {
                    Some((c, id)) if c == code => id,
                    _ => {
                        let id = parse_region(code);
                        last_hint = Some((code, id));
                        id
                    }
                }
            }
            _ => None,
        };
        let effective = hint.or(default_region);
        let idx = *memo.entry((value, effective)).or_insert_with(|| {
            distinct.push(normalise_phone(value, effective, None));
            (distinct.len() - 1) as u32
        });
        let r = &distinct[idx as usize];
        e164.append_option(r.e164.as_deref());
        valid.append_value(r.valid);
        kind.append_option(r.kind);
        region.append_option(r.region.as_deref());
    }
    PhoneColumns {
        e164: e164.finish(),
        valid: valid.finish(),
        kind: kind.finish(),
        region: region.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str, hint: Option<Id>, default: Option<Id>) -> Option<String> {
        normalise_phone(raw, hint, default).e164
    }

    #[test]
    fn a_non_geographic_number_has_no_region_on_either_path() {
        // UIFN +800: libphonenumber's example number of region "001".
        let raw = "+800 1234 5678";
        let r = normalise_phone(raw, None, Some(Id::IN));
        assert_eq!(r.e164.as_deref(), Some("+80012345678"));
        assert!(r.valid);
        assert_eq!(r.region, None, "no alpha-2 for a non-geographic number");
        let c = clean(raw).unwrap();
        assert_eq!(slow_normalise(&c, None).region, None);
        assert!(fast_resolve(&c, None).is_none(), "left to the full path");
    }

    #[test]
    fn regions() {
        assert_eq!(parse_region("in"), Some(Id::IN));
        assert_eq!(parse_region(" GB "), Some(Id::GB));
        assert_eq!(parse_region("uk"), Some(Id::GB));
        assert_eq!(parse_region("ZZ"), None);
        assert_eq!(parse_region("IND"), None);
        assert_eq!(parse_region(""), None);
    }

    #[test]
    fn india_formats() {
        let want = Some("+919876543210".to_owned());
        for raw in [
            "+91 98765 43210",
            "0091-98765-43210",
            "098765 43210",
            "9876543210",
            "919876543210",
            "+91-9876543210",
            "9.19876543210E+11",
            "9.1987654321E11",
            "91 9876543210.0",
            "9876543210.0",
            "tel:+91-98765-43210",
            "Ph: 98765 43210",
            "Mob. +91 98765 43210",
            "+91 98765 43210 ext. 12",
            "+91 98765 43210 x123",
            "+91 98765 43210 #7",
            "(+91) 98765-43210",
            "+９１ ９８７６５ ４３２１０",
            "98765 43210, 91234 56789",
            "98765 43210 / 91234 56789",
        ] {
            assert_eq!(e164(raw, None, Some(Id::IN)), want, "{raw}");
        }
        let r = normalise_phone("98765 43210", Some(Id::IN), None);
        assert_eq!(r.kind, Some("mobile"));
        assert_eq!(r.region.as_deref(), Some("IN"));
        assert!(r.valid);
    }

    #[test]
    fn gb_formats() {
        let want = Some("+442079460958".to_owned());
        for raw in [
            "(020) 7946 0958",
            "020 7946 0958",
            "+44 20 7946 0958",
            "+44 (0) 20 7946 0958",
            "0044 20 7946 0958",
            "Tel: 020-7946-0958",
        ] {
            assert_eq!(e164(raw, Some(Id::GB), None), want, "{raw}");
        }
        // a UK number with the default region IN but no hint: "0044" is read as IDD
        assert_eq!(e164("0044 20 7946 0958", None, Some(Id::IN)), want);
        let r = normalise_phone("(020) 7946 0958", Some(Id::GB), None);
        assert_eq!(r.kind, Some("fixed_line"));
        assert_eq!(r.region.as_deref(), Some("GB"));
        let m = normalise_phone("07400 123456", Some(Id::GB), None);
        assert_eq!(m.kind, Some("mobile"), "{m:?}");
    }

    #[test]
    fn us_formats() {
        let want = Some("+16185557477".to_owned());
        // the hint wins over the default region (IN would give +91 618…)
        assert_eq!(e164("(618) 555-7477", Some(Id::US), Some(Id::IN)), want);
        assert_eq!(e164("618.555.7477", Some(Id::US), None), want);
        assert_eq!(e164("tel:+1-618-555-7477;ext=12", None, None), want);
        assert_eq!(e164("+1 (618) 555-7477", None, Some(Id::IN)), want);
        assert_eq!(e164("1-618-555-7477", Some(Id::US), None), want);
        assert_eq!(e164("16185557477", None, Some(Id::IN)), want);
        assert_eq!(e164("(618) 555-7477 ext 204", Some(Id::US), None), want);
        let r = normalise_phone("(618) 555-7477", Some(Id::US), None);
        assert_eq!(r.kind, Some("fixed_line_or_mobile"));
        assert_eq!(r.region.as_deref(), Some("US"));
    }

    #[test]
    fn slash_is_not_a_list_separator_inside_a_number() {
        assert_eq!(
            e164("030/12345678", Some(Id::DE), None),
            Some("+493012345678".to_owned())
        );
    }

    #[test]
    fn invalid_and_blank() {
        // parses (as +9154) but is not a valid number
        let r = normalise_phone("54", Some(Id::IN), None);
        assert_eq!(r, PhoneResult::default());
        for raw in ["", "   ", "n/a", "call me", "+", "()"] {
            let r = normalise_phone(raw, Some(Id::IN), None);
            assert!(!r.valid && r.e164.is_none(), "{raw}");
        }
        // inexact scientific notation: digits were lost, do not invent a number
        assert_eq!(e164("9.19877E+11", None, Some(Id::IN)), None);
        // no region and no '+': a 10-digit national number can't be placed
        assert_eq!(e164("9876543210", None, None), None);
        // but a full international number typed without '+' can
        assert_eq!(e164("447911123456", None, None), Some("+447911123456".to_owned()));
    }

    #[test]
    fn type_is_validity() {
        for (raw, region) in [
            ("+442079460958", None),
            ("+919876543210", None),
            ("+9154", None),
            ("+1 2530000", None),
            ("020 7946 0958", Some(Id::GB)),
            ("12345", Some(Id::DE)),
        ] {
            let Ok(n) = phonenumber::parse(region, raw) else {
                continue;
            };
            assert_eq!(
                phonenumber::is_valid(&n),
                n.number_type(&DATABASE) != Type::Unknown,
                "{raw}"
            );
        }
    }

    #[test]
    fn excel_expansion() {
        let x = |s: &str| Excel::Expanded(s.to_owned());
        assert_eq!(expand_excel("9.19876543210E+11"), x("919876543210"));
        assert_eq!(expand_excel("9.1987654321e11"), x("919876543210"));
        assert_eq!(expand_excel("4.4207946095E10"), x("44207946095"));
        assert_eq!(expand_excel("1.5e2"), x("150"));
        assert_eq!(expand_excel("9.19877E+11"), Excel::Lossy);
        assert_eq!(expand_excel("1.23456e2"), Excel::Lossy);
        assert_eq!(expand_excel("919876543210.00"), x("919876543210"));
        assert_eq!(expand_excel("020.7946.0"), Excel::No);
        assert_eq!(expand_excel("+91 98765 43210"), Excel::No);
        assert_eq!(expand_excel("see notes"), Excel::No);
    }

    #[test]
    fn array_version_matches_scalar() {
        let raw = StringArray::from(vec![
            Some("098765 43210"),
            None,
            Some("  "),
            Some("(020) 7946 0958"),
            Some("(618) 555-7477"),
            Some("54"),
            Some("098765 43210"),
        ]);
        let hints = StringArray::from(vec![
            None,
            Some("GB"),
            None,
            Some("GB"),
            Some("US"),
            Some("XX"),
            Some("in"),
        ]);
        let out = normalise_phone_array(&raw, Some(&hints), Some(Id::IN));
        let e: Vec<Option<&str>> = out.e164.iter().collect();
        assert_eq!(
            e,
            vec![
                Some("+919876543210"),
                None,
                None,
                Some("+442079460958"),
                Some("+16185557477"),
                None,
                Some("+919876543210"),
            ]
        );
        let v: Vec<Option<bool>> = out.valid.iter().collect();
        assert_eq!(
            v,
            vec![
                Some(true),
                None,
                None,
                Some(true),
                Some(true),
                Some(false),
                Some(true)
            ]
        );
        assert_eq!(out.kind.value(0), "mobile");
        assert_eq!(out.kind.value(3), "fixed_line");
        assert!(out.kind.is_null(5) && out.region.is_null(5));
        assert_eq!(out.region.value(4), "US");
    }

    #[test]
    fn parallel_path_keeps_order() {
        let n = 40_000;
        let values: Vec<String> = (0..n).map(|i| format!("98765 {:05}", i % 5000)).collect();
        let raw = StringArray::from(values.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>());
        let out = normalise_phone_array(&raw, None, Some(Id::IN));
        assert_eq!(out.e164.len(), n);
        for i in [0, 1, 4999, 5000, 16_383, 16_384, 29_999, n - 1] {
            assert_eq!(out.e164.value(i), format!("+9198765{:05}", i % 5000), "row {i}");
            assert!(out.valid.value(i));
        }
    }

    #[test]
    fn national_number_starting_with_the_country_code() {
        let r = normalise_phone("91672 34567", None, parse_region("IN"));
        assert_eq!(r.e164.as_deref(), Some("+919167234567"), "{r:?}");
        let r = normalise_phone("919820012345", None, parse_region("IN"));
        assert_eq!(r.e164.as_deref(), Some("+919820012345"), "{r:?}");
    }

    #[test]
    fn fast_number_type_agrees_with_the_crate() {
        let samples = [
            ("+919820012345", None),
            ("+912266554400", None),
            ("+442079460958", None),
            ("+447912345678", None),
            ("+14155550123", None),
            ("+16175550199", None),
            ("+85261234567", None),
            ("+85221234567", None),
            ("+971502345678", None),
            ("+390612345678", None),
            ("+4915123456789", None),
            ("+33612345678", None),
            ("1800 123 4567", Some("IN")),
            ("0800 123 4567", Some("GB")),
            ("09876543210", Some("IN")),
            ("12345", Some("IN")),
        ];
        DB.with(|db| {
            for (raw, region) in samples {
                let region = region.and_then(parse_region);
                if let Ok(n) = phonenumber::parse_with(db, region, raw) {
                    assert_eq!(number_type_and_region(db, &n).0, n.number_type(db), "{raw}");
                }
            }
        });
    }

    /// Numbers typed with the region's IDD prefix or its bare country code
    /// take the fast path, with the full parser's answer.
    #[test]
    fn prefixed_numbers_take_the_fast_path_with_the_full_parsers_answer() {
        for (raw, region) in [
            ("0091 92196 05590", Id::IN),
            ("0044 7400 123456", Id::GB),
            ("00852 6187 8211", Id::IN),
            ("91-93971 75471", Id::IN),
            ("9154178049", Id::IN),
        ] {
            let c = clean(raw).unwrap();
            let slow = slow_normalise(&c, Some(region));
            assert!(slow.valid, "{raw}");
            assert_eq!(fast_resolve(&c, Some(region)), Some(slow), "{raw}");
        }
        // Followed by a 0, "00" is no international prefix: the full parser decides.
        assert_eq!(fast_resolve(&clean("0009876543210").unwrap(), Some(Id::IN)), None);
    }

    /// The fast path must say exactly what the full parser says, or nothing.
    #[test]
    fn fast_path_agrees_with_the_full_parser_on_random_numbers() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let regions = [
            "IN", "GB", "US", "HK", "AE", "DE", "FR", "IT", "SG", "AU", "CA", "BR", "MX", "AR", "CN", "JP",
        ];
        let (mut fast_hits, mut checked) = (0, 0);
        for _ in 0..20000 {
            let r = regions[(next() % regions.len() as u64) as usize];
            let len = 6 + (next() % 8) as usize;
            let mut digits: String = (0..len).map(|_| char::from(b'0' + (next() % 10) as u8)).collect();
            // Bias toward real ranges: Indian mobiles, UK mobiles, US numbers.
            match next() % 4 {
                0 => {
                    digits = format!(
                        "9{}",
                        &digits[1..]
                            .chars()
                            .chain("000000000".chars())
                            .take(9)
                            .collect::<String>()
                    )
                }
                1 => {
                    digits = format!(
                        "07{}",
                        &digits
                            .chars()
                            .chain("000000000".chars())
                            .take(9)
                            .collect::<String>()
                    )
                }
                _ => {}
            }
            let raw = match next() % 5 {
                0 => format!(
                    "+{}{}",
                    region_code(parse_region(r).unwrap()).unwrap(),
                    digits.trim_start_matches('0')
                ),
                // The country code typed without '+', as "91-93971 75471".
                2 => format!(
                    "{}-{}",
                    region_code(parse_region(r).unwrap()).unwrap(),
                    digits.trim_start_matches('0')
                ),
                // Dialled from abroad with the "00" prefix, as Indian and
                // European sheets write it.
                1 => format!(
                    "00{} {}",
                    region_code(parse_region(regions[(next() % regions.len() as u64) as usize]).unwrap())
                        .unwrap(),
                    digits.trim_start_matches('0')
                ),
                _ => digits.clone(),
            };
            let Some(c) = clean(&raw) else { continue };
            let region = parse_region(r);
            checked += 1;
            // The slow path's E.164 and region, made without the crate's
            // formatter and global database, are the crate's own.
            if let Some((n, _, found)) = resolve(&c, region) {
                let e164 = slow_normalise(&c, region).e164;
                assert_eq!(
                    e164,
                    Some(n.format().mode(phonenumber::Mode::E164).to_string()),
                    "{raw}"
                );
                assert_eq!(found, n.country().id().map(|id| id.as_ref().to_owned()), "{raw}");
            }
            if let Some(fast) = fast_resolve(&c, region) {
                fast_hits += 1;
                let slow = slow_normalise(&c, region);
                assert_eq!(fast, slow, "{raw} in {r}");
            }
        }
        assert!(
            checked > 15000 && fast_hits > 1500,
            "{checked} checked, {fast_hits} fast"
        );
    }
}
