//! Per-source rate limits (token buckets), IO-free: the time is passed in. One source that
//! floods cannot use up another source's budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Any datagram or connection, before parsing (non-trunk sources only).
    Packet,
    /// New INVITEs.
    Invite,
    /// REGISTERs.
    Register,
    /// Out-of-dialog OPTIONS.
    Options,
}

/// `[sip.limits]`: sustained rates per source address, with bursts of twice the rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Datagrams per second from one address that is not a trunk's (dropped unparsed beyond).
    pub packets_per_second: u32,
    /// New INVITEs per second from one address.
    pub invites_per_second: u32,
    /// REGISTERs per second from one address.
    pub registers_per_second: u32,
    /// OPTIONS per second from one address.
    pub options_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            packets_per_second: 300,
            invites_per_second: 30,
            registers_per_second: 5,
            options_per_second: 10,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets per (source, kind).
#[derive(Debug)]
pub struct RateLimiter {
    cfg: LimitsConfig,
    buckets: HashMap<(IpAddr, Kind), Bucket>,
    last_prune: Option<Instant>,
}

/// Buckets idle this long are forgotten (they would be full again anyway).
const IDLE: Duration = Duration::from_secs(10);

impl RateLimiter {
    /// Limits from the config.
    pub fn new(cfg: LimitsConfig) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            last_prune: None,
        }
    }

    fn rate(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Packet => self.cfg.packets_per_second,
            Kind::Invite => self.cfg.invites_per_second,
            Kind::Register => self.cfg.registers_per_second,
            Kind::Options => self.cfg.options_per_second,
        }
    }

    /// Takes one token; false when the source is over its rate (0 means unlimited).
    pub fn allow(&mut self, ip: IpAddr, kind: Kind, now: Instant) -> bool {
        let rate = f64::from(self.rate(kind));
        if rate == 0.0 {
            return true;
        }
        self.prune(now);
        let burst = rate * 2.0;
        let b = self.buckets.entry((ip, kind)).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < IDLE)
        {
            return;
        }
        self.last_prune = Some(now);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
    }

    /// Sources tracked now (bounded by pruning).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_source_is_held_to_its_rate_and_others_are_untouched() {
        let mut l = RateLimiter::new(LimitsConfig {
            invites_per_second: 10,
            ..Default::default()
        });
        let t0 = Instant::now();
        let flood: IpAddr = "198.51.100.9".parse().unwrap();
        let trunk: IpAddr = "203.0.113.1".parse().unwrap();
        // 5000 INVITEs in one second from one address: the burst (20) plus 10/s get through.
        let mut passed = 0;
        for i in 0..5000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 200);
            if l.allow(flood, Kind::Invite, now) {
                passed += 1;
            }
            if i % 500 == 0 {
                assert!(
                    l.allow(trunk, Kind::Invite, now),
                    "the trunk's budget is its own"
                );
            }
        }
        assert!((20..=31).contains(&passed), "{passed}");
        // Other kinds have their own buckets.
        assert!(l.allow(flood, Kind::Options, t0 + Duration::from_secs(1)));
        // After a quiet second the source may call again.
        assert!(l.allow(flood, Kind::Invite, t0 + Duration::from_secs(3)));
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let mut l = RateLimiter::new(LimitsConfig::default());
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let ip = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
            l.allow(ip, Kind::Packet, t0);
        }
        assert_eq!(l.tracked(), 1000);
        l.allow(
            "10.9.9.9".parse().unwrap(),
            Kind::Packet,
            t0 + IDLE + Duration::from_secs(1),
        );
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn zero_means_unlimited() {
        let mut l = RateLimiter::new(LimitsConfig {
            options_per_second: 0,
            ..Default::default()
        });
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.allow("10.0.0.1".parse().unwrap(), Kind::Options, t0)));
    }
}
