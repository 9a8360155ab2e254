//! Invoices: what a freelancer billed a client, and where the bill stands.
//! The status only moves forward: draft → sent → paid, and a draft or a
//! sent invoice may be voided. A paid or void invoice is settled: only its
//! notes may still change.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::earning::{Platform, NOTES_MAX};
use super::input::{self, set, FieldErrors, Fields};
use super::notification::NotificationType;
use super::record::{record_fields, Change, Notice, Record};
use super::time::rfc3339;
use super::Fixed2;

pub const NUMBER_MAX: usize = 32;
pub const CLIENT_MAX: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Draft,
    Sent,
    Paid,
    Void,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Sent => "sent",
            Status::Paid => "paid",
            Status::Void => "void",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "draft" => Status::Draft,
            "sent" => Status::Sent,
            "paid" => Status::Paid,
            "void" => Status::Void,
            _ => return None,
        })
    }

    /// The moves the status machine allows (staying put is not a move).
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Draft, Sent) | (Sent, Paid) | (Draft, Void) | (Sent, Void)
        )
    }

    /// Paid and void invoices are settled: only notes change.
    pub fn settled(self) -> bool {
        matches!(self, Status::Paid | Status::Void)
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Invoice {
    pub id: Uuid,
    pub user_id: Uuid,
    pub number: String,
    pub client: String,
    pub platform_id: Option<Uuid>,
    pub issue_date: String,
    pub due_date: String,
    pub amount: Fixed2,
    pub status: Status,
    pub paid_at: Option<i64>,
    pub notes: Option<String>,
    /// When the overdue sweep warned about it; cleared by a new due date.
    pub overdue_notified_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An invoice on the wire (REST bodies and `invoices:new`).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub number: String,
    pub client: String,
    pub platform_id: Option<Uuid>,
    /// `YYYY-MM-DD`
    #[schema(format = Date)]
    pub issue_date: String,
    /// `YYYY-MM-DD`, not before `issueDate`
    #[schema(format = Date)]
    pub due_date: String,
    #[schema(value_type = f64)]
    pub amount: Fixed2,
    #[schema(value_type = String, pattern = "^(draft|sent|paid|void)$")]
    pub status: Status,
    /// Set by the server when the invoice becomes paid.
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
    pub notes: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone)]
pub struct NewInvoice {
    number: String,
    client: String,
    platform_id: Option<Uuid>,
    issue_date: String,
    due_date: String,
    amount: Fixed2,
    status: Status,
    notes: Option<String>,
}

#[derive(Clone, Default)]
pub struct InvoicePatch {
    number: Option<String>,
    client: Option<String>,
    platform_id: Option<Option<Uuid>>,
    issue_date: Option<String>,
    due_date: Option<String>,
    amount: Option<Fixed2>,
    status: Option<Status>,
    notes: Option<Option<String>>,
}

fn status(v: &Value) -> Result<Status, &'static str> {
    v.as_str()
        .and_then(Status::parse)
        .ok_or("must be one of draft, sent, paid, void")
}

fn due_after_issue(f: &mut Fields, issue: Option<&String>, due: Option<&String>) {
    // Dates are YYYY-MM-DD, so text order is date order.
    if let (Some(issue), Some(due)) = (issue, due) {
        if due < issue {
            f.error("dueDate", "must not be before issueDate");
        }
    }
}

impl Record for Invoice {
    const KIND: &'static str = "invoices";
    const ID_KEY: &'static str = "invoiceId";
    const FILTER: Option<&'static str> = Some("status");
    type New = NewInvoice;
    type Patch = InvoicePatch;
    type View = InvoiceView;

    record_fields!();

    fn sort_key(&self) -> (&str, i64) {
        (&self.issue_date, self.created_at)
    }

