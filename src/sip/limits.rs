//! Per-source rate limits (token buckets), IO-free: the time is passed in. One source that
//! floods cannot use up another source's budget.
//!
//! A source is an IPv4 address or an IPv6 /64 (one subscriber's usual allocation: keying
//! per /128 would let one host use 2^64 budgets). The buckets are bounded to
//! [`MAX_TRACKED`]: past it the least recently used eighth is forgotten. A forgotten source
//! starts again with a full burst, which gives an attacker nothing that owning that many
//! addresses does not give already.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

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
    /// Requests inside a dialog (BYE, re-INVITE, INFO...), from a source that is not a trunk.
    InDialog,
}

/// The address a source is counted under: an IPv4 address (IPv4-mapped IPv6 included) or
/// the /64 of an IPv6 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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
    cap: usize,
}

/// Buckets idle this long are forgotten (they would be full again anyway).
const IDLE: Duration = Duration::from_secs(10);

/// Buckets kept at most (about 64 bytes each).
pub const MAX_TRACKED: usize = 65_536;

impl RateLimiter {
    /// Limits from the config.
    pub fn new(cfg: LimitsConfig) -> Self {
        Self::with_capacity(cfg, MAX_TRACKED)
    }

    /// Limits from the config, with at most `cap` buckets.
    pub fn with_capacity(cfg: LimitsConfig, cap: usize) -> Self {
        Self {
            cfg,
            buckets: HashMap::new(),
            last_prune: None,
            cap: cap.max(8),
        }
    }

    fn rate(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Packet => self.cfg.packets_per_second,
            Kind::Invite => self.cfg.invites_per_second,
            Kind::Register => self.cfg.registers_per_second,
            Kind::Options => self.cfg.options_per_second,
            Kind::InDialog => self.cfg.in_dialog_per_second,
        }
    }

    /// Takes one token; false when the source is over its rate (0 means unlimited).
    pub fn allow(&mut self, ip: IpAddr, kind: Kind, now: Instant) -> bool {
        let rate = f64::from(self.rate(kind));
        if rate == 0.0 {
            return true;
        }
        self.prune(now);
        let key = (source_key(ip), kind);
        if self.buckets.len() >= self.cap && !self.buckets.contains_key(&key) {
            self.evict(now);
        }
        let burst = rate * 2.0;
        let b = self.buckets.entry(key).or_insert(Bucket {
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

    /// Makes room: drops the idle buckets, else the least recently used eighth (one pass
    /// for every cap/8 new sources, so the cost per packet stays constant).
    fn evict(&mut self, now: Instant) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
        if self.buckets.len() < self.cap {
            return;
        }
        let mut lasts: Vec<Instant> = self.buckets.values().map(|b| b.last).collect();
        let k = lasts.len() / 8;
        let (_, cut, _) = lasts.select_nth_unstable(k);
        let cut = *cut;
        self.buckets.retain(|_, b| b.last > cut);
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
    fn the_buckets_are_bounded_and_the_busiest_sources_kept() {
        let mut l = RateLimiter::with_capacity(
            LimitsConfig {
                invites_per_second: 1,
                ..Default::default()
            },
            100,
        );
        let t0 = Instant::now();
        let flood: IpAddr = "198.51.100.9".parse().unwrap();
        // The flooding source uses up its burst of 2.
        assert!(l.allow(flood, Kind::Invite, t0));
        assert!(l.allow(flood, Kind::Invite, t0));
        assert!(!l.allow(flood, Kind::Invite, t0));
        // 10,000 other sources within a second: never more than the cap, and the flood,
        // seen again meanwhile, keeps its empty bucket.
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 20);
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            l.allow(ip, Kind::Invite, now);
            if i % 20 == 0 {
                assert!(!l.allow(flood, Kind::Invite, now), "{i}");
            }
            assert!(l.tracked() <= 100);
        }
    }

    #[test]
    fn ipv6_sources_share_a_budget_per_64() {
        let mut l = RateLimiter::new(LimitsConfig {
            invites_per_second: 1,
            ..Default::default()
        });
        let t0 = Instant::now();
        // One host hopping through its /64: two INVITEs, then refused.
        let passed = (0..100u16)
            .filter(|i| {
                let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 7, *i));
                l.allow(ip, Kind::Invite, t0)
            })
            .count();
        assert_eq!(passed, 2);
        // The neighbouring /64 is someone else.
        assert!(l.allow("2001:db8:1:3::1".parse().unwrap(), Kind::Invite, t0));
        // An IPv4-mapped address is its IPv4 address.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.allow(v4, Kind::Invite, t0));
        assert!(l.allow(v4, Kind::Invite, t0));
        assert!(!l.allow("::ffff:192.0.2.1".parse().unwrap(), Kind::Invite, t0));
        assert_eq!(
            source_key("2001:db8:1:2:aaaa::9".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
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
