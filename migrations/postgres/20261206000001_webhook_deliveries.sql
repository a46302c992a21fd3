-- The webhook deliveries (docs/webhooks.md): one row per ended call and configured webhook,
-- written before the first attempt, so a delivery survives a receiver's outage and a restart
-- of the relay. The row is the delivery log the admin API shows.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,                 -- sent as Voxrelay-Delivery, the same on every attempt
    url             TEXT        NOT NULL,             -- the webhook (its [[webhooks]] url)
    event           TEXT        NOT NULL,             -- call.ended
    call_id         TEXT        NOT NULL,
    payload         TEXT        NOT NULL,             -- the JSON body, exactly as signed
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,                      -- pending only
    last_status     BIGINT,                           -- the receiver's last HTTP status
    last_error      TEXT,                             -- or why the last attempt got none
    created_at      TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ,
    node_id         TEXT        NOT NULL DEFAULT ''   -- the relay that sends it (cluster.node_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (node_id, status, next_attempt_at);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
