//! A phone leg's RTP socket, read one of two ways.
//!
//! - **Woken:** in the runtime's reactor, so that a task waiting in [`RtpSocket::recv_from`]
//!   wakes at each packet. For what must go on at once: a warm transfer's joined call, whose
//!   packets are forwarded as they come, and the legs the relay dials.
//! - **Quiet:** out of the reactor, read only when the call's task asks
//!   ([`RtpSocket::try_recv_from`]), at its 20 ms ticks. A packet then wakes no thread: the
//!   caller's packets are only needed when the tick plays out the next frame, so a call
//!   costs one wake-up per tick instead of one per tick and one per packet.
//!
//! Either way each datagram comes with the time the kernel received it (`SO_TIMESTAMPNS`),
//! so the jitter buffer measures the network's jitter and not the tick it was read at.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Room for one `SO_TIMESTAMPNS` control message (a header and a `timespec`), aligned as a
/// `cmsghdr` must be.
#[repr(C, align(8))]
struct ControlSpace([u8; 64]);

/// One datagram as read: its length, its source and when the kernel received it (`None` if
/// the kernel did not say).
pub type Received = (usize, SocketAddr, Option<SystemTime>);

/// The RTP socket of a phone leg (see the module's text).
#[derive(Debug)]
pub struct RtpSocket {
    state: State,
}

#[derive(Debug)]
enum State {
    Woken(AsyncFd<UdpSocket>),
    Quiet(UdpSocket),
    /// Only while switching from one to the other.
    Switching,
}

impl RtpSocket {
    /// Binds `addr`, non-blocking, with receive timestamps on, woken per packet.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
        let mut s = Self {
            state: State::Quiet(socket),
        };
        s.set_woken(true)?;
        Ok(s)
    }

    /// Whether a packet wakes a task waiting in [`RtpSocket::recv_from`].
    pub fn is_woken(&self) -> bool {
        matches!(self.state, State::Woken(_))
    }

    /// Puts the socket in the runtime's reactor (`true`) or takes it out (`false`); nothing
    /// when it already is. On an error the socket stays as it was, still usable.
    pub fn set_woken(&mut self, woken: bool) -> io::Result<()> {
        if self.is_woken() == woken {
            return Ok(());
        }
        let (next, result) = match std::mem::replace(&mut self.state, State::Switching) {
            State::Woken(fd) => (State::Quiet(fd.into_inner()), Ok(())),
            // SAFETY: the `UdpSocket` owns its descriptor, which stays open and the same for
            // as long as the `AsyncFd` holds the socket (until `into_inner` or drop).
            State::Quiet(socket) => {
                match unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) } {
                    Ok(fd) => (State::Woken(fd), Ok(())),
                    Err(e) => {
                        let (socket, e) = e.into_parts();
                        (State::Quiet(socket), Err(e))
                    }
                }
            }
            State::Switching => unreachable!("the state is restored before this returns"),
        };
        self.state = next;
        result
    }

    fn socket(&self) -> &UdpSocket {
        match &self.state {
            State::Woken(fd) => fd.get_ref(),
            State::Quiet(socket) => socket,
            State::Switching => unreachable!("the state is restored before any other call"),
        }
    }

    /// Waits for the next datagram. On a quiet socket this never returns: a call reads that
    /// one with [`RtpSocket::try_recv_from`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<Received> {
        let State::Woken(fd) = &self.state else {
            return std::future::pending().await;
        };
        loop {
            let mut ready = fd.readable().await?;
            if let Ok(r) = ready.try_io(|fd| recv_stamped(fd.get_ref(), buf)) {
                return r;
            }
        }
    }

    /// The next datagram waiting, if any, without waiting.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> Option<Received> {
        recv_stamped(self.socket(), buf).ok()
    }

    /// Sends one datagram now; whether it went out (a full socket buffer drops it).
    pub fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> bool {
        self.socket().send_to(datagram, to).is_ok()
    }
}

/// One `recvmsg`: the datagram into `buf`, its source and the kernel's timestamp.
fn recv_stamped(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut control = ControlSpace([0; 64]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control.0),
        MsgFlags::empty(),
    )?;
    let src =
        msg.address.as_ref().and_then(socket_addr).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "datagram without a source")
        })?;
    let stamp = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmTimestampns(ts) => {
                let (s, ns) = (u64::try_from(ts.tv_sec()).ok()?, ts.tv_nsec());
                Some(UNIX_EPOCH + Duration::new(s, u32::try_from(ns).ok()?))
            }
            _ => None,
        })
    });
    Ok((msg.bytes, src, stamp))
}

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    a.as_sockaddr_in()
        .map(|a| (*a).into())
        .or_else(|| a.as_sockaddr_in6().map(|a| (*a).into()))
}

/// The longest a datagram is taken to have waited: a timestamp older than this (the wall
/// clock was stepped) counts as this old.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// When a datagram arrived on the call's clock: `now` (the call's clock, read with `wall`,
/// the wall clock) less how long before `wall` the kernel stamped it. A missing timestamp,
/// or one from the future (a stepped clock), counts as `now`.
pub fn arrived_at(now: Duration, wall: SystemTime, stamp: Option<SystemTime>) -> Duration {
    let waited = stamp
        .and_then(|s| wall.duration_since(s).ok())
        .unwrap_or_default()
        .min(MAX_WAIT);
    now.saturating_sub(waited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_datagram_arrived_as_long_before_now_as_the_kernel_stamped_it() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(arrived_at(ms(5000), wall, Some(wall - ms(13))), ms(4987));
        assert_eq!(arrived_at(ms(5000), wall, None), ms(5000));
        // a stepped wall clock: from the future, or from long ago
        assert_eq!(arrived_at(ms(5000), wall, Some(wall + ms(40))), ms(5000));
        assert_eq!(
            arrived_at(ms(5000), wall, Some(wall - ms(90_000))),
            ms(4000)
        );
        assert_eq!(arrived_at(ms(300), wall, Some(wall - ms(900))), ms(0));
    }

    #[tokio::test]
    async fn a_quiet_socket_holds_its_datagrams_for_the_next_read_with_their_arrival_time() {
        let mut rtp = RtpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = rtp.socket().local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 1500];
        rtp.set_woken(false).unwrap();
        assert!(!rtp.is_woken());
        assert!(rtp.try_recv_from(&mut buf).is_none(), "nothing sent yet");
        let before = SystemTime::now();
        peer.send_to(b"one", addr).unwrap();
        peer.send_to(b"two", addr).unwrap();
        let after = SystemTime::now();
        let (n, src, stamp) = rtp.try_recv_from(&mut buf).expect("the first datagram");
        assert_eq!((&buf[..n], src), (&b"one"[..], peer.local_addr().unwrap()));
        let stamp = stamp.expect("the kernel's timestamp");
        assert!(before <= stamp && stamp <= after, "stamped when it arrived");
        let (n, _, _) = rtp.try_recv_from(&mut buf).expect("the second datagram");
        assert_eq!(&buf[..n], b"two");
        assert!(rtp.try_recv_from(&mut buf).is_none());

        // back in the reactor, a waiting task wakes at the next datagram
        rtp.set_woken(true).unwrap();
        peer.send_to(b"three", addr).unwrap();
        let (n, _, stamp) = tokio::time::timeout(Duration::from_secs(5), rtp.recv_from(&mut buf))
            .await
            .expect("woken by the datagram")
            .unwrap();
        assert_eq!(&buf[..n], b"three");
        assert!(stamp.is_some());
        assert!(rtp.try_send_to(b"back", peer.local_addr().unwrap()));
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}
