//! Strict RTP: which source a call's RTP and RTCP are taken from, IO-free (the time is passed
//! in), in the manner of Asterisk's `strictrtp` and rtpengine.
//!
//! The RTP port range is small and sequential, so a stranger can spray it right after a call
//! is answered. Latching on the first packet from anyone (plain symmetric RTP) would let the
//! stranger hear the agent and speak for the caller. Here:
//! - packets from the address the SDP named are accepted at once, and lock the call's source
//!   to it (nothing else is ever taken after that; only a new SDP changes it);
//! - a caller behind NAT sends from another address than its SDP says: such a source is learnt
//!   only from the host the SDP names or the host the call's SIP came from (a NAT's public
//!   address), only after [`LEARN_PACKETS`] consecutive packets of one SSRC (sequence numbers
//!   one apart), only while the learning window is open ([`LEARN_WINDOW`] from the SDP and
//!   from the answer), and only while no source is latched yet. Once latched, a stranger is
//!   never taken mid-call (only the SDP address may still take over, as the signalling names
//!   it);
//! - RTCP is taken from the SDP's RTCP address, or from the latched RTP source's host (its
//!   port then becomes where RTCP goes); before RTP has latched, RTCP from anyone else is
//!   dropped, so RTCP never latches on its own.
//!
//! What a stranger can still do: from the caller's own host or NAT address (another phone
//! behind the same NAT), race a caller whose SDP address is not where its packets come from
//! during the window; or spoof the caller's source address. SRTP closes both (a stranger's
//! packets fail authentication before they reach this state).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Consecutive packets of one SSRC a source other than the SDP's must send before it is
/// learnt. Asterisk's `probation` default: a stranger's single spray packet never qualifies,
/// while a real caller behind NAT qualifies in 80 ms of 20 ms packets.
pub const LEARN_PACKETS: u8 = 4;

/// How long after the SDP (and after the answer) a source other than the SDP's may be learnt.
/// Asterisk's learning period: a caller behind NAT starts sending within a few hundred
/// milliseconds of the answer; past it only the SDP address is taken.
pub const LEARN_WINDOW: Duration = Duration::from_secs(5);

/// How the current RTP source was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latch {
    /// No packet taken yet: media goes to the SDP address.
    None,
    /// Packets came from the SDP's own address: locked.
    Sdp,
    /// A source other than the SDP's qualified during the learning window (NAT).
    Learnt,
}

/// A source on probation.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    src: SocketAddr,
    ssrc: u32,
    seq: u16,
    count: u8,
}

/// The source decisions of one call's phone leg.
#[derive(Debug, Clone)]
pub struct StrictRtp {
    sdp_rtp: Option<SocketAddr>,
    sdp_rtcp: Option<SocketAddr>,
    /// Where the call's SIP came from (the transport's address).
    signalling: Option<IpAddr>,
    source: Option<SocketAddr>,
    latch: Latch,
    rtcp_to: Option<SocketAddr>,
    rtcp_latched: bool,
    learn_until: Instant,
    candidate: Option<Candidate>,
}

impl StrictRtp {
    /// A leg with no SDP yet: nothing is taken until [`StrictRtp::set_sdp`] opens learning.
    pub fn new(now: Instant) -> Self {
        Self {
            sdp_rtp: None,
            sdp_rtcp: None,
            signalling: None,
            source: None,
            latch: Latch::None,
            rtcp_to: None,
            rtcp_latched: false,
            learn_until: now,
            candidate: None,
        }
    }

    /// A new SDP (the offer, or a re-INVITE's). Where it names the same RTP address as before,
    /// the latched source stays; else the call's source is chosen anew.
    pub fn set_sdp(&mut self, now: Instant, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        let same = rtp.is_some() && rtp == self.sdp_rtp;
        self.sdp_rtp = rtp;
        self.sdp_rtcp = rtcp;
        self.candidate = None;
        self.learn_until = now + LEARN_WINDOW;
        if !same {
            self.source = None;
            self.latch = Latch::None;
            self.rtcp_to = rtcp;
            self.rtcp_latched = false;
        } else if self.latch == Latch::None {
            self.rtcp_to = rtcp;
        }
    }

    /// The address the call's INVITE came from (the socket's, never a header's): a caller
    /// behind NAT sends its media from there too, so a source on that host may be learnt.
    pub fn set_signalling_ip(&mut self, ip: Option<IpAddr>) {
        self.signalling = ip;
    }

