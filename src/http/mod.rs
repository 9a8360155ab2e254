//! axum glue only: one module per resource, each with its `router()`,
//! merged here with the cross-cutting layers (tracing, metrics, CORS, body
//! limit, panics as JSON 500s).

pub mod accounts;
pub mod admin;
pub mod assets;
pub mod dto;
pub mod events;
pub mod extract;
pub mod fast_path;
pub mod gzip;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod platforms;
pub mod poll;
pub mod record_docs;
pub mod records;
pub mod sse;

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Keys;
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::push::{FeedContext, Hub, Presence, Publisher};

/// What every handler can reach; a cheap `Arc` clone per request.
#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub db: Db,
    pub keys: Keys,
    pub hub: Hub,
    pub presence: Presence,
    pub publisher: Publisher,
    /// Shared by every feed (an `Arc`: each open stream holds one).
    pub feeds: Arc<FeedContext>,
    /// Cancelled when shutdown starts: readiness turns 503.
    pub shutdown: CancellationToken,
    pub metrics: PrometheusHandle,
    pub rate_limit: crate::ratelimit::RateLimit,
    /// Services that publish with a key instead of a user's token.
    pub publisher_keys: crate::auth::PublisherKeys,
    pub publisher_rate: crate::ratelimit::PublisherRate,
    pub auth_throttle: crate::ratelimit::AuthThrottle,
    /// Argon2 is deliberately slow and memory hungry (19 MiB each): hashes
    /// run on the blocking pool, at most `HASH_SLOTS` at a time, so a burst
    /// of logins cannot starve the async workers or the memory.
    pub hash_slots: tokio::sync::Semaphore,
    /// False while a cluster member's LISTEN connection is down.
    pub cluster_up: Arc<std::sync::atomic::AtomicBool>,
    /// A cluster member's side of the bus (PostgreSQL only).
    pub bus: Option<Arc<crate::push::broker::bus::Bus>>,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors_origins);
    Router::new()
        .merge(accounts::router())
        .merge(platforms::router())
        .merge(records::router())
        .merge(notifications::router())
        .merge(admin::router())
        .merge(events::router())
        .merge(poll::router())
        .merge(ops::router())
        .merge(openapi::router())
        .merge(assets::router())
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        // gzip for JSON (long-polls included) and the web client when asked;
        // its default predicate leaves `text/event-stream` alone (streams
        // compress themselves, event by event: `gzip`).
        .layer(CompressionLayer::new())
        // No response is ever sniffed into another type (a JSON error
        // rendered as HTML, say).
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(cors)
        .layer(
            // The span carries the path, never the query string: a token may
            // travel there (`access_token`), and must never reach a log.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        user_id = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_millis() as u64,
                        "response"
                    );
                })
                .on_failure(()),
        )
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::HeaderName::from_static("earntrack-event-cursor"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// HTTP requests by route template (bounded) and status, with latency.
/// Streams are counted when their response starts, not when they end.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    record_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Count one answered request (also for the streams `fast_path` answers).
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let (method, route) = (method_label(method), route.to_owned());
    let status = status.to_string();
    metrics::counter!(
        "earntrack_http_requests_total",
        "method" => method, "route" => route.clone(), "status" => status
    )
    .increment(1);
    metrics::histogram!("earntrack_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
}

/// A bounded label for a request method: any token is a valid method in
/// HTTP, so a client could otherwise mint one metric series per request.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// `204 No Content`.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
