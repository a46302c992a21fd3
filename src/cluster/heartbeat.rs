//! The heartbeat: this relay's row in the `relays` table, written every `heartbeat_seconds`,
//! at once when it starts draining, and removed when it stops cleanly.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::directory::{self, Me};
use super::Cluster;

/// What the heartbeat reports: live calls and whether the relay is draining.
pub type LoadProbe = Arc<dyn Fn() -> (usize, bool) + Send + Sync>;

/// The running heartbeat.
pub struct Heartbeat {
    cluster: Arc<Cluster>,
    me: Me,
    load: LoadProbe,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("node_id", &self.me.node_id)
            .finish_non_exhaustive()
    }
}

/// Why the relay did not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Another live relay has this `cluster.node_id`.
    #[error(
        "another relay named {0:?} is alive in the cluster (cluster.node_id must differ per relay)"
    )]
    NameTaken(String),
    /// The database could not be written.
    #[error("writing this relay into the relays table: {0}")]
    Database(#[from] sqlx::Error),
}

/// Writes the first heartbeat (refusing a `node_id` another live relay holds), then one every
/// heartbeat period until [`Heartbeat::leave`].
pub async fn spawn(
    cluster: Arc<Cluster>,
    sip_address: String,
    capacity: usize,
    load: LoadProbe,
) -> Result<Heartbeat, JoinError> {
    let me = Me {
        node_id: cluster.node_id.clone(),
        incarnation: cluster.incarnation.clone(),
        sip_address,
        admin_url: cluster.admin_url.get().cloned().unwrap_or_default(),
        capacity: i32::try_from(capacity).unwrap_or(i32::MAX),
        stale_seconds: cluster.stale_after().as_secs() as i64,
    };
    let (live, draining) = load();
    if !directory::beat(&cluster.pool, &me, live, draining, cluster.started_at).await? {
        return Err(JoinError::NameTaken(me.node_id));
    }
    info!(node_id = %me.node_id, admin_url = %me.admin_url, "joined the cluster");
    let task = tokio::spawn(run(cluster.clone(), me.clone(), load.clone()));
    Ok(Heartbeat {
        cluster,
        me,
        load,
        task,
    })
}

async fn run(cluster: Arc<Cluster>, me: Me, load: LoadProbe) {
    let mut tick = tokio::time::interval(cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the first beat was written by spawn
                       // log a change of state once, not every beat
    let mut healthy = true;
    loop {
        tick.tick().await;
        let (live, draining) = load();
        match directory::beat(&cluster.pool, &me, live, draining, cluster.started_at).await {
            Ok(true) if !healthy => {
                info!(node_id = %me.node_id, "cluster heartbeat written again");
                healthy = true;
            }
            Ok(true) => {}
            Ok(false) => {
                if healthy {
                    error!(node_id = %me.node_id, "another live relay has taken this cluster.node_id; the cluster does not see this relay");
                }
                healthy = false;
            }
            Err(e) => {
                if healthy {
                    warn!(error = %e, "cluster heartbeat failed; the other relays will count this one gone if it goes on");
                }
                healthy = false;
            }
        }
    }
}

impl Heartbeat {
    /// Writes a heartbeat now (the relay started draining: the others should know at once).
    pub async fn beat_now(&self) {
        let (live, draining) = (self.load)();
        if let Err(e) = directory::beat(
            &self.cluster.pool,
            &self.me,
            live,
            draining,
            self.cluster.started_at,
        )
        .await
        {
            warn!(error = %e, "cluster heartbeat failed");
        }
    }

    /// Stops the heartbeat and removes this relay's row.
    pub async fn leave(self) {
        self.task.abort();
        if let Err(e) = directory::leave(&self.cluster.pool, &self.me).await {
            warn!(error = %e, "could not remove this relay from the relays table; it ages out");
        }
    }
}
