//! The booking store: bookings and call records in SQLite (default) or PostgreSQL.
//!
//! The backend is chosen from the URL. Both share one set of SQL texts where the dialects
//! agree (`$1` placeholders and `RETURNING` work in both), and the schema comes from migrations
//! embedded in the binary and applied on open.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::code;
use super::error::{InsertError, StoreError};

/// Tries at finding an unused confirmation code before giving up.
const CODE_TRIES: usize = 8;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A local SQLite file (WAL, `synchronous = FULL`).
    Sqlite,
    /// A PostgreSQL server, possibly shared by several relays.
    Postgres,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on whichever pool the store has; `$p` is the pool reference.
macro_rules! on_pool {
    ($self:ident, $p:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

// after the macro, which it uses
mod deliveries;
mod reminders;
pub use deliveries::{AttemptUpdate, Delivery, DeliveryFilter, DeliveryStatus};
pub use reminders::{Reminder, ReminderStatus, ReminderUpdate};

/// Whether a booking holds its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Holds its slot.
    Active,
    /// Cancelled; the slot is free again.
    Cancelled,
}

/// One appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Booking {
    /// Row id.
    pub id: i64,
    /// Confirmation code (what callers and the agent use as the booking id).
    pub code: String,
    /// The patient's name, cleaned.
    pub patient_name: String,
    /// E.164 phone number.
    pub phone: String,
    /// Wall-clock date in the clinic's time zone.
    pub date: NaiveDate,
    /// Wall-clock start time in the clinic's time zone.
    pub time: NaiveTime,
    /// Active or cancelled.
    pub status: Status,
    /// When it was booked.
    pub created_at: DateTime<Utc>,
    /// When it was cancelled, if it was.
    pub cancelled_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct BookingRow {
    id: i64,
    code: String,
    patient_name: String,
    phone: String,
    slot_date: NaiveDate,
    slot_time: NaiveTime,
    status: String,
    created_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
}

impl From<BookingRow> for Booking {
    fn from(r: BookingRow) -> Self {
        Self {
            id: r.id,
            code: r.code,
            patient_name: r.patient_name,
            phone: r.phone,
            date: r.slot_date,
            time: r.slot_time,
            status: if r.status == "active" {
                Status::Active
            } else {
                Status::Cancelled
            },
            created_at: r.created_at,
            cancelled_at: r.cancelled_at,
        }
    }
}

/// What a new booking needs; the store adds the code and the times.
#[derive(Debug, Clone)]
pub struct NewBooking {
    /// The patient's name, already cleaned.
    pub patient_name: String,
    /// E.164 phone number.
    pub phone: String,
    /// Wall-clock date.
    pub date: NaiveDate,
    /// Wall-clock start time (seconds zero).
    pub time: NaiveTime,
}

/// One finished call, as the bridge records it at hang-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// The call's id (the bridge's `CallId` as text).
    pub id: String,
    /// Who called (From).
    pub caller: String,
    /// The number called (To).
    pub callee: String,
    /// The agent that answered.
    pub agent: String,
    /// A phone call or a browser's call.
    pub kind: CallKind,
    /// When the INVITE arrived.
    pub started_at: DateTime<Utc>,
    /// When the call was answered, if it was.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// How it ended (`completed`, `caller_hangup`, `rejected`, …; the bridge's words).
    pub outcome: String,
    /// The transcript, as the bridge shapes it (usually an array of turns).
    pub transcript: serde_json::Value,
    /// The tool calls with arguments and results, as the bridge shapes them.
    pub tool_calls: serde_json::Value,
    /// The call's recording, when it was recorded.
    pub recording: Option<RecordingRef>,
    /// The relay that ran the call and holds its recording (`cluster.node_id`); `None`
    /// outside a cluster. Written by the store from [`Store::for_node`], never by the caller.
    pub node: Option<String>,
    /// On a call the relay placed: who answered (`person`, `machine`, `silent`, `unsure`),
    /// as answering-machine detection found.
    pub answered_by: Option<String>,
}

