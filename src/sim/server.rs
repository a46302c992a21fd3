//! The simulator's process-level parts: configuration, and starting and stopping the HTTP
//! server (the shared state is in `state.rs`).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::scenario::Scenario;
use super::state::{RtcInput, State};
use crate::secret::Secret;

/// How to run the simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Where to listen (HTTP and WebSocket; WebRTC media binds the same IP).
    pub listen: SocketAddr,
    /// `booking`, `echo` or a path to a scenario file.
    pub scenario: String,
    /// The server key clients must present; without it any key starting `sk-` is accepted.
    pub api_key: Option<Secret>,
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

    /// Waits until some session's record (as `GET /sim/sessions/{id}` gives it) satisfies
    /// `done`, for at most `timeout`; that record, or `None`. Woken by every change of a
    /// record, never by polling.
    pub async fn wait_record(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // registered before the look, so a change in between is not missed
            let changed = self.state.records_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let found = self.state.records.iter().find_map(|r| {
                let v = serde_json::to_value(r.value().snapshot()).ok()?;
                done(&v).then_some(v)
            });
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
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
            let _ = tx.send(RtcInput::Hangup(None)).await;
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
