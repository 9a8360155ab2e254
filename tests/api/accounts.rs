//! Accounts and tokens: register, login, refresh, logout, roles, every auth
//! error code, the order of token sources, and the CSRF rule for cookie
//! authenticated writes.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::{ORIGIN, REFERER, SET_COOKIE};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, spawn_app, spawn_app_with, start, test_config, TestApp, User,
};

/// The secret `test_config` gives the server.
const SECRET: &[u8] = b"api-test-secret-0123456789abcdefghij";
const PASSWORD: &str = "correct horse";
/// Any protected endpoint will do; this one is a cheap read.
const PROTECTED: &str = "/api/platforms";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for `user` signed with `secret` and `alg`, valid from `iat` to `exp`.
fn token_for(user: &User, alg: Algorithm, secret: &[u8], iat: i64, exp: i64) -> String {
    let claims =
        json!({"sub": user.id, "email": user.email, "role": "user", "iat": iat, "exp": exp});
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// The claims of a token the server issued, checking its HS256 signature.
fn claims_of(token: &str) -> Value {
    let validation = Validation::new(Algorithm::HS256);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(SECRET), &validation)
        .expect("the server issues HS256 tokens signed with JWT_SECRET")
        .claims
}

/// Unpadded base64url, to craft tokens no JWT library would sign.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
    }
    out
}

/// The `earntrack_token` Set-Cookie of a response: its value and attributes.
fn auth_cookie(res: &Response) -> (String, Vec<String>) {
    let header = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("earntrack_token="))
        .unwrap_or_else(|| panic!("no earntrack_token Set-Cookie in {:?}", res.headers()))
        .to_owned();
    let mut parts = header.split(';').map(|p| p.trim().to_owned());
    let value = parts.next().unwrap()["earntrack_token=".len()..].to_owned();
    (value, parts.collect())
}

fn has_attr(attrs: &[String], expected: &str) -> bool {
    attrs.iter().any(|a| a.eq_ignore_ascii_case(expected))
}

/// HttpOnly, SameSite=Lax and Path=/, as the contract names them.
fn assert_session_cookie(attrs: &[String]) {
    for expected in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(
            has_attr(attrs, expected),
            "cookie attributes {attrs:?} lack {expected}"
        );
    }
}

async fn register_raw(app: &TestApp, body: Value) -> Response {
    app.request(Method::POST, "/api/auth/register", None, Some(body))
        .await
}

/// A client with a cookie store, logged in by registering a new user.
async fn cookie_client(app: &TestApp) -> (reqwest::Client, User) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let email = format!("cookie-{}@example.com", uuid::Uuid::new_v4().simple());
    let res = client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let user = User {
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        email,
        token: body["token"].as_str().unwrap().to_owned(),
    };
    (client, user)
}

/// A GET of a protected endpoint with this exact Authorization header.
async fn get_with_authorization(app: &TestApp, authorization: &str) -> Response {
    app.client
        .get(app.url(PROTECTED))
        .header("Authorization", authorization)
        .send()
        .await
        .unwrap()
}

// ---- register, login, refresh, logout ----

#[tokio::test]
async fn register_answers_201_with_token_and_user_and_sets_the_session_cookie() {
    let app = spawn_app().await;

    let res = register_raw(
        &app,
        json!({"email": "alice@example.com", "password": PASSWORD, "name": "Alice"}),
    )
    .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let (cookie, attrs) = auth_cookie(&res);
    assert_session_cookie(&attrs);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().expect("token is a string");
    assert_eq!(cookie, token, "the cookie carries the token of the body");
    let user = &body["user"];
    assert!(
        uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok(),
        "id is a UUID: {user}"
    );
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["name"], "Alice");
    assert_eq!(user["role"], "user");
    assert_eq!(claims_of(token)["sub"], user["id"]);
}