impl CallRecord {
    /// The record of a call the relay placed that nobody answered; `outcome` says how
    /// (`busy`, `no_answer`, `refused`, `failed`).
    pub fn unanswered(
        id: String,
        caller: String,
        callee: String,
        agent: String,
        started_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
        outcome: &str,
    ) -> Self {
        Self {
            id,
            caller,
            callee,
            agent,
            kind: CallKind::Phone,
            started_at,
            answered_at: None,
            ended_at: Some(ended_at),
            outcome: outcome.to_string(),
            transcript: serde_json::json!([]),
            tool_calls: serde_json::json!([]),
            recording: None,
            node: None,
            answered_by: None,
        }
    }
}

/// Where a call came from: a phone line (SIP) or a browser (`/talk`, WebRTC straight to the
/// realtime service, the relay attached over the sideband).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// A SIP call.
    #[default]
    Phone,
    /// A browser's WebRTC call.
    Web,
}

impl CallKind {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Web => "web",
        }
    }

    /// From the stored word (anything unknown is a phone call: the older records).
    pub fn parse(s: &str) -> Self {
        match s {
            "web" => Self::Web,
            _ => Self::Phone,
        }
    }
}

/// Where a call's recording is and what it holds. The file's path stays on the relay: it is
/// never serialised (the admin API serves the file by call id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecordingRef {
    /// The WAV file (absolute).
    #[serde(skip)]
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its length in ms.
    pub duration_ms: u64,
    /// When it starts, in ms from the call's start (the clock of the transcript's `at_ms`).
    pub offset_ms: u64,
    /// When retention deleted the file (`recording.keep_days`); `None` while it is there.
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct CallRow {
    id: String,
    caller: String,
    callee: String,
    agent: String,
    kind: String,
    started_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    outcome: String,
    transcript: String,
    tool_calls: String,
    recording_path: Option<String>,
    recording_bytes: Option<i64>,
    recording_ms: Option<i64>,
    recording_offset_ms: Option<i64>,
    recording_deleted_at: Option<DateTime<Utc>>,
    node_id: Option<String>,
    answered_by: Option<String>,
}

impl TryFrom<CallRow> for CallRecord {
    type Error = StoreError;
    fn try_from(r: CallRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            caller: r.caller,
            callee: r.callee,
            agent: r.agent,
            kind: CallKind::parse(&r.kind),
            started_at: r.started_at,
            answered_at: r.answered_at,
            ended_at: r.ended_at,
            outcome: r.outcome,
            transcript: serde_json::from_str(&r.transcript)?,
            tool_calls: serde_json::from_str(&r.tool_calls)?,
            recording: r.recording_path.map(|path| RecordingRef {
                path,
                bytes: r.recording_bytes.unwrap_or(0).max(0) as u64,
                duration_ms: r.recording_ms.unwrap_or(0).max(0) as u64,
                offset_ms: r.recording_offset_ms.unwrap_or(0).max(0) as u64,
                deleted_at: r.recording_deleted_at,
            }),
            node: r.node_id,
            answered_by: r.answered_by,
        })
    }
}

const BOOKING_COLUMNS: &str =
    "id, code, patient_name, phone, slot_date, slot_time, status, created_at, cancelled_at";

/// Bookings and call records in one database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// `cluster.node_id`, written into each call record this store writes.
    node: Option<std::sync::Arc<str>>,
}

