//! The phone leg's sockets: RTP on an even port from the pool, RTCP on the next one.
//!
//! Strict symmetric RTP ([`super::strict_rtp`]): packets from the SDP's address are taken at
//! once; another source (a caller behind NAT) only after several consecutive packets of one
//! SSRC soon after the SDP or the answer, and never once a source is latched. The latched
//! source is where the relay sends. Packets from any other source are counted and dropped;
//! RTCP is taken only from the RTP source's host (or the SDP's RTCP address).
//!
//! SRTP (SDES): when the SIP side has put keys in the leg's [`KeySlot`], the leg protects
//! what it sends and unprotects what it receives, so the call's task hands it and gets from
//! it plain RTP and RTCP as on any call. Received packets are checked and decrypted in the
//! task's own buffer inside [`RtpLeg::recv_from`] and [`RtpLeg::recv_rtcp_from`]; what fails
//! authentication, or is a replay, is counted and dropped there (and never latches the
//! caller's address). Sending protects into the leg's own buffer. Nothing allocates per
//! packet. New keys in the slot (a re-INVITE) take effect from the next packet.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::net::UdpSocket;
use tracing::{info, warn};

use super::ports::{PortLease, PortPool};
use super::rtp::{self, RtpIn};
use super::rtp_socket::RtpSocket;
use super::srtp::{KeySlot, SrtpContext, SrtpError};
use super::strict_rtp::StrictRtp;

/// How many leased ports to try before giving up (another process may hold some).
const BIND_ATTEMPTS: usize = 16;

/// Counters of one leg, read at call end and by the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// RTP packets accepted from the caller.
    pub rx_packets: u64,
    /// RTP packets sent to the caller.
    pub tx_packets: u64,
    /// RTP packets from a source not taken: a stranger, or a source on probation (a caller
    /// behind NAT sends a few before it is learnt).
    pub foreign_dropped: u64,
    /// RTCP packets from a source other than the RTP source's host or the SDP's RTCP address.
    pub rtcp_foreign_dropped: u64,
    /// Datagrams that were not RTP.
    pub malformed: u64,
    /// RTCP packets received.
    pub rtcp_rx: u64,
    /// RTCP packets sent.
    pub rtcp_tx: u64,
    /// SRTP and SRTCP packets dropped for failing authentication (or too short to carry a
    /// tag). Brought up to date on every packet the call's task sends or accepts.
    pub srtp_auth_failed: u64,
    /// SRTP and SRTCP packets dropped as replays (or older than the replay window).
    pub srtp_replayed: u64,
}

/// Bytes of the leg's buffer for protected packets.
const SEALED_MAX: usize = 1500;

/// The leg's SRTP state: the keys it applied last and what it has seen.
struct LegSrtp {
    /// The slot generation applied; 0 while no keys were ever set.
    applied: u64,
    mode: Mode,
    /// Where protected packets are written; allocated with the first keys.
    sealed: Option<Box<[u8; SEALED_MAX]>>,
    auth_failed: u64,
    replayed: u64,
    /// Whether this generation's first failure was logged (later ones are only counted).
    warned: bool,
}

enum Mode {
    /// No keys: plain RTP.
    Plain,
    /// Keys applied.
    Srtp(Box<SrtpContext>),
    /// Keys set but no context could be made: drop everything rather than send in clear.
    Broken,
}

impl fmt::Debug for LegSrtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Plain => "plain",
            Mode::Srtp(_) => "srtp",
            Mode::Broken => "broken",
        };
        f.debug_struct("LegSrtp")
            .field("applied", &self.applied)
            .field("mode", &mode)
            .field("auth_failed", &self.auth_failed)
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}

impl LegSrtp {
    fn new() -> Self {
        Self {
            applied: 0,
            mode: Mode::Plain,
            sealed: None,
            auth_failed: 0,
            replayed: 0,
            warned: false,
        }
    }

