//! `/api/platforms`: list and create; creation publishes `platforms:new`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::dto::{NewPlatformRequest, PlatformList};
use super::extract::AuthUser;
use super::extract::JsonObject;
use super::AppState;
use crate::db::{is_unique_violation, platforms};
use crate::domain::earning::{NewPlatform, Platform};
use crate::domain::event::DomainEvent;
use crate::domain::stream::StreamKey;
use crate::domain::time::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::error::{AuthErrors, BodyErrors, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/platforms", get(list).post(create))
}

#[utoipa::path(
    get,
    path = "/api/platforms",
    operation_id = "listPlatforms",
    tag = "earnings",
    responses(
        AuthErrors,
        (status = 200, body = PlatformList),
    ),
)]
pub async fn list(State(app): State<AppState>, me: AuthUser) -> ApiResult<Json<PlatformList>> {
    let mut conn = app.db.read.acquire().await?;
    let items = platforms::list(&mut conn, me.id).await?;
    Ok(Json(PlatformList { items }))
}

#[utoipa::path(
    post,
    path = "/api/platforms",
    operation_id = "createPlatform",
    tag = "earnings",
    request_body = NewPlatformRequest,
    responses(
        AuthErrors,
        BodyErrors,
        (status = 201, description = "created; publishes platforms:new", body = Platform),
        (status = 409, description = "name taken", body = ErrorBody),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn create(
    State(app): State<AppState>,
    me: AuthUser,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Platform>)> {
    let new = NewPlatform::parse(&body).map_err(ApiError::Validation)?;
    let platform = Platform {
        id: crate::domain::new_id(),
        name: new.name,
        color: new.color,
    };
    let user = StreamKey::User(me.id);
    let me = me.id;
    app.publisher
        .write(&user.clone(), move |tx| {
            let (user, platform) = (user.clone(), platform.clone());
            Box::pin(async move {
                // The row and its event: one statement on PostgreSQL.
                let row = platforms::insert(me, &platform, now_ms());
                let event = DomainEvent::platform_created(&platform);
                match tx.append_with(vec![row], &[(&user, &event)]).await {
                    Err(err) if is_unique_violation(&err) => Err(ApiError::Conflict(
                        "you already have a platform with this name".into(),
                    )),
                    other => Ok(other.map(|()| platform)?),
                }
            })
        })
        .await
        .map(|platform| (StatusCode::CREATED, Json(platform)))
}
