//! Several relays behind one SIP proxy, sharing one PostgreSQL database (`[cluster]`).
//!
//! Each relay writes a heartbeat row into the `relays` table ([`directory`]); the admin API of
//! any relay reads that table to list the whole cluster's live calls and forwards an
//! operator's control of a call to the relay that owns it ([`peers`]). Requests between
//! relays are signed with the shared `cluster.secret` ([`auth`]). SIP routing itself is the
//! proxy's (Kamailio's dispatcher, `deploy/kamailio/`): a relay only answers OPTIONS 503 when
//! it is full or draining.

pub mod auth;
pub mod directory;
mod heartbeat;
pub mod peers;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::ClusterConfig;

pub use directory::RelayRow;
pub use heartbeat::{spawn as spawn_heartbeat, Heartbeat, LoadProbe};

/// The relays table is read at most this often for the admin API (a dashboard refreshing,
/// several operators): the heartbeat changes it only every `heartbeat_seconds` anyway.
const PEERS_CACHE: Duration = Duration::from_millis(500);

/// Why the cluster part did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database is not PostgreSQL (the config check refuses this first).
    #[error("a cluster needs PostgreSQL in booking.database_url")]
    NotPostgres,
    /// The HTTP client for the other relays could not be built.
    #[error("cluster HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// This relay's part in the cluster: its name, the relays table, and the signed requests to
/// the others. Shared by the heartbeat and the admin server.
pub struct Cluster {
    node_id: String,
    incarnation: String,
    heartbeat: Duration,
    pool: PgPool,
    signer: auth::Signer,
    verifier: Mutex<auth::Verifier>,
    http: reqwest::Client,
    admin_url: OnceLock<String>,
    started_at: DateTime<Utc>,
    cache: Mutex<Option<(Instant, Arc<Vec<RelayRow>>)>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("admin_url", &self.admin_url.get())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster part of a relay whose config has `cluster.node_id` set (checked by the
    /// config), on the store's PostgreSQL pool.
    pub fn new(cfg: &ClusterConfig, pool: Option<&PgPool>) -> Result<Arc<Self>, ClusterError> {
        let pool = pool.ok_or(ClusterError::NotPostgres)?.clone();
        let node_id = cfg.node_id.clone().unwrap_or_default();
        let secret = cfg.secret.clone().unwrap_or_default();
        let http = reqwest::Client::builder()
            .connect_timeout(peers::CONNECT_TIMEOUT)
            // the relays' admin servers are plain HTTP inside the cluster, or HTTPS with
            // the system's roots; never a proxy from the environment
            .no_proxy()
            .build()?;
        let cluster = Self {
            incarnation: format!("{:032x}", rand::random::<u128>()),
            heartbeat: Duration::from_secs(cfg.heartbeat_seconds),
            pool,
            signer: auth::Signer::new(secret.clone(), node_id.clone()),
            verifier: Mutex::new(auth::Verifier::new(secret, node_id.clone())),
            http,
            admin_url: OnceLock::new(),
            started_at: Utc::now(),
            cache: Mutex::new(None),
            node_id,
        };
        if let Some(url) = &cfg.admin_url {
            let _ = cluster.admin_url.set(url.trim_end_matches('/').to_string());
        }
        Ok(Arc::new(cluster))
    }

    /// `cluster.node_id`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sets the admin URL from the address the admin server bound, unless `cluster.admin_url`
    /// gave one.
    pub fn default_admin_url(&self, bound: std::net::SocketAddr) {
        let _ = self.admin_url.set(format!("http://{bound}"));
    }

    /// How long a relay may stay silent before it counts as gone: three heartbeats.
    pub fn stale_after(&self) -> Duration {
        self.heartbeat * 3
    }

    /// Checks a request from another relay: the sender's node id, or why it is refused.
    pub fn verify(
        &self,
        header: Option<&str>,
        req: auth::Request<'_>,
    ) -> Result<String, auth::AuthError> {
        let now = Utc::now().timestamp();
        let mut v = self.verifier.lock().unwrap_or_else(|p| p.into_inner());
        v.verify(now, header, req)
    }

    /// Every relay in the table (this one included), read at most every [`PEERS_CACHE`].
    pub async fn relays(&self) -> Result<Arc<Vec<RelayRow>>, sqlx::Error> {
        if let Some((at, rows)) = &*self.cache.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < PEERS_CACHE {
                return Ok(rows.clone());
            }
        }
        let rows =
            Arc::new(directory::list(&self.pool, self.stale_after().as_secs() as i64).await?);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), rows.clone()));
        Ok(rows)
    }

    /// The other relays that are alive, to ask about their calls.
    pub async fn peers(&self) -> Result<Vec<RelayRow>, sqlx::Error> {
        Ok(self
            .relays()
            .await?
            .iter()
            .filter(|r| r.alive && r.node_id != self.node_id)
            .cloned()
            .collect())
    }
}
