-- The relay that ran the call (cluster.node_id), so any relay of a cluster can send a request
-- about an ended call (its recording) to the relay that has the file. NULL outside a cluster.
ALTER TABLE calls ADD COLUMN node_id TEXT;
