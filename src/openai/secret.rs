//! A secret string (an API key, an ephemeral key) that never shows itself in `Debug`.

use std::fmt;

/// A key or token. `Debug` prints `Secret(<redacted>)` and there is no `Display`, so a key
/// cannot reach a log line, an error or a panic message by formatting; reading it takes an
/// explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let s = Secret::new("sk-live-abcdef");
        let shown = format!("{s:?} {:?}", Some(&s));
        assert!(!shown.contains("sk-"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(s.expose(), "sk-live-abcdef");
    }
}
