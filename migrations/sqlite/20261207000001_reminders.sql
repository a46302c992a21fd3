-- Reminder calls (docs/reminders.md): one row per appointment the scheduler looked at, written
-- before its first call, so that a restart neither loses nor repeats a reminder. A relay claims
-- a due row (status 'calling', its node_id) with one UPDATE before it dials.
CREATE TABLE reminders (
    booking_code    TEXT PRIMARY KEY,                 -- the booking (bookings.code)
    appointment_at  TEXT NOT NULL,                     -- the appointment's instant, as planned
    status          TEXT NOT NULL CHECK (status IN ('pending', 'calling', 'done', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,           -- calls placed so far
    next_attempt_at TEXT,                              -- pending only
    last_outcome    TEXT,                             -- answered, busy, no_answer, unreachable, refused, failed
    skip_reason     TEXT,                             -- skipped only: why no (more) calls
    last_call_id    TEXT,                             -- the last call's id (its record in calls)
    node_id         TEXT NOT NULL DEFAULT '',         -- the relay placing the call (cluster.node_id)
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX reminders_due ON reminders (status, next_attempt_at);
CREATE INDEX reminders_appointment ON reminders (appointment_at);
