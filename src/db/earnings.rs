//! Earnings, always read and written through their owner: a query for
//! another user's earning finds nothing, which the API answers with 404.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::earning::{Earning, Platform};
use crate::domain::Fixed2;

const SELECT: &str = "SELECT e.id, e.user_id, e.date, e.hours_centi, e.amount_cents, e.notes, \
    e.created_at, e.updated_at, p.id, p.name, p.color \
    FROM earnings e JOIN platforms p ON p.id = e.platform_id";

type Row = (
    String,
    String,
    String,
    Option<i64>,
    i64,
    Option<String>,
    i64,
    i64,
    String,
    String,
    String,
);

fn from_row(r: Row) -> Earning {
    let uuid = |s: &str| Uuid::parse_str(s).unwrap_or_default();
    Earning {
        id: uuid(&r.0),
        user_id: uuid(&r.1),
        date: r.2,
        hours: r.3.map(Fixed2::from_hundredths),
        amount: Fixed2::from_hundredths(r.4),
        notes: r.5,
        created_at: r.6,
        updated_at: r.7,
        platform: Platform {
            id: uuid(&r.8),
            name: r.9,
            color: r.10,
        },
    }
}

pub async fn get(
    conn: &mut AnyConnection,
    user: Uuid,
    id: Uuid,
) -> Result<Option<Earning>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE e.id = $1 AND e.user_id = $2"))
        .bind(id.to_string())
        .bind(user.to_string())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(from_row))
}

pub async fn insert(conn: &mut AnyConnection, e: &Earning) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO earnings \
         (id, user_id, platform_id, date, hours_centi, amount_cents, notes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.id.to_string())
    .bind(e.user_id.to_string())
    .bind(e.platform.id.to_string())
    .bind(&e.date)
    .bind(e.hours.map(Fixed2::hundredths))
    .bind(e.amount.hundredths())
    .bind(&e.notes)
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update(conn: &mut AnyConnection, e: &Earning) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE earnings SET platform_id = $1, date = $2, hours_centi = $3, amount_cents = $4, notes = $5, \
         updated_at = $6 WHERE id = $7 AND user_id = $8",
    )
    .bind(e.platform.id.to_string())
    .bind(&e.date)
    .bind(e.hours.map(Fixed2::hundredths))
    .bind(e.amount.hundredths())
    .bind(&e.notes)
    .bind(e.updated_at)
    .bind(e.id.to_string())
    .bind(e.user_id.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// Delete and return the earning, or `None` when it is not the user's.
pub async fn delete(
    conn: &mut AnyConnection,
    user: Uuid,
    id: Uuid,
) -> Result<Option<Earning>, sqlx::Error> {
    let Some(e) = get(conn, user, id).await? else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM earnings WHERE id = $1 AND user_id = $2")
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(conn)
        .await?;
    Ok(Some(e))
}

/// Filters and keyset paging of `GET /api/earnings`.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub platform_id: Option<Uuid>,
    pub limit: i64,
    /// The last row of the previous page: (date, created_at, id).
    pub after: Option<(String, i64, String)>,
}

/// Newest date first; ties by creation time, then id, so pages never overlap.
pub async fn list(
    conn: &mut AnyConnection,
    user: Uuid,
    q: &ListQuery,
) -> Result<Vec<Earning>, sqlx::Error> {
    let (after_date, after_created, after_id) = q.after.clone().unwrap_or_default();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE e.user_id = $1 \
         AND ($2 IS NULL OR e.date >= $2) AND ($3 IS NULL OR e.date <= $3) \
         AND ($4 IS NULL OR e.platform_id = $4) \
         AND ($5 = 0 OR e.date < $6 OR (e.date = $6 AND (e.created_at < $7 OR (e.created_at = $7 AND e.id < $8)))) \
         ORDER BY e.date DESC, e.created_at DESC, e.id DESC LIMIT $9"
    ))
    .bind(user.to_string())
    .bind(&q.from)
    .bind(&q.to)
    .bind(q.platform_id.map(|p| p.to_string()))
    .bind(i64::from(q.after.is_some()))
    .bind(after_date)
    .bind(after_created)
    .bind(after_id)
    .bind(q.limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}
