//! SIP over TCP and TLS: the relay accepts stream connections itself and hands each to
//! rsipstack's connection types, so that it can bound them.
//!
//! rsipstack 0.7.14 runs its own accept loops with one idle timeout for every connection (a
//! trunk's quiet TCP connection included), no TLS handshake timeout, no cap on connections,
//! and no hook on the messages of a stream (its whitelist is asked once per connection). So:
//! - [`StreamListeners`] binds the TCP and TLS ports; [`Streams::serve`] accepts, admits each
//!   connection by [`StreamTable`] (caps per source and in total; a trunk's address is never
//!   capped), does the TLS handshake under `sip.streams.tls_handshake_seconds`, and gives the
//!   stream to `TcpConnection::from_stream` / `TlsConnection::from_server_stream` and
//!   `TransportLayer::add_connection`, which serve it as rsipstack's listeners would;
//! - a connection from a source that is not a trunk with no SIP message for
//!   `sip.streams.idle_seconds` is shut down (through a duplicate of its socket: rsipstack then
//!   reads end-of-file and retires the connection); a byte trickle that never completes a
//!   message does not keep it open, nor do bare CRLF keep-alives;
//! - every message read on a stream passes the same per-source packet budget as a UDP
//!   datagram ([`StreamInspector`], an rsipstack transport-event inspector), so a flood over
//!   TCP is held to `sip.limits.packets_per_second` like one over UDP.
//!
//! The admission and idle decisions are in [`StreamTable`], IO-free (the time is passed in).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rsipstack::transaction::endpoint::{EndpointInnerRef, TransportEventInspector};
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::tls::{TlsConfig, TlsConnection, TlsListenerConnection};
use rsipstack::transport::{SipAddr, SipConnection, TransportEvent};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::config::StreamsConfig;

impl StreamsConfig {
    fn idle(&self) -> Option<Duration> {
        (self.idle_seconds > 0.0).then(|| secs(self.idle_seconds))
    }

    fn handshake(&self) -> Duration {
        secs(self.tls_handshake_seconds)
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source has `max_per_source` open.
    PerSource,
    /// `max_total` are open.
    Total,
}

/// One admitted connection's id.
pub type ConnId = u64;

/// What the table keeps of a connection.
#[derive(Debug, Clone, Copy)]
struct Entry {
    source: IpAddr,
    peer: SocketAddr,
    tls: bool,
    trunk: bool,
    /// TLS: handshake done. Until then the handshake timeout, not the idle one, applies.
    open: bool,
    last: Instant,
}

/// The relay's stream connections: who may open one, and which are idle. IO-free.
#[derive(Debug)]
pub struct StreamTable {
    idle: Option<Duration>,
    max_per_source: usize,
    max_total: usize,
    next: ConnId,
    conns: HashMap<ConnId, Entry>,
    /// The open connection of each peer address (for the messages read on it).
    by_peer: HashMap<(bool, SocketAddr), ConnId>,
    /// Connections per source, sources that are not trunks only; no zero entries.
    per_source: HashMap<IpAddr, usize>,
    capped: usize,
}

/// The key a source is counted under: the address, an IPv6 one by its /64 (one host or
/// network usually holds a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl StreamTable {
    /// A table applying `cfg`.
    pub fn new(cfg: &StreamsConfig) -> Self {
        Self {
            idle: cfg.idle(),
            max_per_source: cfg.max_per_source,
            max_total: cfg.max_total,
            next: 1,
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            per_source: HashMap::new(),
            capped: 0,
        }
    }

    /// A new connection from `peer`: admitted (a TCP one is open at once, a TLS one once
    /// [`StreamTable::opened`]), or refused when its source or all sources have their cap. A
    /// trunk's connections are never refused nor counted against the caps.
    pub fn admit(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        tls: bool,
        trunk: bool,
    ) -> Result<ConnId, Refusal> {
        let source = source_key(peer.ip());
        if !trunk {
            if self.capped >= self.max_total {
                return Err(Refusal::Total);
            }
            let n = self.per_source.entry(source).or_insert(0);
            if *n >= self.max_per_source {
                return Err(Refusal::PerSource);
            }
            *n += 1;
            self.capped += 1;
        }
        let id = self.next;
        self.next += 1;
        self.conns.insert(
            id,
            Entry {
                source,
                peer,
                tls,
                trunk,
                open: false,
                last: now,
            },
        );
        if !tls {
            self.opened(id, now);
        }
        Ok(id)
    }