    fn view(&self) -> InvoiceView {
        InvoiceView {
            id: self.id,
            user_id: self.user_id,
            number: self.number.clone(),
            client: self.client.clone(),
            platform_id: self.platform_id,
            issue_date: self.issue_date.clone(),
            due_date: self.due_date.clone(),
            amount: self.amount,
            status: self.status,
            paid_at: self.paid_at.map(rfc3339),
            notes: self.notes.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }

    fn parse_new(body: &Map<String, Value>) -> Result<NewInvoice, FieldErrors> {
        let mut f = Fields::new(body);
        let number = f.required("number", input::text(NUMBER_MAX));
        let client = f.required("client", input::text(CLIENT_MAX));
        let platform_id = f.optional("platformId", input::uuid);
        let issue_date = f.required("issueDate", input::date);
        let due_date = f.required("dueDate", input::date);
        let amount = f.required("amount", input::fixed2);
        let status = f.optional("status", |v| match status(v)? {
            s @ (Status::Draft | Status::Sent) => Ok(s),
            _ => Err("must be draft or sent on a new invoice"),
        });
        let notes = f.optional("notes", input::text(NOTES_MAX));
        due_after_issue(&mut f, issue_date.as_ref(), due_date.as_ref());
        f.finish()?;
        match (number, client, issue_date, due_date, amount) {
            (Some(number), Some(client), Some(issue_date), Some(due_date), Some(amount)) => {
                Ok(NewInvoice {
                    number,
                    client,
                    platform_id,
                    issue_date,
                    due_date,
                    amount,
                    status: status.unwrap_or(Status::Draft),
                    notes,
                })
            }
            _ => unreachable!("finish() reports every missing required field"),
        }
    }

    fn parse_patch(body: &Map<String, Value>) -> Result<InvoicePatch, FieldErrors> {
        let mut f = Fields::new(body);
        let patch = InvoicePatch {
            number: f.settable("number", input::text(NUMBER_MAX)),
            client: f.settable("client", input::text(CLIENT_MAX)),
            platform_id: f.patch("platformId", input::uuid).into_option(),
            issue_date: f.settable("issueDate", input::date),
            due_date: f.settable("dueDate", input::date),
            amount: f.settable("amount", input::fixed2),
            status: f.settable("status", status),
            notes: f.patch("notes", input::text(NOTES_MAX)).into_option(),
        };
        f.finish()?;
        Ok(patch)
    }

    fn parse_filter(value: &str) -> Result<String, &'static str> {
        Status::parse(value)
            .map(|s| s.as_str().to_owned())
            .ok_or("status must be draft, sent, paid or void")
    }

    fn new_platform(new: &NewInvoice) -> Option<Uuid> {
        new.platform_id
    }

    fn patch_platform(patch: &InvoicePatch) -> Option<Option<Uuid>> {
        patch.platform_id
    }

