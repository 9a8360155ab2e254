//! `/api/auth/*`: register, login, refresh, logout. Register and login set
//! the HttpOnly `earntrack_token` cookie that browsers' EventSource uses.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::Value;
use uuid::Uuid;

use super::dto::{LoginRequest, PasswordChangeRequest, RegisterRequest, Session, UserView};
use super::extract::AuthUser;
use super::extract::JsonObject;
use super::{no_content, AppState};
use crate::auth::COOKIE;
use crate::db::{is_unique_violation, users};
use crate::domain::input::{self, Fields};
use crate::domain::role::Role;
use crate::domain::stream::StreamKey;
use crate::domain::time::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::error::{AuthErrors, BodyErrors, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/logout-all", post(logout_all))
        .route("/api/auth/password", post(change_password))
}

#[utoipa::path(
    post,
    path = "/api/auth/register",
    tag = "accounts",
    request_body = RegisterRequest,
    security(),
    responses(
        BodyErrors,
        (
            status = 201,
            description = "registered; sets the earntrack_token cookie",
            body = Session,
            headers(("Set-Cookie" = String, description = "earntrack_token=<jwt>; HttpOnly; SameSite=Lax; Path=/")),
        ),
        (status = 409, description = "email taken", body = ErrorBody),
        (status = 429, description = "throttled: too many attempts from this address or for this email", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
)]
pub async fn register(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let mut f = Fields::new(&body);
    let email = f.required("email", email);
    let password = f.required("password", password);
    let name = f.optional("name", input::text(100));
    f.finish().map_err(ApiError::Validation)?;
    throttle(&app, peer, email.as_deref().unwrap_or_default())?;
    let (email, password) = (email.unwrap_or_default(), password.unwrap_or_default());

    let user = users::UserRow {
        id: crate::domain::new_id(),
        email,
        name,
        password_hash: hash_password(&app, password).await?,
        // Registration never makes an admin (`earntrack admin grant` does).
        role: Role::User,
        token_version: 0,
    };
    let row = user.clone();
    app.publisher
        .write(&StreamKey::User(user.id), move |tx| {
            let row = row.clone();
            Box::pin(async move {
                match users::insert(tx.conn(), &row, now_ms()).await {
                    Err(err) if is_unique_violation(&err) => Err(ApiError::EmailTaken),
                    other => Ok(other?),
                }
            })
        })
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(session(&app, &user, StatusCode::CREATED))
}

#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "accounts",
    request_body = LoginRequest,
    security(),
    responses(
        BodyErrors,
        (
            status = 200,
            description = "logged in; sets the earntrack_token cookie",
            body = Session,
            headers(("Set-Cookie" = String, description = "earntrack_token=<jwt>; HttpOnly; SameSite=Lax; Path=/")),
        ),
        (status = 401, description = "invalid credentials", body = ErrorBody),
        (status = 429, description = "throttled: too many attempts from this address or for this email", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
)]
pub async fn login(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let mut f = Fields::new(&body);
    // The same rules as register: a string that could never be an account's
    // email (a NUL byte, say) never reaches the database.
    let email = f.required("email", email);
    let password = f.required("password", |v| {
        let s = v.as_str().ok_or("must be a string")?;
        if s.chars().count() > PASSWORD_MAX {
            return Err("must be at most 1024 characters");
        }
        Ok(s.to_owned())
    });
    f.finish().map_err(ApiError::Validation)?;
    let (email, password) = (email.unwrap_or_default(), password.unwrap_or_default());
    throttle(&app, peer, &email)?;

    let mut conn = app.db.read.acquire().await?;
    let found = users::by_email(&mut conn, &email).await?;
    drop(conn);
    // An unknown email still costs one verification, so response time does
    // not tell which emails are registered.
    let hash = found.as_ref().map(|u| u.password_hash.clone());
    let ok = verify_password(&app, password, hash).await?;
    match found {
        Some(user) if ok => Ok(session(&app, &user, StatusCode::OK)),
        _ => Err(ApiError::InvalidCredentials),
    }
}

#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "accounts",
    responses(
        AuthErrors,
        (
            status = 200,
            description = "a fresh token and cookie",
            body = Session,
            headers(("Set-Cookie" = String, description = "earntrack_token=<jwt>; HttpOnly; SameSite=Lax; Path=/")),
        ),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn refresh(State(app): State<AppState>, me: AuthUser) -> ApiResult<Response> {
    let mut conn = app.db.read.acquire().await?;
    let user = users::by_id(&mut conn, me.id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    Ok(session(&app, &user, StatusCode::OK))
}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "accounts",
    security(),
    responses(
        (
            status = 204,
            description = "cookie cleared",
            headers(("Set-Cookie" = String, description = "earntrack_token=; Max-Age=0")),
        ),
    ),
)]
pub async fn logout(State(app): State<AppState>) -> Response {
    let mut response = no_content();
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}",
        secure(&app)
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("ASCII cookie"),
    );
    response
}

