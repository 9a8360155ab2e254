//! Authentication: JWT HS256 tokens, and the `AuthUser` / `AdminUser`
//! extractors that find the token in the contract's order — `Authorization:
//! Bearer`, then the `access_token` query parameter (native EventSource
//! cannot send headers), then the `earntrack_token` cookie.
//!
//! A token's value is never logged: errors name the failure, not the token,
//! and the request span records the path without the query string.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::time::now_ms;
use crate::error::ApiError;
use crate::http::AppState;

pub const COOKIE: &str = "earntrack_token";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: i64,
}

impl Keys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // Only HS256; `alg: none` and every other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs: ttl_secs.max(1) as i64,
        }
    }

    pub fn issue(&self, id: Uuid, email: &str, role: &str) -> String {
        let iat = now_ms() / 1000;
        let claims = Claims {
            sub: id.to_string(),
            email: email.to_owned(),
            role: role.to_owned(),
            iat,
            exp: iat + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                // `exp` is checked with no leeway; jsonwebtoken accepts
                // exp == now, the contract does not.
                if data.claims.exp <= now_ms() / 1000 {
                    Err(ApiError::TokenExpired)
                } else {
                    Ok(data.claims)
                }
            }
            Err(err) if *err.kind() == ErrorKind::ExpiredSignature => Err(ApiError::TokenExpired),
            Err(_) => Err(ApiError::InvalidToken),
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
    pub role: String,
    /// Expiry of the token, seconds since the epoch (streams end there).
    pub exp: i64,
    pub source: TokenSource,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
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
        if !state.db.known_users.contains(id) {
            let mut conn = state.db.read.acquire().await?;
            if !state.db.known_users.exists(&mut conn, id).await? {
                return Err(ApiError::InvalidToken);
            }
        }
        if source == TokenSource::Cookie
            && is_write(&parts.method)
            && !same_origin_or_allowed(&parts.headers, &state.config.cors_origins)
        {
            return Err(ApiError::Csrf);
        }
        tracing::Span::current().record("user_id", tracing::field::display(id));
        if parts.uri.path().starts_with("/api/") {
            state.rate_limit.check(id)?;
        }
        let user = AuthUser {
            id,
            email: claims.email,
            role: claims.role,
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

    #[test]
    fn expired_and_foreign_tokens_are_told_apart() {
        let keys = Keys::new(b"secret", 60);
        let token = keys.issue(Uuid::new_v4(), "a@b.c", "user");
        assert!(keys.verify(&token).is_ok());
        assert!(matches!(
            Keys::new(b"other", 60).verify(&token),
            Err(ApiError::InvalidToken)
        ));
        assert!(matches!(
            keys.verify("not.a.token"),
            Err(ApiError::InvalidToken)
        ));
    }
}
