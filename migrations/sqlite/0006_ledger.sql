-- Expenses and invoices, beside earnings: the same conventions (money in
-- hundredths, dates as YYYY-MM-DD text, ms timestamps, UUID text ids).

CREATE TABLE expenses (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    date         TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    category     TEXT NOT NULL,
    platform_id  TEXT REFERENCES platforms (id),
    notes        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX expenses_by_user_date ON expenses (user_id, date DESC, created_at DESC, id DESC);

-- The status machine lives in the server (domain/invoice.rs); the column
-- only refuses what no version of it ever writes.
CREATE TABLE invoices (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users (id),
    number              TEXT NOT NULL,
    client              TEXT NOT NULL,
    platform_id         TEXT REFERENCES platforms (id),
    issue_date          TEXT NOT NULL,
    due_date            TEXT NOT NULL,
    amount_cents        INTEGER NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('draft', 'sent', 'paid', 'void')),
    paid_at             INTEGER,
    notes               TEXT,
    overdue_notified_at INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (user_id, number)
);
CREATE INDEX invoices_by_user_date ON invoices (user_id, issue_date DESC, created_at DESC, id DESC);
-- What the overdue sweep scans: only invoices it may still have to warn about.
CREATE INDEX invoices_unwarned_by_due ON invoices (due_date)
    WHERE overdue_notified_at IS NULL AND status IN ('draft', 'sent');
