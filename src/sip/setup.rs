//! Calls being set up: INVITEs that passed access control, digest and the rate limits and
//! whose realtime session is being opened, not yet answered. Each costs the operator a
//! session while it rings, so their number is capped per source (an IPv4 address or an IPv6
//! /64, as for the rate limits) and in total. The map holds only sources with a call in
//! setup, so it is bounded by the total cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::limits::source_key;

/// Why a new call may not start its setup now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupRefusal {
    /// `sip.max_setup_calls` calls are being set up.
    Total,
    /// `sip.max_setup_calls_per_source` calls from this source are being set up.
    Source,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// The calls in setup, shared by the SIP server and the calls' setup slots.
#[derive(Debug, Clone)]
pub struct Setups {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_source: usize,
}

impl Setups {
    /// At most `max_total` calls in setup, `max_per_source` from one source (0: no cap).
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total,
            max_per_source,
        }
    }

    /// Takes a place for a call from `ip`; the place is freed when the slot is dropped or
    /// [`SetupSlot::release`]d (the call was answered).
    pub fn try_start(&self, ip: IpAddr) -> Result<SetupSlot, SetupRefusal> {
        let key = source_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.max_total > 0 && c.total >= self.max_total {
            return Err(SetupRefusal::Total);
        }
        let n = c.per_source.get(&key).copied().unwrap_or(0);
        if self.max_per_source > 0 && n >= self.max_per_source {
            return Err(SetupRefusal::Source);
        }
        c.total += 1;
        c.per_source.insert(key, n + 1);
        Ok(SetupSlot {
            setups: Some(self.clone()),
            key,
        })
    }

    /// Calls in setup now.
    pub fn in_setup(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Sources with a call in setup now.
    pub fn sources(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_source
            .len()
    }

    fn finish(&self, key: IpAddr) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&key);
            }
        }
    }
}

/// A call's place among the calls in setup.
#[derive(Debug)]
pub struct SetupSlot {
    setups: Option<Setups>,
    key: IpAddr,
}

impl SetupSlot {
    /// The call was answered (or ended): its place is free.
    pub fn release(&mut self) {
        if let Some(s) = self.setups.take() {
            s.finish(self.key);
        }
    }
}

impl Drop for SetupSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_in_setup_are_capped_per_source_and_in_total() {
        let s = Setups::new(5, 2);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let mut a1 = s.try_start(a).unwrap();
        let _a2 = s.try_start(a).unwrap();
        assert_eq!(s.try_start(a).unwrap_err(), SetupRefusal::Source);
        // Another source is not held up by the first.
        let _b1 = s.try_start(b).unwrap();
        // Answering frees the place (once, however often it is released).
        a1.release();
        a1.release();
        let _a3 = s.try_start(a).unwrap();
        assert_eq!(s.in_setup(), 3);
        // The total cap holds across sources.
        let others: Vec<_> = (10..12u8)
            .map(|i| s.try_start(IpAddr::from([192, 0, 2, i])).unwrap())
            .collect();
        assert_eq!(
            s.try_start("192.0.2.99".parse().unwrap()).unwrap_err(),
            SetupRefusal::Total
        );
        drop(others);
        drop(_a3);
        drop(_a2);
        drop(_b1);
        assert_eq!(s.in_setup(), 0);
        assert_eq!(s.sources(), 0, "no entry outlives its calls");
    }

    #[test]
    fn an_ipv6_host_cannot_dodge_the_cap_by_changing_its_address() {
        let s = Setups::new(100, 1);
        let _one = s.try_start("2001:db8:5:6::1".parse().unwrap()).unwrap();
        assert_eq!(
            s.try_start("2001:db8:5:6::2".parse().unwrap()).unwrap_err(),
            SetupRefusal::Source
        );
        assert!(s.try_start("2001:db8:5:7::1".parse().unwrap()).is_ok());
    }
}
