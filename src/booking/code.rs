//! Confirmation codes a caller can take down over the phone: `KTH472`.
//!
//! Letters easily taken for digits or for each other in writing (B, I, L, O, S, Z) are left
//! out, and digits are 2–9 so nobody wonders "zero or oh": 20³ × 8³ ≈ 4 million codes.

use rand::Rng;

/// Letters used in codes.
pub const LETTERS: &[u8] = b"ACDEFGHJKMNPQRTUVWXY";
/// Digits used in codes.
pub const DIGITS: &[u8] = b"23456789";

/// A fresh random code: three letters then three digits.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(6);
    for _ in 0..3 {
        s.push(LETTERS[rng.random_range(0..LETTERS.len())] as char);
    }
    for _ in 0..3 {
        s.push(DIGITS[rng.random_range(0..DIGITS.len())] as char);
    }
    s
}

/// The code as said to the caller, one character at a time: `K T H 4 7 2`.
pub fn spoken(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

/// Tidies a code the model heard back (`kth-472`, `K T H 4 7 2`) for lookup; `None` when it
/// cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '_'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = s.len() == 6
        && s.bytes().take(3).all(|b| LETTERS.contains(&b))
        && s.bytes().skip(3).all(|b| DIGITS.contains(&b));
    ok.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_read_back() {
        for _ in 0..1000 {
            let c = generate();
            assert_eq!(normalize(&c).as_deref(), Some(c.as_str()));
            assert!(!c.contains(['I', 'L', 'O', 'S', '0', '1']));
        }
        assert_eq!(normalize(" kth-472 ").as_deref(), Some("KTH472"));
        assert_eq!(spoken("KTH472"), "K T H 4 7 2");
        assert_eq!(normalize("K T H 4 7 2").as_deref(), Some("KTH472"));
        for bad in [
            "", "KTH47", "KTH4720", "OIL472", "KTH012", "123KTH", "ＫTH472",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
