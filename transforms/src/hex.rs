//! Lower-case hex of digests, for ids.
//!
//! A run writes three ids per lead (record, master, decision); `format!`'s
//! `{:032x}` spends most of its time in the padding path of `fmt`. This
//! writes the same text from a table.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Append the low `digits` hex digits of `v` (zero-padded, most significant
/// first): `format!("{v:032x}")` for `digits = 32` and any `v`, and
/// `format!("{v:0digits$x}")` whenever `v < 16^digits`.
pub fn push_hex(out: &mut String, v: u128, digits: usize) {
    debug_assert!(digits <= 32);
    let mut buf = [0u8; 32];
    for (k, b) in buf[..digits].iter_mut().rev().enumerate() {
        *b = DIGITS[((v >> (4 * k)) & 0xf) as usize];
    }
    // The table holds ASCII only.
    out.push_str(std::str::from_utf8(&buf[..digits]).expect("hex digits are ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_as_fmt() {
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for v in [0, 1, 0xf, 0x10, u128::MAX, 1 << 127, 0xabc] {
            let mut s = String::new();
            push_hex(&mut s, v, 32);
            assert_eq!(s, format!("{v:032x}"));
        }
        for _ in 0..1000 {
            x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(17) ^ 0x1234_5678;
            let mut s = String::from("m-");
            push_hex(&mut s, x >> 32, 24);
            assert_eq!(s, format!("m-{:024x}", x >> 32));
            s.clear();
            push_hex(&mut s, x, 32);
            assert_eq!(s, format!("{x:032x}"));
        }
    }
}
