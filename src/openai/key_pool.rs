//! Pre-minted ephemeral keys, per agent: the IO-free core.
//!
//! Minting a call's key is one HTTPS round trip to OpenAI (100–400 ms from most places) on the
//! path from INVITE to 200 OK. A WebRTC key's session is the agent's alone (nothing of the
//! caller is in it), so keys can be minted ahead: the pool holds up to `target` fresh keys per
//! agent, a call takes one, and the shell mints a replacement in the background. A key is
//! never handed out with less than `min_left` of its life left, and each is handed out once.
//!
//! Nothing a stranger sends makes the pool mint: it mints at start for every agent and then
//! only to replace a key that a call took (after the call's access control) or that went
//! stale. A failing mint backs off (doubling from 1 s to 60 s for 429, 5xx and timeouts; 5
//! minutes for a refused key or session), so a broken OpenAI key is not hammered.
//!
//! Shape: `handle_*(now, …)`, [`KeyPool::poll_mint`], [`KeyPool::poll_timeout`]; the shell is
//! [`super::key_refill`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::events::Session;
use super::keys::{Backoff, EphemeralKey};

/// First wait after a transient mint failure; doubles per failure.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest wait after transient failures.
const RETRY_CAP: Duration = Duration::from_secs(60);
/// The wait after a final failure (401, 403, a rejected session): a configuration problem.
const RETRY_FINAL: Duration = Duration::from_secs(300);
/// The most keys the pool holds per agent.
pub const MAX_TARGET: usize = 16;

/// How a mint failed, as the pool needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintFailure {
    /// 429, 5xx, a timeout, a connection error: try again soon.
    Transient,
    /// 401, 403, 4xx, a bad answer: try again much later.
    Final,
}

/// One agent's keys.
#[derive(Debug)]
struct Slot {
    /// The agent's name (for logs and metrics).
    agent: String,
    /// What every key of this slot was minted with.
    session: Session,
    /// Fresh keys, oldest first, each with the instant it goes stale.
    keys: VecDeque<(EphemeralKey, Instant)>,
    /// Mints asked for and not yet answered.
    minting: usize,
    /// Failures in a row.
    failures: u32,
    /// No mint before this, after a failure.
    retry_at: Option<Instant>,
}

impl Slot {
    fn new(agent: &str, session: Session) -> Self {
        Self {
            agent: agent.to_string(),
            session,
            keys: VecDeque::new(),
            minting: 0,
            failures: 0,
            retry_at: None,
        }
    }

    fn drop_stale(&mut self, now: Instant) {
        self.keys.retain(|(_, stale_at)| *stale_at > now);
    }

    /// Keys still fresh at `now`.
    fn fresh(&self, now: Instant) -> usize {
        self.keys.iter().filter(|(_, stale)| *stale > now).count()
    }
}

/// A mint the shell should run.
#[derive(Debug, Clone)]
pub struct MintOrder {
    /// The agent's name.
    pub agent: String,
    /// The session to mint with.
    pub session: Session,
}

/// Pre-minted keys per agent (see the module's documentation).
#[derive(Debug)]
pub struct KeyPool {
    target: usize,
    min_left: Duration,
    /// One per configured agent: a handful, searched in order.
    slots: Vec<Slot>,
}

impl KeyPool {
    /// A pool holding up to `target` keys per agent (at most [`MAX_TARGET`]; 0 holds none),
    /// handing out keys with at least `min_left` of life left.
    pub fn new(target: usize, min_left: Duration) -> Self {
        Self {
            target: target.min(MAX_TARGET),
            min_left,
            slots: Vec::new(),
        }
    }

    /// Keys held per agent when full.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Keeps keys for `agent`, minted with `session`. Keys minted with another session are
    /// dropped.
    pub fn handle_agent(&mut self, agent: &str, session: Session) {
        if self.target == 0 {
            return;
        }
        match self.slot_mut(agent) {
            Some(slot) if slot.session == session => {}
            Some(slot) => {
                // these keys would open the old session
                slot.session = session;
                slot.keys.clear();
            }
            None => self.slots.push(Slot::new(agent, session)),
        }
    }

    /// A fresh key minted with `session`, if one is held. The caller mints its own when
    /// this is `None`.
    pub fn take(&mut self, now: Instant, session: &Session) -> Option<EphemeralKey> {
        let slot = self.slots.iter_mut().find(|s| s.session == *session)?;
        slot.drop_stale(now);
        slot.keys.pop_front().map(|(key, _)| key)
    }

