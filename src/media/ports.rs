//! The pool of RTP ports for the phone legs. RTP takes an even port and RTCP the odd one
//! after it (RFC 3550 section 11). A lease returns its pair to the pool when dropped.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A shared pool of even RTP ports.
#[derive(Debug, Clone)]
pub struct PortPool {
    free: Arc<Mutex<VecDeque<u16>>>,
    size: usize,
}

/// One RTP/RTCP port pair, held until dropped.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    pool: Arc<Mutex<VecDeque<u16>>>,
}

impl PortPool {
    /// All even ports `p` in `[lo, hi]` whose `p + 1` is also in range.
    pub fn new(lo: u16, hi: u16) -> Self {
        let first = lo + (lo % 2);
        // p < hi, so p + 1 <= hi: both ports of every pair are in range.
        let free: VecDeque<u16> = (first..hi).step_by(2).collect();
        let size = free.len();
        Self {
            free: Arc::new(Mutex::new(free)),
            size,
        }
    }

    /// Takes the least recently used pair, if any is free.
    pub fn lease(&self) -> Option<PortLease> {
        let port = self.free.lock().ok()?.pop_front()?;
        Some(PortLease {
            port,
            pool: self.free.clone(),
        })
    }

    /// Pairs in the pool.
    pub fn capacity(&self) -> usize {
        self.size
    }

    /// Pairs free right now.
    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

impl PortLease {
    /// The RTP port (even); RTCP is the next one.
    pub fn rtp_port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Ok(mut f) = self.pool.lock() {
            // Back of the queue: a port is reused as late as possible, so stray packets of a
            // finished call do not land in a new one.
            f.push_back(self.port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let pool = PortPool::new(20001, 20010);
        assert_eq!(
            pool.capacity(),
            4,
            "20002, 20004, 20006, 20008 (20010 has no 20011)"
        );
        let l = pool.lease().unwrap();
        assert_eq!(l.rtp_port(), 20002);
    }

    #[test]
    fn a_thousand_sequential_calls_on_a_hundred_ports_never_run_out() {
        let pool = PortPool::new(30000, 30099);
        assert_eq!(pool.capacity(), 50);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let lease = pool.lease().expect("a port for every sequential call");
            seen.insert(lease.rtp_port());
        }
        assert_eq!(pool.available(), 50);
        assert_eq!(seen.len(), 50, "ports rotate through the whole range");
    }

    #[test]
    fn exhaustion_then_release() {
        let pool = PortPool::new(40000, 40003);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!(pool.available(), 0);
        assert!(pool.lease().is_none());
        drop(a);
        let c = pool.lease().unwrap();
        assert_ne!(c.rtp_port(), b.rtp_port());
    }
}
