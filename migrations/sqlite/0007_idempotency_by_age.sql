-- The retention pass deletes keys older than a day once a minute, on the
-- writer: without this index that is a scan of every stored key while all
-- writes wait behind it.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
