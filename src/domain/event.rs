//! Domain events: what a committed change publishes to streams. Each has a
//! name (the Socket.IO event names we keep), a JSON payload and a topic used
//! by the `topics=` filter of `/events`.

use serde_json::{json, Value};

use super::earning::Platform;
use super::notification::Notification;

/// The `topics=` filter classes. Events outside `earnings`, `expenses`,
/// `invoices` and `notifications` (admin and room events, control events)
/// always pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Earnings,
    Expenses,
    Invoices,
    Notifications,
    Other,
    /// Bookkeeping in the log (names starting with `~`, which admin event
    /// names cannot): advances cursors, never delivered.
    Internal,
}

impl Topic {
    pub fn of(event_name: &str) -> Topic {
        if event_name.starts_with('~') {
            Topic::Internal
        } else if event_name.starts_with("earnings:") || event_name.starts_with("platforms:") {
            Topic::Earnings
        } else if event_name.starts_with("expenses:") {
            Topic::Expenses
        } else if event_name.starts_with("invoices:") {
            Topic::Invoices
        } else if event_name.starts_with("notification") {
            Topic::Notifications
        } else {
            Topic::Other
        }
    }

    /// Every topic, in the order of `index`.
    pub const ALL: [Topic; 6] = [
        Topic::Earnings,
        Topic::Expenses,
        Topic::Invoices,
        Topic::Notifications,
        Topic::Other,
        Topic::Internal,
    ];

    /// A small dense index (bit positions, metric handle slots).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The topic a client names in `topics=`; only the filterable ones.
    pub fn named(name: &str) -> Option<Topic> {
        Some(match name {
            "earnings" => Topic::Earnings,
            "expenses" => Topic::Expenses,
            "invoices" => Topic::Invoices,
            "notifications" => Topic::Notifications,
            _ => return None,
        })
    }

    /// A bounded label for metrics (never the free-form event name).
    pub fn label(self) -> &'static str {
        match self {
            Topic::Earnings => "earnings",
            Topic::Expenses => "expenses",
            Topic::Invoices => "invoices",
            Topic::Notifications => "notifications",
            Topic::Other => "other",
            Topic::Internal => "internal",
        }
    }
}

/// Event names accepted from admins: `[a-z0-9:_-]{1,64}`.
pub fn valid_event_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:-".contains(&b))
}

/// Names of the server's own events, and the prefixes of its resources'
/// events: an admin or a service publishing one could forge a change, a
/// notification or a control event (`auth:expired` ends a stream).
const RESERVED_NAMES: &[&str] = &["connected", "sync:reset", "auth:expired"];
const RESERVED_PREFIXES: &[&str] = &[
    "earnings:",
    "expenses:",
    "invoices:",
    "platforms:",
    "notification",
];

/// Whether `name` belongs to the server (refused on the admin publish route).
pub fn is_reserved_event_name(name: &str) -> bool {
    RESERVED_NAMES.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[derive(Clone, Debug, PartialEq)]
pub struct DomainEvent {
    pub name: String,
    pub data: Value,
}

impl DomainEvent {
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        DomainEvent {
            name: name.into(),
            data,
        }
    }

    pub fn topic(&self) -> Topic {
        Topic::of(&self.name)
    }

    pub fn platform_created(platform: &Platform) -> Self {
        DomainEvent::new("platforms:new", json!(platform))
    }

    pub fn notification(n: &Notification) -> Self {
        DomainEvent::new("notification", n.to_json())
    }

    pub fn notification_read(id: uuid::Uuid) -> Self {
        DomainEvent::new("notification:read", json!({ "id": id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_event_name_prefixes() {
        assert_eq!(Topic::of("earnings:new"), Topic::Earnings);
        assert_eq!(Topic::of("platforms:new"), Topic::Earnings);
        assert_eq!(Topic::of("expenses:new"), Topic::Expenses);
        assert_eq!(Topic::of("invoices:deleted"), Topic::Invoices);
        assert_eq!(Topic::of("notification"), Topic::Notifications);
        assert_eq!(Topic::of("notification:read"), Topic::Notifications);
        assert_eq!(Topic::of("deploy:done"), Topic::Other);
    }

    #[test]
    fn event_names_are_validated() {
        assert!(valid_event_name("room:msg_1-a"));
        assert!(!valid_event_name(""));
        assert!(!valid_event_name("Upper"));
        assert!(!valid_event_name("new\nline"));
        assert!(!valid_event_name(&"a".repeat(65)));
    }

    #[test]
    fn the_servers_own_event_names_are_reserved() {
        for name in [
            "connected",
            "sync:reset",
            "auth:expired",
            "earnings:new",
            "notification",
            "notification:read",
        ] {
            assert!(is_reserved_event_name(name), "{name}");
        }
        for name in [
            "deploy:done",
            "earning",
            "connected2",
            "room:msg",
            "platform",
        ] {
            assert!(!is_reserved_event_name(name), "{name}");
        }
    }
}
