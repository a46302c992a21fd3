//! The webhook deliveries table: written when a call ends, read and updated by the sender
//! (src/webhooks), listed by the admin API. Each relay sends the rows it wrote (its
//! `cluster.node_id`, `''` outside a cluster).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Pool, Store};
use crate::booking::error::StoreError;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not yet accepted by the receiver; tried again at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed, or the webhook is no longer configured.
    Failed,
}

impl DeliveryStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// The status a stored word names (`None` for any other word).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Sent as `Voxrelay-Delivery`, the same on every attempt: a receiver drops repeats by it.
    pub id: String,
    /// The webhook's URL.
    pub url: String,
    /// `call.ended`.
    pub event: String,
    /// The call it is about.
    pub call_id: String,
    /// The JSON body, exactly as signed (not in the admin API's list).
    #[serde(skip)]
    pub payload: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status on the last attempt.
    pub last_status: Option<u16>,
    /// Why the last attempt got no answer (refused, timed out), or what the answer was.
    pub last_error: Option<String>,
    /// When the call's event was made.
    pub created_at: DateTime<Utc>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What one attempt changed.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptUpdate {
    /// The delivery's new status.
    pub status: DeliveryStatus,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// The next attempt (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's HTTP status.
    pub last_status: Option<u16>,
    /// What went wrong, if anything.
    pub last_error: Option<String>,
    /// Set when delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    url: String,
    event: String,
    call_id: String,
    payload: String,
    status: String,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Self {
            id: r.id,
            url: r.url,
            event: r.event,
            call_id: r.call_id,
            payload: r.payload,
            // the table's CHECK admits only the three words
            status: DeliveryStatus::parse(&r.status).unwrap_or(DeliveryStatus::Failed),
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: r.next_attempt_at,
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
        }
    }
}

const COLUMNS: &str = "id, url, event, call_id, payload, status, attempts, next_attempt_at, \
                       last_status, last_error, created_at, delivered_at";

/// Which deliveries the admin API lists.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this call's.
    pub call_id: Option<String>,
}

impl Store {
    fn node_key(&self) -> &str {
        self.node.as_deref().unwrap_or("")
    }

    /// Stores new deliveries (pending, due at once), all or none.
    pub async fn insert_deliveries(&self, all: &[Delivery]) -> Result<(), StoreError> {
        let sql = "INSERT INTO webhook_deliveries (id, url, event, call_id, payload, status, attempts, \
                   next_attempt_at, created_at, node_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        macro_rules! insert {
            ($p:ident) => {{
                let mut tx = $p.begin().await?;
                for d in all {
                    sqlx::query(sql)
                        .bind(&d.id)
                        .bind(&d.url)
                        .bind(&d.event)
                        .bind(&d.call_id)
                        .bind(&d.payload)
                        .bind(d.status.as_str())
                        .bind(i64::from(d.attempts))
                        .bind(d.next_attempt_at)
                        .bind(d.created_at)
                        .bind(self.node_key())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }};
        }
        match &self.pool {
            Pool::Sqlite(p) => insert!(p),
            Pool::Postgres(p) => insert!(p),
        }?;
        Ok(())
    }

    /// This relay's pending deliveries due at `now`, oldest first, at most `limit`.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE node_id = $1 AND status = 'pending' \
             AND next_attempt_at <= $2 ORDER BY next_attempt_at, id LIMIT $3"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, DeliveryRow>(&sql)
            .bind(self.node_key())
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Delivery::from).collect())
    }

    /// When this relay's next pending delivery is due, if it has one.
    pub async fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = "SELECT next_attempt_at FROM webhook_deliveries WHERE node_id = $1 AND status = 'pending' \
                   ORDER BY next_attempt_at LIMIT 1";
        let row: Option<(Option<DateTime<Utc>>,)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(self.node_key())
            .fetch_optional(p)
            .await)?;
        Ok(row.and_then(|(t,)| t))
    }

    /// Writes what an attempt at delivery `id` changed.
    pub async fn update_delivery(&self, id: &str, u: &AttemptUpdate) -> Result<(), StoreError> {
        let sql =
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, \
                   last_status = $4, last_error = $5, delivered_at = $6 WHERE id = $7";
        on_pool!(self, p => sqlx::query(sql)
            .bind(u.status.as_str())
            .bind(i64::from(u.attempts))
            .bind(u.next_attempt_at)
            .bind(u.last_status.map(i64::from))
            .bind(u.last_error.as_deref())
            .bind(u.delivered_at)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// The deliveries of every relay, newest first, at most `limit`.
    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE ($1 = '' OR status = $1) \
             AND ($2 = '' OR call_id = $2) ORDER BY created_at DESC, id LIMIT $3"
        );
        let status = filter.status.map_or("", DeliveryStatus::as_str);
        let call = filter.call_id.as_deref().unwrap_or("");
        let rows = on_pool!(self, p => sqlx::query_as::<_, DeliveryRow>(&sql)
            .bind(status)
            .bind(call)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Delivery::from).collect())
    }

    /// In a cluster (PostgreSQL): takes over the pending deliveries of relays that are gone
    /// (no row in `relays` seen within `stale`: killed, or stopped for good), so that another
    /// relay sends them. Atomic per row: two relays adopting at once take each row once.
    /// Returns how many were taken; nothing on SQLite or outside a cluster.
    pub async fn adopt_orphan_deliveries(
        &self,
        stale: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let (Pool::Postgres(p), Some(me)) = (&self.pool, self.node.as_deref()) else {
            return Ok(0);
        };
        let n = sqlx::query(
            "UPDATE webhook_deliveries d SET node_id = $1 \
             WHERE d.status = 'pending' AND d.node_id <> $1 AND NOT EXISTS ( \
               SELECT 1 FROM relays r WHERE r.node_id = d.node_id \
               AND r.last_seen >= now() - make_interval(secs => $2))",
        )
        .bind(me)
        .bind(stale.as_secs_f64())
        .execute(p)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Deletes the finished (delivered or failed) deliveries made before `before`; pending
    /// ones stay until they are done. Returns how many.
    pub async fn prune_deliveries(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = on_pool!(self, p => sqlx::query(
            "DELETE FROM webhook_deliveries WHERE created_at < $1 AND status <> 'pending'")
            .bind(before)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
