//! The key pool's shell: one task runs the mints the pool asks for, in the background, and
//! calls take keys from it without waiting. The decisions are in [`super::key_pool`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use super::events::Session;
use super::key_pool::{KeyPool, MintFailure};
use super::keys::{EphemeralKey, KeyMinter, MintError};
use crate::metrics::{KeySourceLabel, Metrics};

/// A background mint may take this long, retries included (each attempt a third of it): no
/// call is waiting on it.
const REFILL_DEADLINE: Duration = Duration::from_secs(30);
/// A pooled key is handed out with at least this much life left (or half its lifetime,
/// when that is shorter): it only has to open the call's session, a moment later.
const MIN_LEFT: Duration = Duration::from_secs(30);

struct Shared {
    pool: Mutex<KeyPool>,
    wake: Notify,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyPool> {
        // a panic while holding the lock leaves a pool that is still consistent
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Pre-minted keys for the configured agents, refilled by a task of its own, which stops when
/// the last handle is dropped.
#[derive(Clone)]
pub struct KeyRefill {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

impl std::fmt::Debug for KeyRefill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRefill").finish_non_exhaustive()
    }
}

impl KeyRefill {
    /// Starts minting `per_agent` keys for each of `agents` (name and session) with `minter`,
    /// each valid for `ttl`. Needs a tokio runtime.
    pub fn start(
        minter: KeyMinter,
        per_agent: usize,
        ttl: Duration,
        agents: Vec<(String, Session)>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let mut pool = KeyPool::new(per_agent, MIN_LEFT.min(ttl / 2));
        for (name, session) in agents {
            pool.handle_agent(&name, session);
        }
        let shared = Arc::new(Shared {
            pool: Mutex::new(pool),
            wake: Notify::new(),
            metrics,
        });
        let stop = CancellationToken::new();
        tokio::spawn(refill(
            shared.clone(),
            minter.with_deadline(REFILL_DEADLINE),
            ttl,
            stop.clone(),
        ));
        Self {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// A key minted ahead with `session`, if one is ready; a replacement is minted at once.
    pub fn take(&self, session: &Session) -> Option<EphemeralKey> {
        let key = self.shared.lock().take(Instant::now().into_std(), session);
        if let Some(m) = &self.shared.metrics {
            let source = if key.is_some() { "pool" } else { "minted" };
            m.openai_keys_used
                .get_or_create(&KeySourceLabel { source })
                .inc();
        }
        if key.is_some() {
            self.shared.wake.notify_one();
            self.publish();
        }
        key
    }

    fn publish(&self) {
        publish(&self.shared);
    }
}

/// Sets the ready-keys gauge.
fn publish(shared: &Shared) {
    publish_locked(shared, &shared.lock());
}

/// Sets the ready-keys gauge from `pool`, whose lock the caller holds.
fn publish_locked(shared: &Shared, pool: &KeyPool) {
    if let Some(m) = &shared.metrics {
        m.openai_keys_ready
            .set(pool.ready(Instant::now().into_std()) as i64);
    }
}

/// How long `key` stays valid: what was asked for, or less if the service says so.
fn valid_for(key: &EphemeralKey, ttl: Duration) -> Duration {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let left = u64::try_from(key.expires_at - now_unix).unwrap_or(0);
    ttl.min(Duration::from_secs(left))
}

/// The refill task: runs what the pool asks for, drops stale keys on time.
async fn refill(shared: Arc<Shared>, minter: KeyMinter, ttl: Duration, stop: CancellationToken) {
    let mut mints: JoinSet<(String, Session, Result<EphemeralKey, MintError>)> = JoinSet::new();
    // agents whose first key was announced in the log
    let mut announced: Vec<String> = Vec::new();
    loop {
        let timeout = {
            let now = Instant::now().into_std();
            let mut pool = shared.lock();
            pool.handle_timeout(now);
            while let Some(order) = pool.poll_mint(now) {
                let minter = minter.clone();
                mints.spawn(async move {
                    let minted = minter.mint(&order.session).await;
                    (order.agent, order.session, minted)
                });
            }
            pool.poll_timeout()
        };
        publish(&shared);
        let sleep = async {
            match timeout {
                Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = sleep => {}
            Some(done) = mints.join_next(), if !mints.is_empty() => {
                let Ok((agent, session, minted)) = done else { continue };
                let now = Instant::now().into_std();
                let mut pool = shared.lock();
                match minted {
                    Ok(key) => {
                        let valid = valid_for(&key, ttl);
                        pool.handle_minted(now, &agent, &session, key, valid);
                        // the gauge counts the key before the log says it is there
                        publish_locked(&shared, &pool);
                        let ready = pool.ready_for(now, &agent);
                        // once per agent, when its keys are all there the first time
                        if ready >= pool.target() && !announced.contains(&agent) {
                            info!(agent = %agent, keys = ready, "ephemeral keys ready ahead of calls");
                            announced.push(agent);
                        }
                    }
                    Err(e) => {
                        let failure = if e.is_transient() {
                            MintFailure::Transient
                        } else {
                            MintFailure::Final
                        };
                        warn!(agent = %agent, error = %e, "minting a key ahead of calls failed; calls mint their own meanwhile");
                        pool.handle_mint_failed(now, &agent, failure);
                    }
                }
            }
        }
    }
}