    /// Applies the slot's keys if they changed since last time.
    fn refresh(&mut self, slot: &KeySlot) {
        if slot.generation() == self.applied {
            return;
        }
        let (generation, keys) = slot.current();
        self.applied = generation;
        self.warned = false;
        self.mode = match keys.as_ref().map(SrtpContext::new) {
            None => Mode::Plain,
            Some(Ok(ctx)) => Mode::Srtp(Box::new(ctx)),
            Some(Err(e)) => {
                warn!(error = %e, "SRTP keys not usable: the call's media is dropped");
                Mode::Broken
            }
        };
        if matches!(self.mode, Mode::Srtp(_)) && self.sealed.is_none() {
            self.sealed = Some(Box::new([0u8; SEALED_MAX]));
        }
    }

    /// Unprotects a received packet in place; `None` when it is dropped (and counted).
    fn open(&mut self, slot: &KeySlot, packet: &mut [u8], rtcp: bool) -> Option<usize> {
        self.refresh(slot);
        let r = match &mut self.mode {
            Mode::Plain => return Some(packet.len()),
            Mode::Broken => Err(SrtpError::Crypto),
            Mode::Srtp(ctx) if rtcp => ctx.unprotect_rtcp(packet),
            Mode::Srtp(ctx) => ctx.unprotect_rtp(packet),
        };
        match r {
            Ok(n) => Some(n),
            Err(SrtpError::Replayed) => {
                self.replayed += 1;
                None
            }
            Err(e) => {
                self.auth_failed += 1;
                if !self.warned {
                    self.warned = true;
                    let kind = if rtcp { "SRTCP" } else { "SRTP" };
                    warn!(
                        kind,
                        error = %e,
                        "a packet failed SRTP checks and was dropped (further ones are only counted)"
                    );
                }
                None
            }
        }
    }
}

/// What [`RtpLeg::try_recv_from`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpRead {
    /// Nothing waits on the socket.
    Nothing,
    /// A datagram that failed SRTP's check (or was a replay): counted and dropped.
    Dropped,
    /// A datagram in the buffer, as [`RtpLeg::recv_from`] gives it (pass it to
    /// [`RtpLeg::accept`]): its length, its source and the time the kernel received it
    /// (`None` if it did not say).
    Datagram(usize, SocketAddr, Option<SystemTime>),
}

/// A call's RTP and RTCP sockets, and their SRTP when keyed.
#[derive(Debug)]
pub struct RtpLeg {
    rtp: RtpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
    /// Which sources are taken, and where media goes.
    strict: StrictRtp,
    /// What happened on this leg so far.
    pub counters: LegCounters,
    keys: KeySlot,
    /// Locked only while a call's task handles one packet, never across an await.
    srtp: Mutex<LegSrtp>,
}