    /// The agent whose keys `session` opens.
    pub fn agent_of(&self, session: &Session) -> Option<&str> {
        self.slots
            .iter()
            .find(|s| s.session == *session)
            .map(|s| s.agent.as_str())
    }

    fn slot_mut(&mut self, agent: &str) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.agent == agent)
    }

    /// The next mint to run, if an agent holds fewer keys (held and minting) than the target
    /// and is not backing off. Call until `None`.
    pub fn poll_mint(&mut self, now: Instant) -> Option<MintOrder> {
        let target = self.target;
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.keys.len() + s.minting < target && s.retry_at.is_none_or(|at| at <= now))?;
        slot.minting += 1;
        slot.retry_at = None;
        Some(MintOrder {
            agent: slot.agent.clone(),
            session: slot.session.clone(),
        })
    }

    /// A mint for `agent` with `session` succeeded: `key`, valid for `valid_for` from `now`.
    pub fn handle_minted(
        &mut self,
        now: Instant,
        agent: &str,
        session: &Session,
        key: EphemeralKey,
        valid_for: Duration,
    ) {
        let min_left = self.min_left;
        let Some(slot) = self.slot_mut(agent) else {
            return;
        };
        slot.minting = slot.minting.saturating_sub(1);
        slot.failures = 0;
        slot.retry_at = None;
        // minted for a session since replaced, or too short-lived to hand out: not kept
        if slot.session != *session || valid_for <= min_left {
            return;
        }
        slot.keys.push_back((key, now + (valid_for - min_left)));
    }

    /// A mint for `agent` failed.
    pub fn handle_mint_failed(&mut self, now: Instant, agent: &str, failure: MintFailure) {
        let Some(slot) = self.slot_mut(agent) else {
            return;
        };
        slot.minting = slot.minting.saturating_sub(1);
        slot.failures = slot.failures.saturating_add(1);
        let wait = match failure {
            MintFailure::Final => RETRY_FINAL,
            // the ceiling itself: one background mint per agent, nothing to spread out
            MintFailure::Transient => Backoff {
                base: RETRY_BASE,
                cap: RETRY_CAP,
            }
            .delay(slot.failures - 1, 1.0, None),
        };
        slot.retry_at = Some(now + wait);
    }

    /// Drops the keys gone stale by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in &mut self.slots {
            slot.drop_stale(now);
        }
    }

    /// When a held key goes stale or a backoff ends, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flat_map(|s| s.keys.iter().map(|(_, at)| *at).chain(s.retry_at))
            .min()
    }

    /// Fresh keys held for all agents at `now`.
    pub fn ready(&self, now: Instant) -> usize {
        self.slots.iter().map(|s| s.fresh(now)).sum()
    }

    /// Fresh keys held for `agent` at `now`.
    pub fn ready_for(&self, now: Instant, agent: &str) -> usize {
        self.slots
            .iter()
            .find(|s| s.agent == agent)
            .map_or(0, |s| s.fresh(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde_json::Value;

    fn session(instructions: &str) -> Session {
        Session {
            instructions: Some(instructions.into()),
            ..Default::default()
        }
    }

    fn key(n: u32) -> EphemeralKey {
        EphemeralKey {
            value: Secret::new(format!("ek_{n}")),
            expires_at: 0,
            session: Value::Null,
        }
    }

    const TTL: Duration = Duration::from_secs(600);
    const MARGIN: Duration = Duration::from_secs(30);

    /// Runs every mint the pool asks for, each succeeding with key `n`, `n+1`, …
    fn fill(pool: &mut KeyPool, now: Instant, mut n: u32) -> u32 {
        while let Some(order) = pool.poll_mint(now) {
            pool.handle_minted(now, &order.agent, &order.session, key(n), TTL);
            n += 1;
        }
        n
    }

    #[test]
    fn fills_to_the_target_and_replaces_what_a_call_takes() {
        let t0 = Instant::now();
        let mut pool = KeyPool::new(2, MARGIN);
        let s = session("front desk");
        pool.handle_agent("front", s.clone());
        // two mints asked for at once, then none while they run
        let a = pool.poll_mint(t0).unwrap();
        let b = pool.poll_mint(t0).unwrap();
        assert!(pool.poll_mint(t0).is_none());
        pool.handle_minted(t0, &a.agent, &a.session, key(1), TTL);
        pool.handle_minted(t0, &b.agent, &b.session, key(2), TTL);
        assert_eq!(pool.ready_for(t0, "front"), 2);
        assert!(pool.poll_mint(t0).is_none(), "full: nothing to mint");

        // oldest first, each once
        let k = pool.take(t0, &s).unwrap();
        assert_eq!(k.value.expose(), "ek_1");
        let order = pool.poll_mint(t0).expect("a replacement");
        assert_eq!(order.agent, "front");
        assert_eq!(pool.take(t0, &s).unwrap().value.expose(), "ek_2");
        assert!(pool.take(t0, &s).is_none(), "empty until the mints answer");
        assert!(pool.take(t0, &session("another agent")).is_none());
        assert_eq!(pool.agent_of(&s), Some("front"));
    }

    #[test]
    fn a_key_is_never_handed_out_within_the_margin_of_its_expiry() {
        let t0 = Instant::now();
        let mut pool = KeyPool::new(1, MARGIN);
        let s = session("x");
        pool.handle_agent("a", s.clone());
        fill(&mut pool, t0, 1);
        // stale at 600 - 30 s: the timeout says so
        assert_eq!(pool.poll_timeout(), Some(t0 + TTL - MARGIN));
        let just_before = t0 + TTL - MARGIN - Duration::from_millis(1);
        assert_eq!(pool.ready_for(just_before, "a"), 1);
        let at = t0 + TTL - MARGIN;
        pool.handle_timeout(at);
        assert_eq!(pool.ready_for(at, "a"), 0);
        assert!(pool.take(at, &s).is_none());
        // and a fresh one is minted in its place
        assert!(pool.poll_mint(at).is_some());
        // a key that would be stale on arrival is not kept
        let mut short = KeyPool::new(1, MARGIN);
        short.handle_agent("a", s.clone());
        let o = short.poll_mint(t0).unwrap();
        short.handle_minted(t0, &o.agent, &o.session, key(9), MARGIN);
        assert_eq!(short.ready_for(t0, "a"), 0);
    }

    #[test]
    fn keys_of_an_old_session_are_not_used() {
        let t0 = Instant::now();
        let mut pool = KeyPool::new(1, MARGIN);
        let old = session("old");
        pool.handle_agent("a", old.clone());
        let order = pool.poll_mint(t0).unwrap();
        // the agent changed while the mint ran: its key is not kept
        let new = session("new");
        pool.handle_agent("a", new.clone());
        pool.handle_minted(t0, &order.agent, &order.session, key(1), TTL);
        assert_eq!(pool.ready_for(t0, "a"), 0);
        fill(&mut pool, t0, 2);
        assert!(pool.take(t0, &old).is_none(), "asked with the old session");
        assert_eq!(pool.ready_for(t0, "a"), 1);
        assert_eq!(pool.take(t0, &new).unwrap().value.expose(), "ek_2");
    }

    #[test]
    fn failures_back_off_and_a_refused_key_waits_minutes() {
        let t0 = Instant::now();
        let mut pool = KeyPool::new(1, MARGIN);
        pool.handle_agent("a", session("x"));
        let mut now = t0;
        for wait_s in [1, 2, 4, 8, 16, 32, 60, 60] {
            let o = pool.poll_mint(now).expect("a mint once the backoff ended");
            pool.handle_mint_failed(now, &o.agent, MintFailure::Transient);
            let retry = now + Duration::from_secs(wait_s);
            assert_eq!(pool.poll_timeout(), Some(retry));
            assert!(pool.poll_mint(retry - Duration::from_millis(1)).is_none());
            now = retry;
        }
        let o = pool.poll_mint(now).unwrap();
        pool.handle_mint_failed(now, &o.agent, MintFailure::Final);
        assert_eq!(pool.poll_timeout(), Some(now + RETRY_FINAL));
        // one success resets the backoff
        let later = now + RETRY_FINAL;
        let o = pool.poll_mint(later).unwrap();
        pool.handle_minted(later, &o.agent, &o.session, key(1), TTL);
        pool.take(later, &o.session).unwrap();
        assert!(pool.poll_mint(later).is_some(), "refilled at once");
    }

    #[test]
    fn a_pool_of_zero_holds_nothing_and_mints_nothing() {
        let t0 = Instant::now();
        let mut pool = KeyPool::new(0, MARGIN);
        pool.handle_agent("a", session("x"));
        assert!(pool.poll_mint(t0).is_none());
        assert!(pool.poll_timeout().is_none());
        assert_eq!(KeyPool::new(1_000, MARGIN).target, MAX_TARGET);
    }
}
