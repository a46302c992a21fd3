-- Appointments. Dates and times are the clinic's wall clock (booking.time_zone).
CREATE TABLE bookings (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code         TEXT        NOT NULL UNIQUE,         -- confirmation code, also the booking id callers use
    patient_name TEXT        NOT NULL,
    phone        TEXT        NOT NULL,                -- E.164
    slot_date    DATE        NOT NULL,
    slot_time    TIME        NOT NULL,
    status       TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'cancelled')),
    created_at   TIMESTAMPTZ NOT NULL,
    cancelled_at TIMESTAMPTZ
);

-- No double booking: at most one active booking per slot, enforced by the database itself,
-- across every relay that shares this database.
CREATE UNIQUE INDEX bookings_active_slot ON bookings (slot_date, slot_time) WHERE status = 'active';
CREATE INDEX bookings_phone ON bookings (phone, slot_date);
CREATE INDEX bookings_date ON bookings (slot_date, slot_time);

-- One row per finished call, written by the bridge at hang-up, read by the admin API.
CREATE TABLE calls (
    id          TEXT PRIMARY KEY,
    caller      TEXT        NOT NULL,
    callee      TEXT        NOT NULL,
    agent       TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    answered_at TIMESTAMPTZ,
    ended_at    TIMESTAMPTZ,
    outcome     TEXT        NOT NULL,
    transcript  JSONB       NOT NULL DEFAULT '[]',
    tool_calls  JSONB       NOT NULL DEFAULT '[]'
);
CREATE INDEX calls_started ON calls (started_at);
