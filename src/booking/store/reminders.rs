//! The reminders table: one row per appointment the reminder scheduler (src/reminders) looked
//! at. Written before the first call and claimed with one UPDATE before each, so a restart
//! neither loses nor repeats a reminder, and two relays never call for the same appointment.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::{Booking, BookingRow, Pool, Store, BOOKING_COLUMNS};
use crate::booking::error::StoreError;

/// Where a reminder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReminderStatus {
    /// Waiting for `next_attempt_at`.
    Pending,
    /// A relay is dialling (its `node_id`).
    Calling,
    /// Someone, or a voicemail, answered.
    Done,
    /// No (more) calls: `skip_reason` says why.
    Skipped,
}

impl ReminderStatus {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Calling => "calling",
            Self::Done => "done",
            Self::Skipped => "skipped",
        }
    }

    /// The status a stored word names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "calling" => Some(Self::Calling),
            "done" => Some(Self::Done),
            "skipped" => Some(Self::Skipped),
            _ => None,
        }
    }
}

/// One appointment's reminder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reminder {
    /// The booking's code.
    pub booking_code: String,
    /// The appointment, as planned.
    pub appointment_at: DateTime<Utc>,
    /// Where it stands.
    pub status: ReminderStatus,
    /// Calls placed so far.
    pub attempts: u32,
    /// When the next call is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// How the last call went (`answered`, `busy`, `no_answer`, `unreachable`, `refused`,
    /// `failed`).
    pub last_outcome: Option<String>,
    /// Why no (more) calls (skipped only).
    pub skip_reason: Option<String>,
    /// The last call's id: its record is at `/api/calls/{id}`.
    pub last_call_id: Option<String>,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ReminderRow {
    booking_code: String,
    appointment_at: DateTime<Utc>,
    status: String,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    last_outcome: Option<String>,
    skip_reason: Option<String>,
    last_call_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ReminderRow> for Reminder {
    fn from(r: ReminderRow) -> Self {
        Self {
            booking_code: r.booking_code,
            appointment_at: r.appointment_at,
            // the table's CHECK admits only the four words
            status: ReminderStatus::parse(&r.status).unwrap_or(ReminderStatus::Skipped),
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: r.next_attempt_at,
            last_outcome: r.last_outcome,
            skip_reason: r.skip_reason,
            last_call_id: r.last_call_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "booking_code, appointment_at, status, attempts, next_attempt_at, \
                       last_outcome, skip_reason, last_call_id, created_at, updated_at";

/// What a decision changed in a reminder.
#[derive(Debug, Clone, PartialEq)]
pub struct ReminderUpdate {
    /// The new status.
    pub status: ReminderStatus,
    /// The next call (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// How the last call went.
    pub last_outcome: Option<String>,
    /// Why no more calls.
    pub skip_reason: Option<String>,
    /// The last call's id (kept when `None`).
    pub last_call_id: Option<String>,
}

impl Store {
    /// Active bookings on `from..=to` (dates) that have no reminder row yet.
    pub async fn bookings_without_reminder(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Booking>, StoreError> {
        let cols = BOOKING_COLUMNS
            .split(", ")
            .map(|c| format!("b.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols} FROM bookings b LEFT JOIN reminders r ON r.booking_code = b.code \
             WHERE b.status = 'active' AND b.slot_date >= $1 AND b.slot_date <= $2 \
             AND r.booking_code IS NULL ORDER BY b.slot_date, b.slot_time"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Booking::from).collect())
    }

    /// Reminders planned or given (not skipped) for the active bookings of `phone` on `date`:
    /// one call a day per number reminds of its first appointment that day.
    pub async fn reminders_for_phone_on(
        &self,
        phone: &str,
        date: NaiveDate,
    ) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) FROM reminders r JOIN bookings b ON b.code = r.booking_code \
                   WHERE b.phone = $1 AND b.slot_date = $2 AND b.status = 'active' \
                   AND r.status <> 'skipped'";
        let (n,): (i64,) = on_pool!(self, p => sqlx::query_as(sql)
            .bind(phone)
            .bind(date)
            .fetch_one(p)
            .await)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Writes a new reminder row; a row already there for the booking (another relay's)
    /// is kept. True when this one was written.
    pub async fn insert_reminder(&self, r: &Reminder) -> Result<bool, StoreError> {
        let sql = "INSERT INTO reminders (booking_code, appointment_at, status, attempts, \
                   next_attempt_at, last_outcome, skip_reason, last_call_id, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (booking_code) DO NOTHING";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(&r.booking_code)
            .bind(r.appointment_at)
            .bind(r.status.as_str())
            .bind(i64::from(r.attempts))
            .bind(r.next_attempt_at)
            .bind(r.last_outcome.as_deref())
            .bind(r.skip_reason.as_deref())
            .bind(r.last_call_id.as_deref())
            .bind(r.created_at)
            .bind(r.updated_at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Pending reminders due at `now`, the earliest first, at most `limit`.
    pub async fn due_reminders(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Reminder>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM reminders WHERE status = 'pending' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, booking_code LIMIT $2"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, ReminderRow>(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Reminder::from).collect())
    }

    /// Claims a pending reminder for this relay: status `calling`, one more attempt. False
    /// when another relay claimed it first (or it is no longer pending).
    pub async fn claim_reminder(&self, code: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let sql =
            "UPDATE reminders SET status = 'calling', attempts = attempts + 1, node_id = $1, \
                   next_attempt_at = NULL, updated_at = $2 \
                   WHERE booking_code = $3 AND status = 'pending'";
        let n = on_pool!(self, p => sqlx::query(sql)
            .bind(self.node.as_deref().unwrap_or(""))
            .bind(now)
            .bind(code)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Writes what a decision changed.
    pub async fn update_reminder(
        &self,
        code: &str,
        u: &ReminderUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE reminders SET status = $1, next_attempt_at = $2, \
                   last_outcome = COALESCE($3, last_outcome), skip_reason = $4, updated_at = $5, \
                   last_call_id = COALESCE($6, last_call_id) WHERE booking_code = $7";
        on_pool!(self, p => sqlx::query(sql)
            .bind(u.status.as_str())
            .bind(u.next_attempt_at)
            .bind(u.last_outcome.as_deref())
            .bind(u.skip_reason.as_deref())
            .bind(now)
            .bind(u.last_call_id.as_deref())
            .bind(code)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// One reminder.
    pub async fn reminder(&self, code: &str) -> Result<Option<Reminder>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM reminders WHERE booking_code = $1");
        let row = on_pool!(self, p => sqlx::query_as::<_, ReminderRow>(&sql)
            .bind(code)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(Reminder::from))
    }

    /// Reminders, the latest appointments first, at most `limit`; only `status` when given.
    pub async fn list_reminders(
        &self,
        status: Option<ReminderStatus>,
        limit: u32,
    ) -> Result<Vec<Reminder>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM reminders WHERE ($1 = '' OR status = $1) \
             ORDER BY appointment_at DESC, booking_code LIMIT $2"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, ReminderRow>(&sql)
            .bind(status.map_or("", ReminderStatus::as_str))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(Reminder::from).collect())
    }

    /// Puts back this relay's reminders that were being dialled when it stopped (called at
    /// its start): the call counts as a failed attempt, and the reminder is due at `now`.
    /// Returns how many.
    pub async fn release_own_reminders(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = on_pool!(self, p => sqlx::query(
            "UPDATE reminders SET status = 'pending', next_attempt_at = $1, updated_at = $1, \
             last_outcome = 'failed' WHERE status = 'calling' AND node_id = $2")
            .bind(now)
            .bind(self.node.as_deref().unwrap_or(""))
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// In a cluster (PostgreSQL): puts back the reminders other relays were dialling when
    /// they went (no row in `relays` seen within `stale`), as [`Store::release_own_reminders`]
    /// does. Atomic per row. Nothing on SQLite or outside a cluster.
    pub async fn adopt_orphan_reminders(
        &self,
        stale: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let (Pool::Postgres(p), Some(me)) = (&self.pool, self.node.as_deref()) else {
            return Ok(0);
        };
        let n = sqlx::query(
            "UPDATE reminders m SET status = 'pending', next_attempt_at = $1, updated_at = $1, \
             last_outcome = 'failed' WHERE m.status = 'calling' AND m.node_id <> $2 AND NOT EXISTS ( \
               SELECT 1 FROM relays r WHERE r.node_id = m.node_id \
               AND r.last_seen >= now() - make_interval(secs => $3))",
        )
        .bind(now)
        .bind(me)
        .bind(stale.as_secs_f64())
        .execute(p)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Gives back a claimed reminder whose call could not even be tried (the relay was
    /// full): the attempt does not count; due again at `next`.
    pub async fn unclaim_reminder(
        &self,
        code: &str,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query(
            "UPDATE reminders SET status = 'pending', attempts = attempts - 1, next_attempt_at = $1, \
             updated_at = $2 WHERE booking_code = $3 AND status = 'calling'")
            .bind(next)
            .bind(now)
            .bind(code)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Deletes the reminders of appointments before `before`. Returns how many.
    pub async fn prune_reminders(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = on_pool!(self, p => sqlx::query(
            "DELETE FROM reminders WHERE appointment_at < $1 AND status <> 'calling'")
            .bind(before)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
