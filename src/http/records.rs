//! `/api/{earnings,expenses,invoices}`: the routes of every ledger record,
//! written once for any `Record` (list, get, create with `Idempotency-Key`,
//! patch, delete). Each committed change publishes its `{KIND}:…` event,
//! then its success notification, to the owner's streams; a failed or
//! rolled-back write publishes nothing.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use uuid::Uuid;

use super::extract::{ApiQuery, AuthUser, IdPath, JsonObject};
use super::{no_content, AppState};
use crate::db::records::{self, ListQuery, Statement, Table};
use crate::db::{idempotency, is_unique_violation, notifications, platforms};
use crate::domain::earning::{Earning, Platform};
use crate::domain::event::DomainEvent;
use crate::domain::expense::Expense;
use crate::domain::invoice::Invoice;
use crate::domain::record::{self, Change, Record};
use crate::domain::stream::StreamKey;
use crate::domain::time::{now_ms, parse_date};
use crate::error::{ApiError, ApiResult};
use crate::push::Tx;

pub const CURSOR_HEADER: HeaderName = HeaderName::from_static("earntrack-event-cursor");
const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn router() -> Router<AppState> {
    routes::<Earning>()
        .merge(routes::<Expense>())
        .merge(routes::<Invoice>())
}

fn routes<R: Table>() -> Router<AppState> {
    let kind = R::KIND;
    Router::new()
        .route(&format!("/api/{kind}"), get(list::<R>).post(create::<R>))
        .route(
            &format!("/api/{kind}/{{id}}"),
            get(show::<R>).patch(update::<R>).delete(remove::<R>),
        )
}