    fn create(new: NewInvoice, user: Uuid, _platform: Option<Platform>, now_ms: i64) -> Invoice {
        Invoice {
            id: super::new_id(),
            user_id: user,
            number: new.number,
            client: new.client,
            platform_id: new.platform_id,
            issue_date: new.issue_date,
            due_date: new.due_date,
            amount: new.amount,
            status: new.status,
            paid_at: None,
            notes: new.notes,
            overdue_notified_at: None,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    fn patched(
        &self,
        p: &InvoicePatch,
        _platform: Option<Platform>,
        now_ms: i64,
    ) -> Result<Invoice, FieldErrors> {
        let mut new = self.clone();
        set(&mut new.number, &p.number);
        set(&mut new.client, &p.client);
        set(&mut new.platform_id, &p.platform_id);
        set(&mut new.issue_date, &p.issue_date);
        set(&mut new.due_date, &p.due_date);
        set(&mut new.amount, &p.amount);
        set(&mut new.status, &p.status);
        set(&mut new.notes, &p.notes);

        let mut errors = FieldErrors::new();
        let mut refuse = |field: &str, reason: String| {
            errors.entry(field.to_owned()).or_insert(reason);
        };
        if new.status != self.status && !self.status.can_become(new.status) {
            refuse(
                "status",
                format!(
                    "cannot change from {} to {}",
                    self.status.as_str(),
                    new.status.as_str()
                ),
            );
        }
        if self.status.settled() {
            let settled = format!("cannot change on a {} invoice", self.status.as_str());
            let moved = [
                ("number", new.number != self.number),
                ("client", new.client != self.client),
                ("platformId", new.platform_id != self.platform_id),
                ("issueDate", new.issue_date != self.issue_date),
                ("dueDate", new.due_date != self.due_date),
                ("amount", new.amount != self.amount),
            ];
            for (field, _) in moved.iter().filter(|(_, moved)| *moved) {
                refuse(field, settled.clone());
            }
        }
        if new.due_date < new.issue_date {
            refuse("dueDate", "must not be before issueDate".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if new.status == Status::Paid && self.status != Status::Paid {
            new.paid_at = Some(now_ms);
        }
        if new.due_date != self.due_date {
            // A new due date may fall due again: the sweep warns once more.
            new.overdue_notified_at = None;
        }
        Ok(new)
    }

    fn notice(&self, change: Change, before: Option<&Invoice>) -> Notice {
        let (number, client, amount) = (&self.number, &self.client, self.amount.money());
        let moved_to = before
            .filter(|b| b.status != self.status)
            .map(|_| self.status);
        match (change, moved_to) {
            (Change::Updated, Some(Status::Paid)) => {
                Notice::success("Invoice Paid", format!("Invoice {number} paid: {amount}"))
            }
            (Change::Updated, Some(Status::Sent)) => Notice::success(
                "Invoice Sent",
                format!("Invoice {number} sent to {client}: {amount}"),
            ),
            (Change::Updated, Some(Status::Void)) => {
                Notice::success("Invoice Voided", format!("Invoice {number} voided"))
            }
            (Change::Updated, _) => Notice::success(
                "Invoice Updated",
                format!("Invoice {number} for {client} updated: {amount}"),
            ),
            (Change::Created, _) => Notice::success(
                "Invoice Created",
                format!("Invoice {number} for {client} created: {amount}"),
            ),
            (Change::Deleted, _) => Notice::success(
                "Invoice Deleted",
                format!("Invoice {number} for {client} deleted"),
            ),
        }
    }
}

impl Invoice {
    /// Whether the overdue sweep owes its owner a warning on `today`
    /// (`YYYY-MM-DD`, UTC): past due, neither paid nor void, not yet warned.
    pub fn overdue_on(&self, today: &str) -> bool {
        !self.status.settled()
            && self.due_date.as_str() < today
            && self.overdue_notified_at.is_none()
    }

    /// The sweep's warning, sent once per due date.
    pub fn overdue_notice(&self) -> Notice {
        Notice {
            kind: NotificationType::Warning,
            title: "Invoice Overdue".into(),
            message: format!(
                "Invoice {} ({}) is overdue: {} was due {}",
                self.number,
                self.client,
                self.amount.money(),
                self.due_date
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::changes;
    use serde_json::json;

    fn invoice(status: Status) -> Invoice {
        let new = Invoice::parse_new(
            json!({"number": "INV-0007", "client": "Acme", "issueDate": "2024-01-01",
                   "dueDate": "2024-01-31", "amount": 1200})
            .as_object()
            .unwrap(),
        )
        .unwrap();
        Invoice {
            status,
            ..Invoice::create(new, Uuid::nil(), None, 0)
        }
    }

    fn patch(old: &Invoice, body: Value) -> Result<Invoice, FieldErrors> {
        let p = Invoice::parse_patch(body.as_object().unwrap())?;
        old.patched(&p, None, 99)
    }

    #[test]
    fn the_status_moves_only_forward() {
        use Status::*;
        let all = [Draft, Sent, Paid, Void];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            [(Draft, Sent), (Draft, Void), (Sent, Paid), (Sent, Void)]
        );
        let err = patch(&invoice(Paid), json!({"status": "draft"})).unwrap_err();
        assert_eq!(err["status"], "cannot change from paid to draft");
        assert!(patch(&invoice(Draft), json!({"status": "paid"})).is_err());
    }

    #[test]
    fn becoming_paid_stamps_paid_at_and_says_so() {
        let sent = invoice(Status::Sent);
        let paid = patch(&sent, json!({"status": "paid"})).unwrap();
        assert_eq!(paid.paid_at, Some(99));
        let notice = paid.notice(Change::Updated, Some(&sent));
        assert_eq!(notice.title, "Invoice Paid");
        assert_eq!(notice.message, "Invoice INV-0007 paid: $1,200.00");
        assert_eq!(
            changes(&sent, &paid).keys().cloned().collect::<Vec<_>>(),
            ["status", "paidAt"]
        );
    }

    #[test]
    fn a_settled_invoice_keeps_everything_but_its_notes() {
        let paid = invoice(Status::Paid);
        let err = patch(&paid, json!({"amount": 1, "client": "Other"})).unwrap_err();
        assert_eq!(
            err.keys().cloned().collect::<Vec<_>>(),
            ["amount", "client"]
        );
        assert!(patch(&paid, json!({"notes": "thanks", "amount": 1200})).is_ok());
    }

    #[test]
    fn the_due_date_may_not_precede_the_issue_date() {
        let body = json!({"number": "1", "client": "A", "issueDate": "2024-02-01",
                          "dueDate": "2024-01-31", "amount": 1});
        let err = Invoice::parse_new(body.as_object().unwrap()).err().unwrap();
        assert!(err.contains_key("dueDate"));
        assert!(patch(&invoice(Status::Draft), json!({"issueDate": "2024-02-15"})).is_err());
    }

    #[test]
    fn overdue_means_past_due_unsettled_and_not_yet_warned() {
        assert!(invoice(Status::Sent).overdue_on("2024-02-01"));
        assert!(!invoice(Status::Sent).overdue_on("2024-01-31"));
        assert!(!invoice(Status::Paid).overdue_on("2024-02-01"));
        let warned = Invoice {
            overdue_notified_at: Some(1),
            ..invoice(Status::Draft)
        };
        assert!(!warned.overdue_on("2024-02-01"));
        let moved = patch(&warned, json!({"dueDate": "2024-03-01"})).unwrap();
        assert_eq!(moved.overdue_notified_at, None);
    }
}
