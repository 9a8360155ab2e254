//! `/api/admin/*`: the toolbox of the Socket.IO server we replace
//! (emitToUser, broadcastEvent, getConnectedUsers, disconnectUser, the
//! notification helpers) as REST, for the `admin` role only.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::dto::{
    Accepted, AdminEventRequest, AdminNotificationRequest, Closed, Connections, UserConnections,
};
use super::extract::{AdminUser, Sender};
use super::extract::{IdPath, JsonObject};
use super::{no_content, AppState};
use crate::db::rooms;
use crate::db::users;
use crate::domain::event::{is_reserved_event_name, valid_event_name, DomainEvent};
use crate::domain::input::Fields;
use crate::domain::notification::NewNotification;
use crate::domain::stream::StreamKey;
use crate::domain::time::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::error::{AuthErrors, BodyErrors, ErrorBody};
use crate::push::broker::Control;

const TARGETS: &str =
    "must be one of {\"user\":id}, {\"users\":[ids]}, {\"room\":name}, {\"all\":true}";

/// Most recipients one request may name.
const MAX_USERS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/notifications", post(notify))
        .route("/api/admin/events", post(emit))
        .route("/api/admin/connections", get(connections))
        .route(
            "/api/admin/rooms/{room}/members/{user}",
            put(join_room).delete(leave_room),
        )
        .route(
            "/api/admin/users/{id}/connections",
            get(user_connections).delete(disconnect),
        )
}

/// Who receives: named users (their own streams) or everyone (the broadcast
/// stream, one log row whatever the number of users).
enum Recipients {
    Users(Vec<Uuid>),
    Room(String),
    Everyone,
}

fn user_ids(v: &Value) -> Result<Vec<Uuid>, &'static str> {
    let list = v.as_array().ok_or("must be an array of user ids")?;
    if list.is_empty() || list.len() > MAX_USERS {
        return Err("must name 1 to 1000 users");
    }
    let mut ids = list
        .iter()
        .map(|id| id.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .collect::<Option<Vec<_>>>()
        .ok_or("must be an array of user ids")?;
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Refuse ids of users that do not exist (422, naming the field).
async fn check_users(app: &AppState, ids: &[Uuid], field: &str) -> ApiResult<()> {
    for id in ids {
        if !app.db.known_users.exists(&app.db.read, *id).await? {
            return Err(ApiError::field(field, format!("unknown user {id}")));
        }
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/admin/notifications",
    tag = "admin",
    // An admin's token in any of the usual places, or a publisher key.
    security(("bearer" = []), ("query" = []), ("cookie" = []), ("publisherKey" = [])),
    request_body = AdminNotificationRequest,
    responses(
        AuthErrors,
        BodyErrors,
        (status = 202, body = Accepted),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn notify(
    State(app): State<AppState>,
    _sender: Sender,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let parsed = NewNotification::parse(&body);
    let mut f = Fields::new(&body);
    let ids = f.optional("userIds", user_ids);
    let broadcast = f
        .optional("broadcast", |v| v.as_bool().ok_or("must be true or false"))
        .unwrap_or(false);
    let recipients = match (ids, broadcast) {
        (Some(_), true) => {
            f.error("broadcast", "give either userIds or broadcast, not both");
            None
        }
        (Some(ids), false) => Some(Recipients::Users(ids)),
        (None, true) => Some(Recipients::Everyone),
        (None, false) => {
            if !f.errors.contains_key("userIds") {
                f.error("userIds", "give userIds or broadcast: true");
            }
            None
        }
    };
    let mut errors = f.errors;
    let new = match parsed {
        Ok(n) => Some(n),
        Err(more) => {
            errors.extend(more);
            None
        }
    };
    let (Some(new), Some(recipients), true) = (new, recipients, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };

    let notification = new.into_notification(now_ms());
    let notifications = match &recipients {
        Recipients::Everyone => vec![(None, notification)],
        Recipients::Room(_) => unreachable!("notifications target users or everyone"),
        Recipients::Users(ids) => {
            check_users(&app, ids, "userIds").await?;
            // Each user gets their own copy (own id, own read state).
            ids.iter()
                .map(|id| {
                    let mine = crate::domain::notification::Notification {
                        id: crate::domain::new_id(),
                        ..notification.clone()
                    };
                    (Some(*id), mine)
                })
                .collect()
        }
    };
    // Group-committed with other publishers' requests.
    app.publisher.publish_notifications(notifications).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true })))
}

