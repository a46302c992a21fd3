-- Call recordings: where the call's WAV is, how big and long, and when retention deleted it.
ALTER TABLE calls ADD COLUMN recording_path TEXT;
ALTER TABLE calls ADD COLUMN recording_bytes INTEGER;
ALTER TABLE calls ADD COLUMN recording_ms INTEGER;                   -- length
ALTER TABLE calls ADD COLUMN recording_offset_ms INTEGER;            -- its start, from the call's start
ALTER TABLE calls ADD COLUMN recording_deleted_at TEXT;
