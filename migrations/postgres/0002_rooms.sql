-- Rooms: named groups of users that admin events can target. Membership is
-- kept as history: a member sees the room's events with
-- joined_seq < seq <= left_seq (left_seq NULL while still a member), live and
-- on resume, and none from before joining or after leaving.
CREATE TABLE rooms (
    id   BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE room_members (
    room_id    BIGINT NOT NULL REFERENCES rooms (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    joined_seq BIGINT NOT NULL,
    left_seq   BIGINT,
    PRIMARY KEY (room_id, user_id, joined_seq)
);
CREATE INDEX room_members_by_user ON room_members (user_id, left_seq);
