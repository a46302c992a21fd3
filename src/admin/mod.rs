//! The operator's HTTP surface: the JSON API, live events (Server-Sent Events), Prometheus
//! metrics, the ephemeral-key endpoint, the dashboard page and the browser voice page
//! (`/talk`), all on `admin.listen`.
//!
//! Everything here reads the call [`Registry`] or sends a [`crate::bridge::registry::Control`]
//! to a call's task; nothing here holds call state or a lock across an `.await`.

mod access;
mod agents;
mod auth;
mod bookings;
mod calls;
mod cluster_api;
mod cluster_events;
mod cluster_view;
mod dashboard;
mod dial;
mod error;
mod guard;
mod health;
pub mod openapi;
pub mod recording;
mod reminders;
mod routes;
mod serve;
mod session;
mod sse;
mod talk;
mod trunks;
mod web_calls;
mod web_recording;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::booking::store::Store;
use crate::bridge::call_agent::AgentBook;
use crate::bridge::registry::Registry;
use crate::metrics::Metrics;
use crate::openai::events::Session;
use crate::openai::keys::KeyMinter;
use crate::secret::Secret;
use crate::sip::register::RegistrationStates;

pub use access::{AccessPolicy, PolicyError};
pub use error::ApiError;
pub use guard::REQUEST_TIMEOUT;

/// How long [`AdminServer::shutdown`] waits for open requests before it drops them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A connection must send a request's whole head within this long after it opens or after
/// its previous answer (so this also closes idle keep-alive connections); slowloris clients
/// that trickle headers are cut off. The default of [`AdminOptions::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How the admin server treats connections and requests.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// `admin.public_hosts` and `admin.cors_origins`.
    pub policy: AccessPolicy,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            policy: AccessPolicy::default(),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Open connections at most; more are closed as they are accepted (the dashboard needs two or
/// three per tab, probes one each).
pub const MAX_CONNECTIONS: usize = 256;

/// What the relay's other parts say about their health, read on every `GET /readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The SIP endpoint is listening.
    pub sip: bool,
    /// The media (RTP) side can take calls.
    pub media: bool,
    /// The relay is draining for a shutdown: no new calls.
    pub draining: bool,
}

impl Readiness {
    /// Everything up, not draining.
    pub fn ready() -> Self {
        Self {
            sip: true,
            media: true,
            draining: false,
        }
    }
}

/// A readiness probe: called on each `GET /readyz`, so it must be quick and never block.
pub type ReadinessProbe = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// What the admin server reads and acts on. Every field is a cheap handle.
#[derive(Clone)]
pub struct AdminState {
    /// Live and recently ended calls.
    pub registry: Registry,
    /// The relay's metrics, rendered by `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Bookings and stored call records; `None`: the bookings routes answer 503 and
    /// `/readyz` reports the database down.
    pub store: Option<Store>,
    /// Mints ephemeral keys for `GET /api/session`; `None` (no `OPENAI_API_KEY`): that route
    /// answers 503 `no_api_key`.
    pub minter: Option<KeyMinter>,
    /// The default agent's session config, sent when minting a key.
    pub session: Session,
    /// Browser calls (`/talk`): keys per agent and the attach; `None` without an API key.
    pub web: Option<Arc<crate::bridge::web_call::WebCalls>>,
    /// The bearer token; `None`: no authentication (allowed on loopback only).
    pub token: Option<Secret>,
    /// Each trunk's registration state (empty without registering trunks).
    pub trunks: RegistrationStates,
    /// SIP and media health and the draining flag.
    pub readiness: ReadinessProbe,
    /// The agents a browser may talk to (`GET /api/agents`, the `/talk` page's choice);
    /// empty when the relay runs without realtime agents.
    pub agents: AgentBook,
    /// `agents.default`: the agent marked `"default": true` by `GET /api/agents`.
    pub default_agent: String,
    /// This relay's part in a cluster (`cluster.node_id`); `None`: a relay on its own, whose
    /// API shows its own calls and answers 404 on the internal `/cluster/v1` routes.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Places outbound calls (`POST /api/calls`); `None`: no SIP endpoint.
    pub dialer: Option<crate::sip::Dialer>,
}

impl AdminState {
    /// `cluster.node_id`, in a cluster.
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.node_id())
    }
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("registry", &self.registry)
            .field("store", &self.store.is_some())
            .field("minter", &self.minter.is_some())
            .field("web", &self.web.is_some())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Listening beyond loopback without a token would hand calls to anyone on the network.
    #[error(
        "admin.listen {0} is not a loopback address and admin.token is not set: \
         set VOXRELAY__ADMIN__TOKEN or listen on 127.0.0.1"
    )]
    ExposedWithoutToken(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on admin.listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Refuses a non-loopback `listen` without a (non-empty) token; the relay calls this before
/// it starts anything else, and [`start`] calls it again.
pub fn check_exposure(listen: SocketAddr, token: Option<&Secret>) -> Result<(), StartError> {
    let has_token = token.is_some_and(|t| !t.is_empty());
    if listen.ip().is_loopback() || has_token {
        Ok(())
    } else {
        Err(StartError::ExposedWithoutToken(listen))
    }
}

/// The running admin server.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Where it listens (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the event streams, and waits a short grace time for open
    /// requests.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            warn!("admin server: requests still open after the grace time, dropping them");
            task.abort();
        }
    }
}

/// Starts the admin server on `listen` with the default [`AdminOptions`] (loopback names and
/// this server's own address only, no CORS origins). Refuses a non-loopback address without a
/// token.
pub async fn start(listen: SocketAddr, state: AdminState) -> Result<AdminServer, StartError> {
    start_with(listen, state, AdminOptions::default()).await
}

/// Starts the admin server on `listen` with `options` (the policy from `admin.public_hosts`
/// and `admin.cors_origins`). Refuses a non-loopback address without a token.
pub async fn start_with(
    listen: SocketAddr,
    state: AdminState,
    options: AdminOptions,
) -> Result<AdminServer, StartError> {
    check_exposure(listen, state.token.as_ref())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let stop = CancellationToken::new();
    let app = routes::router(state, Arc::new(options.policy), stop.clone());
    let task = tokio::spawn(serve::serve(
        listener,
        app,
        options.header_read_timeout,
        stop.clone(),
    ));
    info!(admin = %addr, "admin HTTP listening");
    Ok(AdminServer { addr, stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_go_without_a_token() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:8080".parse().unwrap();
        assert!(check_exposure(lo, None).is_ok());
        assert!(check_exposure(lo6, None).is_ok());
        assert!(check_exposure(any, None).is_err());
        assert!(check_exposure(lan, Some(&Secret::new(""))).is_err());
        assert!(check_exposure(lan, Some(&Secret::new("t0ken"))).is_ok());
        let msg = check_exposure(any, None).unwrap_err().to_string();
        assert!(msg.contains("admin.token"), "{msg}");
    }
}
