-- On a call the relay placed: who answered, as answering-machine detection found (person,
-- machine, silent, unsure); NULL for calls that came in.
ALTER TABLE calls ADD COLUMN answered_by TEXT;
