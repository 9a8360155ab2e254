//! `/api/earnings`: the owner's earnings. Every committed mutation publishes
//! its change event, then its success notification, to the owner's streams.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::dto::{EarningList, EarningPatchRequest, NewEarningRequest};
use super::extract::AuthUser;
use super::extract::{ApiQuery, IdPath, JsonObject};
use super::records::{decode_page_cursor, idempotency_key, page_cursor, page_limit};
use super::records::{replayed, with_event_cursor};
use super::{no_content, AppState};
use crate::db::{earnings, idempotency, is_unique_violation, notifications, platforms};
use crate::domain::earning::{Earning, EarningPatch, EarningView, NewEarning};
use crate::domain::event::{earning_notification, DomainEvent, EarningChange};
use crate::domain::stream::StreamKey;
use crate::domain::time::{now_ms, parse_date};
use crate::error::{ApiError, ApiResult};
use crate::error::{AuthErrors, BodyErrors, ErrorBody};
use crate::push::WriteTx;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/earnings", get(list).post(create))
        .route("/api/earnings/{id}", get(show).patch(update).delete(remove))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "platformId")]
    platform_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/earnings",
    operation_id = "listEarnings",
    tag = "earnings",
    params(
        ("from" = Option<String>, Query, nullable = false, format = Date, description = "earliest date, YYYY-MM-DD"),
        ("to" = Option<String>, Query, nullable = false, format = Date, description = "latest date, YYYY-MM-DD"),
        ("platformId" = Option<Uuid>, Query, nullable = false, description = "only this platform's earnings"),
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
            description = "newest date first; header EarnTrack-Event-Cursor",
            body = EarningList,
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
    let date = |d: Option<String>, name: &str| match d.filter(|d| !d.is_empty()) {
        Some(d) => parse_date(&d)
            .map(|_| Some(d))
            .ok_or_else(|| bad(&format!("{name} must be YYYY-MM-DD"))),
        None => Ok(None),
    };
    let query = earnings::ListQuery {
        from: date(p.from, "from")?,
        to: date(p.to, "to")?,
        platform_id: match p.platform_id.filter(|s| !s.is_empty()) {
            Some(id) => Some(Uuid::parse_str(&id).map_err(|_| bad("platformId must be a UUID"))?),
            None => None,
        },
        limit: page_limit(p.limit.filter(|s| !s.is_empty()))?,
        after: match p.cursor.filter(|s| !s.is_empty()) {
            Some(c) => Some(decode_page_cursor(&c).ok_or_else(|| bad("unknown cursor"))?),
            None => None,
        },
    };
    // Data and stream position from one snapshot: a client that loads this
    // page and then resumes from the header misses nothing and sees nothing
    // twice.
    let mut tx = app.db.begin_snapshot().await?;
    let position = crate::db::event_log::current_position(&mut tx, me.id).await?;
    // One row more than the page tells whether another page exists.
    let page = query.limit;
    let mut items = earnings::list(
        &mut tx,
        me.id,
        &earnings::ListQuery {
            limit: page + 1,
            ..query
        },
    )
    .await?;
    tx.commit().await?;
    let next = if items.len() as i64 > page {
        items.truncate(page as usize);
        items
            .last()
            .map(|e| page_cursor((&e.date, e.created_at), e.id))
    } else {
        None
    };
    let body = EarningList {
        items: items.iter().map(Earning::view).collect(),
        next_cursor: next,
    };
    Ok(with_event_cursor(
        Json(body).into_response(),
        &app.feeds.codec.encode(me.id, &position),
    ))
}

