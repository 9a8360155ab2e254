//! Notifications and their per-user read state. A broadcast is one row with
//! `user_id` NULL; each user's read state of it is a row in
//! `notification_reads` written only when that user marks it read.

use sqlx::AnyConnection;
use uuid::Uuid;

use super::exec::{Exec, Statement};
use crate::args;
use crate::domain::notification::{Notification, NotificationType};

/// Store `n` for `user`, or for everyone when `user` is `None` (run it, or
/// commit it with its event: `Tx::append_with`).
pub fn insert(user: Option<Uuid>, n: &Notification) -> Statement {
    Statement::new(
        "INSERT INTO notifications (id, user_id, type, title, message, duration, dismissible, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            n.id,
            user,
            n.kind.as_str(),
            &n.title,
            &n.message,
            n.duration,
            n.dismissible,
            n.data.to_string(),
            n.timestamp,
        ],
    )
}

#[derive(Debug)]
pub struct Listed {
    pub notification: Notification,
    pub read_at: Option<i64>,
}

type Row = (
    String,
    String,
    String,
    String,
    Option<i64>,
    i64,
    String,
    i64,
    Option<i64>,
);

/// Newest first; `before` is the last (created_at, id) of the previous page.
pub async fn list(
    conn: &mut AnyConnection,
    user: Uuid,
    unread_only: bool,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Listed>, sqlx::Error> {
    let (before_at, before_id) = before.clone().unwrap_or_default();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT n.id, n.type, n.title, n.message, n.duration, n.dismissible, n.data, n.created_at, r.read_at \
         FROM notifications n \
         LEFT JOIN notification_reads r ON r.notification_id = n.id AND r.user_id = $1 \
         WHERE (n.user_id = $1 OR n.user_id IS NULL) \
         AND ($2 = 0 OR r.read_at IS NULL) \
         AND ($3 = 0 OR n.created_at < $4 OR (n.created_at = $4 AND n.id < $5)) \
         ORDER BY n.created_at DESC, n.id DESC LIMIT $6",
    )
    .bind(user.to_string())
    .bind(i64::from(unread_only))
    .bind(i64::from(before.is_some()))
    .bind(before_at)
    .bind(before_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Listed {
            notification: Notification {
                id: Uuid::parse_str(&r.0).unwrap_or_default(),
                kind: NotificationType::parse(&r.1).unwrap_or(NotificationType::Info),
                title: r.2,
                message: r.3,
                duration: r.4,
                dismissible: r.5 != 0,
                data: serde_json::from_str(&r.6).unwrap_or(serde_json::Value::Null),
                timestamp: r.7,
            },
            read_at: r.8,
        })
        .collect())
}

/// Mark read for `user`. `false` when the notification is not theirs to see.
pub async fn mark_read(
    conn: &mut dyn Exec,
    user: Uuid,
    id: Uuid,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let visible = conn
        .fetch_optional(
            "SELECT 1 FROM notifications WHERE id = $1 AND (user_id = $2 OR user_id IS NULL)",
            args![id, user],
        )
        .await?;
    if visible.is_none() {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO notification_reads (notification_id, user_id, read_at) VALUES ($1, $2, $3) \
         ON CONFLICT (notification_id, user_id) DO NOTHING",
        args![id, user, now],
    )
    .await?;
    Ok(true)
}
