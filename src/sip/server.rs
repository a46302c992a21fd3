//! The SIP endpoint: UDP and TCP listeners on one address, TLS on another when configured,
//! the loop over new server transactions, and the routing of dialog events to the call that
//! owns each dialog.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Header, Method, StatusCode, Transport};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::call::SipCall;
use super::digest;
use super::headers::{self, host_ip, ALLOW};
use super::limits::{Kind, RateLimiter};
use super::sdp::{self, LocalSdp, SdpError};
use super::setup::{SetupRefusal, Setups};
use super::source::{transport_source, ViaFromSocket};
use super::streams::{SourcePolicy, StreamListeners, Streams};
use super::trunks::{Routes, SourceVerdict, Trunks};
use crate::config::{SipConfig, UnknownSource};
use crate::media::ports::PortPool;
use crate::media::rtp_leg::RtpLeg;

/// Dialog events queued for one call at most; past it an in-dialog request is dropped (the
/// stack answers it 501), so a peer flooding its own dialog cannot grow memory.
pub const DIALOG_QUEUE: usize = 32;

/// A new call handed to whoever runs calls (the bridge).
#[derive(Debug)]
pub struct IncomingCall {
    /// The relay's id for this call: generated here, unique, never the caller's Call-ID (two
    /// calls may carry the same one).
    pub id: String,
    /// The SIP Call-ID the caller chose, for logs and records.
    pub sip_call_id: String,
    /// The address the INVITE came from (the socket's, never a header's).
    pub source: Option<SocketAddr>,
    /// The caller (From URI).
    pub from: String,
    /// The dialled party (To URI).
    pub to: String,
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    /// The trunk the call came from, if trunks are configured.
    pub trunk: Option<String>,
    /// The caller's number as a trusted trunk asserted it (`P-Asserted-Identity`, else
    /// `From`; see [`super::caller_id`]); `None` when the trunk is not trusted or there is none.
    pub caller_number: Option<String>,
    /// The agent that answers (from the routes, or `agents.default`).
    pub agent: String,
    /// When the INVITE arrived.
    pub started: SystemTime,
    /// The call's dialog and SDP.
    pub sip: SipCall,
    /// The call's RTP socket, bound and pointed at the caller's offer.
    pub rtp: RtpLeg,
    /// Holds one of `sip.max_calls` until dropped.
    pub slot: CallSlot,
    /// A call the relay placed (`POST /api/calls`), with what its agent is told; `None` for a
    /// call that came in.
    pub outbound: Option<super::outbound::Outbound>,
}

/// Whoever takes new calls.
pub trait CallHandler: Send + Sync + 'static {
    /// Takes ownership of a new call; must return at once (spawn the call's task).
    fn on_call(&self, call: IncomingCall);
}

/// One of the `sip.max_calls` places; freed when dropped.
#[derive(Debug)]
pub struct CallSlot {
    active: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

impl CallSlot {
    /// A place already counted in `active`.
    pub(super) fn new(active: Arc<AtomicUsize>, changed: Arc<Notify>) -> Self {
        Self { active, changed }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }
}

/// The running SIP endpoint.
pub struct SipServer {
    token: CancellationToken,
    draining: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    changed: Arc<Notify>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    registrations: super::register::RegistrationStates,
    shared: Arc<Shared>,
}

/// What the SIP server needs besides the `[sip]` section.
#[derive(Debug, Clone)]
pub struct SipSettings {
    /// `[sip]`.
    pub sip: SipConfig,
    /// Who may call.
    pub trunks: Trunks,
    /// Dialled number -> agent.
    pub routes: Routes,
    /// The agent when no route is configured.
    pub default_agent: String,
}

/// The checks made on every datagram or connection before it is parsed.
pub(super) struct Gate {
    pub(super) trunks: Trunks,
    unknown: UnknownSource,
    /// Registrars and proxies written as IP literals: their answers must pass in `ignore` mode.
    also_allowed: Vec<IpAddr>,
    limiter: std::sync::Mutex<RateLimiter>,
}

impl Gate {
    fn allow_packet(&self, ip: IpAddr) -> bool {
        match self.trunks.classify(ip) {
            SourceVerdict::Trunk(_) => true,
            _ if self.also_allowed.contains(&ip) => true,
            SourceVerdict::Unknown if self.unknown == UnknownSource::Ignore => false,
            _ => self.rate_ok(ip, Kind::Packet),
        }
    }