    /// The call was answered: a caller behind NAT starts sending now, so learning (while no
    /// source is latched) is open for another [`LEARN_WINDOW`].
    pub fn answered(&mut self, now: Instant) {
        self.learn_until = self.learn_until.max(now + LEARN_WINDOW);
    }

    /// Where RTP goes: the latched source, else the SDP address.
    pub fn rtp_target(&self) -> Option<SocketAddr> {
        self.source.or(self.sdp_rtp)
    }

    /// Where RTCP goes.
    pub fn rtcp_target(&self) -> Option<SocketAddr> {
        self.rtcp_to
    }

    /// How the RTP source was chosen.
    pub fn latch(&self) -> Latch {
        self.latch
    }

    /// Whether a packet from `src` is refused whatever it holds (a cheap check before any
    /// work on the packet, such as SRTP authentication): a source is latched, and `src` is
    /// neither it nor the SDP address.
    pub fn locked_out(&self, src: SocketAddr) -> bool {
        self.source.is_some() && Some(src) != self.source && Some(src) != self.sdp_rtp
    }

    /// Decides on an RTP packet (of `ssrc` and `seq`) from `src`: `true` to take it.
    pub fn on_rtp(&mut self, now: Instant, src: SocketAddr, ssrc: u32, seq: u16) -> bool {
        if Some(src) == self.source {
            return true;
        }
        if Some(src) == self.sdp_rtp {
            self.latch_to(src, Latch::Sdp);
            return true;
        }
        if self.source.is_some() || now >= self.learn_until || !self.may_learn(src.ip()) {
            return false;
        }
        let c = match &mut self.candidate {
            Some(c) if c.src == src && c.ssrc == ssrc && seq == c.seq.wrapping_add(1) => {
                c.seq = seq;
                c.count += 1;
                *c
            }
            slot => {
                let c = Candidate {
                    src,
                    ssrc,
                    seq,
                    count: 1,
                };
                *slot = Some(c);
                c
            }
        };
        if c.count < LEARN_PACKETS {
            return false;
        }
        self.latch_to(src, Latch::Learnt);
        true
    }

    /// Whether a source on `ip` may be learnt: the SDP's host or the signalling's.
    fn may_learn(&self, ip: IpAddr) -> bool {
        self.sdp_rtp.is_some_and(|a| a.ip() == ip) || self.signalling == Some(ip)
    }

    fn latch_to(&mut self, src: SocketAddr, how: Latch) {
        self.source = Some(src);
        self.latch = how;
        self.candidate = None;
        if !self.rtcp_latched {
            let next_port = SocketAddr::new(src.ip(), src.port().wrapping_add(1));
            self.rtcp_to = match how {
                Latch::Sdp => self.sdp_rtcp.or(Some(next_port)),
                _ => Some(next_port),
            };
        }
    }

