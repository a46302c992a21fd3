//! A secret string (an API key, an ephemeral key, a trunk password, the admin token) that never
//! shows itself, and the constant-time comparisons the relay makes of secrets.
//!
//! A leaf module: it depends on no other module of the crate.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::{Choice, ConstantTimeEq};

/// A key, password or token. `Debug` and `Display` print `[redacted]` and serialising writes
/// `"[redacted]"`, so a secret cannot reach a log line, an error, an API answer or a panic
/// message by formatting; reading it takes an explicit [`Secret::expose`]. Equality is
/// constant-time.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it (a header, a digest).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `presented` is this secret, compared in constant time: see [`ct_eq_padded`].
    /// An empty secret matches nothing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        !self.is_empty() && ct_eq_padded(self.0.as_bytes(), presented)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        ct_eq_padded(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_string())
    }
}

/// True when `presented` equals `want`, with `subtle`'s constant-time comparisons: the time
/// taken depends only on `want`'s length, never on where the two first differ nor on
/// `presented`'s length (a short value is compared against zeros, a long one is cut).
pub fn ct_eq_padded(want: &[u8], presented: &[u8]) -> bool {
    let mut same: Choice = (want.len() as u64).ct_eq(&(presented.len() as u64));
    for (i, w) in want.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        same &= w.ct_eq(&p);
    }
    same.into()
}

/// True when two values of the same public length are equal (digests, MACs, derived keys),
/// in constant time; `false` when the lengths differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialisation_never_show_the_secret() {
        let s = Secret::new("sk-live-abcdef");
        let shown = format!(
            "{s:?} {:?} {s} {}",
            Some(&s),
            serde_json::to_string(&s).unwrap()
        );
        assert!(!shown.contains("sk-"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(s.expose(), "sk-live-abcdef");
    }

    #[test]
    fn matches_only_the_exact_secret() {
        let t = Secret::new("s3cret-token");
        assert!(t.matches(b"s3cret-token"));
        assert!(!t.matches(b"s3cret-tokem"));
        assert!(!t.matches(b"s3cret-token-and-more"));
        assert!(!t.matches(b"s3cret"));
        assert!(!t.matches(b""));
        assert!(
            !Secret::new("").matches(b""),
            "an empty secret matches nothing"
        );
    }

    #[test]
    fn equality_compares_the_values() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
        assert!(ct_eq(b"abcd", b"abcd"));
        assert!(!ct_eq(b"abcd", b"abce"));
        assert!(!ct_eq(b"abcd", b"abc"));
    }

    #[test]
    fn deserialises_from_a_plain_string() {
        let s: Secret = serde_json::from_str("\"pw\"").unwrap();
        assert_eq!(s.expose(), "pw");
    }
}