#[utoipa::path(
    post,
    path = "/api/auth/logout-all",
    tag = "accounts",
    responses(
        AuthErrors,
        (
            status = 204,
            description = "every token of the user issued so far is revoked (on every server; open streams \
                get auth:expired within a second); cookie cleared",
            headers(("Set-Cookie" = String, description = "earntrack_token=; Max-Age=0")),
        ),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn logout_all(State(app): State<AppState>, me: AuthUser) -> ApiResult<Response> {
    revoke(&app, me.id, None).await?;
    tracing::info!("logged out everywhere");
    Ok(logout(State(app)).await)
}

#[utoipa::path(
    post,
    path = "/api/auth/password",
    tag = "accounts",
    request_body = PasswordChangeRequest,
    responses(
        AuthErrors,
        BodyErrors,
        (
            status = 200,
            description = "changed; every earlier token is revoked, this answer's token is the one that works",
            body = Session,
            headers(("Set-Cookie" = String, description = "earntrack_token=<jwt>; HttpOnly; SameSite=Lax; Path=/")),
        ),
        (status = 403, description = "cookie-authenticated write from a foreign origin", body = ErrorBody),
    ),
)]
pub async fn change_password(
    State(app): State<AppState>,
    me: AuthUser,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let mut f = Fields::new(&body);
    let current = f.required("currentPassword", |v| {
        v.as_str().map(str::to_owned).ok_or("must be a string")
    });
    let new = f.required("newPassword", password);
    f.finish().map_err(ApiError::Validation)?;
    let (current, new) = (current.unwrap_or_default(), new.unwrap_or_default());
    let mut conn = app.db.read.acquire().await?;
    let user = users::by_id(&mut conn, me.id)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    drop(conn);
    if !verify_password(&app, current, Some(user.password_hash.clone())).await? {
        return Err(ApiError::field(
            "currentPassword",
            "is not the current password",
        ));
    }
    let hash = hash_password(&app, new).await?;
    let access = revoke(&app, me.id, Some(&hash)).await?;
    tracing::info!("password changed");
    let user = users::UserRow {
        token_version: access.token_version,
        ..user
    };
    Ok(session(&app, &user, StatusCode::OK))
}

/// Bump the user's token version (with a new password hash, if given): every
/// token issued so far stops working here at once, on other servers within
/// `jobs::ACCESS_POLL`, and the user's streams end with `auth:expired`.
async fn revoke(app: &AppState, user: Uuid, hash: Option<&str>) -> ApiResult<users::Access> {
    let hash = hash.map(str::to_owned);
    let access = app
        .publisher
        .write(&StreamKey::User(user), move |tx| {
            let hash = hash.clone();
            Box::pin(async move {
                users::revoke_tokens(tx.conn(), user, hash.as_deref(), now_ms())
                    .await?
                    .ok_or(ApiError::InvalidToken)
            })
        })
        .await?;
    app.db.known_users.update(user, access);
    app.hub.expire_user(user);
    Ok(access)
}

/// `{token, user}` and the cookie. The token's `role` claim is informative
/// only: every request reads the stored role.
fn session(app: &AppState, user: &users::UserRow, status: StatusCode) -> Response {
    let token = app
        .keys
        .issue(user.id, &user.email, user.role.as_str(), user.token_version);
    let body = Session {
        token: token.clone(),
        user: user_view(user),
    };
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
        app.keys.ttl_secs,
        secure(app)
    );
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("JWT is ASCII"),
    );
    response
}

fn secure(app: &AppState) -> &'static str {
    if app.config.cookie_secure {
        "; Secure"
    } else {
        ""
    }
}

fn user_view(user: &users::UserRow) -> UserView {
    UserView {
        id: user.id,
        email: user.email.clone(),
        name: user.name.clone(),
        role: user.role.as_str().to_owned(),
    }
}

fn email(v: &Value) -> Result<String, &'static str> {
    let s = v.as_str().ok_or("must be a string")?.trim().to_lowercase();
    let valid = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(s.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.contains('@') && domain.contains('.')
               && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(s)
    } else {
        Err("must be a valid email address")
    }
}

/// Hashing cost grows with length; nobody types more than this.
const PASSWORD_MAX: usize = 1024;

fn password(v: &Value) -> Result<String, &'static str> {
    let s = v.as_str().ok_or("must be a string")?;
    match s.chars().count() {
        0..=7 => Err("must be at least 8 characters"),
        n if n > PASSWORD_MAX => Err("must be at most 1024 characters"),
        _ => Ok(s.to_owned()),
    }
}

/// The per-address and per-email throttles of register and login.
fn throttle(
    app: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    email: &str,
) -> ApiResult<()> {
    let addr = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    app.auth_throttle.check(addr, email)
}

/// Run `work` with argon2 on the blocking pool, holding a hashing slot. The
/// queue for a slot is bounded in time: past `EARNTRACK_HASH_WAIT_MS` the
/// request is 503 with `Retry-After`, so a flood of bogus logins makes
/// others retry rather than wait without end.
async fn with_argon2<T: Send + 'static>(
    app: &AppState,
    work: impl FnOnce(&Argon2) -> T + Send + 'static,
) -> ApiResult<T> {
    let wait = Duration::from_millis(app.config.hash_wait_ms);
    let _slot = match tokio::time::timeout(wait, app.hash_slots.acquire()).await {
        Ok(slot) => slot.map_err(|e| ApiError::Internal(e.into()))?,
        Err(_) => {
            metrics::counter!("earntrack_hash_queue_timeouts_total").increment(1);
            return Err(ApiError::Unavailable);
        }
    };
    tokio::task::spawn_blocking(move || work(&Argon2::default()))
        .await
        .map_err(|e| ApiError::Internal(e.into()))
}

async fn hash_password(app: &AppState, password: String) -> ApiResult<String> {
    with_argon2(app, move |argon2| {
        let salt = SaltString::generate(&mut OsRng);
        argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing failed: {e}")))
}

/// `hash` is `None` for an unknown email: the password is then checked
/// against a dummy hash, so the answer takes as long either way.
async fn verify_password(
    app: &AppState,
    password: String,
    hash: Option<String>,
) -> ApiResult<bool> {
    with_argon2(app, move |argon2| {
        let hash = hash.as_deref().unwrap_or_else(|| dummy_hash());
        PasswordHash::new(hash)
            .is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
}

/// A valid hash of a random password, for timing-equal failed logins.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(Uuid::new_v4().as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}
