//! `ApiError`: the one error type of the HTTP edge. Each variant is a row of
//! the contract's error table, and `IntoResponse` renders the contract's shape
//! `{"error":{"code","message","fields"?}}` in exactly one place.

use crate::domain::input::FieldErrors;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication token missing")]
    MissingToken,
    #[error("authentication token invalid")]
    InvalidToken,
    #[error("authentication token expired")]
    TokenExpired,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("this requires the admin role")]
    Forbidden,
    #[error("cross-site request refused")]
    Csrf,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this email is already registered")]
    EmailTaken,
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("too many open streams for this user")]
    TooManyStreams { retry_after_secs: u64 },
    #[error("service unavailable")]
    Unavailable,
    /// Anything unexpected: logged with its cause, answered without it.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A validation error on one field.
    pub fn field(name: &str, reason: impl Into<String>) -> Self {
        let mut fields = FieldErrors::new();
        fields.insert(name.to_owned(), reason.into());
        ApiError::Validation(fields)
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadRequest(_) => StatusCode::BAD_REQUEST,
            MissingToken | InvalidToken | TokenExpired | InvalidCredentials => {
                StatusCode::UNAUTHORIZED
            }
            Forbidden | Csrf => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            EmailTaken | Conflict(_) => StatusCode::CONFLICT,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited { .. } | TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest(_) => "bad_request",
            MissingToken => "missing_token",
            InvalidToken => "invalid_token",
            TokenExpired => "token_expired",
            InvalidCredentials => "invalid_credentials",
            Forbidden => "forbidden",
            Csrf => "csrf",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            EmailTaken => "email_taken",
            Conflict(_) => "conflict",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            Validation(_) => "validation_failed",
            RateLimited { .. } => "rate_limited",
            TooManyStreams { .. } => "too_many_streams",
            Unavailable => "unavailable",
            Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            // The database is down or saturated: the client should retry later.
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %err, "database unavailable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Never echo internals (SQL, paths) to a client; log them instead.
            ApiError::Internal(err) => {
                tracing::error!(error = ?err, "internal error");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let fields = match &self {
            ApiError::Validation(fields) => Some(fields.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message,
                fields,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match self {
            ApiError::RateLimited { retry_after_secs }
            | ApiError::TooManyStreams { retry_after_secs } => Some(retry_after_secs),
            ApiError::Unavailable => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `{"error":{"code","message","fields"?}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// snake_case error code, e.g. `validation_failed`
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub code: String,
    pub message: String,
    /// Every bad field and why (validation errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
}

/// The answers every authenticated operation may give, named once here and
/// listed in each such operation's `responses(...)`. Never built: it exists
/// for the OpenAPI document only (`openapi::finish` adds `Retry-After`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthErrors {
    #[response(status = 401, description = "missing, invalid or expired token")]
    Unauthorized(ErrorBody),
    #[response(status = 429, description = "rate limited")]
    RateLimited(ErrorBody),
    #[response(status = 503, description = "database unavailable")]
    Unavailable(ErrorBody),
}

/// The answers every operation with a JSON request body may give. Never
/// built, like `AuthErrors`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BodyErrors {
    #[response(status = 400, description = "unparseable JSON or not an object")]
    BadJson(ErrorBody),
    #[response(status = 413, description = "body too large")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "not a JSON content type")]
    NotJson(ErrorBody),
    #[response(status = 422, description = "validation failed")]
    Invalid(ErrorBody),
}