    /// Decides on an RTCP packet from `src`: `true` to take it. RTCP from the latched RTP
    /// source's host latches where RTCP goes (its port may differ behind NAT).
    pub fn on_rtcp(&mut self, src: SocketAddr) -> bool {
        if self.rtcp_latched && Some(src) == self.rtcp_to {
            return true;
        }
        match self.source {
            Some(s) if s.ip() == src.ip() => {
                if !self.rtcp_latched {
                    self.rtcp_latched = true;
                    self.rtcp_to = Some(src);
                }
                Some(src) == self.rtcp_to
            }
            _ => Some(src) == self.sdp_rtcp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const SDP: &str = "127.0.0.1:4000";
    const SDP_RTCP: &str = "127.0.0.1:4001";
    const NAT: &str = "127.0.0.5:31000";
    const STRANGER: &str = "127.0.0.9:5000";

    /// A fake clock: a fixed start and offsets from it.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn leg() -> (Clock, StrictRtp) {
        let clock = Clock(Instant::now());
        let mut s = StrictRtp::new(clock.at(0));
        s.set_signalling_ip(Some(addr(NAT).ip()));
        s.set_sdp(clock.at(0), Some(addr(SDP)), Some(addr(SDP_RTCP)));
        (clock, s)
    }

    #[test]
    fn the_sdp_address_is_taken_at_once_and_locks() {
        let (t, mut s) = leg();
        assert_eq!(s.rtp_target(), Some(addr(SDP)));
        assert!(!s.on_rtcp(addr(STRANGER)));
        assert!(s.on_rtp(t.at(10), addr(SDP), 1, 100));
        assert_eq!(s.latch(), Latch::Sdp);
        // A stranger qualifying in every way, inside the window, is still refused.
        for i in 0..20 {
            assert!(!s.on_rtp(t.at(20 + i), addr(STRANGER), 7, 500 + i as u16));
            assert!(s.locked_out(addr(STRANGER)));
        }
        assert_eq!(s.rtp_target(), Some(addr(SDP)));
        assert_eq!(s.rtcp_target(), Some(addr(SDP_RTCP)));
        assert!(s.on_rtp(t.at(60_000), addr(SDP), 1, 101));
    }

    #[test]
    fn a_stranger_spraying_single_packets_is_never_learnt() {
        let (t, mut s) = leg();
        s.answered(t.at(1000));
        // Even from the host learning is open to (another phone behind the caller's NAT):
        // one packet per source port, as a sweep of the range would send...
        let host = addr(NAT).ip();
        for i in 0..100u16 {
            let src = SocketAddr::new(host, 5000 + i);
            assert!(!s.on_rtp(t.at(1000 + u64::from(i)), src, u32::from(i), i));
        }
        // ...nor packets from one source whose sequence numbers jump, or whose SSRC changes.
        for i in 0..10u16 {
            assert!(!s.on_rtp(t.at(1200), addr(NAT), 9, i * 2));
            assert!(!s.on_rtp(t.at(1200), addr(NAT), u32::from(i), 100 + i));
        }
        assert_eq!(s.latch(), Latch::None);
        assert_eq!(s.rtp_target(), Some(addr(SDP)));
    }

    #[test]
    fn a_stranger_on_another_host_never_qualifies() {
        let (t, mut s) = leg();
        s.answered(t.at(0));
        // A perfect stream (one SSRC, consecutive sequence numbers) inside the window, before
        // the caller sent anything: still not taken, as it is neither the SDP's host nor the
        // signalling's.
        for seq in 0..200u16 {
            assert!(!s.on_rtp(t.at(u64::from(seq) * 20), addr(STRANGER), 7, seq));
        }
        assert_eq!(s.latch(), Latch::None);
        // Another port on the SDP's own host is learnt (a port-changing NAT on the way).
        for seq in 0..u16::from(LEARN_PACKETS) {
            s.on_rtp(t.at(4000), addr("127.0.0.1:4100"), 5, seq);
        }
        assert_eq!(s.latch(), Latch::Learnt);
        assert_eq!(s.rtp_target(), Some(addr("127.0.0.1:4100")));
        // No signalling address and no SDP: nothing is ever learnt.
        let mut bare = StrictRtp::new(t.at(0));
        bare.set_sdp(t.at(0), None, None);
        for seq in 0..20u16 {
            assert!(!bare.on_rtp(t.at(10), addr(NAT), 1, seq));
        }
    }

    #[test]
    fn a_caller_behind_nat_is_learnt_after_consecutive_packets_of_one_ssrc() {
        let (t, mut s) = leg();
        s.answered(t.at(3000));
        for seq in 10..10 + u16::from(LEARN_PACKETS) - 1 {
            assert!(!s.on_rtp(t.at(3100), addr(NAT), 42, seq));
        }
        assert_eq!(s.latch(), Latch::None);
        assert!(s.on_rtp(t.at(3180), addr(NAT), 42, 10 + u16::from(LEARN_PACKETS) - 1));
        assert_eq!(s.latch(), Latch::Learnt);
        assert_eq!(s.rtp_target(), Some(addr(NAT)));
        // RTCP now goes next to the learnt source, and follows its host.
        assert_eq!(s.rtcp_target(), Some(addr("127.0.0.5:31001")));
        assert!(!s.on_rtcp(addr(STRANGER)));
        assert!(s.on_rtcp(addr("127.0.0.5:31007")));
        assert_eq!(s.rtcp_target(), Some(addr("127.0.0.5:31007")));
        assert!(!s.on_rtcp(addr("127.0.0.5:31001")));
        // Sequence numbers that wrap still count as consecutive.
        let (t, mut s) = leg();
        let seqs = [65534u16, 65535, 0, 1];
        for (i, seq) in seqs.into_iter().enumerate() {
            assert_eq!(s.on_rtp(t.at(100), addr(NAT), 1, seq), i == 3);
        }
    }

    #[test]
    fn once_latched_no_stranger_is_learnt_mid_call() {
        let (t, mut s) = leg();
        s.answered(t.at(0));
        for seq in 0..u16::from(LEARN_PACKETS) {
            s.on_rtp(t.at(20), addr(NAT), 42, seq);
        }
        assert_eq!(s.latch(), Latch::Learnt);
        // Inside the window and long after it, a steady stream from another port of the same
        // host (or any other host) changes nothing.
        for at in [100, 60_000] {
            for seq in 0..50 {
                assert!(!s.on_rtp(t.at(at), addr("127.0.0.5:32000"), 7, seq));
                assert!(!s.on_rtp(t.at(at), addr(STRANGER), 8, seq));
            }
            assert_eq!(s.rtp_target(), Some(addr(NAT)));
        }
        // The SDP's own address may still take over: the signalling names it.
        assert!(s.on_rtp(t.at(70_000), addr(SDP), 1, 1));
        assert_eq!(s.latch(), Latch::Sdp);
        assert!(!s.on_rtp(t.at(70_020), addr(NAT), 42, 100));
    }

    #[test]
    fn learning_closes_with_the_window() {
        let (t, mut s) = leg();
        s.answered(t.at(2000));
        let late = t.at(2000) + LEARN_WINDOW;
        for seq in 0..20 {
            assert!(!s.on_rtp(late, addr(NAT), 42, seq));
        }
        assert_eq!(s.latch(), Latch::None);
        // The SDP address is taken whenever it comes.
        assert!(s.on_rtp(late, addr(SDP), 1, 1));
        // Without an answer the window is the SDP's own.
        let (t, mut s) = leg();
        for seq in 0..20 {
            assert!(!s.on_rtp(t.at(0) + LEARN_WINDOW, addr(NAT), 42, seq));
        }
    }

    #[test]
    fn a_new_sdp_reopens_learning_and_moves_the_source() {
        let (t, mut s) = leg();
        assert!(s.on_rtp(t.at(10), addr(SDP), 1, 1));
        // The same address again (hold, resume): the source stays.
        s.set_sdp(t.at(20_000), Some(addr(SDP)), Some(addr(SDP_RTCP)));
        assert_eq!(s.latch(), Latch::Sdp);
        assert!(!s.on_rtp(t.at(20_010), addr(STRANGER), 7, 1));
        // A new address: the old source is gone, the new one is taken at once.
        let moved = addr("127.0.0.1:6000");
        s.set_sdp(t.at(30_000), Some(moved), None);
        assert_eq!(s.rtp_target(), Some(moved));
        assert!(!s.on_rtp(t.at(30_010), addr(SDP), 1, 2));
        assert!(s.on_rtp(t.at(30_020), moved, 2, 1));
        assert_eq!(s.rtcp_target(), Some(addr("127.0.0.1:6001")));
        // A new address behind NAT is learnt in the new window.
        s.set_sdp(t.at(40_000), Some(addr("10.0.0.2:7000")), None);
        for seq in 0..u16::from(LEARN_PACKETS) {
            s.on_rtp(t.at(40_100), addr(NAT), 3, seq);
        }
        assert_eq!(s.latch(), Latch::Learnt);
    }

    #[test]
    fn rtcp_never_latches_before_rtp() {
        let (t, mut s) = leg();
        // Before any RTP: only the SDP's RTCP address is taken, and nothing moves.
        assert!(!s.on_rtcp(addr(STRANGER)));
        assert!(!s.on_rtcp(addr("127.0.0.1:4003")));
        assert!(s.on_rtcp(addr(SDP_RTCP)));
        assert_eq!(s.rtcp_target(), Some(addr(SDP_RTCP)));
        // No SDP RTCP address and no RTP yet: nothing is taken at all.
        let mut bare = StrictRtp::new(t.at(0));
        bare.set_sdp(t.at(0), Some(addr(SDP)), None);
        assert!(!bare.on_rtcp(addr(SDP_RTCP)));
        assert_eq!(bare.rtcp_target(), None);
        assert!(bare.on_rtp(t.at(1), addr(SDP), 1, 1));
        assert_eq!(bare.rtcp_target(), Some(addr(SDP_RTCP)));
        assert!(bare.on_rtcp(addr("127.0.0.1:4009")));
        assert_eq!(bare.rtcp_target(), Some(addr("127.0.0.1:4009")));
        assert!(!bare.on_rtcp(addr(STRANGER)));
    }
}