impl RtpLeg {
    /// Binds RTP and RTCP on a free pair from the pool.
    pub async fn bind(pool: &PortPool, ip: IpAddr) -> io::Result<Self> {
        let mut last_err = io::Error::new(io::ErrorKind::AddrInUse, "RTP port pool exhausted");
        for _ in 0..BIND_ATTEMPTS {
            let Some(lease) = pool.lease() else { break };
            let port = lease.rtp_port();
            let rtp = match RtpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(s) => s,
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            let rtcp = match UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = e;
                    continue;
                }
            };
            return Ok(Self {
                rtp,
                rtcp,
                lease,
                strict: StrictRtp::new(Instant::now()),
                counters: LegCounters::default(),
                keys: KeySlot::default(),
                srtp: Mutex::new(LegSrtp::new()),
            });
        }
        Err(last_err)
    }

    /// The local RTP port (for SDP).
    pub fn local_port(&self) -> u16 {
        self.lease.rtp_port()
    }

    /// Where the SDP says to send (the offer, or a re-INVITE's): opens a learning window for
    /// a caller behind NAT; a new address drops the latched source.
    pub fn set_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        self.strict.set_sdp(Instant::now(), rtp, rtcp);
    }

    /// The address the call's INVITE came from (the socket's): media from that host may be
    /// learnt (a caller behind NAT).
    pub fn set_signalling_ip(&mut self, ip: Option<IpAddr>) {
        self.strict.set_signalling_ip(ip);
    }

    /// The call was answered: a caller behind NAT may be learnt for a short window from now.
    pub fn answered(&mut self) {
        self.strict.answered(Instant::now());
    }

    /// Where RTP goes now.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.strict.rtp_target()
    }

    /// The slot the SIP side fills with this call's SRTP keys (a clone sharing it).
    pub fn key_slot(&self) -> KeySlot {
        self.keys.clone()
    }

    /// Whether the leg protects its media now (as of the last packet it handled).
    pub fn srtp_active(&self) -> bool {
        let st = self.srtp.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(st.mode, Mode::Srtp(_))
    }

    /// Waits for the next datagram on the RTP socket; pass it to [`RtpLeg::accept`].
    /// Takes `&self` so a call's task can wait on RTP and RTCP at once. Never returns while
    /// the socket is quiet ([`RtpLeg::set_woken`]): read it with [`RtpLeg::try_recv_from`].
    ///
    /// On an SRTP leg the datagram is checked and decrypted in `buf`, and the length returned
    /// is the plain RTP packet's; one that fails is counted and dropped, and the wait goes on.
    /// A datagram from a source that is refused whatever it holds is left as it came, for
    /// [`RtpLeg::accept`] to count and drop.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let (n, src, _) = self.rtp.recv_from(buf).await?;
            if let Some(n) = self.unprotect(&mut buf[..n], src) {
                return Ok((n, src));
            }
        }
    }

    /// Reads the next datagram waiting on the RTP socket, without waiting: one datagram at
    /// most, so that a caller reading in a bounded loop bounds what a flood costs, whatever
    /// the datagrams hold.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> RtpRead {
        let Some((n, src, stamp)) = self.rtp.try_recv_from(buf) else {
            return RtpRead::Nothing;
        };
        match self.unprotect(&mut buf[..n], src) {
            Some(n) => RtpRead::Datagram(n, src, stamp),
            None => RtpRead::Dropped,
        }
    }

    /// Whether a task waiting in [`RtpLeg::recv_from`] wakes at each packet (the default),
    /// or the socket is quiet, out of the runtime's reactor, and read by
    /// [`RtpLeg::try_recv_from`] at the call's ticks (see [`super::rtp_socket`]).
    pub fn set_woken(&mut self, woken: bool) -> io::Result<()> {
        self.rtp.set_woken(woken)
    }

    /// See [`RtpLeg::set_woken`].
    pub fn is_woken(&self) -> bool {
        self.rtp.is_woken()
    }

    /// A received RTP datagram as the call handles it: decrypted in place on an SRTP leg
    /// (`None`: it failed and was counted), else as it came.
    fn unprotect(&self, datagram: &mut [u8], src: SocketAddr) -> Option<usize> {
        if self.keys.generation() == 0 || self.strict.locked_out(src) {
            return Some(datagram.len());
        }
        self.open(datagram, false)
    }

    fn open(&self, packet: &mut [u8], rtcp: bool) -> Option<usize> {
        let mut st = self.srtp.lock().unwrap_or_else(PoisonError::into_inner);
        st.open(&self.keys, packet, rtcp)
    }

    /// Copies the SRTP drop counts into [`RtpLeg::counters`].
    fn sync_counters(&mut self) {
        let st = self.srtp.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.counters.srtp_auth_failed = st.auth_failed;
        self.counters.srtp_replayed = st.replayed;
    }

    /// Checks a received datagram: `None` when it is dropped (a source not taken, or not
    /// RTP), else the parsed packet. See [`StrictRtp`] for which sources are taken.
    pub fn accept(&mut self, datagram: &[u8], src: SocketAddr) -> Option<RtpIn> {
        self.accept_at(Instant::now(), datagram, src)
    }

    fn accept_at(&mut self, now: Instant, datagram: &[u8], src: SocketAddr) -> Option<RtpIn> {
        self.sync_counters();
        if self.strict.locked_out(src) {
            self.counters.foreign_dropped += 1;
            return None;
        }
        let Ok(p) = rtp::parse(datagram) else {
            self.counters.malformed += 1;
            return None;
        };
        if !self.strict.on_rtp(now, src, p.ssrc, p.sequence) {
            self.counters.foreign_dropped += 1;
            return None;
        }
        self.counters.rx_packets += 1;
        Some(p)
    }

    /// Sends one RTP datagram to the caller, if there is somewhere to send it (protected
    /// first on an SRTP leg). Never waits: a full socket buffer drops the packet, as a late
    /// packet is useless anyway.
    pub fn send(&mut self, datagram: &[u8]) {
        if let Some(to) = self.strict.rtp_target() {
            if self.seal_and_send(datagram, to, false) {
                self.counters.tx_packets += 1;
            }
        }
        self.sync_counters();
    }

    /// Sends on the RTP or RTCP socket, protecting first when keyed; whether it went out.
    fn seal_and_send(&mut self, datagram: &[u8], to: SocketAddr, rtcp: bool) -> bool {
        let send = |socket: &RtpSocket, rtcp_socket: &UdpSocket, d: &[u8]| {
            if rtcp {
                rtcp_socket.try_send_to(d, to).is_ok()
            } else {
                socket.try_send_to(d, to)
            }
        };
        if self.keys.generation() == 0 {
            return send(&self.rtp, &self.rtcp, datagram);
        }
        let st = self.srtp.get_mut().unwrap_or_else(PoisonError::into_inner);
        st.refresh(&self.keys);
        let (Mode::Srtp(ctx), Some(out)) = (&mut st.mode, st.sealed.as_deref_mut()) else {
            return match st.mode {
                Mode::Plain => send(&self.rtp, &self.rtcp, datagram),
                _ => false,
            };
        };
        let sealed = if rtcp {
            ctx.protect_rtcp(datagram, out)
        } else {
            ctx.protect_rtp(datagram, out)
        };
        match sealed {
            Ok(n) => send(&self.rtp, &self.rtcp, &out[..n]),
            Err(_) => false,
        }
    }

    /// Waits for the next RTCP datagram; pass its source to [`RtpLeg::accept_rtcp`]. On an
    /// SRTP leg it is checked and decrypted in `buf` (the length returned is the plain RTCP
    /// packet's); one that fails is counted and dropped, and the wait goes on.
    pub async fn recv_rtcp_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let (n, src) = self.rtcp.recv_from(buf).await?;
            if self.keys.generation() == 0 {
                return Ok((n, src));
            }
            if let Some(n) = self.open(&mut buf[..n], true) {
                return Ok((n, src));
            }
        }
    }

    /// Checks an RTCP datagram's source: `true` when it is taken (and counted); RTCP is taken
    /// only from the RTP source's host or the SDP's RTCP address, never latched on its own.
    #[must_use]
    pub fn accept_rtcp(&mut self, src: SocketAddr) -> bool {
        self.sync_counters();
        if !self.strict.on_rtcp(src) {
            self.counters.rtcp_foreign_dropped += 1;
            return false;
        }
        self.counters.rtcp_rx += 1;
        true
    }

    /// Sends an RTCP datagram (as SRTCP on an SRTP leg).
    pub fn send_rtcp(&mut self, datagram: &[u8]) {
        if let Some(to) = self.strict.rtcp_target() {
            if self.seal_and_send(datagram, to, true) {
                self.counters.rtcp_tx += 1;
            }
        }
        self.sync_counters();
    }
}

