//! Rooms and membership history.

use sqlx::AnyConnection;
use uuid::Uuid;

use super::exec::Exec;
use crate::args;

use crate::domain::stream::StreamKey;

/// The id of room `name`, created on first use.
pub async fn ensure(conn: &mut dyn Exec, name: &str) -> Result<i64, sqlx::Error> {
    conn.execute(
        "INSERT INTO rooms (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        args![name],
    )
    .await?;
    conn.fetch_one("SELECT id FROM rooms WHERE name = $1", args![name])
        .await?
        .try_get(0)
}

/// Lock the room's log stream (as `event_log::append` does, without taking
/// a number) and return its last sequence: a membership change is ordered
/// exactly between two of the room's events.
async fn lock_stream(conn: &mut dyn Exec, room: i64) -> Result<i64, sqlx::Error> {
    conn.fetch_one(
        "INSERT INTO streams (key, seq, low) VALUES ($1, 0, 0) \
         ON CONFLICT (key) DO UPDATE SET seq = streams.seq RETURNING seq",
        args![StreamKey::Room(room).to_string()],
    )
    .await?
    .try_get(0)
}

/// Add `user` to `room`; the room sequence they join at, or `None` when
/// they already are a member.
pub async fn join(conn: &mut dyn Exec, room: i64, user: Uuid) -> Result<Option<i64>, sqlx::Error> {
    let seq = lock_stream(conn, room).await?;
    let member = conn
        .fetch_optional(
            "SELECT joined_seq FROM room_members \
             WHERE room_id = $1 AND user_id = $2 AND left_seq IS NULL",
            args![room, user],
        )
        .await?;
    if member.is_some() {
        return Ok(None);
    }
    // Leaving and re-joining between the same two events reopens the
    // interval instead of adding an empty one.
    let reopened = conn
        .execute(
            "UPDATE room_members SET left_seq = NULL WHERE room_id = $1 AND user_id = $2 AND left_seq = $3",
            args![room, user, seq],
        )
        .await?;
    if reopened == 0 {
        conn.execute(
            "INSERT INTO room_members (room_id, user_id, joined_seq, left_seq) VALUES ($1, $2, $3, NULL)",
            args![room, user, seq],
        )
        .await?;
    }
    Ok(Some(seq))
}

/// Remove `user` from `room`; `false` when they were not a member.
pub async fn leave(conn: &mut dyn Exec, room: i64, user: Uuid) -> Result<bool, sqlx::Error> {
    let seq = lock_stream(conn, room).await?;
    let left = conn
        .execute(
            "UPDATE room_members SET left_seq = $1 \
             WHERE room_id = $2 AND user_id = $3 AND left_seq IS NULL",
            args![seq, room, user],
        )
        .await?;
    Ok(left > 0)
}

pub async fn find(conn: &mut dyn Exec, name: &str) -> Result<Option<i64>, sqlx::Error> {
    conn.fetch_optional("SELECT id FROM rooms WHERE name = $1", args![name])
        .await?
        .map(|r| r.try_get(0))
        .transpose()
}

/// The rooms `user` is in now, with the sequence they joined at.
pub async fn memberships(
    conn: &mut AnyConnection,
    user: Uuid,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_id, joined_seq FROM room_members WHERE user_id = $1 AND left_seq IS NULL",
    )
    .bind(user.to_string())
    .fetch_all(conn)
    .await
}

/// Every room `user` has ever been a member of (left ones included).
pub async fn ever_joined(
    conn: &mut AnyConnection,
    user: Uuid,
) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
    let rooms: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT room_id FROM room_members WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_all(conn)
            .await?;
    Ok(rooms.into_iter().collect())
}

/// Every current membership (room, user), to route room events live.
pub async fn all_members(conn: &mut AnyConnection) -> Result<Vec<(i64, Uuid)>, sqlx::Error> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT room_id, user_id FROM room_members WHERE left_seq IS NULL")
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(r, u)| Uuid::parse_str(&u).ok().map(|u| (r, u)))
        .collect())
}

/// Record the user-stream sequence of the `room:joined` event of the open
/// membership (see migrations/*/0004_room_join_order.sql).
pub async fn set_join_order(
    conn: &mut dyn Exec,
    room: i64,
    user: Uuid,
    user_seq: i64,
) -> Result<(), sqlx::Error> {
    conn.execute(
        "UPDATE room_members SET joined_user_seq = $1 WHERE room_id = $2 AND user_id = $3 AND left_seq IS NULL",
        args![user_seq, room, user],
    )
    .await?;
    Ok(())
}

/// Rooms the user joined after their own stream's position `after` (also
/// ones left since), each with the room sequence of the earliest such join.
pub async fn joined_since(
    conn: &mut AnyConnection,
    user: Uuid,
    after: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT room_id, MIN(joined_seq) FROM room_members \
         WHERE user_id = $1 AND joined_user_seq > $2 GROUP BY room_id",
    )
    .bind(user.to_string())
    .bind(after)
    .fetch_all(conn)
    .await
}
