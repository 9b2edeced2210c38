//! Do two names clearly belong to different people? Used to stop a shared
//! key (office switchboard, family e-mail) from merging them.

use compact_str::CompactString;

use crate::similarity::jaro_winkler;

/// Fold a name part for comparison: ASCII transliteration, lower case,
/// letters and digits only ("Zoë" -> "zoe", "O'Brien" -> "obrien").
pub fn fold_name(s: &str) -> String {
    fold_into(s)
}

/// [`fold_name`] into any string type.
fn fold_into<S: FromIterator<char>>(s: &str) -> S {
    let fold = |t: &str| {
        t.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    // Most names are ASCII already: skip the transliteration allocation.
    if s.is_ascii() {
        fold(s)
    } else {
        fold(&deunicode::deunicode(s))
    }
}

/// Common English and Indian short forms that share no prefix with the full name.
const NICKNAMES: &[(&str, &str)] = &[
    ("bob", "robert"),
    ("rob", "robert"),
    ("bobby", "robert"),
    ("bill", "william"),
    ("will", "william"),
    ("billy", "william"),
    ("liz", "elizabeth"),
    ("beth", "elizabeth"),
    ("betty", "elizabeth"),
    ("kate", "katherine"),
    ("katie", "katherine"),
    ("cathy", "catherine"),
    ("mike", "michael"),
    ("dick", "richard"),
    ("rick", "richard"),
    ("jim", "james"),
    ("jamie", "james"),
    ("kathy", "katherine"),
    ("kathy", "catherine"),
    ("cathy", "katherine"),
    ("kate", "catherine"),
    ("aishu", "aishwarya"),
    ("ash", "ashwin"),
    ("jack", "john"),
    ("johnny", "john"),
    ("tony", "anthony"),
    ("peggy", "margaret"),
    ("maggie", "margaret"),
    ("meg", "margaret"),
    ("ted", "edward"),
    ("ned", "edward"),
    ("hank", "henry"),
    ("harry", "henry"),
    ("chuck", "charles"),
    ("charlie", "charles"),
    ("sandy", "alexandra"),
    ("sasha", "alexander"),
    ("alex", "alexander"),
    ("steve", "stephen"),
    ("steve", "steven"),
    ("jenny", "jennifer"),
    ("jen", "jennifer"),
    ("sue", "susan"),
    ("nick", "nicholas"),
    ("andy", "andrew"),
    ("drew", "andrew"),
    ("tom", "thomas"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("dave", "david"),
    ("joe", "joseph"),
    ("pete", "peter"),
    ("matt", "matthew"),
    ("chris", "christopher"),
    ("sam", "samuel"),
    ("ben", "benjamin"),
    ("raju", "rajesh"),
    ("venky", "venkatesh"),
    ("becky", "rebecca"),
    ("becca", "rebecca"),
    ("vicky", "victoria"),
    ("vicky", "vikram"),
    ("sunny", "sunil"),
    ("bablu", "babul"),
    ("chintu", "chintan"),
    ("pinky", "priyanka"),
    ("manny", "manish"),
    ("nikki", "nikita"),
    ("bunty", "balwinder"),
    ("mohd", "mohammed"),
    ("md", "mohammed"),
];

/// Is one of `a`, `b` a short form of the other? Runs for most candidate
/// pairs, so the table is searched sorted (both orders) instead of scanned.
fn nickname_pair(a: &str, b: &str) -> bool {
    static SORTED: std::sync::OnceLock<Vec<(&str, &str)>> = std::sync::OnceLock::new();
    let sorted = SORTED.get_or_init(|| {
        let mut v: Vec<(&str, &str)> = NICKNAMES.iter().flat_map(|&(n, f)| [(n, f), (f, n)]).collect();
        v.sort_unstable();
        v
    });
    sorted.binary_search(&(a, b)).is_ok()
}

/// A rough sound-alike form of a folded name part, so transliteration
/// variants compare equal or close: Aisha/Ayesha, Pooja/Puja, Preethi/Priti,
/// Mohammed/Muhammad. Vowel digraphs and silent letters collapse; consonants
/// stay, so different names stay different (Anil/Sunita, Aarav/Aarush).
pub fn sound_alike(s: &str) -> String {
    let mut t = s
        .replace("ee", "i")
        .replace("oo", "u")
        .replace("th", "t")
        .replace("ph", "f")
        .replace("ou", "u");
    t = t
        .replace('y', "i")
        .replace('w', "v")
        .replace('z', "s")
        .replace('x', "ks");
    let mut out = String::with_capacity(t.len());
    for (i, c) in t.chars().enumerate() {
        // A non-initial h is mostly silent in transliterations (Mehta/Meta).
        if c == 'h' && i > 0 {
            continue;
        }
        // Double letters: Mohammed/Mohamed.
        if out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out
}

/// Do two folded name parts agree? Missing on either side agrees.
pub fn part_agrees(a: &str, b: &str, threshold: f64) -> bool {
    spelled_alike(a, b, threshold) || sounds_alike(&sound_alike(a), &sound_alike(b), threshold)
}

/// [`part_agrees`] with the [`sound_alike`] forms of `a` and `b` already
/// made (the linkage frame prepares them once per record, not per pair).
pub fn part_agrees_sounding(a: &str, b: &str, sa: &str, sb: &str, threshold: f64) -> bool {
    spelled_alike(a, b, threshold) || sounds_alike(sa, sb, threshold)
}

fn sounds_alike(sa: &str, sb: &str, threshold: f64) -> bool {
    sa == sb || (sa.len() >= 4 && sb.len() >= 4 && jaro_winkler(sa, sb) >= threshold.max(0.9))
}

/// The checks of [`part_agrees`] on the spelling alone.
fn spelled_alike(a: &str, b: &str, threshold: f64) -> bool {
    if a.is_empty() || b.is_empty() || a == b {
        return true;
    }
    // An initial matches any name with that first letter ("S." vs "Sunita").
    if (a.len() == 1 || b.len() == 1) && a.as_bytes()[0] == b.as_bytes()[0] {
        return true;
    }
    // Short forms that are prefixes: Chris/Christopher, Raj/Rajesh.
    let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
    if short.len() >= 3 && long.starts_with(short) {
        return true;
    }
    nickname_pair(a, b) || jaro_winkler(a, b) >= threshold
}

/// `a + b == c + d`, without building either string.
fn joined_eq(a: &str, b: &str, c: &str, d: &str) -> bool {
    let (a, b, c, d) = (a.as_bytes(), b.as_bytes(), c.as_bytes(), d.as_bytes());
    if a.len() + b.len() != c.len() + d.len() {
        return false;
    }
    // The shorter head is a prefix of the longer one; the rest lines up.
    let ((a, b), (c, d)) = if a.len() <= c.len() {
        ((a, b), (c, d))
    } else {
        ((c, d), (a, b))
    };
    let k = c.len() - a.len();
    c.starts_with(a) && c[a.len()..] == b[..k] && b[k..] == *d
}

/// A person's name, folded once for repeated comparisons. The parts live
/// inline up to 24 bytes each (nearly every name): the unions compare names
/// of records far apart in a million, and reading two entries instead of
/// four heap strings is what that costs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FoldedName {
    pub first: CompactString,
    pub last: CompactString,
}

impl FoldedName {
    pub fn new(first: Option<&str>, last: Option<&str>) -> Self {
        Self {
            first: first.map(fold_into).unwrap_or_default(),
            last: last.map(fold_into).unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.last.is_empty()
    }

    /// Same person as far as names can tell? Also accepts first/last swapped
    /// (a "Last First" export). Runs for every union a shared key asks for,
    /// on one thread: the common answers (the same name, the given names
    /// written together or apart) allocate nothing.
    pub fn agrees(&self, other: &FoldedName, threshold: f64) -> bool {
        if self.is_empty() || other.is_empty() || self == other {
            return true;
        }
        // Given names written together or apart ("Kaming Li", "Ka Ming Li",
        // "Li, Ka Ming"): the same letters in the same name order.
        if !self.first.is_empty()
            && !self.last.is_empty()
            && !other.first.is_empty()
            && !other.last.is_empty()
        {
            let (f, l) = (self.first.as_str(), self.last.as_str());
            let (of, ol) = (other.first.as_str(), other.last.as_str());
            if f.len() + l.len() >= 5 && (joined_eq(f, l, of, ol) || joined_eq(l, f, of, ol)) {
                return true;
            }
        }
        let straight = part_agrees(&self.first, &other.first, threshold)
            && part_agrees(&self.last, &other.last, threshold);
        straight
            || (!self.first.is_empty()
                && !other.first.is_empty()
                && !self.last.is_empty()
                && !other.last.is_empty()
                && part_agrees(&self.first, &other.last, threshold)
                && part_agrees(&self.last, &other.first, threshold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(first: &str, last: &str) -> FoldedName {
        FoldedName::new(Some(first), Some(last))
    }

    #[test]
    fn spelling_variants_and_short_forms_agree() {
        let t = 0.85;
        assert!(n("Preeti", "Sharma").agrees(&n("Priti", "Sharma"), t));
        assert!(n("Mohammed", "Khan").agrees(&n("Muhammad", "Khan"), t));
        assert!(n("Bob", "Smith").agrees(&n("Robert", "Smith"), t));
        assert!(n("Raj", "Mehta").agrees(&n("Rajesh", "Mehta"), t));
        assert!(n("Laxmi", "Singh").agrees(&n("Lakshmi", "Singh"), t));
        assert!(n("Aishu", "Menon").agrees(&n("Aishwarya", "Menon"), t));
        assert!(n("Jamie", "Thompson").agrees(&n("James", "Thompson"), t));
        assert!(n("S", "Iyer").agrees(&n("Sunita", "Iyer"), t));
        assert!(n("Zoë", "Ng").agrees(&n("zoe", "NG"), t));
        assert!(
            n("Mehta", "Vikram").agrees(&n("Vikram", "Mehta"), t),
            "swapped first/last"
        );
        assert!(FoldedName::new(Some("Vikram"), None).agrees(&n("Vikram", "Mehta"), t));
        assert!(FoldedName::default().agrees(&n("Anyone", "At All"), t));
    }

    #[test]
    fn every_nickname_pairs_with_its_name_in_either_order_and_nothing_else() {
        for &(nick, full) in NICKNAMES {
            assert!(
                nickname_pair(nick, full) && nickname_pair(full, nick),
                "{nick} / {full}"
            );
            assert!(!nickname_pair(nick, nick) || NICKNAMES.contains(&(nick, nick)));
        }
        assert!(!nickname_pair("bob", "william"));
        assert!(!nickname_pair("robert", "rob "));
        assert!(!nickname_pair("", ""));
    }

    #[test]
    fn joined_eq_is_concatenation_equality() {
        let words = [
            "", "a", "ka", "ming", "kaming", "li", "kamingli", "mingli", "lika", "likaming", "kam",
        ];
        for a in words {
            for b in words {
                for c in words {
                    for d in words {
                        let want = format!("{a}{b}") == format!("{c}{d}");
                        assert_eq!(joined_eq(a, b, c, d), want, "{a:?}+{b:?} vs {c:?}+{d:?}");
                    }
                }
            }
        }
        let t = 0.85;
        assert!(n("Kaming", "Li").agrees(&n("Ka", "Ming Li"), t));
        assert!(
            n("Li", "Kaming").agrees(&n("Ka Ming", "Li"), t),
            "swapped and written apart"
        );
    }

    #[test]
    fn family_and_colleagues_disagree() {
        let t = 0.85;
        assert!(!n("Anil", "Sharma").agrees(&n("Sunita", "Sharma"), t));
        assert!(!n("Aarav", "Patel").agrees(&n("Aarush", "Patel"), t));
        assert!(!n("Ravi", "Kumar").agrees(&n("Meera", "Nair"), t));
        assert!(
            !n("Priya", "Sharma").agrees(&n("Priya", "Fernandes"), t),
            "different surname, same first name"
        );
    }
}
