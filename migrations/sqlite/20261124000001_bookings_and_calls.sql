-- Appointments. Dates and times are the clinic's wall clock (booking.time_zone).
CREATE TABLE bookings (
    id           INTEGER PRIMARY KEY,
    code         TEXT    NOT NULL UNIQUE,             -- confirmation code, also the booking id callers use
    patient_name TEXT    NOT NULL,
    phone        TEXT    NOT NULL,                    -- E.164
    slot_date    TEXT    NOT NULL,                    -- YYYY-MM-DD
    slot_time    TEXT    NOT NULL,                    -- HH:MM:SS
    status       TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'cancelled')),
    created_at   TEXT    NOT NULL,
    cancelled_at TEXT
);

-- No double booking: at most one active booking per slot, enforced by the database itself.
CREATE UNIQUE INDEX bookings_active_slot ON bookings (slot_date, slot_time) WHERE status = 'active';
CREATE INDEX bookings_phone ON bookings (phone, slot_date);
CREATE INDEX bookings_date ON bookings (slot_date, slot_time);

-- One row per finished call, written by the bridge at hang-up, read by the admin API.
CREATE TABLE calls (
    id          TEXT PRIMARY KEY,
    caller      TEXT NOT NULL,
    callee      TEXT NOT NULL,
    agent       TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    answered_at TEXT,
    ended_at    TEXT,
    outcome     TEXT NOT NULL,
    transcript  TEXT NOT NULL DEFAULT '[]',           -- JSON
    tool_calls  TEXT NOT NULL DEFAULT '[]'            -- JSON
);
CREATE INDEX calls_started ON calls (started_at);