    /// The connection carries SIP now (TCP: at once; TLS: after the handshake): its idle
    /// clock starts, and messages from its peer are found.
    pub fn opened(&mut self, id: ConnId, now: Instant) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.open = true;
            e.last = now;
            self.by_peer.insert((e.tls, e.peer), id);
        }
    }

    /// A message arrived from `peer` on a stream: its connection is not idle.
    pub fn touch(&mut self, tls: bool, peer: SocketAddr, now: Instant) {
        if let Some(e) = self
            .by_peer
            .get(&(tls, peer))
            .and_then(|id| self.conns.get_mut(id))
        {
            e.last = now;
        }
    }

    /// The connection is gone (closed by either side, or never finished its handshake).
    pub fn remove(&mut self, id: ConnId) {
        let Some(e) = self.conns.remove(&id) else {
            return;
        };
        if self.by_peer.get(&(e.tls, e.peer)) == Some(&id) {
            self.by_peer.remove(&(e.tls, e.peer));
        }
        if !e.trunk {
            self.capped -= 1;
            if let Some(n) = self.per_source.get_mut(&e.source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&e.source);
                }
            }
        }
    }

    /// When the connection turns idle if nothing arrives: `None` when it never does (a
    /// trunk's, the idle timeout off, a TLS handshake under way, or gone).
    pub fn idle_deadline(&self, id: ConnId) -> Option<Instant> {
        let e = self.conns.get(&id)?;
        if e.trunk || !e.open {
            return None;
        }
        Some(e.last + self.idle?)
    }

    /// Whether the connection is idle at `now` (to be closed).
    pub fn is_idle(&self, id: ConnId, now: Instant) -> bool {
        self.idle_deadline(id).is_some_and(|d| now >= d)
    }

    /// Connections from sources that are not trunks.
    pub fn capped(&self) -> usize {
        self.capped
    }

    /// All connections held.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// What the streams ask of the SIP side about a source.
pub trait SourcePolicy: Send + Sync + 'static {
    /// Whether `ip` is a trunk's address.
    fn is_trunk(&self, ip: IpAddr) -> bool;
    /// Takes one unit of the source's packet budget (a connection, or a message on one);
    /// `false` drops it.
    fn allow(&self, ip: IpAddr) -> bool;
}

/// Counts of what the stream bounds did.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections refused: a cap, the source's budget, or an unknown source in `ignore` mode.
    pub refused: AtomicU64,
    /// Connections closed for idleness.
    pub idle_closed: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub handshakes_failed: AtomicU64,
    /// Messages on streams dropped over the source's packet budget.
    pub messages_dropped: AtomicU64,
}

/// The relay's stream connections: the table, the source policy and the counters.
pub struct Streams {
    cfg: StreamsConfig,
    table: Mutex<StreamTable>,
    policy: Arc<dyn SourcePolicy>,
    /// What the stream bounds did so far.
    pub counters: StreamCounters,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The bound TCP and TLS listening sockets.
pub struct StreamListeners {
    tcp: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
}

/// How many connections may wait in the kernel's queue for an accept.
const BACKLOG: u32 = 1024;
/// After an accept error (out of descriptors, say), wait this long before the next accept,
/// rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl StreamListeners {
    /// Binds TCP on `tcp` and, with `tls` set, TLS on its address with its certificate.
    pub fn bind(
        tcp: SocketAddr,
        tls: Option<(SocketAddr, &super::tls::TlsFiles)>,
    ) -> anyhow::Result<Self> {
        let tcp = listen(tcp).map_err(|e| anyhow::anyhow!("cannot listen on tcp {tcp}: {e}"))?;
        let tls = match tls {
            None => None,
            Some((addr, files)) => {
                let acceptor = acceptor(files)?;
                let l = listen(addr).map_err(|e| {
                    anyhow::anyhow!("cannot listen on tls {addr} (sip.tls_listen): {e}")
                })?;
                Some((l, acceptor))
            }
        };
        Ok(Self { tcp, tls })
    }

