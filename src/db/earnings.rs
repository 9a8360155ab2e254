//! The earnings table; each row is read with its platform.

use uuid::Uuid;

use super::records::{Cell, Row, Table};
use crate::domain::earning::{Earning, Platform};
use crate::domain::Fixed2;

impl Table for Earning {
    const TABLE: &'static str = "earnings";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "platform_id",
        "date",
        "hours_centi",
        "amount_cents",
        "notes",
        "created_at",
        "updated_at",
    ];
    const DATE_COLUMN: &'static str = "date";
    const FILTER_COLUMN: Option<&'static str> = Some("platform_id");
    const JOINED: &'static [&'static str] = &["p.name", "p.color"];
    const JOIN: &'static str = "JOIN platforms p ON p.id = r.platform_id";

    fn cells(&self) -> Vec<Cell> {
        vec![
            self.id.to_string().into(),
            self.user_id.to_string().into(),
            self.platform.id.to_string().into(),
            self.date.clone().into(),
            self.hours.map(Fixed2::hundredths).into(),
            self.amount.hundredths().into(),
            self.notes.clone().into(),
            self.created_at.into(),
            self.updated_at.into(),
        ]
    }

    fn from_row(r: &Row) -> Result<Earning, sqlx::Error> {
        let hours: Option<i64> = r.try_get(4)?;
        Ok(Earning {
            id: r.try_get::<Uuid>(0)?,
            user_id: r.try_get::<Uuid>(1)?,
            platform: Platform {
                id: r.try_get::<Uuid>(2)?,
                name: r.try_get(9)?,
                color: r.try_get(10)?,
            },
            date: r.try_get(3)?,
            hours: hours.map(Fixed2::from_hundredths),
            amount: Fixed2::from_hundredths(r.try_get(5)?),
            notes: r.try_get(6)?,
            created_at: r.try_get(7)?,
            updated_at: r.try_get(8)?,
        })
    }
}
