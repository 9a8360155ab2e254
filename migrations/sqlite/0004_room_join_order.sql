-- Joining a room also appends `room:joined` to the user's own log stream;
-- its sequence orders the join against the user's cursors, so a resume
-- follows rooms joined after its cursor was issued, even ones already left.
ALTER TABLE room_members ADD COLUMN joined_user_seq INTEGER NOT NULL DEFAULT 0;
