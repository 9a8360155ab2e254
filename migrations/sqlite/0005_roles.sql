-- The role is stored on the user and read on every request (never taken
-- from the token): `earntrack admin grant|revoke <email>` changes it.
-- token_version is bumped by a role change, logout-everywhere and a password
-- change; a token issued under an older version is no longer accepted.
-- access_changed_at (ms) is what every server polls to learn, within a
-- second, that a user's access changed, wherever the change was made.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'user';
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN access_changed_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX users_access_changed_at ON users (access_changed_at);
