-- Call recordings: where the call's WAV is, how big and long, and when retention deleted it.
ALTER TABLE calls
    ADD COLUMN recording_path       TEXT,
    ADD COLUMN recording_bytes      BIGINT,
    ADD COLUMN recording_ms         BIGINT,       -- length
    ADD COLUMN recording_offset_ms  BIGINT,       -- its start, from the call's start
    ADD COLUMN recording_deleted_at TIMESTAMPTZ;
CREATE INDEX calls_recorded ON calls (started_at) WHERE recording_path IS NOT NULL AND recording_deleted_at IS NULL;
