//! Who is admin, and who may publish: the role is stored on the user and
//! read per request (`earntrack admin grant|revoke` through the real binary,
//! on the test's database), an open stream learns of a change within a
//! second, the token's `role` claim counts for nothing, and other services
//! publish with a key of their own on the two publish routes only.

use std::time::Duration;

use earntrack::auth::Keys;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_api_error, spawn_app, spawn_app_with, TestApp};
use crate::kit::process;
use crate::kit::sse::data;

const SECRET: &[u8] = b"api-test-secret-0123456789abcdefghij";
const KEY: &str = "publisher-key-for-tests-0123456789abcdef";

fn database_url(app: &TestApp) -> String {
    app.state.config.database_url.clone()
}

#[tokio::test]
async fn earntrack_admin_grant_and_revoke_apply_to_the_next_request() {
    let app = spawn_app().await;
    let erin = app.register("erin@example.com").await;
    let res = app.get("/api/admin/connections", &erin.token).await;
    assert_api_error(res, StatusCode::FORBIDDEN, "forbidden").await;

    let out = process::command(&database_url(&app), &["admin", "grant", "Erin@Example.com"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is now admin"));

    // The same token, no refresh: the stored role counts, within a second
    // (the CLI is another process; the server polls for the change).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let res = app.get("/api/admin/connections", &erin.token).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "admin within 1 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refreshed = app
        .request(Method::POST, "/api/auth/refresh", Some(&erin.token), None)
        .await;
    let refreshed: Value = refreshed.json().await.unwrap();
    assert_eq!(refreshed["user"]["role"], "admin");

    let out = process::command(
        &database_url(&app),
        &["admin", "revoke", "erin@example.com"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Even the refreshed token, whose claim says admin.
    let admin_token = refreshed["token"].as_str().unwrap();
    let res = app.get("/api/admin/connections", admin_token).await;
    assert_api_error(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn earntrack_admin_grant_of_an_unknown_email_fails_with_a_message() {
    let app = spawn_app().await;
    let out = process::command(
        &database_url(&app),
        &["admin", "grant", "nobody@example.com"],
    )
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no user with email"), "{said}");
}

#[tokio::test]
async fn a_role_change_ends_open_streams_with_auth_expired_within_a_second() {
    let app = spawn_app().await;
    let frank = app.register("frank@example.com").await;
    let (mut stream, _) = app.stream_connected(&frank).await;

    process::grant_admin(&database_url(&app), "frank@example.com").await;
    let expired = stream.event_within(Duration::from_secs(1)).await;
    assert_eq!(expired.event, "auth:expired");
    assert_eq!(data(&expired)["reason"], "access_changed");
    assert!(stream.ends_within(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn the_tokens_role_claim_is_never_trusted() {
    let app = spawn_app().await;
    let grace = app.user().await;
    // A token with the right secret that claims admin for a plain user.
    let forged = Keys::new(SECRET, 3600).issue(
        Uuid::parse_str(&grace.id).unwrap(),
        &grace.email,
        "admin",
        0,
    );
    let res = app.get("/api/admin/connections", &forged).await;
    assert_api_error(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_publisher_key_publishes_events_and_notifications_without_a_user() {
    let app = spawn_app_with(|c| c.publisher_keys = vec![KEY.parse().unwrap()]).await;
    let ivy = app.user().await;
    let (mut stream, _) = app.stream_connected(&ivy).await;

    let event = json!({"target": {"user": ivy.id}, "event": "deploy:done", "data": {"v": 7}});
    let res = app.post("/api/admin/events", KEY, event).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let got = stream.event_within(Duration::from_secs(2)).await;
    assert_eq!(got.event, "deploy:done");
    assert_eq!(data(&got)["v"], 7);

    let note =
        json!({"userIds": [ivy.id], "type": "info", "title": "Hi", "message": "from a service"});
    let res = app.post("/api/admin/notifications", KEY, note).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let got = stream.event_within(Duration::from_secs(2)).await;
    assert_eq!(got.event, "notification");
    assert_eq!(data(&got)["title"], "Hi");
}

#[tokio::test]
async fn a_wrong_key_is_401_and_a_key_opens_no_other_route() {
    let app = spawn_app_with(|c| c.publisher_keys = vec![KEY.parse().unwrap()]).await;
    let body = json!({"target": {"all": true}, "event": "deploy:done"});
    let wrong = format!("{KEY}x");
    let res = app.post("/api/admin/events", &wrong, body.clone()).await;
    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    for path in [
        "/api/admin/connections",
        "/api/earnings",
        "/api/notifications",
    ] {
        let res = app.get(path, KEY).await;
        assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    // As a query parameter or cookie it is not a key either.
    let res = app
        .client
        .post(app.url(&format!("/api/admin/events?access_token={KEY}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn publisher_keys_have_a_rate_limit_of_their_own() {
    let app = spawn_app_with(|c| {
        c.publisher_keys = vec![KEY.parse().unwrap()];
        c.publisher_rate_per_sec = 3;
        // Users' budget is tiny: a key must not spend it.
        c.rate_limit_per_min = 1;
    })
    .await;
    let body = json!({"target": {"all": true}, "event": "tick"});
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = app.post("/api/admin/events", KEY, body.clone()).await;
        statuses.push(res.status());
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers().contains_key("retry-after"));
            assert_api_error(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        }
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 3, "{statuses:?}");
    assert_eq!(statuses.len() - accepted, 3, "{statuses:?}");
}

#[tokio::test]
async fn a_short_publisher_key_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(&dir);
    config.publisher_keys = vec!["short-key".parse().unwrap()];
    let err = earntrack::App::build(config).await.err().expect("refused");
    assert!(
        err.to_string().contains("EARNTRACK_PUBLISHER_KEYS"),
        "{err}"
    );
}

// ---- revoking tokens ----

#[tokio::test]
async fn logout_everywhere_revokes_every_token_and_ends_open_streams() {
    let app = spawn_app().await;
    let hal = app.register("hal@example.com").await;
    let other_device = app
        .request(Method::POST, "/api/auth/refresh", Some(&hal.token), None)
        .await
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut stream, _) = app.stream_connected(&hal).await;

    let res = app
        .request(
            Method::POST,
            "/api/auth/logout-all",
            Some(&other_device),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let expired = stream.event_within(Duration::from_secs(1)).await;
    assert_eq!(expired.event, "auth:expired");
    for token in [&hal.token, &other_device] {
        let res = app.get("/api/platforms", token).await;
        assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
        // Refresh cannot renew a revoked token either.
        let res = app
            .request(Method::POST, "/api/auth/refresh", Some(token), None)
            .await;
        assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
        let res = app
            .streams
            .get(app.url("/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    // Logging in again works.
    let res = app.login("hal@example.com", "correct horse").await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh: Value = res.json().await.unwrap();
    let res = app
        .get("/api/platforms", fresh["token"].as_str().unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_revokes_earlier_tokens_and_answers_with_a_working_one() {
    let app = spawn_app().await;
    let kim = app.register("kim@example.com").await;
    let wrong = app
        .post(
            "/api/auth/password",
            &kim.token,
            json!({"currentPassword": "not it at all", "newPassword": "a much better one"}),
        )
        .await;
    let body = assert_api_error(wrong, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(
        body["error"]["fields"]["currentPassword"].is_string(),
        "{body}"
    );

    let res = app
        .post(
            "/api/auth/password",
            &kim.token,
            json!({"currentPassword": "correct horse", "newPassword": "a much better one"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let session: Value = res.json().await.unwrap();
    let new_token = session["token"].as_str().unwrap();
    assert_eq!(
        app.get("/api/platforms", new_token).await.status(),
        StatusCode::OK
    );
    let res = app.get("/api/platforms", &kim.token).await;
    assert_api_error(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let login = |password: &'static str| {
        app.client
            .post(app.url("/api/auth/login"))
            .json(&json!({"email": "kim@example.com", "password": password}))
            .send()
    };
    assert_eq!(
        login("correct horse").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login("a much better one").await.unwrap().status(),
        StatusCode::OK
    );
}
