-- EarnTrack push schema (SQLite). Money and hours are integer hundredths;
-- timestamps are milliseconds since the epoch; ids are UUID text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    name          TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE platforms (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    name       TEXT NOT NULL,
    color      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, name)
);

CREATE TABLE earnings (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    platform_id  TEXT NOT NULL REFERENCES platforms (id),
    date         TEXT NOT NULL,
    hours_centi  INTEGER,
    amount_cents INTEGER NOT NULL,
    notes        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX earnings_by_user_date ON earnings (user_id, date DESC, created_at DESC, id DESC);

CREATE TABLE idempotency_keys (
    user_id    TEXT NOT NULL,
    key        TEXT NOT NULL,
    status     INTEGER NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
);

-- user_id NULL: a broadcast, listed for every user; read state per user
-- lives in notification_reads, so a broadcast costs one row, not one per user.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    user_id     TEXT,
    type        TEXT NOT NULL,
    title       TEXT NOT NULL,
    message     TEXT NOT NULL,
    duration    INTEGER,
    dismissible INTEGER NOT NULL,
    data        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC, id DESC);

CREATE TABLE notification_reads (
    notification_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    read_at         INTEGER NOT NULL,
    PRIMARY KEY (notification_id, user_id)
);

-- One row per log stream (u:<user>, b, r:<room>): `seq` is the last sequence
-- number handed out, `low` the highest one pruned by retention.
CREATE TABLE streams (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    low INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE event_log (
    stream     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event      TEXT NOT NULL,
    envelope   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE INDEX event_log_by_time ON event_log (created_at);