async fn list<R: Table>(
    State(app): State<AppState>,
    me: AuthUser,
    ApiQuery(mut p): ApiQuery<HashMap<String, String>>,
) -> ApiResult<Response> {
    let bad = |what: &str| ApiError::BadRequest(format!("bad query: {what}"));
    let mut param = |name: &str| p.remove(name).filter(|v| !v.is_empty());
    let date = |d: Option<String>, name: &str| match d {
        Some(d) if parse_date(&d).is_none() => Err(bad(&format!("{name} must be YYYY-MM-DD"))),
        d => Ok(d),
    };
    let query = ListQuery {
        from: date(param("from"), "from")?,
        to: date(param("to"), "to")?,
        filter: match R::FILTER.and_then(&mut param) {
            Some(v) => Some(R::parse_filter(&v).map_err(bad)?),
            None => None,
        },
        limit: page_limit(param("limit"))?,
        after: match param("cursor") {
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
    let mut items = records::list::<R>(
        &mut *tx,
        me.id,
        &ListQuery {
            limit: page + 1,
            ..query
        },
    )
    .await?;
    tx.commit().await?;
    let next = if items.len() as i64 > page {
        items.truncate(page as usize);
        items.last().map(|r| page_cursor(r.sort_key(), r.id()))
    } else {
        None
    };
    let body = Page {
        items: items.iter().map(R::view).collect(),
        next_cursor: next,
    };
    Ok(with_event_cursor(
        Json(body).into_response(),
        &app.feeds.codec.encode(me.id, &position),
    ))
}

async fn show<R: Table>(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<Json<R::View>> {
    let mut conn = app.db.read.acquire().await?;
    let record = records::get::<R>(&mut *conn, me.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(record.view()))
}

async fn create<R: Table>(
    State(app): State<AppState>,
    me: AuthUser,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?.map(|k| format!("{}:{k}", R::KIND));
    let new = R::parse_new(&body).map_err(ApiError::Validation)?;
    let user = me.id;
    let created = app
        .publisher
        .write(&StreamKey::User(user), move |tx| {
            let (key, new) = (key.clone(), new.clone());
            Box::pin(async move {
                if let Some(key) = &key {
                    if let Some(stored) = idempotency::find(tx.conn(), user, key).await? {
                        return Ok(Created::Replayed(stored));
                    }
                }
                let platform = own_platform(tx, user, R::new_platform(&new)).await?;
                let now = now_ms();
                let record = R::create(new, user, platform, now);
                publish(tx, records::insert(&record), Change::Created, &record, None).await?;
                let body = record.to_json();
                if let Some(key) = &key {
                    match idempotency::store(tx.conn(), user, key, 201, &body.to_string(), now)
                        .await
                    {
                        // A concurrent retry with the same key won: this
                        // unit rolls back, and answers as that one did.
                        Err(err) if is_unique_violation(&err) => {
                            return Err(CreateFailed::Raced(key.clone()))
                        }
                        other => other?,
                    }
                }
                Ok(Created::New(record.id(), body))
            })
        })
        .await;
    match created {
        Ok(Created::New(id, body)) => {
            tracing::info!(kind = R::KIND, %id, "created");
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        Ok(Created::Replayed(stored)) => Ok(replayed(stored)),
        Err(CreateFailed::Raced(key)) => {
            let mut conn = app.db.read.acquire().await?;
            let stored = idempotency::find(&mut *conn, user, &key)
                .await?
                .ok_or(ApiError::Conflict("retry".into()))?;
            Ok(replayed(stored))
        }
        Err(CreateFailed::Api(err)) => Err(err),
    }
}

enum Created {
    New(Uuid, Value),
    /// The stored answer of an earlier request with the same key.
    Replayed((i64, String)),
}

enum CreateFailed {
    Api(ApiError),
    /// Another request with this `Idempotency-Key` committed first.
    Raced(String),
}

impl From<ApiError> for CreateFailed {
    fn from(err: ApiError) -> Self {
        CreateFailed::Api(err)
    }
}

impl From<sqlx::Error> for CreateFailed {
    fn from(err: sqlx::Error) -> Self {
        CreateFailed::Api(err.into())
    }
}

async fn update<R: Table>(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<R::View>> {
    let patch = R::parse_patch(&body).map_err(ApiError::Validation)?;
    let user = me.id;
    let record = app
        .publisher
        .write(&StreamKey::User(user), move |tx| {
            let patch = patch.clone();
            Box::pin(async move {
                let old = records::get::<R>(tx.conn(), user, id)
                    .await?
                    .ok_or(ApiError::NotFound)?;
                let platform = own_platform(tx, user, R::patch_platform(&patch).flatten()).await?;
                let now = now_ms();
                let mut new = old
                    .patched(&patch, platform, now)
                    .map_err(ApiError::Validation)?;
                if record::changes(&old, &new).is_empty() {
                    // Nothing changed: nothing written, nothing published.
                    return Ok::<_, ApiError>(old);
                }
                new.touch(now.max(old.updated_at()));
                publish(tx, records::update(&new), Change::Updated, &new, Some(&old)).await?;
                Ok(new)
            })
        })
        .await?;
    Ok(Json(record.view()))
}

async fn remove<R: Table>(
    State(app): State<AppState>,
    me: AuthUser,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    let user = me.id;
    app.publisher
        .write(&StreamKey::User(user), move |tx| {
            Box::pin(async move {
                let record = records::get::<R>(tx.conn(), user, id)
                    .await?
                    .ok_or(ApiError::NotFound)?;
                let delete = records::delete::<R>(user, id);
                publish(tx, delete, Change::Deleted, &record, None).await?;
                Ok::<_, ApiError>(())
            })
        })
        .await?;
    Ok(no_content())
}

/// The platform a body names, which must be one of the caller's.
async fn own_platform(
    tx: &mut Tx<'_>,
    user: Uuid,
    id: Option<Uuid>,
) -> ApiResult<Option<Platform>> {
    match id {
        None => Ok(None),
        Some(id) => platforms::get(tx.conn(), user, id)
            .await?
            .map(Some)
            .ok_or_else(|| ApiError::field("platformId", "no such platform")),
    }
}

/// Commit the record's `write` with its change event, then its
/// notification (stored, so it shows in the notification list too), both
/// in the owner's log stream: one statement on PostgreSQL. A write that
/// hits a unique column (an invoice number) is the caller's conflict, not a
/// server error.
async fn publish<R: Record>(
    tx: &mut Tx<'_>,
    write: Statement,
    change: Change,
    record: &R,
    before: Option<&R>,
) -> ApiResult<()> {
    let diff = before
        .map(|b| record::changes(b, record))
        .unwrap_or_default();
    let owner = StreamKey::User(record.user_id());
    let notification = record::notification(change, record, before, now_ms());
    let stored = notifications::insert(Some(record.user_id()), &notification);
    let events = [
        (&owner, &record::event(change, record, diff)),
        (&owner, &DomainEvent::notification(&notification)),
    ];
    match tx.append_with(vec![write, stored], &events).await {
        Err(err) if is_unique_violation(&err) => Err(ApiError::Conflict(
            "a record with this number already exists".into(),
        )),
        other => Ok(other?),
    }
}

/// A page of a list, serialized straight from the records' views.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<V> {
    items: Vec<V>,
    next_cursor: Option<String>,
}

pub fn with_event_cursor(mut response: Response, cursor: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cursor) {
        response.headers_mut().insert(CURSOR_HEADER, value);
    }
    response
}

/// `limit`: 1 to 100, default 50.
pub fn page_limit(limit: Option<String>) -> ApiResult<i64> {
    match limit {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::BadRequest("bad query: limit must be 1 to 100".into())),
        None => Ok(50),
    }
}

/// The `nextCursor` of a page: its last row's (date, creation time, id).
pub fn page_cursor((date, created_at): (&str, i64), id: Uuid) -> String {
    format!("{date}_{created_at}_{id}")
}

pub fn decode_page_cursor(c: &str) -> Option<(String, i64, String)> {
    let mut parts = c.splitn(3, '_');
    let date = parts.next().filter(|d| parse_date(d).is_some())?.to_owned();
    let created = parts.next()?.parse().ok()?;
    let id = Uuid::parse_str(parts.next()?).ok()?.to_string();
    Some((date, created, id))
}

pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= 255 => Ok(Some(k.trim().to_owned())),
            _ => Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 255 visible characters".into(),
            )),
        },
    }
}

/// The stored answer to an earlier request with the same key.
pub fn replayed((status, body): (i64, String)) -> Response {
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::CREATED);
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