    fn rate_ok(&self, ip: IpAddr, kind: Kind) -> bool {
        match self.limiter.lock() {
            Ok(mut l) => l.allow(ip, kind, std::time::Instant::now()),
            Err(_) => true,
        }
    }
}

impl SourcePolicy for Gate {
    fn is_trunk(&self, ip: IpAddr) -> bool {
        matches!(self.trunks.classify(ip), SourceVerdict::Trunk(_))
    }

    fn allow(&self, ip: IpAddr) -> bool {
        self.allow_packet(ip)
    }
}

pub(super) struct Shared {
    pub(super) cfg: SipConfig,
    pub(super) gate: Arc<Gate>,
    pub(super) routes: Routes,
    pub(super) default_agent: String,
    /// Signs digest nonces; new for every process.
    pub(super) nonce_secret: String,
    /// The highest nonce-count used with each digest nonce (replays are refused).
    pub(super) nonces: std::sync::Mutex<digest::NonceCounts>,
    /// Calls being set up (INVITE taken, not yet answered), capped per source and in total.
    pub(super) setups: Setups,
    pub(super) layer: Arc<DialogLayer>,
    pub(super) state_tx: rsipstack::dialog::dialog::DialogStateSender,
    pub(super) dialogs: DashMap<String, mpsc::Sender<DialogState>>,
    pub(super) ports: PortPool,
    pub(super) handler: Arc<dyn CallHandler>,
    pub(super) draining: Arc<AtomicBool>,
    /// Set while the calls' media ticks run late: new calls get 503.
    pub(super) overloaded: Arc<AtomicBool>,
    pub(super) active: Arc<AtomicUsize>,
    pub(super) changed: Arc<Notify>,
    pub(super) advertised: IpAddr,
    pub(super) port: u16,
    /// The address advertised for TLS calls and the TLS port, when TLS is on.
    pub(super) tls: Option<(IpAddr, u16)>,
}

impl SipServer {
    /// Binds UDP and TCP on `cfg.listen`, and TLS on `cfg.tls_listen` when set, and starts
    /// serving. Port 0 picks a free port (the same for UDP and TCP, another for TLS).
    pub async fn start(
        settings: SipSettings,
        handler: Arc<dyn CallHandler>,
    ) -> anyhow::Result<Self> {
        let SipSettings {
            sip: cfg,
            trunks,
            routes,
            default_agent,
        } = settings;
        let token = CancellationToken::new();
        let tl = TransportLayer::new(token.child_token());
        let also_allowed = trunks
            .all()
            .iter()
            .flat_map(|t| [t.cfg.registrar.as_deref(), t.cfg.outbound_proxy.as_deref()])
            .flatten()
            .filter_map(host_ip)
            .collect();
        let gate = Arc::new(Gate {
            trunks,
            unknown: cfg.unknown_source,
            also_allowed,
            limiter: std::sync::Mutex::new(RateLimiter::new(cfg.limits.clone())),
        });
        {
            let gate = gate.clone();
            tl.set_whitelist(move |ip: IpAddr| std::future::ready(gate.allow_packet(ip)));
        }
        // TCP and TLS are accepted by the relay itself, bounded (see streams.rs); rsipstack's
        // own idle timeout is off, as a trunk's connection may be quiet for a whole call.
        let tls_files = super::tls::TlsFiles::from_config(&cfg)?;
        if tls_files.is_some() {
            super::tls::install_crypto_provider();
        }
        // TCP takes the UDP port. With port 0 the port UDP got may be held over TCP by another
        // socket (a client's ephemeral port): then both are picked again, a few times at most.
        let attempts = if cfg.listen.port() == 0 { 16 } else { 1 };
        let mut attempt = 0;
        let (udp, local_addr, listeners) = loop {
            attempt += 1;
            let udp = UdpConnection::create_connection(cfg.listen, None, Some(token.child_token()))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on udp {}: {e}", cfg.listen))?;
            let local_addr: SocketAddr = udp
                .get_addr()
                .addr
                .clone()
                .try_into()
                .map_err(|_| anyhow::anyhow!("udp listener has no socket address"))?;
            let tls = tls_files
                .as_ref()
                .map(|f| (cfg.tls_listen.unwrap_or(local_addr), f));
            match StreamListeners::bind(local_addr, tls) {
                Ok(listeners) => break (udp, local_addr, listeners),
                Err(_) if attempt < attempts => continue,
                Err(e) => return Err(e),
            }
        };
        tl.add_transport(udp.into());
        let tls_addr = listeners.tls_addr();
        tl.set_stream_idle_timeout(Duration::ZERO);
        let streams = Streams::new(cfg.streams.clone(), gate.clone());

        let endpoint = EndpointBuilder::new()
            .with_transport_layer(tl)
            .with_cancel_token(token.clone())
            .with_user_agent(concat!("voxrelay/", env!("CARGO_PKG_VERSION")))
            .with_inspector(Box::new(ViaFromSocket))
            .with_transport_inspector(streams.inspector())
            .build();
        let incoming = endpoint.incoming_transactions()?;
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (state_tx, state_rx) = layer.new_dialog_state_channel();
        let draining = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(Notify::new());
        let setups = Setups::new(cfg.max_setup_calls, cfg.max_setup_calls_per_source);
        let shared = Arc::new(Shared {
            setups,
            advertised: cfg.advertised_ip(),
            port: local_addr.port(),
            tls: tls_addr.map(|a| (cfg.advertised_tls_ip(), a.port())),
            ports: PortPool::new(cfg.rtp_ports[0], cfg.rtp_ports[1]),
            cfg,
            gate,
            routes,
            default_agent,
            nonce_secret: format!("{:032x}", rand::random::<u128>()),
            nonces: std::sync::Mutex::new(digest::NonceCounts::default()),
            layer,
            state_tx,
            dialogs: DashMap::new(),
            handler,
            draining: draining.clone(),
            overloaded: Arc::new(AtomicBool::new(false)),
            active: active.clone(),
            changed: changed.clone(),
        });

        streams
            .serve(listeners, endpoint.inner.clone(), token.child_token())
            .await?;
        let contact_host = match shared.advertised {
            IpAddr::V4(v4) => format!("{v4}:{}", local_addr.port()),
            IpAddr::V6(v6) => format!("[{v6}]:{}", local_addr.port()),
        };
        let registrations = super::register::start(
            endpoint.inner.clone(),
            &shared.gate.trunks,
            contact_host,
            token.child_token(),
        );
        tokio::spawn(route_dialog_states(shared.clone(), state_rx));
        tokio::spawn(serve_transactions(shared.clone(), incoming, token.clone()));
        info!(
            udp = %local_addr,
            tcp = %local_addr,
            tls = tls_addr.map(tracing::field::display),
            "SIP listening"
        );
        Ok(Self {
            token,
            draining,
            active,
            changed,
            local_addr,
            tls_addr,
            registrations,
            shared,
        })
    }

