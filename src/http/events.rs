//! `GET /events` through hyper and the router: the request's parameters, and
//! the response whose body the SSE core (`sse::Session`) writes. Most
//! streams never reach this handler: `fast_path` serves a plain
//! `GET /events` on a fresh connection with the same core.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::extract::{ApiQuery, AuthUser};
use super::sse::{self, Session};
use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::push::TopicFilter;

pub fn router() -> Router<AppState> {
    Router::new().route("/events", get(stream))
}

#[derive(Deserialize)]
pub struct StreamParams {
    topics: Option<String>,
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
    #[serde(rename = "last_event_id")]
    last_event_id_snake: Option<String>,
}

impl StreamParams {
    /// The `Last-Event-ID` header wins over the query (EventSource keeps its
    /// original URL when it reconnects, so the header is the newer cursor).
    pub fn resume(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| self.last_event_id.clone())
            .or_else(|| self.last_event_id_snake.clone())
            .filter(|c| !c.trim().is_empty())
    }

    pub fn filter(&self) -> ApiResult<TopicFilter> {
        match &self.topics {
            None => Ok(TopicFilter::ALL),
            Some(t) => TopicFilter::parse(t).ok_or_else(|| {
                ApiError::BadRequest(
                    "bad query: topics must name earnings, expenses, invoices or notifications"
                        .into(),
                )
            }),
        }
    }
}

async fn stream(
    State(app): State<AppState>,
    me: AuthUser,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> ApiResult<Response> {
    let filter = params.filter()?;
    let resume = params.resume(&headers);
    let gzip = super::gzip::accepted(&headers);
    let mut session = Session::open(&app, &me, filter, resume, gzip).await?;
    let compressed = session.compressed();
    let body = Body::from_stream(async_stream::stream! {
        while let Some(chunk) = session.next_chunk().await {
            yield Ok::<_, Infallible>(Bytes::from(chunk));
        }
    });
    let mut response = Response::new(body);
    for (name, value) in sse::HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    if compressed {
        let (name, value) = sse::GZIP_HEADER;
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}
