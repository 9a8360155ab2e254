//! `/api/notifications`: the user's notifications (their own and broadcasts)
//! with per-user read state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::dto::{NotificationItem, NotificationList};
use super::extract::AuthUser;
use super::extract::{ApiQuery, IdPath};
use super::records::with_event_cursor;
use super::{no_content, AppState};
use crate::db::notifications;
use crate::domain::event::DomainEvent;
use crate::domain::stream::StreamKey;
use crate::domain::time::{now_ms, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::error::{AuthErrors, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/{id}/read", post(mark_read))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    unread: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/notifications",
    operation_id = "listNotifications",
    tag = "notifications",
    params(
        ("unread" = Option<bool>, Query, nullable = false, description = "true: only unread ones"),
        (
            "limit" = Option<i64>,
            Query,
            nullable = false,
            minimum = 1,
            maximum = 100,
            description = "page size; default 50",
        ),
        ("cursor" = Option<String>, Query, nullable = false, description = "`nextCursor` of the previous page"),
    ),
    responses(
        AuthErrors,
        (
            status = 200,
            description = "newest first; header EarnTrack-Event-Cursor",
            body = NotificationList,
            headers(("EarnTrack-Event-Cursor" = String, description = "stream position read with this data")),
        ),
        (status = 400, description = "bad query", body = ErrorBody),
    ),
)]
pub async fn list(
    State(app): State<AppState>,
    me: AuthUser,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let bad = |what: &str| ApiError::BadRequest(format!("bad query: {what}"));
    let unread = match p.unread.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("unread must be true or false")),
    };
    let limit = match p.limit.filter(|l| !l.is_empty()) {
        None => 50,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| bad("limit must be 1 to 100"))?,
    };
    let before = match p.cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let (at, id) = c.split_once('_').ok_or_else(|| bad("unknown cursor"))?;
            let at = at.parse::<i64>().map_err(|_| bad("unknown cursor"))?;
            Some((
                at,
                Uuid::parse_str(id)
                    .map_err(|_| bad("unknown cursor"))?
                    .to_string(),
            ))
        }
    };
    let mut tx = app.db.begin_snapshot().await?;
    let position = crate::db::event_log::current_position(&mut tx, me.id).await?;
    // One row more than the page tells whether another page exists.
    let mut rows = notifications::list(&mut tx, me.id, unread, before, limit + 1).await?;
    tx.commit().await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| format!("{}_{}", r.notification.timestamp, r.notification.id))
    } else {
        None
    };
    let items = rows
        .iter()
        .map(|r| NotificationItem {
            notification: r.notification.view(),
            read: r.read_at.is_some(),
            read_at: r.read_at.map(rfc3339),
        })
        .collect();
    let body = Json(NotificationList {
        items,
        next_cursor: next,
    })
    .into_response();
    Ok(with_event_cursor(
        body,
        &app.feeds.codec.encode(me.id, &position),
    ))
}

/// Marks read and tells every stream of this user, so other tabs clear it.
#[utoipa::path(
    post,
    path = "/api/notifications/{id}/read",
    operation_id = "markNotificationRead",
    tag = "notifications",
    params(
        ("id" = Uuid, Path, description = "notification id"),
    ),
    responses(
        AuthErrors,
        (status = 204, description = "marked read; publishes notification:read"),
        (status = 404, description = "missing or not yours", body = ErrorBody),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn mark_read(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    let user = StreamKey::User(me.id);
    let me = me.id;
    app.publisher
        .write(&user.clone(), move |tx| {
            let user = user.clone();
            Box::pin(async move {
                if !notifications::mark_read(tx.conn(), me, id, now_ms()).await? {
                    return Err(ApiError::NotFound);
                }
                tx.append(user, &DomainEvent::notification_read(id)).await?;
                Ok(())
            })
        })
        .await?;
    Ok(no_content())
}