    /// Places outbound calls through the trunks.
    pub fn dialer(&self) -> super::outbound::Dialer {
        super::outbound::Dialer {
            shared: self.shared.clone(),
        }
    }

    /// The bound SIP address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound SIP-over-TLS address, when `sip.tls_listen` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// From now on new INVITEs get 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The draining flag itself, for readiness probes.
    pub fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// The flag that refuses new calls with 503 while set (see `bridge::overload`).
    pub fn overload_flag(&self) -> Arc<AtomicBool> {
        self.shared.overloaded.clone()
    }

    /// Live calls.
    pub fn active_calls(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Each registering trunk's state.
    pub fn registrations(&self) -> &super::register::RegistrationStates {
        &self.registrations
    }

    /// Returns once no call is live.
    pub async fn wait_until_idle(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Stops the endpoint (listeners and transactions).
    pub fn stop(&self) {
        self.token.cancel();
    }
}

impl Drop for SipServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn route_dialog_states(shared: Arc<Shared>, mut rx: DialogStateReceiver) {
    while let Some(state) = rx.recv().await {
        let id = match &state {
            DialogState::Calling(id)
            | DialogState::Trying(id)
            | DialogState::Early(id, _)
            | DialogState::WaitAck(id, _)
            | DialogState::Confirmed(id, _)
            | DialogState::Updated(id, _, _)
            | DialogState::Publish(id, _, _)
            | DialogState::Notify(id, _, _)
            | DialogState::Refer(id, _, _)
            | DialogState::Message(id, _, _)
            | DialogState::Info(id, _, _)
            | DialogState::Options(id, _, _)
            | DialogState::Terminated(id, _) => id.clone(),
        };
        let key = id.to_string();
        let terminated = matches!(state, DialogState::Terminated(..));
        if let Some(tx) = shared.dialogs.get(&key).map(|r| r.value().clone()) {
            match tx.try_send(state) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(state)) if terminated => {
                    // The end of the call must reach it: wait for room (once per dialog).
                    tokio::spawn(async move {
                        let _ = tx.send(state).await;
                    });
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(dialog = %key, "dialog queue full: in-dialog request dropped");
                }
            }
        }
        if terminated {
            shared.dialogs.remove(&key);
            shared.layer.remove_dialog(&id);
        }
    }
}

async fn serve_transactions(
    shared: Arc<Shared>,
    mut incoming: rsipstack::transaction::TransactionReceiver,
    token: CancellationToken,
) {
    loop {
        let tx = tokio::select! {
            _ = token.cancelled() => break,
            tx = incoming.recv() => match tx { Some(tx) => tx, None => break },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_transaction(shared, tx).await {
                debug!(error = %e, "transaction failed");
            }
        });
    }
}