impl Drop for RtpLeg {
    fn drop(&mut self) {
        let st = self.srtp.get_mut().unwrap_or_else(PoisonError::into_inner);
        if st.applied != 0 {
            info!(
                auth_failed = st.auth_failed,
                replayed = st.replayed,
                "SRTP leg closed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{Packetizer, HEADER_LEN};
    use crate::media::srtp::{SrtpContext, SrtpKeys};
    use std::time::Duration;

    fn packet(seq: u16) -> Vec<u8> {
        let mut p = Packetizer::new(5, seq, 0);
        let mut buf = vec![0u8; HEADER_LEN + 160];
        let n = p.write(0, &[0x55; 160], 160, &mut buf);
        buf.truncate(n);
        buf
    }

    async fn recv_one(leg: &mut RtpLeg) -> Option<RtpIn> {
        let mut buf = [0u8; 1500];
        let (n, src) = tokio::time::timeout(Duration::from_secs(5), leg.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        leg.accept(&buf[..n], src)
    }

    fn packet_of(ssrc: u32, seq: u16) -> Vec<u8> {
        let mut p = Packetizer::new(ssrc, seq, 0);
        let mut buf = vec![0u8; HEADER_LEN + 160];
        let n = p.write(0, &[0x55; 160], 160, &mut buf);
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn learns_a_caller_behind_nat_and_drops_strangers() {
        use crate::media::strict_rtp::LEARN_PACKETS;
        let pool = PortPool::new(41000, 41099);
        let mut leg = RtpLeg::bind(&pool, "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], leg.local_port()));
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // The SDP named some other address (the caller is behind NAT).
        leg.set_remote(Some("127.0.0.1:9".parse().unwrap()), None);
        leg.answered();
        // A stranger's lone packet is dropped; `a` is learnt after its consecutive packets.
        b.send_to(&packet_of(77, 1), to).await.unwrap();
        assert!(recv_one(&mut leg).await.is_none());
        let first = u16::from(LEARN_PACKETS);
        for seq in 1..=first {
            a.send_to(&packet(seq), to).await.unwrap();
            assert_eq!(recv_one(&mut leg).await.is_some(), seq == first);
        }
        assert_eq!(leg.remote(), Some(a.local_addr().unwrap()));
        // From now on the stranger is refused, however well-formed its stream.
        for seq in 2..2 + first {
            b.send_to(&packet_of(77, seq), to).await.unwrap();
            assert!(recv_one(&mut leg).await.is_none());
        }
        a.send_to(b"not rtp", to).await.unwrap();
        assert!(recv_one(&mut leg).await.is_none());
        a.send_to(&packet(first + 1), to).await.unwrap();
        let p = recv_one(&mut leg).await.unwrap();
        assert_eq!(p.sequence, first + 1);
        assert_eq!(leg.counters.rx_packets, 2);
        assert_eq!(
            leg.counters.foreign_dropped,
            1 + u64::from(LEARN_PACKETS - 1) + u64::from(LEARN_PACKETS)
        );
        assert_eq!(leg.counters.malformed, 1);
        // What the relay sends goes to the latched source.
        leg.send(&packet(9));
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rtp::parse(&buf[..n]).unwrap().sequence, 9);
        // RTCP: another host's is refused, the caller's host's is taken.
        assert!(!leg.accept_rtcp("127.0.0.9:5001".parse().unwrap()));
        assert!(leg.accept_rtcp(a.local_addr().unwrap()));
        assert_eq!(leg.counters.rtcp_foreign_dropped, 1);
        assert_eq!(leg.counters.rtcp_rx, 1);
    }

    #[tokio::test]
    async fn the_sdp_address_is_taken_at_once() {
        let pool = PortPool::new(41100, 41199);
        let mut leg = RtpLeg::bind(&pool, "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], leg.local_port()));
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        leg.set_remote(Some(a.local_addr().unwrap()), None);
        a.send_to(&packet(1), to).await.unwrap();
        assert_eq!(recv_one(&mut leg).await.unwrap().sequence, 1);
        assert_eq!(leg.counters.foreign_dropped, 0);
    }

    #[tokio::test]
    async fn ports_return_to_the_pool_when_the_leg_is_dropped() {
        let pool = PortPool::new(41200, 41203);
        let leg = RtpLeg::bind(&pool, "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(pool.available(), 1);
        drop(leg);
        assert_eq!(pool.available(), 2);
    }

    fn srtp_keys(fill: u8) -> (SrtpKeys, SrtpKeys) {
        use crate::media::srtp::{CryptoSuite, MasterKey};
        let relay = MasterKey::from_bytes([fill; 30]);
        let caller = MasterKey::from_bytes([fill.wrapping_add(1); 30]);
        let suite = CryptoSuite::AesCm128HmacSha1_80;
        (
            SrtpKeys {
                suite,
                local: relay.clone(),
                remote: caller.clone(),
            },
            SrtpKeys {
                suite,
                local: caller,
                remote: relay,
            },
        )
    }

    /// Like [`recv_one`], the way the call tasks use the leg: the payload is read from the
    /// task's own buffer.
    async fn recv_payload(leg: &mut RtpLeg) -> Option<(u16, Vec<u8>)> {
        let mut buf = [0u8; 1500];
        let (n, src) = tokio::time::timeout(Duration::from_secs(5), leg.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let p = leg.accept(&buf[..n], src)?;
        Some((p.sequence, buf[p.payload_start..p.payload_end].to_vec()))
    }

    /// A leg on loopback keyed with [`srtp_keys`]`(fill)`, the caller's SRTP context, the
    /// leg's RTP address and the caller's socket (the leg's remote).
    async fn keyed_leg(pool: &PortPool, fill: u8) -> (RtpLeg, SrtpContext, SocketAddr, UdpSocket) {
        let mut leg = RtpLeg::bind(pool, "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let (relay_keys, caller_keys) = srtp_keys(fill);
        leg.key_slot().set(Some(relay_keys));
        let caller = SrtpContext::new(&caller_keys).unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], leg.local_port()));
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        leg.set_remote(Some(a.local_addr().unwrap()), None);
        (leg, caller, to, a)
    }

    #[tokio::test]
    async fn a_quiet_srtp_leg_reads_one_datagram_at_a_time_even_those_it_drops() {
        let pool = PortPool::new(41400, 41499);
        let (mut leg, mut caller, to, a) = keyed_leg(&pool, 4).await;
        leg.set_woken(false).unwrap();
        let mut buf = [0u8; 1500];
        assert_eq!(leg.try_recv_from(&mut buf), RtpRead::Nothing);
        // forged packets, then a good one: each read takes one datagram, dropped or not
        let mut forged = packet(1);
        forged.extend_from_slice(&[0u8; 10]);
        a.send_to(&forged, to).await.unwrap();
        a.send_to(&forged, to).await.unwrap();
        let n = caller.protect_rtp(&packet(2), &mut buf).unwrap();
        a.send_to(&buf[..n], to).await.unwrap();
        assert_eq!(leg.try_recv_from(&mut buf), RtpRead::Dropped);
        assert_eq!(leg.try_recv_from(&mut buf), RtpRead::Dropped);
        let RtpRead::Datagram(n, src, stamp) = leg.try_recv_from(&mut buf) else {
            panic!("the good packet");
        };
        assert!(stamp.is_some(), "with the kernel's timestamp");
        let p = leg.accept(&buf[..n], src).expect("taken");
        assert_eq!(p.sequence, 2);
        assert_eq!(buf[p.payload_start..p.payload_end], [0x55; 160]);
        assert_eq!(leg.try_recv_from(&mut buf), RtpRead::Nothing);
        leg.sync_counters();
        assert_eq!(leg.counters.srtp_auth_failed, 2);
    }

    #[tokio::test]
    async fn an_srtp_leg_hands_out_plain_rtp_and_drops_what_fails() {
        let pool = PortPool::new(41300, 41399);
        let (mut leg, mut caller, to, a) = keyed_leg(&pool, 3).await;
        let mut sealed = [0u8; 1500];

        // A forged packet first: dropped, counted, and it does not latch.
        let mut forged = packet(1);
        forged.extend_from_slice(&[0u8; 10]);
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(&forged, to).await.unwrap();
        // Then good ones from `a`: the task sees them plain.
        for seq in [2u16, 3] {
            let n = caller.protect_rtp(&packet(seq), &mut sealed).unwrap();
            a.send_to(&sealed[..n], to).await.unwrap();
        }
        let (seq, payload) = recv_payload(&mut leg).await.unwrap();
        assert_eq!((seq, payload), (2, vec![0x55; 160]));
        assert_eq!(leg.remote(), Some(a.local_addr().unwrap()));
        assert!(leg.srtp_active());
        assert_eq!(recv_payload(&mut leg).await.unwrap().0, 3);
        assert_eq!(leg.counters.srtp_auth_failed, 1);

        // A replay and a bad tag: dropped; the next good one comes through.
        let n = caller.protect_rtp(&packet(4), &mut sealed).unwrap();
        let mut bad = sealed[..n].to_vec();
        bad[n - 1] ^= 0xFF;
        a.send_to(&bad, to).await.unwrap();
        a.send_to(&sealed[..n], to).await.unwrap();
        a.send_to(&sealed[..n], to).await.unwrap();
        let n = caller.protect_rtp(&packet(5), &mut sealed).unwrap();
        a.send_to(&sealed[..n], to).await.unwrap();
        assert_eq!(recv_payload(&mut leg).await.unwrap().0, 4);
        assert_eq!(recv_payload(&mut leg).await.unwrap().0, 5);
        assert_eq!(leg.counters.srtp_auth_failed, 2);
        assert_eq!(leg.counters.srtp_replayed, 1);
        assert_eq!(leg.counters.rx_packets, 4);

        // What the relay sends is SRTP the caller opens.
        leg.send(&packet(9));
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, HEADER_LEN + 160 + 10);
        assert_ne!(buf[HEADER_LEN..HEADER_LEN + 160], [0x55; 160]);
        let m = caller.unprotect_rtp(&mut buf[..n]).unwrap();
        assert_eq!(buf[..m], packet(9)[..]);

        // RTCP both ways.
        let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 7];
        let n = caller.protect_rtcp(&rr, &mut sealed).unwrap();
        let rtcp_to = SocketAddr::from(([127, 0, 0, 1], leg.local_port() + 1));
        a.send_to(&sealed[..n], rtcp_to).await.unwrap();
        let (m, src) = tokio::time::timeout(Duration::from_secs(5), leg.recv_rtcp_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf[..m], rr[..]);
        assert!(leg.accept_rtcp(src));
        rr[7] = 8;
        leg.send_rtcp(&rr);
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = caller.unprotect_rtcp(&mut buf[..n]).unwrap();
        assert_eq!(buf[..m], rr[..]);

        // New keys (a re-INVITE): the old ones no longer open anything.
        let (relay_keys, caller_keys) = srtp_keys(50);
        leg.key_slot().set(Some(relay_keys));
        let n = caller.protect_rtp(&packet(6), &mut sealed).unwrap();
        a.send_to(&sealed[..n], to).await.unwrap();
        let mut caller = SrtpContext::new(&caller_keys).unwrap();
        let n = caller.protect_rtp(&packet(7), &mut sealed).unwrap();
        a.send_to(&sealed[..n], to).await.unwrap();
        assert_eq!(recv_payload(&mut leg).await.unwrap().0, 7);
        assert_eq!(leg.counters.srtp_auth_failed, 3);
        // And back to plain RTP when a re-INVITE says so.
        leg.key_slot().set(None);
        a.send_to(&packet(8), to).await.unwrap();
        assert_eq!(recv_payload(&mut leg).await.unwrap().0, 8);
        assert!(!leg.srtp_active());
    }
}
