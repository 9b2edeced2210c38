//! String similarity on the scoring hot path.
//!
//! `strsim::jaro_winkler` allocates two flag vectors per call and walks
//! `char`s; names and cities are short ASCII, compared millions of times
//! per run (a profile of 100k records linked against 1M masters: strsim's
//! Jaro ~4 % of all samples, plus its allocations). Here short ASCII
//! strings keep their match flags in two `u64` bit sets; anything else goes
//! to strsim. The result is bit-for-bit strsim's (same arithmetic in the
//! same order; a test compares them).

/// Jaro-Winkler similarity in [0, 1], as `strsim::jaro_winkler`.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len() > 64 || y.len() > 64 || !a.is_ascii() || !b.is_ascii() {
        return strsim::jaro_winkler(a, b);
    }
    let sim = jaro_ascii(x, y);
    if sim > 0.7 {
        let prefix = x.iter().take(4).zip(y).take_while(|(p, q)| p == q).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

/// Jaro similarity of two ASCII strings of at most 64 bytes each.
fn jaro_ascii(a: &[u8], b: &[u8]) -> f64 {
    let (al, bl) = (a.len(), b.len());
    if al == 0 && bl == 0 {
        return 1.0;
    }
    if al == 0 || bl == 0 {
        return 0.0;
    }
    let range = (al.max(bl) / 2).saturating_sub(1);
    let (mut a_flags, mut b_flags) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, &c) in a.iter().enumerate() {
        let lo = i.saturating_sub(range);
        let hi = bl.min(i + range + 1);
        // The first unmatched equal byte of b in the window, as strsim.
        if let Some(j) = (lo..hi).find(|&j| b_flags >> j & 1 == 0 && b[j] == c) {
            a_flags |= 1 << i;
            b_flags |= 1 << j;
            matches += 1;
        }
    }
    if matches == 0 {
        return 0.0;
    }
    // Matched bytes of a and of b, each in order: half the places where
    // they differ are transpositions.
    let (mut ra, mut rb) = (a_flags, b_flags);
    let mut transpositions = 0usize;
    while ra != 0 {
        let (i, j) = (ra.trailing_zeros() as usize, rb.trailing_zeros() as usize);
        transpositions += usize::from(a[i] != b[j]);
        ra &= ra - 1;
        rb &= rb - 1;
    }
    transpositions /= 2;
    ((matches as f64 / al as f64)
        + (matches as f64 / bl as f64)
        + ((matches - transpositions) as f64 / matches as f64))
        / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_strsim_bit_for_bit() {
        let fixed = [
            ("", ""),
            ("", "a"),
            ("martha", "marhta"),
            ("dwayne", "duane"),
            ("dixon", "dicksonx"),
            ("preeti", "priti"),
            ("matthew", "mathtew"),
            ("a", "a"),
            ("ab", "ba"),
            ("zoë", "zoe"),
        ];
        for (a, b) in fixed {
            assert_eq!(
                jaro_winkler(a, b).to_bits(),
                strsim::jaro_winkler(a, b).to_bits(),
                "{a} / {b}"
            );
        }
        // Random strings over a small alphabet (many repeats, so the match
        // window and transpositions are exercised), lengths 0..=70 so both
        // the bit-set path and the fallback run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let word = |next: &mut dyn FnMut() -> u64| {
            let len = (next() % 71) as usize;
            (0..len)
                .map(|_| (b'a' + (next() % 5) as u8) as char)
                .collect::<String>()
        };
        for _ in 0..20_000 {
            let (a, b) = (word(&mut next), word(&mut next));
            assert_eq!(
                jaro_winkler(&a, &b).to_bits(),
                strsim::jaro_winkler(&a, &b).to_bits(),
                "{a} / {b}"
            );
        }
    }
}
