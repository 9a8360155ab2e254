//! `Idempotency-Key` on earning creation: the first response is stored in the
//! same transaction as the earning, so a retry finds it and creates nothing.

use uuid::Uuid;

use super::exec::Exec;
use crate::args;

pub async fn find(
    conn: &mut dyn Exec,
    user: Uuid,
    key: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let row = conn
        .fetch_optional(
            "SELECT status, body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            args![user, key],
        )
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

pub async fn store(
    conn: &mut dyn Exec,
    user: Uuid,
    key: &str,
    status: i64,
    body: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    conn.execute(
        "INSERT INTO idempotency_keys (user_id, key, status, body, created_at) VALUES ($1, $2, $3, $4, $5)",
        args![user, key, status, body, now],
    )
    .await?;
    Ok(())
}

/// On the writer, once a minute: by `idempotency_keys_by_age`, so it costs
/// the aged keys, not a scan of all of them.
const PRUNE: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";

/// Keys are kept for a day, like the retry window of most clients.
pub async fn prune(conn: &mut dyn Exec, before_ms: i64) -> Result<u64, sqlx::Error> {
    conn.execute(PRUNE, args![before_ms]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    #[tokio::test]
    async fn the_daily_prune_searches_an_index_instead_of_scanning_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("i.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", PRUNE.replace("$1", "?")))
                .bind(0_i64)
                .fetch_all(&db.read)
                .await
                .unwrap();
        let steps: Vec<&str> = plan.iter().map(|step| step.3.as_str()).collect();
        assert!(
            steps
                .iter()
                .any(|s| s.contains("USING INDEX idempotency_keys_by_age")),
            "{steps:?}"
        );
        assert!(!steps.iter().any(|s| s.starts_with("SCAN")), "{steps:?}");
    }
}