#[utoipa::path(
    post,
    path = "/api/admin/events",
    tag = "admin",
    // An admin's token in any of the usual places, or a publisher key.
    security(("bearer" = []), ("query" = []), ("cookie" = []), ("publisherKey" = [])),
    request_body = AdminEventRequest,
    responses(
        AuthErrors,
        BodyErrors,
        (status = 202, body = Accepted),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn emit(
    State(app): State<AppState>,
    _sender: Sender,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let mut f = Fields::new(&body);
    let name = f.required("event", |v| {
        v.as_str()
            .filter(|s| valid_event_name(s))
            .ok_or("must match [a-z0-9:_-]{1,64}")
            .and_then(|s| {
                if is_reserved_event_name(s) {
                    Err("is one of the server's own event names")
                } else {
                    Ok(s.to_owned())
                }
            })
    });
    let target = f.required("target", |v| {
        parse_target(v.as_object().ok_or("must be an object")?)
    });
    let data = f.optional("data", |v| Ok(v.clone())).unwrap_or(Value::Null);
    if data.to_string().len() > 64 * 1024 {
        f.error("data", "is larger than 64 KiB");
    }
    f.finish().map_err(ApiError::Validation)?;
    let (Some(name), Some(target)) = (name, target) else {
        unreachable!("finish() reports missing fields")
    };

    let event = DomainEvent::new(name, data);
    let events = match target {
        Recipients::Everyone => vec![(StreamKey::Broadcast, event)],
        Recipients::Users(ids) => {
            check_users(&app, &ids, "target").await?;
            ids.into_iter()
                .map(|id| (StreamKey::User(id), event.clone()))
                .collect()
        }
        Recipients::Room(name) => {
            // A room is made on its first event: that needs the write
            // transaction itself.
            app.publisher
                .write(&StreamKey::Broadcast, move |tx| {
                    let (name, event) = (name.clone(), event.clone());
                    Box::pin(async move {
                        let room = rooms::ensure(tx.conn(), &name).await?;
                        tx.append(StreamKey::Room(room), &event).await?;
                        Ok::<_, sqlx::Error>(())
                    })
                })
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true })));
        }
    };
    // Group-committed with other publishers' requests.
    app.publisher.publish_events(events).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true })))
}

fn parse_target(t: &Map<String, Value>) -> Result<Recipients, &'static str> {
    if t.len() != 1 {
        return Err(TARGETS);
    }
    if let Some(id) = t.get("user") {
        let id = id
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or("user must be a user id")?;
        return Ok(Recipients::Users(vec![id]));
    }
    if let Some(ids) = t.get("users") {
        return user_ids(ids).map(Recipients::Users);
    }
    if let Some(room) = t.get("room") {
        return room
            .as_str()
            .filter(|r| valid_room_name(r))
            .map(|r| Recipients::Room(r.to_owned()))
            .ok_or("room must be a room name [A-Za-z0-9:_.-]{1,64}");
    }
    if t.get("all") == Some(&Value::Bool(true)) {
        return Ok(Recipients::Everyone);
    }
    Err(TARGETS)
}

