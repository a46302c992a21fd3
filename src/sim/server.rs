//! The simulator's process-level parts: configuration, the shared state of keys, calls and
//! session records, and starting and stopping the HTTP server.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::keys::KeyBook;
use super::record::SessionRecord;
use super::rtc::RtcInput;
use super::scenario::{HttpFault, Scenario};

/// Session records kept for `/sim/sessions`; the oldest closed ones go first beyond this.
const MAX_RECORDS: usize = 10_000;

/// How to run the simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Where to listen (HTTP and WebSocket; WebRTC media binds the same IP).
    pub listen: SocketAddr,
    /// `booking`, `echo` or a path to a scenario file.
    pub scenario: String,
    /// The server key clients must present; without it any key starting `sk-` is accepted.
    pub api_key: Option<String>,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("scenario", &self.scenario)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// State shared by the HTTP handlers and the session tasks.
pub(crate) struct State {
    pub scenario: Arc<Scenario>,
    pub api_key: Option<String>,
    /// Minted ephemeral keys (expired ones forgotten at the next mint, at most `MAX_KEYS`).
    pub keys: Mutex<KeyBook>,
    pub records: DashMap<String, Arc<SessionRecord>>,
    record_order: Mutex<VecDeque<String>>,
    pub calls: DashMap<String, mpsc::Sender<RtcInput>>,
    mint_faults: AtomicU32,
    calls_faults: AtomicU32,
    pub shutdown: CancellationToken,
    pub media_ip: IpAddr,
    /// Seconds added to the wall clock when checking key expiry (tests move it forward).
    pub key_clock_offset: AtomicI64,
    /// Ephemeral keys minted since start (`keys_minted` in `/sim/sessions`).
    pub keys_minted: std::sync::atomic::AtomicU64,
}

impl State {
    pub fn new(scenario: Arc<Scenario>, api_key: Option<String>, listen: SocketAddr) -> Self {
        let media_ip = if listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            listen.ip()
        };
        Self {
            scenario,
            api_key,
            keys: Mutex::new(KeyBook::default()),
            records: DashMap::new(),
            record_order: Mutex::new(VecDeque::new()),
            calls: DashMap::new(),
            mint_faults: AtomicU32::new(0),
            calls_faults: AtomicU32::new(0),
            shutdown: CancellationToken::new(),
            media_ip,
            key_clock_offset: AtomicI64::new(0),
            keys_minted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The minted keys, locked (a poisoned lock still holds a consistent book).
    pub fn keys(&self) -> std::sync::MutexGuard<'_, KeyBook> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unix seconds on the key clock (wall clock plus the test offset).
    pub fn key_now(&self) -> i64 {
        unix_now() + self.key_clock_offset.load(Ordering::Relaxed)
    }

    /// Keeps a session's record for `/sim/sessions`, dropping the oldest closed ones past the cap.
    pub fn add_record(&self, id: &str, record: Arc<SessionRecord>) {
        self.records.insert(id.to_string(), record);
        let mut order = self.record_order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back(id.to_string());
        while order.len() > MAX_RECORDS {
            let Some(old) = order.pop_front() else { break };
            self.records.remove(&old);
        }
    }

    /// The record ids, oldest first.
    pub fn record_ids(&self) -> Vec<String> {
        self.record_order
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Whether this request to `client_secrets` (`mint`) or `/calls` is to be faulted.
    pub fn fault_for(&self, which: Endpoint) -> Option<HttpFault> {
        let (fault, counter) = match which {
            Endpoint::Mint => (&self.scenario.faults.mint, &self.mint_faults),
            Endpoint::Calls => (&self.scenario.faults.calls, &self.calls_faults),
        };
        let fault = fault.as_ref()?;
        let n = counter.fetch_add(1, Ordering::Relaxed);
        match fault.times {
            Some(times) if times > 0 && n >= times => None,
            _ => Some(fault.clone()),
        }
    }
}

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Mint,
    Calls,
}

/// Starts simulators.
pub struct Simulator;

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Simulator {
    /// Loads the scenario, binds `cfg.listen` and serves in the background.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
        let scenario = Scenario::load(&cfg.scenario)
            .with_context(|| format!("loading simulator scenario {:?}", cfg.scenario))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding the simulator to {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(scenario, cfg.api_key, addr));
        let app = super::http::router(state.clone());
        let shutdown = state.shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                shutdown.cancelled().await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulator server ended with an error");
            }
        });
        tracing::info!(%addr, scenario = %state.scenario.name, "realtime simulator listening");
        Ok(SimHandle {
            addr,
            state,
            server,
        })
    }
}

impl SimHandle {
    /// The address it listens on (the port is real when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give a client, e.g. `http://127.0.0.1:4321`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many minted ephemeral keys the simulator holds (expired ones go at the next mint).
    pub fn minted_keys(&self) -> usize {
        self.state.keys().len()
    }

    /// Moves the clock that ephemeral keys expire by forward (a fake clock for expiry tests).
    pub fn advance_key_clock(&self, by: std::time::Duration) {
        self.state
            .key_clock_offset
            .fetch_add(by.as_secs() as i64, Ordering::Relaxed);
    }

    /// Stops serving: ends every session (closing peer connections) and waits for the server.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let calls: Vec<mpsc::Sender<RtcInput>> =
            self.state.calls.iter().map(|c| c.value().clone()).collect();
        for tx in calls {
            let _ = tx.send(RtcInput::Hangup).await;
        }
        let _ = self.server.await;
    }
}

/// Serves until ctrl-c.
pub async fn run(cfg: SimConfig) -> anyhow::Result<()> {
    let handle = Simulator::start(cfg).await?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    handle.shutdown().await;
    Ok(())
}

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A random id with this prefix, e.g. `sess_…`.
pub(crate) fn random_id(prefix: &str, len: usize) -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}
