//! The invoices table, and the overdue sweep's claim on a warning.

use sqlx::AnyConnection;
use uuid::Uuid;

use super::exec::Exec;
use super::records::{Cell, Row, Table};
use crate::args;
use crate::domain::invoice::{Invoice, Status};
use crate::domain::Fixed2;

impl Table for Invoice {
    const TABLE: &'static str = "invoices";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "number",
        "client",
        "platform_id",
        "issue_date",
        "due_date",
        "amount_cents",
        "status",
        "paid_at",
        "notes",
        "overdue_notified_at",
        "created_at",
        "updated_at",
    ];
    const DATE_COLUMN: &'static str = "issue_date";
    const FILTER_COLUMN: Option<&'static str> = Some("status");

    fn cells(&self) -> Vec<Cell> {
        vec![
            self.id.to_string().into(),
            self.user_id.to_string().into(),
            self.number.clone().into(),
            self.client.clone().into(),
            self.platform_id.map(|p| p.to_string()).into(),
            self.issue_date.clone().into(),
            self.due_date.clone().into(),
            self.amount.hundredths().into(),
            self.status.as_str().to_owned().into(),
            self.paid_at.into(),
            self.notes.clone().into(),
            self.overdue_notified_at.into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }

    fn from_row(r: &Row) -> Result<Invoice, sqlx::Error> {
        let status: String = r.try_get(8)?;
        Ok(Invoice {
            id: r.try_get::<Uuid>(0)?,
            user_id: r.try_get::<Uuid>(1)?,
            number: r.try_get(2)?,
            client: r.try_get(3)?,
            platform_id: r.try_get::<Option<Uuid>>(4)?,
            issue_date: r.try_get(5)?,
            due_date: r.try_get(6)?,
            amount: Fixed2::from_hundredths(r.try_get(7)?),
            status: Status::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("invoice status {status:?}").into()))?,
            paid_at: r.try_get(9)?,
            notes: r.try_get(10)?,
            overdue_notified_at: r.try_get(11)?,
            created_at: r.try_get(12)?,
            updated_at: r.try_get(13)?,
        })
    }
}

/// Invoices the sweep may owe a warning on `today` (`YYYY-MM-DD`), oldest
/// due first, at most `limit`: (owner, id).
pub async fn unwarned_overdue(
    conn: &mut AnyConnection,
    today: &str,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT user_id, id FROM invoices \
         WHERE overdue_notified_at IS NULL AND status IN ('draft', 'sent') AND due_date < $1 \
         ORDER BY due_date LIMIT $2",
    )
    .bind(today)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(u, i)| Some((Uuid::parse_str(&u).ok()?, Uuid::parse_str(&i).ok()?)))
        .collect())
}

/// Claims the warning for one invoice: true for exactly one caller however
/// many servers sweep at once (on PostgreSQL the row lock makes a second
/// claim wait for the first to commit, then find the column set).
pub async fn claim_overdue_warning(
    conn: &mut dyn Exec,
    id: Uuid,
    today: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = conn
        .execute(
            "UPDATE invoices SET overdue_notified_at = $1 \
             WHERE id = $2 AND overdue_notified_at IS NULL AND status IN ('draft', 'sent') AND due_date < $3",
            args![now_ms, id, today],
        )
        .await?;
    Ok(claimed == 1)
}
