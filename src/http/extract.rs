//! Extractors whose rejections speak the contract's error shapes: a JSON
//! object body (415 / 413 / 400), a query string (400), an id in the path
//! (404, since an id that cannot exist is simply not found), and the
//! authenticated user (`AuthUser`, `AdminUser`), whose token is found in the
//! contract's order — `Authorization: Bearer`, then the `access_token` query
//! parameter (native EventSource cannot send headers), then the
//! `earntrack_token` cookie.
//!
//! A token's value is never logged: errors name the failure, not the token,
//! and the request span records the path without the query string.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::AppState;
use crate::auth::COOKIE;
use crate::domain::role::Role;
use crate::error::ApiError;

/// A JSON object body, parsed but not yet validated (see `domain::input`).
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge
                    } else {
                        ApiError::BadRequest("could not read the request body".into())
                    }
                })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Ok(JsonObject(object)),
            Ok(_) => Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            )),
            Err(err) => Err(ApiError::BadRequest(format!("invalid JSON: {err}"))),
        }
    }
}

/// A query string; anything unparseable is 400 `bad_request`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::BadRequest(format!("bad query: {}", e.body_text())))
    }
}

/// A UUID path segment; a malformed one is 404 `not_found`.
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(s)) => Uuid::parse_str(&s)
                .map(IdPath)
                .map_err(|_| ApiError::NotFound),
            Err(_) => Err(ApiError::NotFound),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Query,
    Cookie,
}

/// The token of a request, from the first source present.
pub fn find_token(parts: &Parts) -> Result<(String, TokenSource), ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::InvalidToken)?;
        return Ok((token.to_owned(), TokenSource::Header));
    }
    if let Some(query) = parts.uri.query() {
        if let Some((_, token)) =
            form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token")
        {
            return Ok((token.into_owned(), TokenSource::Query));
        }
    }
    if let Some(token) = cookie(&parts.headers, COOKIE) {
        return Ok((token, TokenSource::Cookie));
    }
    Err(ApiError::MissingToken)
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// The authenticated user of a request.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    /// The stored role, read for this request (never the token's claim).
    pub role: Role,
    /// Expiry of the token, seconds since the epoch (streams end there).
    pub exp: i64,
    pub source: TokenSource,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let (token, source) = find_token(parts)?;
        let claims = state.keys.verify(&token)?;
        let id = Uuid::parse_str(&claims.sub).map_err(|_| ApiError::InvalidToken)?;
        let access = state
            .db
            .known_users
            .access(&state.db.read, id)
            .await?
            .ok_or(ApiError::InvalidToken)?;
        if source == TokenSource::Cookie
            && is_write(&parts.method)
            && !same_origin_or_allowed(&parts.headers, &state.config.cors_origins)
        {
            return Err(ApiError::Csrf);
        }
        tracing::Span::current().record("user_id", tracing::field::display(id));
        // Stream opens and long-polls spend the same budget as REST calls:
        // a client polling in a loop is as costly as one calling the API.
        let path = parts.uri.path();
        if path.starts_with("/api/") || path.starts_with("/events") {
            state.rate_limit.check(id)?;
        }
        // A token issued before logout-everywhere or a password change.
        if claims.tv < access.token_version {
            return Err(ApiError::InvalidToken);
        }
        let user = AuthUser {
            id,
            email: claims.email,
            role: access.role,
            exp: claims.exp,
            source,
        };
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

/// An authenticated user with the `admin` role; others get 403 `forbidden`.
pub struct AdminUser(pub AuthUser);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.is_admin() {
            Ok(AdminUser(user))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// Who publishes on `POST /api/admin/events` and `/api/admin/notifications`:
/// an admin, or another service with a publisher key
/// (`EARNTRACK_PUBLISHER_KEYS`) as `Authorization: Bearer <key>`. A key
/// spends the keys' own budget, never a user's; any other bearer is read as
/// a user's token (so a wrong key is 401 `invalid_token`). Keys are accepted
/// on these two routes only.
pub enum Sender {
    Admin(AuthUser),
    Service,
}

impl FromRequestParts<AppState> for Sender {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Ok((token, TokenSource::Header)) = find_token(parts) {
            if state.publisher_keys.matches(&token) {
                tracing::Span::current().record("user_id", "publisher");
                state.publisher_rate.check()?;
                return Ok(Sender::Service);
            }
        }
        let AdminUser(user) = AdminUser::from_request_parts(parts, state).await?;
        Ok(Sender::Admin(user))
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// CSRF rule for cookie-authenticated writes: the `Origin` (else `Referer`)
/// must be this server's own origin or a configured CORS origin. A request
/// with neither header is not from a browser page and is allowed.
fn same_origin_or_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let origin = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => origin.to_owned(),
        None => match headers.get(header::REFERER).and_then(|v| v.to_str().ok()) {
            Some(referer) => origin_of(referer),
            None => return true,
        },
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            format!("{scheme}://{authority}")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn csrf_allows_own_and_configured_origins_only() {
        let allowed = vec!["https://app.example".to_owned()];
        let own = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin_or_allowed(&own, &allowed));
        let configured = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://app.example"),
        ]);
        assert!(same_origin_or_allowed(&configured, &allowed));
        let foreign = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(!same_origin_or_allowed(&foreign, &allowed));
        let referer = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::REFERER, "https://evil.example/page"),
        ]);
        assert!(!same_origin_or_allowed(&referer, &allowed));
        assert!(same_origin_or_allowed(
            &headers(&[(header::HOST, "x")]),
            &allowed
        ));
    }
}
