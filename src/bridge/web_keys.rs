//! The ephemeral keys the relay handed to browsers for `/talk`, and the agent each was
//! minted for. A browser that asks the relay to attach to its call proves which agent the
//! call is by the key it holds: the relay runs that agent's tools, never one the browser
//! names. IO-free; `now` is Unix seconds.

use crate::secret::Secret;

/// Keys remembered at most (the oldest goes first): a browser needs its key only for the
/// seconds between the mint and the attach.
pub const MAX_KEYS: usize = 256;

/// Minted keys, their agent and expiry.
#[derive(Debug, Default)]
pub struct WebKeys {
    keys: Vec<(Secret, String, i64)>,
}

impl WebKeys {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers `key`, minted for `agent`, until `expires_at`.
    pub fn remember(&mut self, now: i64, key: Secret, agent: &str, expires_at: i64) {
        self.keys.retain(|(_, _, exp)| *exp > now);
        if self.keys.len() >= MAX_KEYS {
            self.keys.remove(0);
        }
        self.keys.push((key, agent.to_string(), expires_at));
    }

    /// The agent `presented` was minted for, while it is valid. Every key is compared in
    /// constant time, so the answer's timing says nothing of which key was close.
    pub fn agent_for(&self, now: i64, presented: &str) -> Option<&str> {
        let mut found = None;
        for (key, agent, exp) in &self.keys {
            if key.matches(presented.as_bytes()) && *exp > now && found.is_none() {
                found = Some(agent.as_str());
            }
        }
        found
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_agent_until_it_expires() {
        let mut b = WebKeys::new();
        b.remember(100, Secret::new("ek_front"), "front", 700);
        b.remember(100, Secret::new("ek_billing"), "billing", 700);
        assert_eq!(b.agent_for(200, "ek_front"), Some("front"));
        assert_eq!(b.agent_for(200, "ek_billing"), Some("billing"));
        assert_eq!(
            b.agent_for(200, "ek_other"),
            None,
            "a key the relay did not mint"
        );
        assert_eq!(b.agent_for(200, "ek_fron"), None);
        assert_eq!(b.agent_for(700, "ek_front"), None, "expired");
    }

    #[test]
    fn the_book_is_bounded_and_forgets_expired_keys_first() {
        let mut b = WebKeys::new();
        b.remember(0, Secret::new("ek_old"), "front", 10);
        for i in 0..MAX_KEYS {
            b.remember(20, Secret::new(format!("ek_{i}")), "front", 1_000);
        }
        assert_eq!(b.len(), MAX_KEYS);
        assert_eq!(b.agent_for(20, "ek_old"), None);
        b.remember(20, Secret::new("ek_new"), "front", 1_000);
        assert_eq!(b.len(), MAX_KEYS);
        assert_eq!(b.agent_for(20, "ek_0"), None, "the oldest went");
        assert_eq!(b.agent_for(20, "ek_new"), Some("front"));
    }
}