    /// The bound TLS address, if TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }
}

/// The TLS server config of the checked certificate and key (ring, as everywhere in the
/// relay).
fn acceptor(files: &super::tls::TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(&files.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("sip.tls_cert: not a PEM certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&files.key_pem)
        .map_err(|_| anyhow::anyhow!("sip.tls_key: not a usable PEM private key"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
    .map_err(|e| anyhow::anyhow!("sip.tls_cert/sip.tls_key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn sip_addr(addr: SocketAddr, tls: bool) -> SipAddr {
    use rsipstack::sip::transport::Transport;
    SipAddr {
        r#type: Some(if tls { Transport::Tls } else { Transport::Tcp }),
        addr: addr.into(),
    }
}

impl Streams {
    /// The bounds of `cfg`, asking `policy` about sources.
    pub fn new(cfg: StreamsConfig, policy: Arc<dyn SourcePolicy>) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(StreamTable::new(&cfg)),
            cfg,
            policy,
            counters: StreamCounters::default(),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, StreamTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The inspector to give rsipstack's endpoint: it counts stream messages against the
    /// source's budget and keeps connections' idle clocks.
    pub fn inspector(self: &Arc<Self>) -> Box<dyn TransportEventInspector> {
        Box::new(StreamInspector {
            streams: self.clone(),
        })
    }

    /// Starts rsipstack's endpoint, then registers the TCP and TLS listeners with its
    /// transport layer (for the addresses its Via and Contact take) and accepts on them.
    ///
    /// rsipstack binds every listener registered when its endpoint starts serving; ours are
    /// bound already, so they are registered only after its first poll, in which (0.7.14) it
    /// takes its list of listeners to serve.
    pub async fn serve(
        self: &Arc<Self>,
        listeners: StreamListeners,
        endpoint: EndpointInnerRef,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut serving = Box::pin({
            let endpoint = endpoint.clone();
            async move { endpoint.serve().await }
        });
        let first = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(serving.as_mut(), cx))
        })
        .await;
        if first.is_pending() {
            tokio::spawn(serving);
        }
        let layer = &endpoint.transport_layer;
        let tcp_addr = listeners.tcp.local_addr()?;
        let tcp = TcpListenerConnection::new(tcp_addr, None)
            .await
            .map_err(|e| anyhow::anyhow!("tcp listener {tcp_addr}: {e}"))?;
        layer.add_transport(tcp.into());
        tokio::spawn(self.clone().accept_loop(
            listeners.tcp,
            None,
            endpoint.clone(),
            token.clone(),
        ));
        if let Some((l, acceptor)) = listeners.tls {
            let addr = l.local_addr()?;
            // Never served (it would bind the port again); it only names the TLS address.
            let named = TlsListenerConnection::new(addr, None, TlsConfig::default())
                .await
                .map_err(|e| anyhow::anyhow!("tls listener {addr}: {e}"))?;
            layer.add_transport(named.into());
            tokio::spawn(self.clone().accept_loop(l, Some(acceptor), endpoint, token));
        }
        Ok(())
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        endpoint: EndpointInnerRef,
        token: CancellationToken,
    ) {
        let Ok(local) = listener.local_addr() else {
            return;
        };
        let local = sip_addr(local, tls.is_some());
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            };
            let ip = peer.ip();
            let trunk = self.policy.is_trunk(ip);
            // The source's budget first (as rsipstack's whitelist hook did), then the caps.
            if !trunk && !self.policy.allow(ip) {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let id = match self
                .table()
                .admit(Instant::now(), peer, tls.is_some(), trunk)
            {
                Ok(id) => id,
                Err(why) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, ?why, "stream connection refused: over the cap");
                    continue;
                }
            };
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            let this = self.clone();
            let endpoint = endpoint.clone();
            let local = local.clone();
            let conn_token = token.child_token();
            match &tls {
                None => this.hand_over_tcp(id, stream, peer, local, endpoint, conn_token),
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        this.hand_over_tls(id, acceptor, stream, peer, local, endpoint, conn_token)
                            .await
                    });
                }
            }
        }
    }

    fn hand_over_tcp(
        self: Arc<Self>,
        id: ConnId,
        stream: TcpStream,
        peer: SocketAddr,
        local: SipAddr,
        endpoint: EndpointInnerRef,
        conn_token: CancellationToken,
    ) {
        let closer = match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                // Out of descriptors, likely under a flood: counted, not logged per connection.
                debug!(error = %e, "no descriptor to watch a TCP connection with: closed");
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                self.table().remove(id);
                return;
            }
        };
        let conn = match TcpConnection::from_stream(stream, local, Some(conn_token.clone())) {
            Ok(c) => c,
            Err(e) => {
                debug!(%peer, error = %e, "TCP connection lost at once");
                self.table().remove(id);
                return;
            }
        };
        endpoint
            .transport_layer
            .add_connection(SipConnection::Tcp(conn));
        tokio::spawn(self.watch(id, closer, conn_token));
    }

    #[allow(clippy::too_many_arguments)]
    async fn hand_over_tls(
        self: Arc<Self>,
        id: ConnId,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        local: SipAddr,
        endpoint: EndpointInnerRef,
        conn_token: CancellationToken,
    ) {
        let closer = stream.as_fd().try_clone_to_owned();
        let handshake = tokio::select! {
            _ = conn_token.cancelled() => None,
            r = tokio::time::timeout(self.cfg.handshake(), acceptor.accept(stream)) => {
                r.ok().and_then(Result::ok)
            }
        };
        let (Some(tls_stream), Ok(closer)) = (handshake, closer) else {
            self.counters
                .handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            self.table().remove(id);
            return;
        };
        let conn = match TlsConnection::from_server_stream(
            tls_stream,
            local,
            sip_addr(peer, true),
            Some(conn_token.clone()),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                debug!(%peer, error = %e, "TLS connection lost at once");
                self.table().remove(id);
                return;
            }
        };
        self.table().opened(id, Instant::now());
        endpoint
            .transport_layer
            .add_connection(SipConnection::Tls(conn));
        self.watch(id, closer, conn_token).await;
    }

    /// Waits for the connection to end (rsipstack cancels its token when its serve loop
    /// ends), closing it when it turns idle first.
    async fn watch(self: Arc<Self>, id: ConnId, closer: OwnedFd, conn_token: CancellationToken) {
        loop {
            let deadline = self.table().idle_deadline(id);
            let Some(deadline) = deadline else {
                conn_token.cancelled().await;
                break;
            };
            tokio::select! {
                _ = conn_token.cancelled() => break,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if self.table().is_idle(id, Instant::now()) {
                        self.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                        // Both ways: the peer sees end-of-file, rsipstack's read too, and it
                        // retires the connection.
                        let _ = std::net::TcpStream::from(closer).shutdown(std::net::Shutdown::Both);
                        break;
                    }
                }
            }
        }
        self.table().remove(id);
    }
}

