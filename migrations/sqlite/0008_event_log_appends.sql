-- The event log as a table whose rows are appended at its end.
--
-- Keyed by (stream, seq) WITHOUT ROWID, every event went into its stream's
-- leaf, a random one among all users' (two per REST write). Those leaves
-- hold a few events each, so they split every few inserts, and SQLite's
-- split renumbers its pages through the lock-byte page's number, which
-- makes the commit that follows walk the writer's whole page cache
-- (`pcache1TruncateUnsafe`, 10% of the server's CPU in `bench/run.sh
-- unicast-rest`). With a rowid the events go to the table's last page,
-- shared by consecutive writes, and only the small (stream, seq) index
-- entries land in random leaves. Replays read the same rows through that
-- index.
CREATE TABLE event_log_appended (
    id         INTEGER PRIMARY KEY,
    stream     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event      TEXT NOT NULL,
    envelope   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
INSERT INTO event_log_appended (stream, seq, event, envelope, created_at)
    SELECT stream, seq, event, envelope, created_at FROM event_log ORDER BY created_at, stream, seq;
DROP TABLE event_log;
ALTER TABLE event_log_appended RENAME TO event_log;
CREATE UNIQUE INDEX event_log_by_stream ON event_log (stream, seq);
-- With the stream and sequence in it, the retention pass and the
-- high-water marks read this index alone, as they read the old one (whose
-- entries carried the table's key).
CREATE INDEX event_log_by_time ON event_log (created_at, stream, seq);