async fn handle_transaction(shared: Arc<Shared>, mut tx: Transaction) -> anyhow::Result<()> {
    // Who is this? The socket's address, never a header. Trunks only, when trunks are
    // configured, for requests inside a dialog too.
    let src = transport_source(&tx);
    let ip = src.map(|a| a.ip());
    let trunk = match ip.map(|ip| shared.gate.trunks.classify(ip)) {
        Some(SourceVerdict::Trunk(t)) => Some(t.clone()),
        Some(SourceVerdict::Open) => None,
        Some(SourceVerdict::Unknown) | None => {
            if shared.gate.unknown == UnknownSource::Ignore || tx.original.method == Method::Ack {
                return Ok(());
            }
            info!(source = src.map(tracing::field::display), method = %tx.original.method, "request refused: not from a trunk");
            return Ok(tx.reply(StatusCode::Forbidden).await?);
        }
    };
    let has_to_tag = tx
        .original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some();
    if has_to_tag {
        // Requests inside a dialog count against the source's own budget (trunks excepted,
        // as for packets); each dialog's queue is bounded besides.
        if let (None, Some(ip)) = (&trunk, ip) {
            if !shared.gate.rate_ok(ip, Kind::InDialog) {
                debug!(source = %ip, "in-dialog requests over the rate limit");
                let headers = vec![Header::RetryAfter(
                    shared.cfg.retry_after_seconds.to_string().into(),
                )];
                return Ok(tx
                    .reply_with(StatusCode::ServiceUnavailable, headers, None)
                    .await?);
            }
        }
        return match shared.layer.match_dialog(&tx) {
            Some(rsipstack::dialog::dialog::Dialog::Invite(d))
                if tx.original.method == Method::Invite && !d.state().is_confirmed() =>
            {
                // A re-INVITE that overtakes the ACK of our 200: rsipstack 0.7.14 would take it
                // for the first INVITE and never answer. RFC 3261 14.1: 491, the caller retries.
                Ok(tx.reply(StatusCode::RequestPending).await?)
            }
            Some(mut d) => {
                d.handle(&mut tx).await?;
                Ok(())
            }
            None => Ok(tx.reply(StatusCode::CallTransactionDoesNotExist).await?),
        };
    }
    let kind = match tx.original.method {
        Method::Invite => Some(Kind::Invite),
        Method::Register => Some(Kind::Register),
        Method::Options => Some(Kind::Options),
        _ => None,
    };
    if let (Some(kind), Some(ip)) = (kind, ip) {
        if !shared.gate.rate_ok(ip, kind) {
            debug!(source = %ip, ?kind, "over the rate limit");
            let headers = vec![Header::RetryAfter(
                shared.cfg.retry_after_seconds.to_string().into(),
            )];
            return Ok(tx
                .reply_with(StatusCode::ServiceUnavailable, headers, None)
                .await?);
        }
    }
    match tx.original.method {
        Method::Invite => handle_invite(shared, tx, trunk, src).await,
        Method::Options => {
            let mut headers = vec![
                Header::Allow(ALLOW.into()),
                Header::Accept("application/sdp".into()),
            ];
            // A proxy in front (Kamailio's dispatcher) probes with OPTIONS: 503 takes this
            // relay out of its set while it drains or is full, so new calls go elsewhere.
            let status = options_status(
                shared.draining.load(Ordering::Acquire)
                    || shared.overloaded.load(Ordering::Acquire),
                shared.active.load(Ordering::Acquire),
                shared.cfg.max_calls,
            );
            if status == StatusCode::ServiceUnavailable {
                headers.push(Header::RetryAfter(
                    shared.cfg.retry_after_seconds.to_string().into(),
                ));
            }
            Ok(tx.reply_with(status, headers, None).await?)
        }
        Method::Bye | Method::Info | Method::Update | Method::PRack => {
            Ok(tx.reply(StatusCode::CallTransactionDoesNotExist).await?)
        }
        Method::Ack | Method::Cancel => Ok(()),
        _ => Ok(tx
            .reply_with(
                StatusCode::MethodNotAllowed,
                vec![Header::Allow(ALLOW.into())],
                None,
            )
            .await?),
    }
}

