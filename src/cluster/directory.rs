//! The `relays` table: each relay's heartbeat row, and the list every admin API reads.
//!
//! Times come from the database server's clock (`now()`), so relays whose clocks differ
//! still agree on who is alive.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// A row older than this is deleted by the next heartbeat of any relay (a relay that went
/// away for good).
const FORGET_AFTER_SECONDS: i64 = 3600;

/// What a relay writes about itself.
#[derive(Debug, Clone)]
pub struct Me {
    /// `cluster.node_id`.
    pub node_id: String,
    /// Random per process.
    pub incarnation: String,
    /// Where its SIP endpoint listens (what the proxy sends INVITEs to).
    pub sip_address: String,
    /// Its admin server, as the others reach it.
    pub admin_url: String,
    /// `sip.max_calls`.
    pub capacity: i32,
    /// Seconds after which a silent relay counts as gone (three heartbeats).
    pub stale_seconds: i64,
}

/// One relay as the table has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RelayRow {
    /// Its `cluster.node_id`.
    pub node_id: String,
    /// Its SIP address.
    pub sip_address: String,
    /// Its admin server.
    #[serde(skip)]
    pub admin_url: String,
    /// Live calls at its last heartbeat.
    pub live_calls: i32,
    /// `sip.max_calls`.
    pub capacity: i32,
    /// Taking no new calls (stopping).
    pub draining: bool,
    /// When its process started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Heard from within three heartbeats.
    pub alive: bool,
}

/// Writes this relay's heartbeat. `Ok(false)`: another live process holds this `node_id`
/// (two relays configured with one name), and nothing was written.
pub async fn beat(
    pool: &PgPool,
    me: &Me,
    live_calls: usize,
    draining: bool,
    started_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO relays (node_id, incarnation, sip_address, admin_url, live_calls, capacity,
                             draining, started_at, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (node_id) DO UPDATE SET
             incarnation = EXCLUDED.incarnation, sip_address = EXCLUDED.sip_address,
             admin_url = EXCLUDED.admin_url, live_calls = EXCLUDED.live_calls,
             capacity = EXCLUDED.capacity, draining = EXCLUDED.draining,
             started_at = EXCLUDED.started_at, last_seen = now()
         WHERE relays.incarnation = EXCLUDED.incarnation
            OR relays.last_seen < now() - make_interval(secs => $9)",
    )
    .bind(&me.node_id)
    .bind(&me.incarnation)
    .bind(&me.sip_address)
    .bind(&me.admin_url)
    .bind(i32::try_from(live_calls).unwrap_or(i32::MAX))
    .bind(me.capacity)
    .bind(draining)
    .bind(started_at)
    .bind(me.stale_seconds as f64)
    .execute(pool)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM relays WHERE last_seen < now() - make_interval(secs => $1)")
        .bind(FORGET_AFTER_SECONDS as f64)
        .execute(pool)
        .await?;
    Ok(written == 1)
}

/// Removes this relay's row (a clean stop), unless another process has taken the name since.
pub async fn leave(pool: &PgPool, me: &Me) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM relays WHERE node_id = $1 AND incarnation = $2")
        .bind(&me.node_id)
        .bind(&me.incarnation)
        .execute(pool)
        .await?;
    Ok(())
}

/// Every relay in the table, by name; `alive` when heard from within `stale_seconds`.
pub async fn list(pool: &PgPool, stale_seconds: i64) -> Result<Vec<RelayRow>, sqlx::Error> {
    sqlx::query_as::<_, RelayRow>(
        "SELECT node_id, sip_address, admin_url, live_calls, capacity, draining, started_at,
                last_seen, last_seen >= now() - make_interval(secs => $1) AS alive
         FROM relays ORDER BY node_id",
    )
    .bind(stale_seconds as f64)
    .fetch_all(pool)
    .await
}
