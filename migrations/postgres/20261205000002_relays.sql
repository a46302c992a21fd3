-- The relays of a cluster (cluster.node_id): each writes its row every heartbeat, and the
-- admin API of any relay reads the others' from here. PostgreSQL only: a cluster shares one
-- PostgreSQL database.
CREATE TABLE relays (
    node_id     TEXT PRIMARY KEY,
    -- a random id per process: a second process with the same node_id is told apart
    incarnation TEXT NOT NULL,
    sip_address TEXT NOT NULL,
    admin_url   TEXT NOT NULL,
    live_calls  INTEGER NOT NULL,
    capacity    INTEGER NOT NULL,
    draining    BOOLEAN NOT NULL DEFAULT FALSE,
    started_at  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL
);
