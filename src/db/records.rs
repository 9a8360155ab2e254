//! The SQL of the ledger's records (expenses, invoices), written once: a
//! record type names its table, its columns and how a row maps to it
//! (`Table`), and get, insert, update, delete and the keyset-paged list
//! follow. Every query is scoped to the owner: another user's row is never
//! found, which the API answers with 404.

use uuid::Uuid;

use super::exec::Exec;
pub use super::exec::{Cell, Row, Statement};
use crate::args;
use crate::domain::record::Record;

pub trait Table: Record {
    const TABLE: &'static str;
    /// Every column, `id` and `user_id` first, in the order of `cells` and
    /// of the row `from_row` reads.
    const COLUMNS: &'static [&'static str];
    /// The column lists are ordered and filtered by (`from`/`to`).
    const DATE_COLUMN: &'static str;
    /// The column `Record::FILTER` compares with.
    const FILTER_COLUMN: Option<&'static str>;
    /// Read-only columns of other tables read with each row (after
    /// `COLUMNS`), and the join that reaches them; the record's own table
    /// is `r`.
    const JOINED: &'static [&'static str] = &[];
    const JOIN: &'static str = "";

    fn cells(&self) -> Vec<Cell>;
    fn from_row(row: &Row) -> Result<Self, sqlx::Error>;
}

/// `SELECT r.a, r.b, …, joined… FROM table r JOIN …`
fn select<R: Table>() -> String {
    let own = R::COLUMNS.iter().map(|c| format!("r.{c}"));
    let columns: Vec<_> = own.chain(R::JOINED.iter().map(|c| c.to_string())).collect();
    format!(
        "SELECT {} FROM {} r {}",
        columns.join(", "),
        R::TABLE,
        R::JOIN
    )
}

pub async fn get<R: Table>(
    conn: &mut dyn Exec,
    user: Uuid,
    id: Uuid,
) -> Result<Option<R>, sqlx::Error> {
    let sql = format!("{} WHERE r.id = $1 AND r.user_id = $2", select::<R>());
    let row = conn.fetch_optional(&sql, args![id, user]).await?;
    row.as_ref().map(R::from_row).transpose()
}

/// The record's insert (run it, or commit it with its events:
/// `Tx::append_with`).
pub fn insert<R: Table>(record: &R) -> Statement {
    let placeholders: Vec<_> = (1..=R::COLUMNS.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        R::TABLE,
        R::COLUMNS.join(", "),
        placeholders.join(", ")
    );
    Statement::new(sql, record.cells())
}

/// Writes every column but the two keys, which select the row.
pub fn update<R: Table>(record: &R) -> Statement {
    let sets: Vec<_> = R::COLUMNS
        .iter()
        .enumerate()
        .skip(2)
        .map(|(i, column)| format!("{column} = ${}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE {} SET {} WHERE id = $1 AND user_id = $2",
        R::TABLE,
        sets.join(", ")
    );
    Statement::new(sql, record.cells())
}

/// Deletes the user's record `id` (read it first: `get`).
pub fn delete<R: Table>(user: Uuid, id: Uuid) -> Statement {
    let sql = format!("DELETE FROM {} WHERE id = $1 AND user_id = $2", R::TABLE);
    Statement::new(sql, args![id, user])
}

/// Filters and keyset paging of a list.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    /// The value of `Record::FILTER`.
    pub filter: Option<String>,
    pub limit: i64,
    /// The last row of the previous page: (date, created_at, id).
    pub after: Option<(String, i64, String)>,
}

/// Newest date first; ties by creation time, then id, so pages never overlap.
pub async fn list<R: Table>(
    conn: &mut dyn Exec,
    user: Uuid,
    q: &ListQuery,
) -> Result<Vec<R>, sqlx::Error> {
    let date = format!("r.{}", R::DATE_COLUMN);
    let filter = R::FILTER_COLUMN.map_or("NULL".to_owned(), |f| format!("r.{f}"));
    let sql = format!(
        "{select} WHERE r.user_id = $1 \
         AND ($2 IS NULL OR {date} >= $2) AND ($3 IS NULL OR {date} <= $3) \
         AND ($4 IS NULL OR {filter} = $4) \
         AND ($5 = 0 OR {date} < $6 OR ({date} = $6 AND (r.created_at < $7 OR (r.created_at = $7 AND r.id < $8)))) \
         ORDER BY {date} DESC, r.created_at DESC, r.id DESC LIMIT $9",
        select = select::<R>(),
    );
    let (after_date, after_created, after_id) = q.after.clone().unwrap_or_default();
    let args = args![
        user,
        q.from.clone(),
        q.to.clone(),
        q.filter.clone(),
        q.after.is_some(),
        after_date,
        after_created,
        after_id,
        q.limit,
    ];
    let rows = conn.fetch_all(&sql, args).await?;
    rows.iter().map(R::from_row).collect()
}
