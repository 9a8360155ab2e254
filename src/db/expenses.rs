//! The expenses table.

use uuid::Uuid;

use super::records::{Cell, Row, Table};
use crate::domain::expense::Expense;
use crate::domain::Fixed2;

impl Table for Expense {
    const TABLE: &'static str = "expenses";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "date",
        "amount_cents",
        "category",
        "platform_id",
        "notes",
        "created_at",
        "updated_at",
    ];
    const DATE_COLUMN: &'static str = "date";
    const FILTER_COLUMN: Option<&'static str> = Some("category");

    fn cells(&self) -> Vec<Cell> {
        vec![
            self.id.to_string().into(),
            self.user_id.to_string().into(),
            self.date.clone().into(),
            self.amount.hundredths().into(),
            self.category.clone().into(),
            self.platform_id.map(|p| p.to_string()).into(),
            self.notes.clone().into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }

    fn from_row(r: &Row) -> Result<Expense, sqlx::Error> {
        Ok(Expense {
            id: r.try_get::<Uuid>(0)?,
            user_id: r.try_get::<Uuid>(1)?,
            date: r.try_get(2)?,
            amount: Fixed2::from_hundredths(r.try_get(3)?),
            category: r.try_get(4)?,
            platform_id: r.try_get::<Option<Uuid>>(5)?,
            notes: r.try_get(6)?,
            created_at: r.try_get(7)?,
            updated_at: r.try_get(8)?,
        })
    }
}
