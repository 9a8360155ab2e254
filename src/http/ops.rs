//! Operations: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::dto::Status;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(),
    responses(
        (status = 200, body = Status),
    ),
)]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the database answers and we are not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(),
    responses(
        (status = 200, body = Status),
        (status = 503, description = "database or cluster listener unreachable, or shutting down", body = Status),
    ),
)]
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down" })),
        );
    }
    if !app.cluster_up.load(std::sync::atomic::Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "cluster_listener_down" })),
        );
    }
    if !app.db.ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "database_unreachable" })),
        );
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    metrics::gauge!("earntrack_hub_channels").set(app.hub.channel_count() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