/// Counts each message read on a stream against its source's packet budget, and keeps its
/// connection's idle clock.
struct StreamInspector {
    streams: Arc<Streams>,
}

#[async_trait::async_trait]
impl TransportEventInspector for StreamInspector {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        let TransportEvent::Incoming(_, connection, from) = &event else {
            return Some(event);
        };
        let tls = match connection {
            SipConnection::Tcp(_) => false,
            SipConnection::Tls(_) => true,
            // Datagrams passed the whitelist hook already.
            _ => return Some(event),
        };
        let Ok(peer) = from.get_socketaddr() else {
            return Some(event);
        };
        let s = &self.streams;
        s.table().touch(tls, peer, Instant::now());
        if s.policy.allow(peer.ip()) {
            Some(event)
        } else {
            s.counters.messages_dropped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(idle: f64, per_source: usize, total: usize) -> StreamsConfig {
        StreamsConfig {
            idle_seconds: idle,
            tls_handshake_seconds: 5.0,
            max_per_source: per_source,
            max_total: total,
        }
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_source_and_in_total_spare_trunks() {
        let t0 = Instant::now();
        let mut t = StreamTable::new(&cfg(60.0, 2, 3));
        let a1 = t.admit(t0, peer("10.0.0.1:1000"), false, false).unwrap();
        t.admit(t0, peer("10.0.0.1:1001"), false, false).unwrap();
        assert_eq!(
            t.admit(t0, peer("10.0.0.1:1002"), false, false),
            Err(Refusal::PerSource)
        );
        t.admit(t0, peer("10.0.0.2:1000"), true, false).unwrap();
        assert_eq!(
            t.admit(t0, peer("10.0.0.3:1000"), false, false),
            Err(Refusal::Total)
        );
        // A trunk's connection is taken whatever the counts, and counts for nothing.
        for port in 0..10 {
            t.admit(
                t0,
                SocketAddr::new("10.0.0.9".parse().unwrap(), port),
                false,
                true,
            )
            .unwrap();
        }
        assert_eq!(t.capped(), 3);
        // A closed connection frees its place.
        t.remove(a1);
        t.remove(a1);
        assert_eq!(t.capped(), 2);
        t.admit(t0, peer("10.0.0.1:1003"), false, false).unwrap();
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let t0 = Instant::now();
        let mut t = StreamTable::new(&cfg(60.0, 1, 100));
        t.admit(t0, peer("[2001:db8::1]:5000"), false, false)
            .unwrap();
        assert_eq!(
            t.admit(t0, peer("[2001:db8::ffff:1]:5000"), false, false),
            Err(Refusal::PerSource)
        );
        t.admit(t0, peer("[2001:db8:0:1::1]:5000"), false, false)
            .unwrap();
        assert_eq!(
            source_key("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn idle_connections_time_out_unless_they_speak_or_are_a_trunks() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut t = StreamTable::new(&cfg(30.0, 10, 10));
        let quiet = t.admit(t0, peer("10.0.0.1:1"), false, false).unwrap();
        let talker = t.admit(t0, peer("10.0.0.1:2"), false, false).unwrap();
        let trunk = t.admit(t0, peer("10.0.0.9:1"), false, true).unwrap();
        assert_eq!(t.idle_deadline(quiet), Some(s(30)));
        t.touch(false, peer("10.0.0.1:2"), s(20));
        // The same peer over TLS is another connection.
        t.touch(true, peer("10.0.0.1:1"), s(20));
        assert!(!t.is_idle(quiet, s(29)));
        assert!(t.is_idle(quiet, s(30)));
        assert!(!t.is_idle(talker, s(30)));
        assert!(t.is_idle(talker, s(50)));
        assert_eq!(t.idle_deadline(trunk), None);
        assert!(!t.is_idle(trunk, s(100_000)));
        // 0 means never.
        let mut never = StreamTable::new(&cfg(0.0, 10, 10));
        let c = never.admit(t0, peer("10.0.0.1:1"), false, false).unwrap();
        assert_eq!(never.idle_deadline(c), None);
    }

    #[test]
    fn a_tls_connection_idles_only_once_its_handshake_is_done() {
        let t0 = Instant::now();
        let mut t = StreamTable::new(&cfg(30.0, 10, 10));
        let c = t.admit(t0, peer("10.0.0.1:1"), true, false).unwrap();
        assert_eq!(t.idle_deadline(c), None);
        // Messages are not matched to it before.
        t.touch(true, peer("10.0.0.1:1"), t0);
        t.opened(c, t0 + Duration::from_secs(3));
        assert_eq!(t.idle_deadline(c), Some(t0 + Duration::from_secs(33)));
        assert_eq!(t.capped(), 1);
        t.remove(c);
        assert!(t.is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(StreamsConfig::default().validate().is_ok());
        let e = cfg(-1.0, 1, 1).validate().unwrap_err();
        assert!(e.contains("sip.streams.idle_seconds"), "{e}");
        let e = StreamsConfig {
            tls_handshake_seconds: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("tls_handshake_seconds"), "{e}");
        assert!(cfg(1.0, 0, 1).validate().is_err());
    }
}
