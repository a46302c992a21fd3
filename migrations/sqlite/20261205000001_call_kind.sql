-- Where a call came from: 'phone' (SIP) or 'web' (a browser's call, the relay attached over
-- the realtime sideband).
ALTER TABLE calls ADD COLUMN kind TEXT NOT NULL DEFAULT 'phone';