#[utoipa::path(
    get,
    path = "/api/admin/connections",
    tag = "admin",
    responses(
        AuthErrors,
        (status = 200, description = "open streams on every server", body = Connections),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn connections(
    State(app): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> ApiResult<Json<Connections>> {
    let users = app.presence.connections().await?;
    let total: usize = users.iter().map(|(_, n)| n).sum();
    let users: Vec<_> = users
        .into_iter()
        .map(|(user_id, connections)| UserConnections {
            user_id,
            connections,
        })
        .collect();
    Ok(Json(Connections { total, users }))
}

#[utoipa::path(
    get,
    path = "/api/admin/users/{id}/connections",
    tag = "admin",
    params(
        ("id" = Uuid, Path, description = "user id"),
    ),
    responses(
        AuthErrors,
        (status = 200, body = UserConnections),
        (status = 404, description = "malformed id", body = ErrorBody),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn user_connections(
    State(app): State<AppState>,
    AdminUser(_admin): AdminUser,
    IdPath(id): IdPath,
) -> ApiResult<Json<UserConnections>> {
    Ok(Json(UserConnections {
        user_id: id,
        connections: app.presence.user_streams(id).await?,
    }))
}

/// Ends the user's streams on every server; they end within a second (a
/// control message to the others) and clients resume with `Last-Event-ID`.
#[utoipa::path(
    delete,
    path = "/api/admin/users/{id}/connections",
    tag = "admin",
    params(
        ("id" = Uuid, Path, description = "user id"),
    ),
    responses(
        AuthErrors,
        (status = 200, description = "streams end within a second", body = Closed),
        (status = 404, description = "malformed id", body = ErrorBody),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn disconnect(
    State(app): State<AppState>,
    AdminUser(admin): AdminUser,
    IdPath(id): IdPath,
) -> ApiResult<Json<Closed>> {
    let closed = app.presence.user_streams(id).await?;
    app.publisher.control(Control::Disconnect { user: id });
    tracing::info!(admin_id = %admin.id, user_id = %id, closed, "force-disconnect");
    Ok(Json(Closed { closed }))
}

fn valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:.-".contains(&b))
}

/// `PUT /api/admin/rooms/{room}/members/{user}`: the user receives the
/// room's events from now on, live and on resume.
#[utoipa::path(
    put,
    path = "/api/admin/rooms/{room}/members/{user}",
    tag = "admin",
    params(
        ("room" = String, Path, pattern = "^[A-Za-z0-9:_.-]{1,64}$", description = "room name"),
        ("user" = Uuid, Path, description = "user id"),
    ),
    responses(
        AuthErrors,
        (status = 204, description = "joined"),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 422, description = "bad room name", body = ErrorBody),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn join_room(
    State(app): State<AppState>,
    AdminUser(_admin): AdminUser,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (name, user) = room_member(path)?;
    let (room, joined) = app
        .publisher
        .write(&StreamKey::User(user), move |tx| {
            let name = name.clone();
            Box::pin(async move {
                if !users::exists(tx.conn(), user).await? {
                    return Err(ApiError::NotFound);
                }
                let room = rooms::ensure(tx.conn(), &name).await?;
                let joined = rooms::join(tx.conn(), room, user).await?;
                if joined.is_some() {
                    // A bookkeeping event in the user's own stream (never
                    // delivered): its place orders the join against the
                    // user's cursors, see `rooms::joined_since`.
                    let event = DomainEvent::new("~room:joined", json!({ "room": name }));
                    let user_seq = tx.append(StreamKey::User(user), &event).await?;
                    rooms::set_join_order(tx.conn(), room, user, user_seq).await?;
                }
                Ok((room, joined))
            })
        })
        .await?;
    if let Some(seq) = joined {
        app.publisher.control(Control::Membership {
            room,
            user,
            joined: Some(seq),
        });
    }
    Ok(no_content())
}

/// `DELETE /api/admin/rooms/{room}/members/{user}`: no room events after this.
#[utoipa::path(
    delete,
    path = "/api/admin/rooms/{room}/members/{user}",
    tag = "admin",
    params(
        ("room" = String, Path, pattern = "^[A-Za-z0-9:_.-]{1,64}$", description = "room name"),
        ("user" = Uuid, Path, description = "user id"),
    ),
    responses(
        AuthErrors,
        (status = 204, description = "left (or was not a member)"),
        (status = 404, description = "malformed user id", body = ErrorBody),
        (status = 422, description = "bad room name", body = ErrorBody),
        (status = 403, description = "not an admin (or csrf)", body = ErrorBody),
    ),
)]
pub async fn leave_room(
    State(app): State<AppState>,
    AdminUser(_admin): AdminUser,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (name, user) = room_member(path)?;
    let left = app
        .publisher
        .write(&StreamKey::User(user), move |tx| {
            let name = name.clone();
            Box::pin(async move {
                let Some(room) = rooms::find(tx.conn(), &name).await? else {
                    return Ok::<_, sqlx::Error>(None);
                };
                let left = rooms::leave(tx.conn(), room, user).await?;
                Ok(left.then_some(room))
            })
        })
        .await?;
    if let Some(room) = left {
        app.publisher.control(Control::Membership {
            room,
            user,
            joined: None,
        });
    }
    Ok(no_content())
}

/// The room name and user id of a membership route. A path that does not
/// even decode (invalid UTF-8) names nothing that exists: 404.
fn room_member(path: Result<Path<(String, String)>, PathRejection>) -> ApiResult<(String, Uuid)> {
    let Path((room, user)) = path.map_err(|_| ApiError::NotFound)?;
    if !valid_room_name(&room) {
        return Err(ApiError::field(
            "room",
            "must be a room name [A-Za-z0-9:_.-]{1,64}",
        ));
    }
    let user = Uuid::parse_str(&user).map_err(|_| ApiError::NotFound)?;
    Ok((room.to_owned(), user))
}
