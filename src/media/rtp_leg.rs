//! The phone leg's sockets: RTP on an even port from the pool, RTCP on the next one.
//!
//! Symmetric RTP (RFC 4961 style latching): the first packet's source becomes the address
//! the relay sends to, whatever the SDP said, which is what gets media through NATs. Packets
//! from any other source afterwards are counted and dropped.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::ports::{PortLease, PortPool};
use super::rtp::{self, RtpIn};

/// How many leased ports to try before giving up (another process may hold some).
const BIND_ATTEMPTS: usize = 16;

/// Counters of one leg, read at call end and by the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// RTP packets accepted from the caller.
    pub rx_packets: u64,
    /// RTP packets sent to the caller.
    pub tx_packets: u64,
    /// Packets from a source other than the latched one.
    pub foreign_dropped: u64,
    /// Datagrams that were not RTP.
    pub malformed: u64,
    /// RTCP packets received.
    pub rtcp_rx: u64,
    /// RTCP packets sent.
    pub rtcp_tx: u64,
}

/// A call's RTP and RTCP sockets.
#[derive(Debug)]
pub struct RtpLeg {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
    remote: Option<SocketAddr>,
    remote_rtcp: Option<SocketAddr>,
    latched: bool,
    rtcp_latched: bool,
    /// What happened on this leg so far.
    pub counters: LegCounters,
}

impl RtpLeg {
    /// Binds RTP and RTCP on a free pair from the pool.
    pub async fn bind(pool: &PortPool, ip: IpAddr) -> io::Result<Self> {
        let mut last_err = io::Error::new(io::ErrorKind::AddrInUse, "RTP port pool exhausted");
        for _ in 0..BIND_ATTEMPTS {
            let Some(lease) = pool.lease() else { break };
            let port = lease.rtp_port();
            let rtp = match UdpSocket::bind(SocketAddr::new(ip, port)).await {
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
                remote: None,
                remote_rtcp: None,
                latched: false,
                rtcp_latched: false,
                counters: LegCounters::default(),
            });
        }
        Err(last_err)
    }

    /// The local RTP port (for SDP).
    pub fn local_port(&self) -> u16 {
        self.lease.rtp_port()
    }

    /// Where the SDP says to send; the next packet received re-latches.
    pub fn set_remote(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) {
        self.remote = rtp;
        self.remote_rtcp = rtcp;
        self.latched = false;
        self.rtcp_latched = false;
    }

    /// Where RTP goes now.
    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Waits for the next datagram on the RTP socket; pass it to [`RtpLeg::accept`].
    /// Takes `&self` so a call's task can wait on RTP and RTCP at once.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.rtp.recv_from(buf).await
    }

    /// Checks a received datagram: `None` when it is dropped (a foreign source, or not RTP),
    /// else the parsed packet. The first accepted packet latches the caller's address.
    pub fn accept(&mut self, datagram: &[u8], src: SocketAddr) -> Option<RtpIn> {
        if self.latched && Some(src) != self.remote {
            self.counters.foreign_dropped += 1;
            return None;
        }
        let Ok(p) = rtp::parse(datagram) else {
            self.counters.malformed += 1;
            return None;
        };
        if !self.latched {
            self.latched = true;
            if self.remote != Some(src) {
                // Also re-aim RTCP at the port next to the latched RTP source.
                if !self.rtcp_latched {
                    self.remote_rtcp = Some(SocketAddr::new(src.ip(), src.port().wrapping_add(1)));
                }
                self.remote = Some(src);
            }
        }
        self.counters.rx_packets += 1;
        Some(p)
    }

    /// Sends one RTP datagram to the caller, if there is somewhere to send it. Never waits:
    /// a full socket buffer drops the packet, as a late packet is useless anyway.
    pub fn send(&mut self, datagram: &[u8]) {
        if let Some(to) = self.remote {
            if self.rtp.try_send_to(datagram, to).is_ok() {
                self.counters.tx_packets += 1;
            }
        }
    }

    /// Waits for the next RTCP datagram; pass its source to [`RtpLeg::accept_rtcp`].
    pub async fn recv_rtcp_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.rtcp.recv_from(buf).await
    }

    /// Counts an RTCP datagram and latches its source.
    pub fn accept_rtcp(&mut self, src: SocketAddr) {
        if !self.rtcp_latched {
            self.rtcp_latched = true;
            self.remote_rtcp = Some(src);
        }
        self.counters.rtcp_rx += 1;
    }

    /// Sends an RTCP datagram.
    pub fn send_rtcp(&mut self, datagram: &[u8]) {
        if let Some(to) = self.remote_rtcp {
            if self.rtcp.try_send_to(datagram, to).is_ok() {
                self.counters.rtcp_tx += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{Packetizer, HEADER_LEN};
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

    #[tokio::test]
    async fn latches_on_the_first_source_and_drops_others() {
        let pool = PortPool::new(41000, 41099);
        let mut leg = RtpLeg::bind(&pool, "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], leg.local_port()));
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // The SDP named some other address; the first packet from `a` wins.
        leg.set_remote(Some("127.0.0.1:9".parse().unwrap()), None);
        a.send_to(&packet(1), to).await.unwrap();
        assert!(recv_one(&mut leg).await.is_some());
        assert_eq!(leg.remote(), Some(a.local_addr().unwrap()));
        b.send_to(&packet(2), to).await.unwrap();
        assert!(recv_one(&mut leg).await.is_none());
        a.send_to(b"not rtp", to).await.unwrap();
        assert!(recv_one(&mut leg).await.is_none());
        a.send_to(&packet(3), to).await.unwrap();
        let p = recv_one(&mut leg).await.unwrap();
        assert_eq!(p.sequence, 3);
        assert_eq!(leg.counters.rx_packets, 2);
        assert_eq!(leg.counters.foreign_dropped, 1);
        assert_eq!(leg.counters.malformed, 1);
        // What the relay sends goes to the latched source.
        leg.send(&packet(9));
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rtp::parse(&buf[..n]).unwrap().sequence, 9);
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
}
