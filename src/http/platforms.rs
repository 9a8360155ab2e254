//! `/api/platforms`: list and create; creation publishes `platforms:new`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

use super::extract::JsonObject;
use super::AppState;
use crate::auth::AuthUser;
use crate::db::{is_unique_violation, platforms};
use crate::domain::earning::{NewPlatform, Platform};
use crate::domain::event::DomainEvent;
use crate::domain::time::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::push::frame::StreamKey;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/platforms", get(list).post(create))
}

async fn list(State(app): State<AppState>, me: AuthUser) -> ApiResult<Json<Value>> {
    let mut conn = app.db.read.acquire().await?;
    let items = platforms::list(&mut conn, me.id).await?;
    Ok(Json(json!({ "items": items })))
}

async fn create(
    State(app): State<AppState>,
    me: AuthUser,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Platform>)> {
    let new = NewPlatform::parse(&body).map_err(ApiError::Validation)?;
    let platform = Platform {
        id: Uuid::new_v4(),
        name: new.name,
        color: new.color,
    };
    let mut tx = app.db.begin_write().await?;
    match platforms::insert(tx.conn(), me.id, &platform, now_ms()).await {
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::Conflict(
                "you already have a platform with this name".into(),
            ))
        }
        other => other?,
    }
    tx.append(
        StreamKey::User(me.id),
        &DomainEvent::platform_created(&platform),
    )
    .await?;
    app.publisher.commit(tx).await?;
    Ok((StatusCode::CREATED, Json(platform)))
}
