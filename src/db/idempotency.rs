//! `Idempotency-Key` on earning creation: the first response is stored in the
//! same transaction as the earning, so a retry finds it and creates nothing.

use sqlx::AnyConnection;
use uuid::Uuid;

pub async fn find(
    conn: &mut AnyConnection,
    user: Uuid,
    key: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT status, body FROM idempotency_keys WHERE user_id = $1 AND key = $2")
        .bind(user.to_string())
        .bind(key)
        .fetch_optional(conn)
        .await
}

pub async fn store(
    conn: &mut AnyConnection,
    user: Uuid,
    key: &str,
    status: i64,
    body: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO idempotency_keys (user_id, key, status, body, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(user.to_string())
        .bind(key)
        .bind(status)
        .bind(body)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Keys are kept for a day, like the retry window of most clients.
pub async fn prune(conn: &mut AnyConnection, before_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before_ms)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
