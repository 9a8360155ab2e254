//! Accounts, and what a user may do (their role), as stored.

use std::collections::HashMap;
use std::sync::RwLock;

use sqlx::{AnyConnection, AnyPool};
use uuid::Uuid;

use super::exec::Exec;
use crate::args;

use crate::domain::role::Role;

/// What the server checks on every request: read from the user's row, never
/// from the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    /// Tokens issued under an older version are refused.
    pub token_version: i64,
}

/// Users this server has seen in the database, with their access. Accounts
/// are never deleted, so a user once found stays valid: every authenticated
/// request (and an admin event's target check) then skips a database round
/// trip, which on SQLite is a hand-off to a driver thread and back. A change
/// of access, made by any process on the database, reaches the cache through
/// `changed_since` (polled by `jobs`). Bounded: past `CAP` ids it starts
/// again from empty.
#[derive(Default)]
pub struct KnownUsers(RwLock<HashMap<Uuid, Access>>);

impl KnownUsers {
    const CAP: usize = 1 << 20;

    pub fn get(&self, id: Uuid) -> Option<Access> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// The user's access, from memory when it can be; `None`: no such user.
    /// A connection of `pool` is taken only for a user not yet known:
    /// taking one pings it (on SQLite a hand-off to its driver thread, on
    /// PostgreSQL a network round trip), which known users must not pay
    /// per request or per published event.
    pub async fn access(&self, pool: &AnyPool, id: Uuid) -> Result<Option<Access>, sqlx::Error> {
        if let Some(access) = self.get(id) {
            return Ok(Some(access));
        }
        let found = access(&mut *pool.acquire().await?, id).await?;
        if let Some(access) = found {
            self.put(id, access);
        }
        Ok(found)
    }

    /// `exists`, answered from memory when it can be.
    pub async fn exists(&self, pool: &AnyPool, id: Uuid) -> Result<bool, sqlx::Error> {
        Ok(self.access(pool, id).await?.is_some())
    }

    /// Record `access` (after a change seen in the database); whether it
    /// differs from what the cache held (`false` for a user not cached).
    pub fn update(&self, id: Uuid, access: Access) -> bool {
        let mut known = self.0.write().unwrap_or_else(|p| p.into_inner());
        match known.get_mut(&id) {
            Some(held) if *held != access => {
                *held = access;
                true
            }
            _ => false,
        }
    }

    fn put(&self, id: Uuid, access: Access) {
        let mut known = self.0.write().unwrap_or_else(|p| p.into_inner());
        if known.len() >= Self::CAP {
            known.clear();
        }
        known.insert(id, access);
    }
}

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub role: Role,
    pub token_version: i64,
}

type Row = (String, String, Option<String>, String, String, i64);

fn from_row((id, email, name, password_hash, role, token_version): Row) -> UserRow {
    UserRow {
        id: Uuid::parse_str(&id).unwrap_or_default(),
        email,
        name,
        password_hash,
        role: Role::parse(&role),
        token_version,
    }
}

/// Insert a user; a taken email is a unique violation (see `is_unique_violation`).
pub async fn insert(conn: &mut dyn Exec, user: &UserRow, now: i64) -> Result<(), sqlx::Error> {
    conn.execute(
        "INSERT INTO users (id, email, password_hash, name, created_at) VALUES ($1, $2, $3, $4, $5)",
        args![user.id, &user.email, &user.password_hash, user.name.clone(), now],
    )
    .await?;
    Ok(())
}

pub async fn by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, email, name, password_hash, role, token_version FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(from_row))
}

pub async fn by_id(conn: &mut AnyConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, email, name, password_hash, role, token_version FROM users WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(from_row))
}

pub async fn exists(conn: &mut dyn Exec, id: Uuid) -> Result<bool, sqlx::Error> {
    let found = conn
        .fetch_optional("SELECT 1 FROM users WHERE id = $1", args![id])
        .await?;
    Ok(found.is_some())
}

/// `(role, token_version)` as stored.
fn access_of((role, token_version): (String, i64)) -> Access {
    Access {
        role: Role::parse(&role),
        token_version,
    }
}

pub async fn access(conn: &mut AnyConnection, id: Uuid) -> Result<Option<Access>, sqlx::Error> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT role, token_version FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(access_of))
}

/// Revoke every token of the user issued so far (logout-everywhere, a
/// password change); optionally store a new password hash with it. Their
/// access now.
pub async fn revoke_tokens(
    conn: &mut dyn Exec,
    id: Uuid,
    new_password_hash: Option<&str>,
    now: i64,
) -> Result<Option<Access>, sqlx::Error> {
    let row = conn
        .fetch_optional(
            "UPDATE users SET token_version = token_version + 1, access_changed_at = $1, \
             password_hash = COALESCE($2, password_hash) WHERE id = $3 RETURNING role, token_version",
            args![now, new_password_hash.map(str::to_owned), id],
        )
        .await?;
    row.map(|r| Ok(access_of((r.try_get(0)?, r.try_get(1)?))))
        .transpose()
}

/// What `set_role` did.
#[derive(Debug, PartialEq, Eq)]
pub enum RoleChange {
    Changed(Uuid, Access),
    Unchanged(Uuid),
    NoSuchUser,
}

/// Give the user with `email` the role `role`, marking the change so every
/// server sees it (`changed_since`).
pub async fn set_role(
    conn: &mut AnyConnection,
    email: &str,
    role: Role,
    now: i64,
) -> Result<RoleChange, sqlx::Error> {
    let email = email.trim().to_lowercase();
    let changed: Option<(String, i64)> = sqlx::query_as(
        "UPDATE users SET role = $1, access_changed_at = $2 \
         WHERE email = $3 AND role <> $1 RETURNING id, token_version",
    )
    .bind(role.as_str())
    .bind(now)
    .bind(&email)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id, token_version)) = changed {
        let id = Uuid::parse_str(&id).unwrap_or_default();
        return Ok(RoleChange::Changed(
            id,
            Access {
                role,
                token_version,
            },
        ));
    }
    Ok(match by_email(conn, &email).await? {
        Some(user) => RoleChange::Unchanged(user.id),
        None => RoleChange::NoSuchUser,
    })
}

/// Users whose access changed at or after `since_ms`, with their access now.
pub async fn changed_since(
    conn: &mut AnyConnection,
    since_ms: i64,
) -> Result<Vec<(Uuid, Access)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, role, token_version FROM users WHERE access_changed_at >= $1")
            .bind(since_ms)
            .fetch_all(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, role, token_version)| {
            let id = Uuid::parse_str(&id).unwrap_or_default();
            (id, access_of((role, token_version)))
        })
        .collect())
}