#[tokio::test]
async fn tokens_are_hs256_jwts_with_sub_email_role_iat_and_a_24_hour_lifetime() {
    let app = spawn_app().await;

    let alice = app.register("alice@example.com").await;

    let header = jsonwebtoken::decode_header(&alice.token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    let claims = claims_of(&alice.token);
    assert_eq!(claims["sub"], alice.id.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["role"], "user");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((iat - now()).abs() <= 5, "iat {iat} is now");
    assert_eq!(exp - iat, 24 * 3600);
}

#[tokio::test]
async fn registering_a_taken_email_is_409_email_taken_also_in_another_case() {
    let app = spawn_app().await;
    app.register("bob@example.com").await;

    let same = register_raw(
        &app,
        json!({"email": "bob@example.com", "password": PASSWORD}),
    )
    .await;
    let other_case = register_raw(
        &app,
        json!({"email": "Bob@Example.COM", "password": PASSWORD}),
    )
    .await;

    assert_api_error(same, StatusCode::CONFLICT, "email_taken").await;
    assert_api_error(other_case, StatusCode::CONFLICT, "email_taken").await;
}

#[tokio::test]
async fn a_bad_email_and_a_short_password_are_422_listing_both_fields() {
    let app = spawn_app().await;

    let res = register_raw(
        &app,
        json!({"email": "not-an-email", "password": "7chars!"}),
    )
    .await;

    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields = body["error"]["fields"]
        .as_object()
        .expect("fields is an object");
    assert!(fields["email"].is_string(), "fields: {fields:?}");
    assert!(fields["password"].is_string(), "fields: {fields:?}");
    assert_eq!(
        fields.len(),
        2,
        "only the bad fields are listed: {fields:?}"
    );
}

#[tokio::test]
async fn a_password_of_exactly_8_characters_is_accepted() {
    let app = spawn_app().await;

    let res = register_raw(
        &app,
        json!({"email": "eight@example.com", "password": "12345678"}),
    )
    .await;

    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn login_answers_200_with_token_and_user_and_sets_the_session_cookie() {
    let app = spawn_app().await;
    let carol = app.register("carol@example.com").await;

    let res = app.login("carol@example.com", PASSWORD).await;

    assert_eq!(res.status(), StatusCode::OK);
    let (cookie, attrs) = auth_cookie(&res);
    assert_session_cookie(&attrs);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token"].as_str(), Some(cookie.as_str()));
    assert_eq!(body["user"]["id"], carol.id.as_str());
    assert_eq!(body["user"]["email"], "carol@example.com");
    assert_eq!(body["user"]["role"], "user");
    assert!(
        body["user"].get("name").is_some(),
        "user has a name field: {body}"
    );
    let me = app.get(PROTECTED, body["token"].as_str().unwrap()).await;
    assert_eq!(me.status(), StatusCode::OK, "the login token authenticates");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401_invalid_credentials() {
    let app = spawn_app().await;
    app.register("dave@example.com").await;

    let wrong_password = app.login("dave@example.com", "not the password").await;
    let unknown_email = app.login("nobody@example.com", PASSWORD).await;

    assert!(
        wrong_password.headers().get(SET_COOKIE).is_none(),
        "no cookie on a failed login"
    );
    let a = assert_api_error(
        wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let b = assert_api_error(
        unknown_email,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        a, b,
        "an unknown email is answered exactly like a wrong password"
    );
}

#[tokio::test]
async fn refresh_answers_200_with_a_new_full_lifetime_token_and_a_fresh_cookie() {
    let app = spawn_app().await;
    let erin = app.register("erin@example.com").await;
    // A still-valid token issued an hour ago, ten minutes from expiry.
    let old = token_for(&erin, Algorithm::HS256, SECRET, now() - 3600, now() + 600);

    let res = app
        .request(Method::POST, "/api/auth/refresh", Some(&old), None)
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    let (cookie, attrs) = auth_cookie(&res);
    assert_session_cookie(&attrs);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_ne!(token, old);
    assert_eq!(cookie, token);
    assert_eq!(body["user"]["id"], erin.id.as_str());
    assert_eq!(body["user"]["email"], "erin@example.com");
    assert_eq!(body["user"]["role"], "user");
    let exp = claims_of(token)["exp"].as_i64().unwrap();
    assert!(
        exp >= now() + 24 * 3600 - 5,
        "the new token lives 24 h from now, exp {exp}"
    );
}

#[tokio::test]
async fn refresh_with_an_expired_token_is_401_token_expired() {
    let app = spawn_app().await;
    let frank = app.user().await;
    let expired = token_for(&frank, Algorithm::HS256, SECRET, now() - 7200, now() - 60);

    let res = app
        .request(Method::POST, "/api/auth/refresh", Some(&expired), None)
        .await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test]
async fn logout_answers_204_and_clears_the_cookie() {
    let app = spawn_app().await;
    let (client, _) = cookie_client(&app).await;

    let res = client
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (value, attrs) = auth_cookie(&res);
    assert_eq!(value, "", "the cleared cookie has no value");
    assert!(
        has_attr(&attrs, "Max-Age=0"),
        "cookie attributes {attrs:?} lack Max-Age=0"
    );
    assert!(
        has_attr(&attrs, "Path=/"),
        "the cleared cookie has the session cookie's path: {attrs:?}"
    );
    let after = client.get(app.url(PROTECTED)).send().await.unwrap();
    assert_api_error(after, StatusCode::UNAUTHORIZED, "missing_token").await;
}

// ---- roles ----

#[tokio::test]
async fn registering_an_email_listed_in_earntrack_admin_emails_gives_no_admin() {
    // A listed address nobody registered yet must not be claimable.
    let app = spawn_app_with(|c| c.admin_emails = vec!["Boss@Example.com".into()]).await;

    let registered = register_raw(
        &app,
        json!({"email": "boss@example.com", "password": PASSWORD}),
    )
    .await;
    let registered: Value = registered.json().await.unwrap();
    let logged_in: Value = app
        .login("boss@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(registered["user"]["role"], "user");
    assert_eq!(logged_in["user"]["role"], "user");
    let token = logged_in["token"].as_str().unwrap();
    assert_eq!(claims_of(token)["role"], "user");
    let res = app.get("/api/admin/connections", token).await;
    assert_api_error(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_user_who_is_not_admin_gets_403_forbidden_on_admin_endpoints() {
    let app = spawn_app().await;
    let grace = app.user().await;

    let res = app.get("/api/admin/connections", &grace.token).await;

    assert_api_error(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn earntrack_admin_emails_grants_admin_at_start_up_to_users_that_exist() {
    // One database, two runs of the server with different admin lists.
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db_dir.path().join("roles.db").display());
    let mut before = spawn_app_with(|c| c.database_url = url.clone()).await;
    let heidi = before.register("heidi@example.com").await;
    before.stop().await;
    assert_eq!(claims_of(&heidi.token)["role"], "user");

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.database_url = url.clone();
    config.admin_emails = vec!["heidi@example.com".into()];
    let after = start(config, dir).await;
    let refreshed = after
        .request(Method::POST, "/api/auth/refresh", Some(&heidi.token), None)
        .await;
    let logged_in = after.login("heidi@example.com", PASSWORD).await;

    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(refreshed["user"]["role"], "admin");
    assert_eq!(
        claims_of(refreshed["token"].as_str().unwrap())["role"],
        "admin"
    );
    let logged_in: Value = logged_in.json().await.unwrap();
    assert_eq!(logged_in["user"]["role"], "admin");
}

// ---- every auth error code ----

#[tokio::test]
async fn a_request_without_a_token_is_401_missing_token() {
    let app = spawn_app().await;

    let res = app.request(Method::GET, PROTECTED, None, None).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test]
async fn a_garbage_token_is_401_invalid_token() {
    let app = spawn_app().await;

    let res = app.get(PROTECTED, "not-a-jwt").await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_401_invalid_token() {
    let app = spawn_app().await;
    let ivan = app.user().await;
    let forged = token_for(
        &ivan,
        Algorithm::HS256,
        b"another-secret",
        now(),
        now() + 3600,
    );

    let res = app.get(PROTECTED, &forged).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn an_alg_none_token_is_401_invalid_token() {
    let app = spawn_app().await;
    let judy = app.user().await;
    // The encoder is checked against the header segment of a real HS256 token.
    let real = token_for(&judy, Algorithm::HS256, SECRET, now(), now() + 3600);
    assert_eq!(
        real.split('.').next(),
        Some(base64url(br#"{"typ":"JWT","alg":"HS256"}"#).as_str())
    );
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = json!({"sub": judy.id, "email": judy.email, "role": "admin", "iat": now(), "exp": now() + 3600});
    let unsigned = format!("{header}.{}.", base64url(claims.to_string().as_bytes()));

    let res = app.get(PROTECTED, &unsigned).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn an_hs512_token_signed_with_the_right_secret_is_401_invalid_token() {
    let app = spawn_app().await;
    let ken = app.user().await;
    let hs512 = token_for(&ken, Algorithm::HS512, SECRET, now(), now() + 3600);

    let res = app.get(PROTECTED, &hs512).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn an_expired_token_is_401_token_expired() {
    let app = spawn_app().await;
    let leo = app.user().await;
    let expired = token_for(&leo, Algorithm::HS256, SECRET, now() - 7200, now() - 1);

    let res = app.get(PROTECTED, &expired).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test]
async fn exp_is_checked_without_leeway() {
    let app = spawn_app().await;
    let lily = app.user().await;
    // jsonwebtoken's default leeway is 60 s; the contract allows none.
    let just_expired = token_for(&lily, Algorithm::HS256, SECRET, now() - 3600, now() - 30);
    let expiring_now = token_for(&lily, Algorithm::HS256, SECRET, now() - 3600, now());

    let res = app.get(PROTECTED, &just_expired).await;
    let at_exp = app.get(PROTECTED, &expiring_now).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "token_expired").await;
    assert_api_error(at_exp, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test]
async fn a_signed_token_without_exp_or_with_a_malformed_sub_is_401_invalid_token() {
    let app = spawn_app().await;
    let key = EncodingKey::from_secret(SECRET);
    let no_exp =
        json!({"sub": app.user().await.id, "email": "x@example.com", "role": "user", "iat": now()});
    let bad_sub = json!({"sub": "not-a-uuid", "email": "x@example.com", "role": "user", "iat": now(), "exp": now() + 3600});

    for claims in [no_exp, bad_sub] {
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();

        let res = app.get(PROTECTED, &token).await;

        assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
}

#[tokio::test]
async fn a_validly_signed_token_for_an_unknown_user_is_401_invalid_token() {
    let app = spawn_app().await;
    let ghost = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: "ghost@example.com".into(),
        token: String::new(),
    };
    let token = token_for(&ghost, Algorithm::HS256, SECRET, now(), now() + 3600);

    let res = app.get(PROTECTED, &token).await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn a_freshly_crafted_valid_token_is_accepted() {
    // The control of the tests above: the same crafting, done right, passes.
    let app = spawn_app().await;
    let mia = app.user().await;
    let token = token_for(&mia, Algorithm::HS256, SECRET, now(), now() + 3600);

    let res = app.get(PROTECTED, &token).await;

    assert_eq!(res.status(), StatusCode::OK);
}

// ---- token sources: header, then query, then cookie ----

#[tokio::test]
async fn the_access_token_query_parameter_alone_authenticates() {
    let app = spawn_app().await;
    let nick = app.user().await;

    let res = app
        .request(
            Method::GET,
            &format!("{PROTECTED}?access_token={}", nick.token),
            None,
            None,
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_cookie_alone_authenticates() {
    let app = spawn_app().await;
    let (client, _) = cookie_client(&app).await;

    let res = client.get(app.url(PROTECTED)).send().await.unwrap();

    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_valid_bearer_header_wins_over_an_invalid_query_token() {
    let app = spawn_app().await;
    let olga = app.user().await;

    let res = app
        .get(&format!("{PROTECTED}?access_token=garbage"), &olga.token)
        .await;

    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_invalid_bearer_header_wins_over_a_valid_query_token() {
    let app = spawn_app().await;
    let pat = app.user().await;

    let res = app
        .get(
            &format!("{PROTECTED}?access_token={}", pat.token),
            "garbage",
        )
        .await;

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn an_invalid_bearer_header_wins_over_a_valid_cookie() {
    let app = spawn_app().await;
    let (client, _) = cookie_client(&app).await;

    let res = client
        .get(app.url(PROTECTED))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn an_invalid_query_token_wins_over_a_valid_cookie() {
    let app = spawn_app().await;
    let (client, _) = cookie_client(&app).await;

    let res = client
        .get(app.url(&format!("{PROTECTED}?access_token=garbage")))
        .send()
        .await
        .unwrap();

    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn a_valid_query_token_wins_over_a_cookie_of_another_user() {
    let app = spawn_app().await;
    let (client, cookie_user) = cookie_client(&app).await;
    let quinn = app.user().await;
    app.platform(&quinn, "Quinn's").await;

    let res = client
        .get(app.url(&format!("{PROTECTED}?access_token={}", quinn.token)))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["items"][0]["name"], "Quinn's",
        "answered as the query token's user, not {}",
        cookie_user.email
    );
}

#[tokio::test]
async fn an_authorization_header_of_another_scheme_does_not_authenticate() {
    let app = spawn_app().await;
    let rita = app.user().await;

    let res = get_with_authorization(&app, &format!("Basic {}", rita.token)).await;

    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = get_with_authorization(&app, &format!("Bearer {}", rita.token)).await;
    assert_eq!(res.status(), StatusCode::OK);
}

// ---- CSRF: cookie-authenticated writes from a foreign origin ----

async fn cookie_post_platform(
    app: &TestApp,
    client: &reqwest::Client,
    header: Option<(&str, &str)>,
) -> Response {
    let mut req = client
        .post(app.url("/api/platforms"))
        .json(&json!({"name": "Upwork", "color": "#14a800"}));
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    req.send().await.unwrap()
}

async fn platform_count(app: &TestApp, user: &User) -> usize {
    let body: Value = app.get(PROTECTED, &user.token).await.json().await.unwrap();
    body["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_cookie_authenticated_write_with_a_foreign_origin_is_403_csrf_and_writes_nothing() {
    let app = spawn_app().await;
    let (client, user) = cookie_client(&app).await;

    let res = cookie_post_platform(
        &app,
        &client,
        Some((ORIGIN.as_str(), "https://evil.example")),
    )
    .await;

    assert_api_error(res, StatusCode::FORBIDDEN, "csrf").await;
    assert_eq!(platform_count(&app, &user).await, 0);
}

#[tokio::test]
async fn a_cookie_authenticated_write_from_the_servers_own_origin_is_allowed() {
    let app = spawn_app().await;
    let (client, user) = cookie_client(&app).await;

    let res = cookie_post_platform(&app, &client, Some((ORIGIN.as_str(), &app.base))).await;

    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(platform_count(&app, &user).await, 1);
}

#[tokio::test]
async fn a_cookie_authenticated_write_with_a_foreign_referer_and_no_origin_is_403_csrf() {
    let app = spawn_app().await;
    let (client, user) = cookie_client(&app).await;

    let res = cookie_post_platform(
        &app,
        &client,
        Some((REFERER.as_str(), "https://evil.example/page?x=1")),
    )
    .await;

    assert_api_error(res, StatusCode::FORBIDDEN, "csrf").await;
    assert_eq!(platform_count(&app, &user).await, 0);
}

#[tokio::test]
async fn a_cookie_authenticated_write_with_a_referer_of_the_own_origin_is_allowed() {
    let app = spawn_app().await;
    let (client, _) = cookie_client(&app).await;
    let referer = format!("{}/earnings?tab=1", app.base);

    let res = cookie_post_platform(&app, &client, Some((REFERER.as_str(), &referer))).await;

    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_bearer_authenticated_write_with_a_foreign_origin_is_allowed() {
    let app = spawn_app().await;
    let sam = app.user().await;

    let res = app
        .client
        .post(app.url("/api/platforms"))
        .bearer_auth(&sam.token)
        .header(ORIGIN, "https://evil.example")
        .json(&json!({"name": "Upwork", "color": "#14a800"}))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_cookie_authenticated_write_from_a_configured_cors_origin_is_allowed() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let (client, _) = cookie_client(&app).await;

    let res = cookie_post_platform(
        &app,
        &client,
        Some((ORIGIN.as_str(), "https://app.example")),
    )
    .await;

    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_cookie_authenticated_read_with_a_foreign_origin_is_allowed() {
    let app = spawn_app().await;
    let (client, _) = cookie_client(&app).await;

    let res = client
        .get(app.url(PROTECTED))
        .header(ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_cookie_authenticated_delete_from_a_foreign_origin_is_403_csrf_and_deletes_nothing() {
    let app = spawn_app().await;
    let (client, user) = cookie_client(&app).await;
    let platform = app.platform(&user, "Upwork").await;
    let earning = app.earning(&user, &platform, 100.0).await;
    let path = format!("/api/earnings/{}", earning["id"].as_str().unwrap());

    let res = client
        .delete(app.url(&path))
        .header(ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();

    assert_api_error(res, StatusCode::FORBIDDEN, "csrf").await;
    assert_eq!(app.get(&path, &user.token).await.status(), StatusCode::OK);
}
