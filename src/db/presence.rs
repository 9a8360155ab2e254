//! Cluster presence rows (see migrations/*/0003_presence.sql).

use sqlx::AnyConnection;
use uuid::Uuid;

pub async fn heartbeat(
    conn: &mut AnyConnection,
    server: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO servers (id, heartbeat_at) VALUES ($1, $2) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2",
    )
    .bind(server)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Set this server's stream count for `user` (0 removes the row).
pub async fn set(
    conn: &mut AnyConnection,
    server: &str,
    user: Uuid,
    streams: i64,
) -> Result<(), sqlx::Error> {
    if streams == 0 {
        sqlx::query("DELETE FROM presence WHERE server_id = $1 AND user_id = $2")
            .bind(server)
            .bind(user.to_string())
            .execute(conn)
            .await?;
    } else {
        sqlx::query(
            "INSERT INTO presence (server_id, user_id, streams) VALUES ($1, $2, $3) \
             ON CONFLICT (server_id, user_id) DO UPDATE SET streams = $3",
        )
        .bind(server)
        .bind(user.to_string())
        .bind(streams)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Remove servers whose heartbeat is older than `cutoff`, and their rows.
pub async fn forget_dead(conn: &mut AnyConnection, cutoff: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM presence WHERE server_id IN (SELECT id FROM servers WHERE heartbeat_at < $1)",
    )
    .bind(cutoff)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM servers WHERE heartbeat_at < $1")
        .bind(cutoff)
        .execute(conn)
        .await?;
    Ok(())
}

/// Remove this server (clean shutdown).
pub async fn leave(conn: &mut AnyConnection, server: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM presence WHERE server_id = $1")
        .bind(server)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM servers WHERE id = $1")
        .bind(server)
        .execute(conn)
        .await?;
    Ok(())
}

/// Streams of `user` on other live servers.
pub async fn remote_streams(
    conn: &mut AnyConnection,
    server: &str,
    user: Uuid,
    cutoff: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(p.streams), 0) AS BIGINT) FROM presence p JOIN servers s ON s.id = p.server_id \
         WHERE p.user_id = $1 AND p.server_id <> $2 AND s.heartbeat_at >= $3",
    )
    .bind(user.to_string())
    .bind(server)
    .bind(cutoff)
    .fetch_one(conn)
    .await
}

/// Streams per user on other live servers.
pub async fn remote_all(
    conn: &mut AnyConnection,
    server: &str,
    cutoff: i64,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT p.user_id, CAST(SUM(p.streams) AS BIGINT) FROM presence p JOIN servers s ON s.id = p.server_id \
         WHERE p.server_id <> $1 AND s.heartbeat_at >= $2 GROUP BY p.user_id",
    )
    .bind(server)
    .bind(cutoff)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(u, n)| Uuid::parse_str(&u).ok().map(|u| (u, n)))
        .collect())
}