impl Store {
    /// Opens the database named by `url` (`sqlite://file.db`, `sqlite::memory:`,
    /// `postgres://…`) and applies the embedded migrations. A SQLite file is created when
    /// missing, and runs in WAL mode with `synchronous = FULL`, so a booking whose insert
    /// returned survives a crash of the process or the machine.
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let max_connections = max_connections.max(1);
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                // Writers queue on SQLite's lock rather than fail while another one commits.
                .busy_timeout(Duration::from_secs(10));
            // Every connection to `:memory:` is its own empty database: keep to one.
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(if in_memory { 1 } else { max_connections })
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            // sqlx takes an advisory lock here, so relays starting together migrate once.
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::BadUrl(format!(
                "unsupported database URL {:?}: use sqlite://FILE or postgres://…",
                crate::config::redact_url(url)
            )));
        };
        Ok(Self { pool, node: None })
    }

    /// This store, writing `node` (this relay's `cluster.node_id`) into the call records it
    /// stores.
    pub fn for_node(mut self, node: Option<&str>) -> Self {
        self.node = node.map(std::sync::Arc::from);
        self
    }

    /// Opens the database of a `[booking]` config section.
    pub async fn open_config(config: &super::BookingConfig) -> Result<Self, StoreError> {
        Self::open(&config.database_url, config.max_connections).await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The PostgreSQL pool, for the cluster's `relays` table (`None` on SQLite).
    pub fn postgres(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(p) => Some(p),
            Pool::Sqlite(_) => None,
        }
    }

    /// Answers when the database does (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Closes every connection; later calls fail with a database error.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// The SQLite `journal_mode` and `synchronous` settings of a pooled connection
    /// (`None` on PostgreSQL); shown by tests and diagnostics.
    pub async fn sqlite_durability(&self) -> Result<Option<(String, i64)>, StoreError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&mut *conn)
                    .await?;
                let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(Some((mode, sync)))
            }
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// Inserts a booking with a fresh confirmation code. The unique index on active slots
    /// decides between racing callers: exactly one insert per slot succeeds, the others get
    /// [`InsertError::SlotTaken`].
    pub async fn insert_booking(
        &self,
        new: &NewBooking,
        now: DateTime<Utc>,
    ) -> Result<Booking, InsertError> {
        let sql = format!(
            "INSERT INTO bookings (code, patient_name, phone, slot_date, slot_time, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6) RETURNING {BOOKING_COLUMNS}"
        );
        for _ in 0..CODE_TRIES {
            let code = code::generate();
            let res = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql)
                .bind(&code)
                .bind(&new.patient_name)
                .bind(&new.phone)
                .bind(new.date)
                .bind(new.time)
                .bind(now)
                .fetch_one(p)
                .await);
            match res {
                Ok(row) => return Ok(row.into()),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    if is_slot_violation(e.as_ref()) {
                        return Err(InsertError::SlotTaken);
                    }
                    // The code was taken: draw another.
                }
                Err(e) => return Err(StoreError::from(e).into()),
            }
        }
        Err(StoreError::CodesExhausted.into())
    }

    /// Cancels the active booking with `code` made with `phone` (E.164); `None` when there is
    /// no such active booking. The phone is part of the statement, so a booking of another
    /// number is never cancelled whatever the caller of this did or did not check.
    pub async fn cancel_booking(
        &self,
        code: &str,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Booking>, StoreError> {
        let sql = format!(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = $1 \
             WHERE code = $2 AND phone = $3 AND status = 'active' RETURNING {BOOKING_COLUMNS}"
        );
        let row = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql).bind(now).bind(code).bind(phone).fetch_optional(p).await)?;
        Ok(row.map(Into::into))
    }

    /// The booking with confirmation code `code`, active or not.
    pub async fn booking_by_code(&self, code: &str) -> Result<Option<Booking>, StoreError> {
        let sql = format!("SELECT {BOOKING_COLUMNS} FROM bookings WHERE code = $1");
        let row = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql).bind(code).fetch_optional(p).await)?;
        Ok(row.map(Into::into))
    }

    /// The active booking holding a slot, if any.
    pub async fn active_booking_at(
        &self,
        date: NaiveDate,
        time: NaiveTime,
    ) -> Result<Option<Booking>, StoreError> {
        let sql = format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings WHERE slot_date = $1 AND slot_time = $2 AND status = 'active'"
        );
        let row = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql).bind(date).bind(time).fetch_optional(p).await)?;
        Ok(row.map(Into::into))
    }

    /// The slots held by active bookings from `start` to `end`, both included.
    pub async fn taken_slots(
        &self,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<Vec<(NaiveDate, NaiveTime)>, StoreError> {
        // One row per day with the day's times joined: a week of a busy schedule is a
        // thousand slots, and SQLite hands rows over one at a time from its worker thread.
        let agg = match self.pool {
            Pool::Sqlite(_) => "group_concat(slot_time, ',')",
            Pool::Postgres(_) => "string_agg(slot_time::text, ',')",
        };
        let sql = format!(
            "SELECT slot_date, {agg} FROM bookings \
             WHERE status = 'active' AND slot_date >= $1 AND slot_date <= $2 GROUP BY slot_date"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, (NaiveDate, String)>(&sql)
            .bind(start)
            .bind(end)
            .fetch_all(p)
            .await)?;
        let mut out = Vec::new();
        for (date, times) in rows {
            for t in times.split(',') {
                let time = NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
                    .map_err(|_| StoreError::Corrupt(format!("slot_time {t:?} on {date}")))?;
                out.push((date, time));
            }
        }
        Ok(out)
    }

    /// Every booking on `date`, active and cancelled, by time (for `GET /api/bookings?date=`).
    pub async fn bookings_on(&self, date: NaiveDate) -> Result<Vec<Booking>, StoreError> {
        let sql = format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings WHERE slot_date = $1 ORDER BY slot_time, id"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql).bind(date).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The active bookings of `phone` (E.164) on or after `from`, soonest first.
    pub async fn active_bookings_for_phone(
        &self,
        phone: &str,
        from: NaiveDate,
    ) -> Result<Vec<Booking>, StoreError> {
        let sql = format!(
            "SELECT {BOOKING_COLUMNS} FROM bookings WHERE phone = $1 AND slot_date >= $2 AND status = 'active' \
             ORDER BY slot_date, slot_time"
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, BookingRow>(&sql).bind(phone).bind(from).fetch_all(p).await)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Inserts many active bookings in one transaction with the given codes (seeding for
    /// benchmarks, imports). Fails as a whole on any conflict.
    pub async fn insert_bookings_bulk(
        &self,
        rows: &[(String, NewBooking)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO bookings (code, patient_name, phone, slot_date, slot_time, status, created_at) \
                   VALUES ($1, $2, $3, $4, $5, 'active', $6)";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (code, b) in rows {
                sqlx::query(sql)
                    .bind(code)
                    .bind(&b.patient_name)
                    .bind(&b.phone)
                    .bind(b.date)
                    .bind(b.time)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Stores a finished call; writing the same id again replaces the record (the bridge may
    /// retry after a fault).
    pub async fn insert_call(&self, call: &CallRecord) -> Result<(), StoreError> {
        let transcript = serde_json::to_string(&call.transcript)?;
        let tool_calls = serde_json::to_string(&call.tool_calls)?;
        let (t, c) = match self.pool {
            Pool::Sqlite(_) => ("$9", "$10"),
            Pool::Postgres(_) => ("$9::jsonb", "$10::jsonb"),
        };
        let sql = format!(
            "INSERT INTO calls (id, caller, callee, agent, started_at, answered_at, ended_at, outcome, transcript, tool_calls, \
             recording_path, recording_bytes, recording_ms, recording_offset_ms, recording_deleted_at, kind, node_id, answered_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {t}, {c}, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (id) DO UPDATE SET caller = excluded.caller, callee = excluded.callee, agent = excluded.agent, kind = excluded.kind, \
             node_id = excluded.node_id, answered_by = excluded.answered_by, \
             started_at = excluded.started_at, answered_at = excluded.answered_at, ended_at = excluded.ended_at, \
             outcome = excluded.outcome, transcript = excluded.transcript, tool_calls = excluded.tool_calls, \
             recording_path = excluded.recording_path, recording_bytes = excluded.recording_bytes, \
             recording_ms = excluded.recording_ms, recording_offset_ms = excluded.recording_offset_ms, \
             recording_deleted_at = excluded.recording_deleted_at"
        );
        let rec = call.recording.as_ref();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        on_pool!(self, p => sqlx::query(&sql)
            .bind(&call.id)
            .bind(&call.caller)
            .bind(&call.callee)
            .bind(&call.agent)
            .bind(call.started_at)
            .bind(call.answered_at)
            .bind(call.ended_at)
            .bind(&call.outcome)
            .bind(&transcript)
            .bind(&tool_calls)
            .bind(rec.map(|r| r.path.as_str()))
            .bind(rec.map(|r| int(r.bytes)))
            .bind(rec.map(|r| int(r.duration_ms)))
            .bind(rec.map(|r| int(r.offset_ms)))
            .bind(rec.and_then(|r| r.deleted_at))
            .bind(call.kind.as_str())
            .bind(self.node.as_deref())
            .bind(call.answered_by.as_deref())
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Deletes the call records of calls that started before `before`; returns how many.
    /// (Bookings are not touched: they are the clinic's schedule, not call logs.)
    pub async fn prune_calls(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // SQLite keeps the times as RFC 3339 text in UTC, written the same way as this bound
        // value, so the text comparison orders them as times.
        let n = on_pool!(self, p => sqlx::query("DELETE FROM calls WHERE started_at < $1")
            .bind(before)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// The calls this relay ran (its [`Store::for_node`]; in a cluster the database holds
    /// every relay's, and each recording is on its own relay's disk) that started before
    /// `before` and whose recording is still there: (id, path).
    pub async fn recordings_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = "SELECT id, recording_path FROM calls WHERE started_at < $1 \
                   AND recording_path IS NOT NULL AND recording_deleted_at IS NULL \
                   AND (node_id = $2 OR (node_id IS NULL AND $3))";
        let rows: Vec<(String, String)> = on_pool!(self, p => sqlx::query_as(sql)
            .bind(before)
            .bind(self.node.as_deref())
            .bind(self.node.is_none())
            .fetch_all(p)
            .await)?;
        Ok(rows)
    }

    /// Notes that the recording of call `id` was deleted at `at`.
    pub async fn mark_recording_deleted(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_pool!(self, p => sqlx::query("UPDATE calls SET recording_deleted_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// One call record by id.
    pub async fn get_call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("SELECT {} FROM calls WHERE id = $1", self.call_columns());
        let row = on_pool!(self, p => sqlx::query_as::<_, CallRow>(&sql).bind(id).fetch_optional(p).await)?;
        row.map(CallRecord::try_from).transpose()
    }

    /// The most recent call records, newest first, at most `limit`.
    pub async fn list_calls(&self, limit: u32) -> Result<Vec<CallRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM calls ORDER BY started_at DESC, id LIMIT $1",
            self.call_columns()
        );
        let rows = on_pool!(self, p => sqlx::query_as::<_, CallRow>(&sql).bind(i64::from(limit)).fetch_all(p).await)?;
        rows.into_iter().map(CallRecord::try_from).collect()
    }

    fn call_columns(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => {
                "id, caller, callee, agent, kind, started_at, answered_at, ended_at, outcome, transcript, tool_calls, \
                 recording_path, recording_bytes, recording_ms, recording_offset_ms, recording_deleted_at, node_id, answered_by"
            }
            Pool::Postgres(_) => {
                "id, caller, callee, agent, kind, started_at, answered_at, ended_at, outcome, \
                 transcript::text AS transcript, tool_calls::text AS tool_calls, \
                 recording_path, recording_bytes, recording_ms, recording_offset_ms, recording_deleted_at, node_id, answered_by"
            }
        }
    }
}

/// Whether a unique violation came from the one-active-booking-per-slot index (rather than
/// from the confirmation code).
fn is_slot_violation(e: &dyn sqlx::error::DatabaseError) -> bool {
    // PostgreSQL names the index; SQLite names the columns in its message.
    e.constraint() == Some("bookings_active_slot") || e.message().contains("slot_date")
}
