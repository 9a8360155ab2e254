//! Accounts.

use sqlx::AnyConnection;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
}

type Row = (String, String, Option<String>, String);

fn from_row((id, email, name, password_hash): Row) -> UserRow {
    UserRow {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        email,
        name,
        password_hash,
    }
}

/// Insert a user; a taken email is a unique violation (see `is_unique_violation`).
pub async fn insert(conn: &mut AnyConnection, user: &UserRow, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO users (id, email, password_hash, name, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(user.id.to_string())
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.name)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as("SELECT id, email, name, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(from_row))
}

pub async fn by_id(conn: &mut AnyConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as("SELECT id, email, name, password_hash FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(from_row))
}

pub async fn exists(conn: &mut AnyConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}
