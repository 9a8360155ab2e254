//! Accounts.

use std::collections::HashSet;
use std::sync::RwLock;

use sqlx::AnyConnection;
use uuid::Uuid;

/// Users this server has seen in the database. Accounts are never deleted,
/// so a user once found stays valid: every authenticated request (and an
/// admin event's target check) then skips a database round trip, which on
/// SQLite is a hand-off to a driver thread and back. Bounded: past `CAP` ids
/// it starts again from empty.
#[derive(Default)]
pub struct KnownUsers(RwLock<HashSet<Uuid>>);

impl KnownUsers {
    const CAP: usize = 1 << 20;

    pub fn contains(&self, id: Uuid) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    }

    /// `exists`, answered from memory when it can be.
    pub async fn exists(&self, conn: &mut AnyConnection, id: Uuid) -> Result<bool, sqlx::Error> {
        if self.contains(id) {
            return Ok(true);
        }
        let found = exists(conn, id).await?;
        if found {
            let mut known = self.0.write().unwrap_or_else(|p| p.into_inner());
            if known.len() >= Self::CAP {
                known.clear();
            }
            known.insert(id);
        }
        Ok(found)
    }
}

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