/// The answer to an out-of-dialog OPTIONS: 503 while draining or overloaded (`refusing`) or
/// with every call place taken (the relay would refuse an INVITE), 200 otherwise.
fn options_status(refusing: bool, active: usize, max_calls: usize) -> StatusCode {
    if refusing || active >= max_calls {
        StatusCode::ServiceUnavailable
    } else {
        StatusCode::OK
    }
}

async fn handle_invite(
    shared: Arc<Shared>,
    mut tx: Transaction,
    trunk: Option<super::trunks::Trunk>,
    src: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let retry_after = || {
        vec![Header::RetryAfter(
            shared.cfg.retry_after_seconds.to_string().into(),
        )]
    };
    if shared.draining.load(Ordering::Acquire) {
        return Ok(tx
            .reply_with(StatusCode::ServiceUnavailable, retry_after(), None)
            .await?);
    }
    if let Some(req) = headers::required(&tx.original) {
        // No extension is required-capable here (no 100rel, no session timers).
        let headers = vec![Header::Unsupported(req.into())];
        return Ok(tx
            .reply_with(StatusCode::BadExtension, headers, None)
            .await?);
    }
    if let Some(t) = trunk.as_ref().filter(|t| t.cfg.inbound_auth) {
        if let Err(e) = check_digest(&shared, &tx.original, t) {
            info!(trunk = %t.cfg.name, source = src.map(tracing::field::display), reason = %e, "INVITE challenged");
            let stale = e == digest::AuthError::Stale;
            let challenge = digest::challenge(
                REALM,
                unix_now(),
                rand::random(),
                &shared.nonce_secret,
                stale,
            );
            let header = Header::WwwAuthenticate(challenge.into());
            return Ok(tx
                .reply_with(StatusCode::Unauthorized, vec![header], None)
                .await?);
        }
    }
    let dialled = headers::dialled_number(&tx.original);
    let Some(agent) = shared
        .routes
        .agent_for(&dialled, &shared.default_agent)
        .map(str::to_string)
    else {
        info!(dialled = %dialled, "call refused: no route for the number");
        return Ok(tx.reply(StatusCode::NotFound).await?);
    };
    if shared.overloaded.load(Ordering::Acquire) {
        info!(dialled = %dialled, "call refused: overloaded (the calls' media ticks run late)");
        return Ok(tx
            .reply_with(StatusCode::ServiceUnavailable, retry_after(), None)
            .await?);
    }
    // A place among the calls being set up: each opens a paid realtime session while it
    // rings, so one source (or all together) may only have so many at once.
    let setup = match src.map(|a| shared.setups.try_start(a.ip())) {
        Some(Ok(slot)) => slot,
        refused => {
            let cap = match refused {
                Some(Err(SetupRefusal::Source)) => "sip.max_setup_calls_per_source",
                _ => "sip.max_setup_calls",
            };
            info!(
                source = src.map(tracing::field::display),
                cap, "call refused: too many calls being set up"
            );
            return Ok(tx
                .reply_with(StatusCode::ServiceUnavailable, retry_after(), None)
                .await?);
        }
    };
    // Take a call slot first, atomically, so a burst cannot overshoot max_calls.
    let prev = shared.active.fetch_add(1, Ordering::AcqRel);
    let slot = CallSlot {
        active: shared.active.clone(),
        changed: shared.changed.clone(),
    };
    if prev >= shared.cfg.max_calls {
        drop(slot);
        warn!(
            max_calls = shared.cfg.max_calls,
            "call refused: at max_calls"
        );
        return Ok(tx
            .reply_with(StatusCode::ServiceUnavailable, retry_after(), None)
            .await?);
    }
    let negotiated = match sdp::negotiate(&tx.original.body) {
        Ok(n) => n,
        Err(e @ (SdpError::NoCommonCodec | SdpError::NoAudio)) => {
            info!(error = %e, "call refused: 488");
            let headers = vec![Header::Warning(
                "304 voxrelay \"Media type not available\"".into(),
            )];
            return Ok(tx
                .reply_with(StatusCode::NotAcceptableHere, headers, None)
                .await?);
        }
        Err(e) => {
            info!(error = %e, "call refused: bad SDP");
            return Ok(tx.reply(StatusCode::BadRequest).await?);
        }
    };
    let rtp = match RtpLeg::bind(&shared.ports, shared.cfg.listen.ip()).await {
        Ok(mut leg) => {
            leg.set_remote(negotiated.remote_rtp, negotiated.remote_rtcp);
            leg.set_signalling_ip(src.map(|a| a.ip()));
            leg
        }
        Err(e) => {
            warn!(error = %e, "call refused: no RTP port");
            return Ok(tx
                .reply_with(StatusCode::ServiceUnavailable, retry_after(), None)
                .await?);
        }
    };

    let transport = tx
        .connection
        .as_ref()
        .map(|c| c.transport())
        .unwrap_or(Transport::Udp);
    let contact = match (transport, shared.tls) {
        (Transport::Tls, Some((ip, port))) => contact_uri(ip, port, transport)?,
        _ => contact_uri(shared.advertised, shared.port, transport)?,
    };
    let dialog = shared.layer.get_or_create_server_invite(
        &tx,
        shared.state_tx.clone(),
        None,
        Some(contact),
    )?;
    let id = dialog.id();
    let (route_tx, route_rx) = mpsc::channel(DIALOG_QUEUE);
    shared.dialogs.insert(id.to_string(), route_tx);

    tx.send_trying().await?;
    // rsipstack 0.7.14 would give a 487 another To-tag than the 180: pin the dialog's tag.
    if let Ok(to) = tx.original.to_header().and_then(|t| t.typed()) {
        let to = to.with_tag(id.local_tag.clone().into());
        tx.original.headers.unique_push(to.into());
    }
    {
        let mut d = dialog.clone();
        tokio::spawn(async move {
            if let Err(e) = d.handle(&mut tx).await {
                debug!(error = %e, "INVITE transaction ended with an error");
            }
        });
    }

    let from = headers::from_value(&dialog.initial_request());
    let to = headers::to_value(&dialog.initial_request());
    let caller_number = super::caller_id::trusted_number(&dialog.initial_request(), trunk.as_ref());
    let local = LocalSdp::new(
        shared.advertised,
        rtp.local_port(),
        rand::random::<u32>() as u64,
    );
    let mut sip = SipCall::new(dialog, local, negotiated, route_rx, setup);
    sip.share_keys(rtp.key_slot());
    shared.handler.on_call(IncomingCall {
        id: new_call_id(),
        sip_call_id: id.call_id.clone(),
        source: src,
        from,
        to,
        transport: match transport {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            _ => "udp",
        },
        caller_number,
        trunk: trunk.map(|t| t.cfg.name),
        agent,
        started: SystemTime::now(),
        sip,
        rtp,
        slot,
        outbound: None,
    });
    Ok(())
}