#[utoipa::path(
    get,
    path = "/api/earnings/{id}",
    operation_id = "getEarning",
    tag = "earnings",
    params(
        ("id" = Uuid, Path, description = "earning id"),
    ),
    responses(
        AuthErrors,
        (status = 200, body = EarningView),
        (status = 404, description = "missing or not yours", body = ErrorBody),
    ),
)]
pub async fn show(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<Json<EarningView>> {
    let mut conn = app.db.read.acquire().await?;
    let earning = earnings::get(&mut conn, me.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(earning.view()))
}

#[utoipa::path(
    post,
    path = "/api/earnings",
    operation_id = "createEarning",
    tag = "earnings",
    request_body = NewEarningRequest,
    params(
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            min_length = 1,
            max_length = 255,
            description = "a retry with the same key returns the first response",
        ),
    ),
    responses(
        AuthErrors,
        BodyErrors,
        (
            status = 201,
            description = "created; publishes earnings:new then a notification",
            body = EarningView,
            headers((
                "Idempotent-Replayed" = String,
                description = "`true` on the stored answer to an earlier request with the same Idempotency-Key"
            )),
        ),
        (status = 409, description = "concurrent idempotent retry", body = ErrorBody),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn create(
    State(app): State<AppState>,
    me: AuthUser,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let new = NewEarning::parse(&body).map_err(ApiError::Validation)?;
    let mut tx = app.publisher.begin().await?;
    if let Some(key) = &key {
        if let Some(stored) = idempotency::find(tx.conn(), me.id, key).await? {
            return Ok(replayed(stored));
        }
    }
    let platform = platforms::get(tx.conn(), me.id, new.platform_id)
        .await?
        .ok_or_else(|| ApiError::field("platformId", "no such platform"))?;
    let now = now_ms();
    let earning = Earning {
        id: Uuid::new_v4(),
        user_id: me.id,
        platform,
        date: new.date,
        hours: new.hours,
        amount: new.amount,
        notes: new.notes,
        created_at: now,
        updated_at: now,
    };
    earnings::insert(tx.conn(), &earning).await?;
    publish_change(
        &mut tx,
        DomainEvent::earning_created(&earning),
        EarningChange::Created,
        &earning,
    )
    .await?;
    let body = earning.to_json();
    if let Some(key) = &key {
        match idempotency::store(tx.conn(), me.id, key, 201, &body.to_string(), now).await {
            // A concurrent retry with the same key won: answer as it did.
            Err(err) if is_unique_violation(&err) => {
                drop(tx);
                let mut conn = app.db.read.acquire().await?;
                let stored = idempotency::find(&mut conn, me.id, key)
                    .await?
                    .ok_or(ApiError::Conflict("retry".into()))?;
                return Ok(replayed(stored));
            }
            other => other?,
        }
    }
    app.publisher.commit(tx).await?;
    tracing::info!(earning_id = %earning.id, "earning created");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    patch,
    path = "/api/earnings/{id}",
    operation_id = "updateEarning",
    tag = "earnings",
    request_body = EarningPatchRequest,
    params(
        ("id" = Uuid, Path, description = "earning id"),
    ),
    responses(
        AuthErrors,
        BodyErrors,
        (
            status = 200,
            description = "updated; publishes earnings:updated then a notification when something changed",
            body = EarningView,
        ),
        (status = 404, description = "missing or not yours", body = ErrorBody),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn update(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<EarningView>> {
    let patch = EarningPatch::parse(&body).map_err(ApiError::Validation)?;
    let mut tx = app.publisher.begin().await?;
    let old = earnings::get(tx.conn(), me.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let platform = match patch.platform_id {
        Some(pid) => Some(
            platforms::get(tx.conn(), me.id, pid)
                .await?
                .ok_or_else(|| ApiError::field("platformId", "no such platform"))?,
        ),
        None => None,
    };
    let (earning, changes) = patch.apply(&old, platform, now_ms());
    if changes.is_empty() {
        // Nothing changed: nothing written, nothing published.
        return Ok(Json(old.view()));
    }
    earnings::update(tx.conn(), &earning).await?;
    publish_change(
        &mut tx,
        DomainEvent::earning_updated(&earning, changes),
        EarningChange::Updated,
        &earning,
    )
    .await?;
    app.publisher.commit(tx).await?;
    Ok(Json(earning.view()))
}

#[utoipa::path(
    delete,
    path = "/api/earnings/{id}",
    operation_id = "deleteEarning",
    tag = "earnings",
    params(
        ("id" = Uuid, Path, description = "earning id"),
    ),
    responses(
        AuthErrors,
        (status = 204, description = "deleted; publishes earnings:deleted then a notification"),
        (status = 404, description = "missing or not yours", body = ErrorBody),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    let mut tx = app.publisher.begin().await?;
    let earning = earnings::delete(tx.conn(), me.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    publish_change(
        &mut tx,
        DomainEvent::earning_deleted(&earning),
        EarningChange::Deleted,
        &earning,
    )
    .await?;
    app.publisher.commit(tx).await?;
    Ok(no_content())
}

/// The change event, then its success notification (stored, so it shows in
/// the notification list too), both in the owner's log stream.
async fn publish_change(
    tx: &mut WriteTx,
    event: DomainEvent,
    kind: EarningChange,
    earning: &Earning,
) -> Result<(), sqlx::Error> {
    let owner = StreamKey::User(earning.user_id);
    tx.append(owner.clone(), &event).await?;
    let notification = earning_notification(kind, earning, now_ms());
    notifications::insert(tx.conn(), Some(earning.user_id), &notification).await?;
    tx.append(owner, &DomainEvent::notification(&notification))
        .await?;
    Ok(())
}
