//! Expenses: what a freelancer spent (fees, software, equipment), optionally
//! tied to one of their platforms.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::earning::{Platform, NOTES_MAX};
use super::input::{self, set, FieldErrors, Fields};
use super::record::{record_fields, Change, Notice, Record};
use super::time::rfc3339;
use super::Fixed2;

pub const CATEGORY_MAX: usize = 50;

#[derive(Clone, Debug, PartialEq)]
pub struct Expense {
    pub id: Uuid,
    pub user_id: Uuid,
    pub date: String,
    pub amount: Fixed2,
    pub category: String,
    pub platform_id: Option<Uuid>,
    pub notes: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An expense on the wire (REST bodies and `expenses:new`).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpenseView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `YYYY-MM-DD`
    #[schema(format = Date)]
    pub date: String,
    #[schema(value_type = f64)]
    pub amount: Fixed2,
    pub category: String,
    pub platform_id: Option<Uuid>,
    pub notes: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone)]
pub struct NewExpense {
    date: String,
    amount: Fixed2,
    category: String,
    platform_id: Option<Uuid>,
    notes: Option<String>,
}

/// Absent fields stay; `null` clears `platformId` or `notes`.
#[derive(Clone, Default)]
pub struct ExpensePatch {
    date: Option<String>,
    amount: Option<Fixed2>,
    category: Option<String>,
    platform_id: Option<Option<Uuid>>,
    notes: Option<Option<String>>,
}

impl Record for Expense {
    const KIND: &'static str = "expenses";
    const ID_KEY: &'static str = "expenseId";
    const FILTER: Option<&'static str> = Some("category");
    type New = NewExpense;
    type Patch = ExpensePatch;
    type View = ExpenseView;

    record_fields!();

    fn sort_key(&self) -> (&str, i64) {
        (&self.date, self.created_at)
    }

    fn view(&self) -> ExpenseView {
        ExpenseView {
            id: self.id,
            user_id: self.user_id,
            date: self.date.clone(),
            amount: self.amount,
            category: self.category.clone(),
            platform_id: self.platform_id,
            notes: self.notes.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }

    fn parse_new(body: &Map<String, Value>) -> Result<NewExpense, FieldErrors> {
        let mut f = Fields::new(body);
        let date = f.required("date", input::date);
        let amount = f.required("amount", input::fixed2);
        let category = f.required("category", input::text(CATEGORY_MAX));
        let platform_id = f.optional("platformId", input::uuid);
        let notes = f.optional("notes", input::text(NOTES_MAX));
        f.finish()?;
        match (date, amount, category) {
            (Some(date), Some(amount), Some(category)) => Ok(NewExpense {
                date,
                amount,
                category,
                platform_id,
                notes,
            }),
            _ => unreachable!("finish() reports every missing required field"),
        }
    }

    fn parse_patch(body: &Map<String, Value>) -> Result<ExpensePatch, FieldErrors> {
        let mut f = Fields::new(body);
        let patch = ExpensePatch {
            date: f.settable("date", input::date),
            amount: f.settable("amount", input::fixed2),
            category: f.settable("category", input::text(CATEGORY_MAX)),
            platform_id: f.patch("platformId", input::uuid).into_option(),
            notes: f.patch("notes", input::text(NOTES_MAX)).into_option(),
        };
        f.finish()?;
        Ok(patch)
    }

    fn parse_filter(value: &str) -> Result<String, &'static str> {
        input::text(CATEGORY_MAX)(&Value::from(value))
            .map_err(|_| "category must be 1 to 50 characters")
    }

    fn new_platform(new: &NewExpense) -> Option<Uuid> {
        new.platform_id
    }

    fn patch_platform(patch: &ExpensePatch) -> Option<Option<Uuid>> {
        patch.platform_id
    }

    fn create(new: NewExpense, user: Uuid, _platform: Option<Platform>, now_ms: i64) -> Expense {
        Expense {
            id: super::new_id(),
            user_id: user,
            date: new.date,
            amount: new.amount,
            category: new.category,
            platform_id: new.platform_id,
            notes: new.notes,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    fn patched(
        &self,
        p: &ExpensePatch,
        _platform: Option<Platform>,
        _now_ms: i64,
    ) -> Result<Expense, FieldErrors> {
        let mut new = self.clone();
        set(&mut new.date, &p.date);
        set(&mut new.amount, &p.amount);
        set(&mut new.category, &p.category);
        set(&mut new.platform_id, &p.platform_id);
        set(&mut new.notes, &p.notes);
        Ok(new)
    }

    fn notice(&self, change: Change, _before: Option<&Expense>) -> Notice {
        let what = format!("of {} ({})", self.amount.dollars(), self.category);
        match change {
            Change::Created => {
                Notice::success("Expense Added", format!("New expense {what} added"))
            }
            Change::Updated => {
                Notice::success("Expense Updated", format!("Expense {what} updated"))
            }
            Change::Deleted => {
                Notice::success("Expense Deleted", format!("Expense {what} deleted"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::changes;
    use serde_json::json;

    fn expense() -> Expense {
        let new = Expense::parse_new(
            json!({"date": "2024-03-01", "amount": 45, "category": " software "})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        Expense::create(new, Uuid::nil(), None, 0)
    }

    #[test]
    fn creation_lists_every_bad_field() {
        let body = json!({"date": "2024-02-30", "amount": -1, "category": "", "platformId": 3});
        let errors = Expense::parse_new(body.as_object().unwrap()).err().unwrap();
        let keys: Vec<_> = errors.keys().cloned().collect();
        assert_eq!(keys, ["amount", "category", "date", "platformId"]);
    }

    #[test]
    fn a_patch_changes_only_what_it_names_and_null_clears_notes() {
        let old = Expense {
            notes: Some("old".into()),
            ..expense()
        };
        assert_eq!(old.category, "software");
        let patch = Expense::parse_patch(json!({"amount": 50, "notes": null}).as_object().unwrap())
            .unwrap();
        let new = old.patched(&patch, None, 1).unwrap();
        assert_eq!(
            changes(&old, &new),
            json!({"amount": 50, "notes": null})
                .as_object()
                .unwrap()
                .clone()
        );
        let same = Expense::parse_patch(json!({"amount": 45}).as_object().unwrap()).unwrap();
        assert!(changes(&expense(), &expense().patched(&same, None, 1).unwrap()).is_empty());
    }

    #[test]
    fn required_fields_cannot_be_nulled_by_a_patch() {
        let errors =
            Expense::parse_patch(json!({"category": null, "date": null}).as_object().unwrap())
                .err()
                .unwrap();
        assert_eq!(
            errors.keys().cloned().collect::<Vec<_>>(),
            ["category", "date"]
        );
    }
}