/// A new call id: 16 random hex digits (collisions are not a concern at any call rate).
pub(super) fn new_call_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The realm of our digest challenges.
const REALM: &str = "voxrelay";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_digest(
    shared: &Shared,
    req: &rsipstack::sip::Request,
    trunk: &super::trunks::Trunk,
) -> Result<(), digest::AuthError> {
    let auth = headers::authorization(req).ok_or(digest::AuthError::Malformed)?;
    let user = trunk.cfg.username.as_deref().unwrap_or_default();
    let pass = trunk
        .password
        .as_ref()
        .map(|p| p.expose())
        .unwrap_or_default();
    let request_uri = req.uri.to_string();
    let expected = digest::Expected {
        method: "INVITE",
        request_uri: &request_uri,
        username: user,
        password: pass,
        realm: REALM,
    };
    let mut nonces = shared.nonces.lock().unwrap_or_else(|e| e.into_inner());
    digest::verify(
        &auth,
        &expected,
        unix_now(),
        &shared.nonce_secret,
        &mut nonces,
    )
}

/// Our Contact for a call over `transport`: `sips:` with `transport=tls` over TLS (as rsipstack
/// writes its own TLS addresses), `transport=tcp` over TCP, a plain `sip:` URI over UDP.
pub(super) fn contact_uri(
    ip: IpAddr,
    port: u16,
    transport: Transport,
) -> anyhow::Result<rsipstack::sip::Uri> {
    let host = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let (scheme, t) = match transport {
        Transport::Tcp => ("sip", ";transport=tcp"),
        Transport::Tls => ("sips", ";transport=tls"),
        _ => ("sip", ""),
    };
    rsipstack::sip::Uri::try_from(format!("{scheme}:voxrelay@{host}:{port}{t}").as_str())
        .map_err(|e| anyhow::anyhow!("bad contact URI: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_says_503_when_draining_or_full() {
        assert_eq!(options_status(false, 0, 2), StatusCode::OK);
        assert_eq!(options_status(false, 1, 2), StatusCode::OK);
        assert_eq!(options_status(false, 2, 2), StatusCode::ServiceUnavailable);
        assert_eq!(options_status(true, 0, 2), StatusCode::ServiceUnavailable);
    }
}
