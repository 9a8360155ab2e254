//! Notifications: persisted per user (or once for a broadcast) and pushed as
//! the `notification` event.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::input::FieldErrors;
use super::input::{self, Fields};
use super::time::rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationType {
    Success,
    Error,
    Info,
    Warning,
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Success => "success",
            NotificationType::Error => "error",
            NotificationType::Info => "info",
            NotificationType::Warning => "warning",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "success" => NotificationType::Success,
            "error" => NotificationType::Error,
            "info" => NotificationType::Info,
            "warning" => NotificationType::Warning,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub id: Uuid,
    pub kind: NotificationType,
    pub title: String,
    pub message: String,
    pub timestamp: i64,
    pub dismissible: bool,
    /// How long a toast stays, in milliseconds; `None` = until dismissed.
    pub duration: Option<i64>,
    pub data: Value,
}

impl Notification {
    pub fn view(&self) -> NotificationView {
        NotificationView {
            id: self.id,
            title: self.title.clone(),
            message: self.message.clone(),
            kind: self.kind.as_str().to_owned(),
            timestamp: rfc3339(self.timestamp),
            dismissible: self.dismissible,
            duration: self.duration,
            data: self.data.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).expect("a notification always serializes")
    }
}

/// A notification on the wire (the `notification` event and list items).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub id: Uuid,
    pub title: String,
    pub message: String,
    /// success, error, info or warning
    #[serde(rename = "type")]
    #[schema(pattern = "^(success|error|info|warning)$")]
    pub kind: String,
    #[schema(format = DateTime)]
    pub timestamp: String,
    pub dismissible: bool,
    /// How long a toast stays, in milliseconds; null = until dismissed.
    pub duration: Option<i64>,
    /// Free-form JSON.
    pub data: Value,
}

/// The notification part of `POST /api/admin/notifications`.
pub struct NewNotification {
    pub kind: NotificationType,
    pub title: String,
    pub message: String,
    pub duration: Option<i64>,
    pub dismissible: bool,
    pub data: Value,
}

impl NewNotification {
    pub fn parse(object: &serde_json::Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut f = Fields::new(object);
        let kind = f.required("type", |v| {
            v.as_str()
                .and_then(NotificationType::parse)
                .ok_or("must be one of success, error, info, warning")
        });
        let title = f.required("title", input::text(200));
        let message = f.required("message", input::text(2000));
        let duration = f.optional("duration", |v| {
            v.as_i64()
                .filter(|d| (0..=86_400_000).contains(d))
                .ok_or("must be a whole number of milliseconds (0 to 86400000)")
        });
        let dismissible = f.optional("dismissible", input::boolean).unwrap_or(true);
        let data = f.optional("data", |v| Ok(v.clone())).unwrap_or(Value::Null);
        if serde_json::to_vec(&data).map(|b| b.len()).unwrap_or(0) > 16 * 1024 {
            f.error("data", "is larger than 16 KiB");
        }
        f.finish()?;
        Ok(NewNotification {
            kind: kind.unwrap_or(NotificationType::Info),
            title: title.unwrap_or_default(),
            message: message.unwrap_or_default(),
            duration: duration.or(Some(5000)),
            dismissible,
            data,
        })
    }

    pub fn into_notification(self, now_ms: i64) -> Notification {
        Notification {
            id: super::new_id(),
            kind: self.kind,
            title: self.title,
            message: self.message,
            timestamp: now_ms,
            dismissible: self.dismissible,
            duration: self.duration,
            data: self.data,
        }
    }
}
