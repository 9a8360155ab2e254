//! Platforms (Upwork, Fiverr, …), owned by one user each.

use sqlx::AnyConnection;
use uuid::Uuid;

use super::exec::{Exec, Statement};
use crate::args;

use crate::domain::earning::Platform;

fn from_row((id, name, color): (String, String, String)) -> Platform {
    Platform {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        name,
        color,
    }
}

pub async fn list(conn: &mut AnyConnection, user: Uuid) -> Result<Vec<Platform>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT id, name, color FROM platforms WHERE user_id = $1 ORDER BY name, id",
    )
    .bind(user.to_string())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The platform if it exists and belongs to `user`.
pub async fn get(
    conn: &mut dyn Exec,
    user: Uuid,
    id: Uuid,
) -> Result<Option<Platform>, sqlx::Error> {
    let row = conn
        .fetch_optional(
            "SELECT id, name, color FROM platforms WHERE id = $1 AND user_id = $2",
            args![id, user],
        )
        .await?;
    row.map(|r| Ok(from_row((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))))
        .transpose()
}

/// Insert (run it, or commit it with its event: `Tx::append_with`); a
/// name the user already has is a unique violation.
pub fn insert(user: Uuid, p: &Platform, now: i64) -> Statement {
    Statement::new(
        "INSERT INTO platforms (id, user_id, name, color, created_at) VALUES ($1, $2, $3, $4, $5)",
        args![p.id, user, &p.name, &p.color, now],
    )
}
