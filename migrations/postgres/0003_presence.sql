-- Cluster presence: each server keeps a heartbeat row and the number of
-- open streams per user on it, so connection counts, the per-user stream
-- limit and force-disconnect cover every server. A server whose heartbeat
-- is older than the cutoff counts as dead and drops out.
CREATE TABLE servers (
    id           TEXT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE presence (
    server_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    streams   BIGINT NOT NULL,
    PRIMARY KEY (server_id, user_id)
);
CREATE INDEX presence_by_user ON presence (user_id);
