//! The shape every owned record of the ledger shares (expenses, invoices):
//! a user's rows behind `/api/{KIND}`, created, patched and deleted through
//! the API, each change committed with its `{KIND}:new|updated|deleted`
//! event and a notification. A record type says what is its own (its
//! fields, their parsing, its notification text); the events, the change
//! diff and the notification envelope are written once, here, and the
//! routes once in `http::records`.

use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::earning::Platform;
use super::event::DomainEvent;
use super::input::FieldErrors;
use super::notification::{Notification, NotificationType};
use super::time::rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

/// What a change tells its owner: the notification's type, title, message.
pub struct Notice {
    pub kind: NotificationType,
    pub title: String,
    pub message: String,
}

impl Notice {
    pub fn success(title: impl Into<String>, message: impl Into<String>) -> Notice {
        Notice {
            kind: NotificationType::Success,
            title: title.into(),
            message: message.into(),
        }
    }
}

pub trait Record: Clone + Send + Sync + Sized + 'static {
    /// The collection: route `/api/{KIND}`, event names `{KIND}:…`, topic.
    const KIND: &'static str;
    /// The key of the record's id in its notifications' `data`.
    const ID_KEY: &'static str;
    /// The one filter of its own a list takes besides dates, if any.
    const FILTER: Option<&'static str>;

    /// A parsed creation body (`Clone`: a write may run more than once,
    /// see `Publisher::write`).
    type New: Clone + Send + Sync;
    /// A parsed PATCH body.
    type Patch: Clone + Send + Sync;
    /// The wire shape: REST answers and the `{KIND}:new` event.
    type View: Serialize;

    fn id(&self) -> Uuid;
    fn user_id(&self) -> Uuid;
    /// The list's order, newest first: its date, then its creation time.
    fn sort_key(&self) -> (&str, i64);
    fn updated_at(&self) -> i64;
    fn view(&self) -> Self::View;

    fn parse_new(body: &Map<String, Value>) -> Result<Self::New, FieldErrors>;
    fn parse_patch(body: &Map<String, Value>) -> Result<Self::Patch, FieldErrors>;
    /// Checks the value of `FILTER` in a list query.
    fn parse_filter(value: &str) -> Result<String, &'static str>;

    /// The platform a body names: it must be one of the owner's.
    fn new_platform(new: &Self::New) -> Option<Uuid>;
    /// `Some(Some(id))` sets a platform, `Some(None)` clears it.
    fn patch_platform(patch: &Self::Patch) -> Option<Option<Uuid>>;

    /// A new record of `user`; `platform` is the resolved `new_platform`.
    fn create(new: Self::New, user: Uuid, platform: Option<Platform>, now_ms: i64) -> Self;
    /// The record after `patch`, `updated_at` left as it was; errors a
    /// well-formed body can still earn (an invoice's forbidden status
    /// change). `now_ms` dates what the patch itself stamps (`paidAt`).
    fn patched(
        &self,
        patch: &Self::Patch,
        platform: Option<Platform>,
        now_ms: i64,
    ) -> Result<Self, FieldErrors>;
    fn touch(&mut self, now_ms: i64);

    /// The notification that follows `change`; `before` is the record
    /// before an update.
    fn notice(&self, change: Change, before: Option<&Self>) -> Notice;

    fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).expect("a record always serializes")
    }
}

/// The accessors every record type writes the same way, from its `id`,
/// `user_id` and `updated_at` fields: `record_fields!();` in its `impl`.
macro_rules! record_fields {
    () => {
        fn id(&self) -> Uuid {
            self.id
        }

        fn user_id(&self) -> Uuid {
            self.user_id
        }

        fn updated_at(&self) -> i64 {
            self.updated_at
        }

        fn touch(&mut self, now_ms: i64) {
            self.updated_at = now_ms;
        }
    };
}
pub(crate) use record_fields;

/// The fields whose value differs, with their new value: the `changes` of
/// `{KIND}:updated`. Identity and timestamps are not changes.
pub fn changes<R: Record>(before: &R, after: &R) -> Map<String, Value> {
    const NOT_CHANGES: [&str; 4] = ["id", "userId", "createdAt", "updatedAt"];
    let (Value::Object(before), Value::Object(after)) = (before.to_json(), after.to_json()) else {
        return Map::new();
    };
    after
        .into_iter()
        .filter(|(key, value)| {
            !NOT_CHANGES.contains(&key.as_str()) && before.get(key) != Some(value)
        })
        .collect()
}

/// The event of `change`: `{KIND}:new` carries the record, `{KIND}:updated`
/// `{id, userId, changes, updatedAt}`, `{KIND}:deleted` `{id}`.
pub fn event<R: Record>(change: Change, record: &R, diff: Map<String, Value>) -> DomainEvent {
    let kind = R::KIND;
    match change {
        Change::Created => DomainEvent::new(format!("{kind}:new"), record.to_json()),
        Change::Updated => DomainEvent::new(
            format!("{kind}:updated"),
            json!({
                "id": record.id(),
                "userId": record.user_id(),
                "changes": diff,
                "updatedAt": rfc3339(record.updated_at()),
            }),
        ),
        Change::Deleted => {
            DomainEvent::new(format!("{kind}:deleted"), json!({ "id": record.id() }))
        }
    }
}

/// The stored notification that follows `change`.
pub fn notification<R: Record>(
    change: Change,
    record: &R,
    before: Option<&R>,
    now_ms: i64,
) -> Notification {
    notify(record, record.notice(change, before), Some(5000), now_ms)
}

/// A notification about `record` (its id in `data` under `ID_KEY`).
pub fn notify<R: Record>(
    record: &R,
    notice: Notice,
    duration: Option<i64>,
    now_ms: i64,
) -> Notification {
    Notification {
        id: super::new_id(),
        kind: notice.kind,
        title: notice.title,
        message: notice.message,
        timestamp: now_ms,
        dismissible: true,
        duration,
        data: json!({ R::ID_KEY: record.id() }),
    }
}
