//! The ephemeral keys the simulator minted, IO-free (every call takes `now`, Unix seconds).
//!
//! As OpenAI's, a key opens sessions until its `expires_at` (a running session outlives it).
//! The book forgets expired keys when the next key is minted and holds at most
//! [`MAX_KEYS`]: past that the key nearest its expiry goes first, so a relay minting one key
//! per call (or a client minting in a loop) cannot grow the simulator without bound.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// Most keys kept; the relay mints one per call and keys live 10 to 7200 s.
pub(crate) const MAX_KEYS: usize = 10_000;

/// An ephemeral key the simulator minted.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    /// Unix seconds after which the key is refused.
    pub expires_at: i64,
    /// The session config given at mint.
    pub session: Value,
}

/// What a presented key is.
#[derive(Debug, PartialEq)]
pub(crate) enum Lookup {
    /// Valid: the session config minted with it.
    Valid(Value),
    /// Minted here but past its `expires_at` (and not yet forgotten).
    Expired,
    /// Never minted here, or forgotten.
    Unknown,
}

/// The minted keys, by key and by expiry.
#[derive(Debug)]
pub(crate) struct KeyBook {
    by_key: HashMap<String, Minted>,
    by_expiry: BTreeSet<(i64, String)>,
    cap: usize,
}

impl Default for KeyBook {
    fn default() -> Self {
        Self::with_cap(MAX_KEYS)
    }
}

impl KeyBook {
    /// A book holding at most `cap` keys (at least one).
    pub fn with_cap(cap: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            by_expiry: BTreeSet::new(),
            cap: cap.max(1),
        }
    }

    /// Adds a freshly minted key, first forgetting the expired ones and, when full, the key
    /// nearest its expiry.
    pub fn insert(&mut self, key: String, minted: Minted, now: i64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now && self.by_key.len() < self.cap {
                break;
            }
            let (_, old) = self.by_expiry.pop_first().unwrap_or_default();
            self.by_key.remove(&old);
        }
        if let Some(old) = self.by_key.insert(key.clone(), minted.clone()) {
            self.by_expiry.remove(&(old.expires_at, key.clone()));
        }
        self.by_expiry.insert((minted.expires_at, key));
    }

    /// What `key` is at `now`.
    pub fn lookup(&self, key: &str, now: i64) -> Lookup {
        match self.by_key.get(key) {
            Some(m) if m.expires_at > now => Lookup::Valid(m.session.clone()),
            Some(_) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minted(expires_at: i64) -> Minted {
        Minted {
            expires_at,
            session: json!({"type": "realtime", "expires": expires_at}),
        }
    }

    #[test]
    fn keys_expire_and_are_forgotten_at_the_next_mint() {
        let mut book = KeyBook::default();
        book.insert("ek_a".into(), minted(1_000 + 60), 1_000);
        book.insert("ek_b".into(), minted(1_000 + 600), 1_000);
        assert!(matches!(book.lookup("ek_a", 1_059), Lookup::Valid(_)));
        assert_eq!(book.lookup("ek_a", 1_060), Lookup::Expired);
        assert_eq!(book.lookup("ek_zz", 1_000), Lookup::Unknown);
        assert_eq!(book.len(), 2);
        // the next mint forgets the expired key, keeps the live one
        book.insert("ek_c".into(), minted(1_100 + 600), 1_100);
        assert_eq!(book.lookup("ek_a", 1_100), Lookup::Unknown);
        assert!(matches!(book.lookup("ek_b", 1_100), Lookup::Valid(_)));
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn a_full_book_drops_the_key_nearest_its_expiry() {
        let mut book = KeyBook::with_cap(3);
        let now = 5_000;
        for (i, ttl) in [600, 30, 7200, 10].into_iter().enumerate() {
            book.insert(format!("ek_{i}"), minted(now + ttl), now);
            assert!(book.len() <= 3);
        }
        assert_eq!(book.len(), 3);
        // ek_1 (30 s) went first; the newest key, though shortest, is kept
        assert_eq!(book.lookup("ek_1", now), Lookup::Unknown);
        for k in ["ek_0", "ek_2", "ek_3"] {
            assert!(matches!(book.lookup(k, now), Lookup::Valid(_)), "{k}");
        }
        // many mints never grow it past the cap
        for i in 0..1_000 {
            book.insert(format!("ek_x{i}"), minted(now + i + 600), now + i);
        }
        assert_eq!(book.len(), 3);
        assert_eq!(book.by_expiry.len(), 3);
    }
}
