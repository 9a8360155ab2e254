//! Platforms and earnings over REST: shapes, money, validation, bad input,
//! ownership, paging and filters, the event-cursor header and idempotency.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_api_error, spawn_app, TestApp, User};

const CURSOR_HEADER: &str = "EarnTrack-Event-Cursor";

fn id_of(value: &Value) -> &str {
    value["id"].as_str().expect("an id string")
}

fn earning_path(earning: &Value) -> String {
    format!("/api/earnings/{}", id_of(earning))
}

/// `2024-01-15T10:30:00.000Z`: RFC 3339, UTC, milliseconds.
fn assert_timestamp(value: &Value) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp {value} is a string"));
    let b = s.as_bytes();
    let shape_ok = s.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "{s} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    assert!(
        chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "{s} is RFC 3339"
    );
}

/// A JSON number equal to `expected` (`100` and `100.0` alike).
fn assert_money(value: &Value, expected: f64) {
    assert_eq!(
        value.as_f64(),
        Some(expected),
        "expected the number {expected}, got {value}"
    );
}

async fn create_earning(app: &TestApp, user: &User, body: Value) -> Response {
    app.post("/api/earnings", &user.token, body).await
}

/// An earning on `date` for `amount`, created and returned.
async fn earning_on(
    app: &TestApp,
    user: &User,
    platform: &Value,
    date: &str,
    amount: f64,
) -> Value {
    let res = create_earning(
        app,
        user,
        json!({"platformId": platform["id"], "date": date, "amount": amount}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn list(app: &TestApp, user: &User, query: &str) -> Value {
    let res = app.get(&format!("/api/earnings{query}"), &user.token).await;
    assert_eq!(res.status(), StatusCode::OK, "GET /api/earnings{query}");
    res.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| id_of(e).to_owned())
        .collect()
}

/// The server still answers, and the user still has no earnings at all.
async fn assert_alive_and_nothing_written(app: &TestApp, user: &User) {
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let page = list(app, user, "").await;
    assert_eq!(page["items"], json!([]), "nothing was written");
}

/// A POST /api/earnings with a raw body and content type (`None`: no header).
async fn post_raw(
    app: &TestApp,
    user: &User,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = app
        .client
        .post(app.url("/api/earnings"))
        .bearer_auth(&user.token)
        .body(body);
    if let Some(content_type) = content_type {
        req = req.header(CONTENT_TYPE, content_type);
    }
    req.send().await.expect("the server answers")
}

// ---- platforms ----

#[tokio::test]
async fn a_created_platform_is_201_and_listed_for_its_owner_only() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);

    let res = app
        .post(
            "/api/platforms",
            &alice.token,
            json!({"name": "Upwork", "color": "#14a800"}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let platform: Value = res.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(id_of(&platform)).is_ok());
    assert_eq!(platform["name"], "Upwork");
    assert_eq!(platform["color"], "#14a800");
    let listed: Value = app
        .get("/api/platforms", &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({"items": [platform]}));
    let others: Value = app
        .get("/api/platforms", &bob.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(others, json!({"items": []}));
}

#[tokio::test]
async fn a_platform_name_used_twice_by_one_user_is_409_conflict() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    app.platform(&alice, "Fiverr").await;

    let again = app
        .post(
            "/api/platforms",
            &alice.token,
            json!({"name": "Fiverr", "color": "#1dbf73"}),
        )
        .await;
    let other_user = app
        .post(
            "/api/platforms",
            &bob.token,
            json!({"name": "Fiverr", "color": "#1dbf73"}),
        )
        .await;

    assert_api_error(again, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(
        other_user.status(),
        StatusCode::CREATED,
        "names are unique per user only"
    );
}

#[tokio::test]
async fn a_platform_with_a_bad_color_is_422_with_fields_color() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = app
        .post(
            "/api/platforms",
            &alice.token,
            json!({"name": "Upwork", "color": "green"}),
        )
        .await;

    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["color"].is_string(), "{body}");
    let listed: Value = app
        .get("/api/platforms", &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({"items": []}));
}

// ---- an earning's shape and money ----

#[tokio::test]
async fn a_created_earning_is_201_with_the_contract_fields() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);

    let res = create_earning(
        &app,
        &alice,
        json!({"platformId": platform["id"], "date": "2024-01-15", "hours": 2.5, "amount": 100.5, "notes": "logo"}),
    )
    .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let earning: Value = res.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(id_of(&earning)).is_ok());
    assert_eq!(earning["userId"], alice.id.as_str());
    assert_eq!(earning["platformId"], platform["id"]);
    assert_eq!(
        earning["platform"], platform,
        "platform is {{id, name, color}}"
    );
    assert_eq!(earning["date"], "2024-01-15");
    assert_money(&earning["hours"], 2.5);
    assert_money(&earning["amount"], 100.5);
    assert_money(&earning["hourly_rate"], 40.2);
    assert_eq!(earning["notes"], "logo");
    assert_timestamp(&earning["createdAt"]);
    assert_timestamp(&earning["updatedAt"]);
    let created =
        chrono::DateTime::parse_from_rfc3339(earning["createdAt"].as_str().unwrap()).unwrap();
    assert!(
        created >= before && created <= chrono::Utc::now() + chrono::Duration::seconds(5),
        "createdAt {created} is now"
    );
    let fetched: Value = app
        .get(&earning_path(&earning), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, earning, "GET answers what POST answered");
}

#[tokio::test]
async fn hourly_rate_is_amount_over_hours_rounded_half_away_from_zero_to_cents() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let cases = [
        (0.05, 2.0, 0.03),   // 0.025 -> 0.03
        (100.0, 3.0, 33.33), // 33.333… -> 33.33
        (0.25, 2.0, 0.13),   // 0.125 -> 0.13
        (200.0, 3.0, 66.67), // 66.666… -> 66.67
        (100.0, 2.0, 50.0),
        (0.0, 1.5, 0.0),
    ];

    for (amount, hours, rate) in cases {
        let res = create_earning(
            &app,
            &alice,
            json!({"platformId": platform["id"], "date": "2024-01-15", "hours": hours, "amount": amount}),
        )
        .await;

        assert_eq!(res.status(), StatusCode::CREATED);
        let earning: Value = res.json().await.unwrap();
        assert_money(&earning["hourly_rate"], rate);
        assert_money(&earning["amount"], amount);
    }
}

#[tokio::test]
async fn hourly_rate_is_null_when_hours_is_absent_null_or_zero() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let bodies = [
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 100}),
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 100, "hours": null}),
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 100, "hours": 0}),
    ];

    for body in bodies {
        let res = create_earning(&app, &alice, body.clone()).await;

        assert_eq!(res.status(), StatusCode::CREATED, "{body}");
        let earning: Value = res.json().await.unwrap();
        assert!(
            earning.get("hourly_rate").is_some_and(Value::is_null),
            "hourly_rate is null for {body}: {earning}"
        );
        assert!(
            earning.get("notes").is_some_and(Value::is_null),
            "absent notes are null: {earning}"
        );
    }
}

// ---- validation ----

#[tokio::test]
async fn several_bad_fields_are_one_422_listing_every_one() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = create_earning(
        &app,
        &alice,
        json!({"date": "2024-02-30", "hours": -1, "amount": 10.555}),
    )
    .await;

    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields = body["error"]["fields"]
        .as_object()
        .expect("fields is an object");
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["amount", "date", "hours", "platformId"], "{body}");
    assert!(
        fields
            .values()
            .all(|reason| reason.as_str().is_some_and(|r| !r.is_empty())),
        "{body}"
    );
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_platform_of_another_user_is_422_with_fields_platform_id() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let bobs = app.platform(&bob, "Bob's").await;

    let res = create_earning(
        &app,
        &alice,
        json!({"platformId": bobs["id"], "date": "2024-01-15", "amount": 10}),
    )
    .await;

    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["platformId"].is_string(), "{body}");
    assert_alive_and_nothing_written(&app, &alice).await;
    assert_eq!(list(&app, &bob, "").await["items"], json!([]));
}

#[tokio::test]
async fn an_amount_or_hours_with_more_than_two_decimals_is_422_at_any_magnitude() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    for bad in [1.001, 12345.678, 1000000.001] {
        let amount = create_earning(
            &app,
            &alice,
            json!({"platformId": platform["id"], "date": "2024-01-15", "amount": bad}),
        )
        .await;
        let hours = create_earning(
            &app,
            &alice,
            json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 1, "hours": bad}),
        )
        .await;

        assert_eq!(
            amount.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount {bad}"
        );
        assert_eq!(
            hours.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "hours {bad}"
        );
        let body = assert_api_error(
            amount,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert!(
            body["error"]["fields"]["amount"].is_string(),
            "amount {bad}: {body}"
        );
        let body =
            assert_api_error(hours, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            body["error"]["fields"]["hours"].is_string(),
            "hours {bad}: {body}"
        );
    }
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn an_amount_out_of_range_in_well_formed_json_is_422_not_400() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    for huge in ["1e300", "1e400"] {
        let body = format!(
            r#"{{"platformId":"{}","date":"2024-01-15","amount":{huge}}}"#,
            id_of(&platform)
        );
        let res = post_raw(&app, &alice, Some("application/json"), body).await;

        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount {huge}"
        );
        let body =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(body["error"]["fields"]["amount"].is_string(), "{body}");
    }
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn large_amounts_with_two_decimals_are_stored_exactly() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    for good in ["12345.67", "1000000.01", "19.99", "0.1"] {
        let body = format!(
            r#"{{"platformId":"{}","date":"2024-01-15","amount":{good}}}"#,
            id_of(&platform)
        );
        let res = post_raw(&app, &alice, Some("application/json"), body).await;

        assert_eq!(res.status(), StatusCode::CREATED, "amount {good}");
        let earning: Value = res.json().await.unwrap();
        let fetched: Value = app
            .get(&earning_path(&earning), &alice.token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            fetched["amount"].to_string(),
            good,
            "money round-trips exactly"
        );
    }
}

#[tokio::test]
async fn an_amount_sent_as_a_string_is_422_with_fields_amount() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    let res = create_earning(
        &app,
        &alice,
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": "100"}),
    )
    .await;

    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields = body["error"]["fields"].as_object().unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["amount"], "{body}");
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_negative_amount_is_422_and_two_decimals_are_stored_exactly() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    let negative = create_earning(
        &app,
        &alice,
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": -1}),
    )
    .await;
    let exact = create_earning(
        &app,
        &alice,
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 0.07}),
    )
    .await;

    let body = assert_api_error(
        negative,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["fields"]["amount"].is_string(), "{body}");
    assert_eq!(exact.status(), StatusCode::CREATED);
    let earning: Value = exact.json().await.unwrap();
    let fetched: Value = app
        .get(&earning_path(&earning), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        fetched["amount"].to_string(),
        "0.07",
        "money round-trips exactly"
    );
}

// ---- bad input never crashes and never writes ----

#[tokio::test]
async fn a_body_that_is_not_json_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let res = post_raw(&app, &alice, Some("application/json"), "{\"amount\": 1,").await;

    assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_deeply_nested_json_body_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));

    let res = post_raw(&app, &alice, Some("application/json"), nested).await;

    assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_json_array_body_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let array = json!([{"platformId": platform["id"], "date": "2024-01-15", "amount": 1}]);

    let res = post_raw(&app, &alice, Some("application/json"), array.to_string()).await;

    assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_json_content_type_with_a_charset_is_accepted() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let body = json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 1}).to_string();

    let res = post_raw(&app, &alice, Some("application/json; charset=utf-8"), body).await;

    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_json_body_sent_as_text_plain_or_without_content_type_is_415_unsupported_media_type() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let body = json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 1}).to_string();

    let text_plain = post_raw(&app, &alice, Some("text/plain"), body.clone()).await;
    let none = post_raw(&app, &alice, None, body).await;

    assert_api_error(
        text_plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_api_error(
        none,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_alive_and_nothing_written(&app, &alice).await;
}

/// A well-formed earning whose notes make the body `size` bytes long.
fn body_of_size(platform: &Value, size: usize) -> String {
    let head =
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 1, "notes": ""})
            .to_string();
    let notes = "x".repeat(size - head.len());
    let body =
        json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 1, "notes": notes})
            .to_string();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn a_body_over_1_mib_is_413_payload_too_large() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    let res = post_raw(
        &app,
        &alice,
        Some("application/json"),
        body_of_size(&platform, 1024 * 1024 + 100 * 1024),
    )
    .await;

    assert_api_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_chunked_body_over_1_mib_is_413_payload_too_large() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let body = body_of_size(&platform, 1024 * 1024 + 100 * 1024).into_bytes();
    // No Content-Length: the limit must hold while reading, not only up front.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));

    let res = post_raw(&app, &alice, Some("application/json"), streamed).await;

    assert_api_error(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_alive_and_nothing_written(&app, &alice).await;
}

#[tokio::test]
async fn a_body_just_under_1_mib_is_read_and_validated() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    let res = post_raw(
        &app,
        &alice,
        Some("application/json"),
        body_of_size(&platform, 1000 * 1000),
    )
    .await;

    // Read in full (not 413); the notes are then too long for an earning.
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["notes"].is_string(), "{body}");
    assert_alive_and_nothing_written(&app, &alice).await;
}

// ---- one earning: read, update, delete ----

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let fiverr = app.platform(&alice, "Fiverr").await;
    let res = create_earning(
        &app,
        &alice,
        json!({"platformId": platform["id"], "date": "2024-01-15", "hours": 2, "amount": 100, "notes": "logo"}),
    )
    .await;
    let earning: Value = res.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let res = app
        .patch(
            &earning_path(&earning),
            &alice.token,
            json!({"amount": 150, "platformId": fiverr["id"]}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    let patched: Value = res.json().await.unwrap();
    assert_money(&patched["amount"], 150.0);
    assert_money(&patched["hourly_rate"], 75.0);
    assert_eq!(patched["platformId"], fiverr["id"]);
    assert_eq!(patched["platform"], fiverr);
    for unchanged in ["id", "userId", "date", "hours", "notes", "createdAt"] {
        assert_eq!(
            patched[unchanged], earning[unchanged],
            "{unchanged} is unchanged"
        );
    }
    assert_timestamp(&patched["updatedAt"]);
    assert!(
        patched["updatedAt"].as_str() > earning["updatedAt"].as_str(),
        "updatedAt moves on a change"
    );
    let fetched: Value = app
        .get(&earning_path(&earning), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, patched, "the change is stored");
}

#[tokio::test]
async fn patch_with_null_clears_notes_and_hours_and_the_rate() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let res = create_earning(
        &app,
        &alice,
        json!({"platformId": platform["id"], "date": "2024-01-15", "hours": 2, "amount": 100, "notes": "logo"}),
    )
    .await;
    let earning: Value = res.json().await.unwrap();

    let res = app
        .patch(
            &earning_path(&earning),
            &alice.token,
            json!({"notes": null, "hours": null}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    let patched: Value = res.json().await.unwrap();
    assert!(
        patched.get("notes").is_some_and(Value::is_null),
        "{patched}"
    );
    assert!(
        patched.get("hours").is_some_and(Value::is_null),
        "{patched}"
    );
    assert!(
        patched.get("hourly_rate").is_some_and(Value::is_null),
        "{patched}"
    );
    assert_money(&patched["amount"], 100.0);
    let fetched: Value = app
        .get(&earning_path(&earning), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, patched);
}

#[tokio::test]
async fn a_patch_that_changes_nothing_is_200_with_the_same_updated_at() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let same_values = app
        .patch(
            &earning_path(&earning),
            &alice.token,
            json!({"amount": 100, "date": "2024-01-15"}),
        )
        .await;
    let empty = app
        .patch(&earning_path(&earning), &alice.token, json!({}))
        .await;

    assert_eq!(same_values.status(), StatusCode::OK);
    assert_eq!(same_values.json::<Value>().await.unwrap(), earning);
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(empty.json::<Value>().await.unwrap(), earning);
}

#[tokio::test]
async fn a_patch_with_bad_values_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let platform = app.platform(&alice, "Upwork").await;
    let bobs = app.platform(&bob, "Bob's").await;
    let earning = app.earning(&alice, &platform, 100.0).await;

    let res = app
        .patch(
            &earning_path(&earning),
            &alice.token,
            json!({"amount": 1.001, "date": null, "platformId": bobs["id"]}),
        )
        .await;
    let foreign_platform = app
        .patch(
            &earning_path(&earning),
            &alice.token,
            json!({"platformId": bobs["id"]}),
        )
        .await;

    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["amount"].is_string(), "{body}");
    assert!(body["error"]["fields"]["date"].is_string(), "{body}");
    let body = assert_api_error(
        foreign_platform,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["error"]["fields"]["platformId"].is_string(), "{body}");
    let fetched: Value = app
        .get(&earning_path(&earning), &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, earning);
}

#[tokio::test]
async fn delete_is_204_and_the_earning_is_then_404() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;

    let res = app.delete(&earning_path(&earning), &alice.token).await;

    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.unwrap().is_empty(), "204 has no body");
    assert_api_error(
        app.get(&earning_path(&earning), &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_api_error(
        app.delete(&earning_path(&earning), &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(list(&app, &alice, "").await["items"], json!([]));
}

#[tokio::test]
async fn another_users_earning_is_404_for_get_patch_and_delete() {
    let app = spawn_app().await;
    let (alice, mallory) = (app.user().await, app.user().await);
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 100.0).await;
    let path = earning_path(&earning);

    let get = app.get(&path, &mallory.token).await;
    let patch = app.patch(&path, &mallory.token, json!({"amount": 1})).await;
    let delete = app.delete(&path, &mallory.token).await;

    assert_api_error(get, StatusCode::NOT_FOUND, "not_found").await;
    assert_api_error(patch, StatusCode::NOT_FOUND, "not_found").await;
    assert_api_error(delete, StatusCode::NOT_FOUND, "not_found").await;
    let fetched: Value = app.get(&path, &alice.token).await.json().await.unwrap();
    assert_eq!(fetched, earning, "the owner's earning is untouched");
}

#[tokio::test]
async fn a_malformed_id_in_the_path_is_404() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let get = app.get("/api/earnings/not-a-uuid", &alice.token).await;
    let patch = app
        .patch(
            "/api/earnings/not-a-uuid",
            &alice.token,
            json!({"amount": 1}),
        )
        .await;
    let delete = app.delete("/api/earnings/12345", &alice.token).await;
    let unknown = app
        .get(
            &format!("/api/earnings/{}", uuid::Uuid::new_v4()),
            &alice.token,
        )
        .await;

    assert_api_error(get, StatusCode::NOT_FOUND, "not_found").await;
    assert_api_error(patch, StatusCode::NOT_FOUND, "not_found").await;
    assert_api_error(delete, StatusCode::NOT_FOUND, "not_found").await;
    assert_api_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
}

// ---- the list ----

#[tokio::test]
async fn the_list_is_newest_date_first_and_pages_with_next_cursor_until_null() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let platform = app.platform(&alice, "Upwork").await;
    let bobs = app.platform(&bob, "Bob's").await;
    // Two share a date, so paging must break ties without losing or repeating.
    let mut expected_dates = Vec::new();
    for date in [
        "2024-01-10",
        "2024-03-01",
        "2024-02-15",
        "2024-03-01",
        "2023-12-31",
    ] {
        earning_on(&app, &alice, &platform, date, 10.0).await;
        expected_dates.push(date);
    }
    earning_on(&app, &bob, &bobs, "2024-02-01", 10.0).await;
    expected_dates.sort_unstable_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut dates = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = list(&app, &alice, &query).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "limit is respected: {page}");
        seen.extend(ids(&page));
        dates.extend(items.iter().map(|e| e["date"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => {
                assert!(
                    page.get("nextCursor").is_some_and(Value::is_null),
                    "nextCursor is null, not absent"
                );
                break;
            }
        }
        assert!(pages < 10, "paging ends");
    }

    assert_eq!(pages, 3);
    assert_eq!(dates, expected_dates, "newest date first, only alice's");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 5, "no duplicates and none missing: {seen:?}");
    let all = list(&app, &alice, "").await;
    assert_eq!(ids(&all), seen, "paging gives the same order as one page");
    assert!(all["nextCursor"].is_null());
}

#[tokio::test]
async fn next_cursor_is_null_on_a_last_page_that_is_exactly_full() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    for date in ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"] {
        earning_on(&app, &alice, &platform, date, 10.0).await;
    }

    let first = list(&app, &alice, "?limit=2").await;
    let cursor = first["nextCursor"].as_str().expect("a second page exists");
    let last = list(&app, &alice, &format!("?limit=2&cursor={cursor}")).await;

    assert_eq!(ids(&last).len(), 2);
    assert!(
        last["nextCursor"].is_null(),
        "the page holding the last earning is the last page: {last}"
    );
}

#[tokio::test]
async fn the_list_filters_by_from_to_and_platform_id() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let upwork = app.platform(&alice, "Upwork").await;
    let fiverr = app.platform(&alice, "Fiverr").await;
    let jan = earning_on(&app, &alice, &upwork, "2024-01-15", 1.0).await;
    let feb = earning_on(&app, &alice, &fiverr, "2024-02-15", 2.0).await;
    let mar = earning_on(&app, &alice, &upwork, "2024-03-15", 3.0).await;

    let from = list(&app, &alice, "?from=2024-02-15").await;
    let to = list(&app, &alice, "?to=2024-02-15").await;
    let between = list(&app, &alice, "?from=2024-02-01&to=2024-02-28").await;
    let upwork_only = list(&app, &alice, &format!("?platformId={}", id_of(&upwork))).await;
    let combined = list(
        &app,
        &alice,
        &format!("?platformId={}&from=2024-02-01", id_of(&upwork)),
    )
    .await;

    assert_eq!(ids(&from), [id_of(&mar), id_of(&feb)], "from is inclusive");
    assert_eq!(ids(&to), [id_of(&feb), id_of(&jan)], "to is inclusive");
    assert_eq!(ids(&between), [id_of(&feb)]);
    assert_eq!(ids(&upwork_only), [id_of(&mar), id_of(&jan)]);
    assert_eq!(ids(&combined), [id_of(&mar)]);
}

#[tokio::test]
async fn a_bad_limit_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;

    for limit in ["0", "101", "x", "-1"] {
        let res = app
            .get(&format!("/api/earnings?limit={limit}"), &alice.token)
            .await;

        assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    assert_eq!(
        app.get("/api/earnings?limit=100", &alice.token)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/earnings?limit=1", &alice.token)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_bad_date_platform_id_or_cursor_in_the_query_is_400_bad_request() {
    let app = spawn_app().await;
    let alice = app.user().await;

    for query in [
        "from=2024-02-30",
        "to=yesterday",
        "from=2024-1-5",
        "platformId=upwork",
        "cursor=garbage",
    ] {
        let res = app
            .get(&format!("/api/earnings?{query}"), &alice.token)
            .await;

        assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn earnings_and_notifications_lists_carry_the_event_cursor_header() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let earnings = app.get("/api/earnings", &alice.token).await;
    let notifications = app.get("/api/notifications", &alice.token).await;

    for res in [earnings, notifications] {
        assert_eq!(res.status(), StatusCode::OK);
        let cursor = res
            .headers()
            .get(CURSOR_HEADER)
            .unwrap_or_else(|| panic!("{} has {CURSOR_HEADER}", res.url()));
        assert!(!cursor.to_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn resuming_from_the_lists_event_cursor_sees_nothing_twice_and_misses_nothing() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    app.earning(&alice, &platform, 1.0).await;
    let res = app.get("/api/earnings", &alice.token).await;
    let cursor = res.headers()[CURSOR_HEADER].to_str().unwrap().to_owned();
    let loaded: Value = res.json().await.unwrap();
    assert_eq!(ids(&loaded).len(), 1);
    // Written after the load, before the stream opens: must come by replay.
    let missed = app.earning(&alice, &platform, 2.0).await;

    let mut stream = app.resume(&alice.token, &cursor).await;

    assert_eq!(stream.status, StatusCode::OK);
    stream.expect("connected").await;
    let (_, data) = stream.expect("earnings:new").await;
    assert_eq!(
        data["id"], missed["id"],
        "the first event is the one written after the load"
    );
    stream.expect("notification").await;
    assert!(
        stream.quiet_for(Duration::from_millis(300)).await.is_none(),
        "nothing else is replayed"
    );
}

// ---- Idempotency-Key ----

async fn post_with_key(app: &TestApp, user: &User, key: &str, body: &Value) -> Response {
    app.client
        .post(app.url("/api/earnings"))
        .bearer_auth(&user.token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_first_response_and_creates_nothing(
) {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let mut stream = app.stream(&alice.token, "").await;
    stream.expect("connected").await;
    let body =
        json!({"platformId": platform["id"], "date": "2024-01-15", "hours": 2, "amount": 100});

    let first = post_with_key(&app, &alice, "retry-1", &body).await;
    let retry = post_with_key(&app, &alice, "retry-1", &body).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(retry.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first, "the retry answers the first response");
    assert_eq!(ids(&list(&app, &alice, "").await), [id_of(&first)]);
    let (_, data) = stream.expect("earnings:new").await;
    assert_eq!(data["id"], first["id"]);
    stream.expect("notification").await;
    assert!(
        stream.quiet_for(Duration::from_millis(500)).await.is_none(),
        "the retry published nothing"
    );
}

#[tokio::test]
async fn concurrent_posts_with_one_idempotency_key_create_one_earning() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let body = json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 100});

    let responses = futures_util::future::join_all(
        (0..8).map(|_| post_with_key(&app, &alice, "double-click", &body)),
    )
    .await;

    let mut bodies = Vec::new();
    for res in responses {
        assert_eq!(res.status(), StatusCode::CREATED);
        bodies.push(res.json::<Value>().await.unwrap());
    }
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "every retry answers the first response: {bodies:?}"
    );
    assert_eq!(ids(&list(&app, &alice, "").await), [id_of(&bodies[0])]);
}

#[tokio::test]
async fn different_idempotency_keys_create_different_earnings() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let body = json!({"platformId": platform["id"], "date": "2024-01-15", "amount": 100});

    let a: Value = post_with_key(&app, &alice, "key-a", &body)
        .await
        .json()
        .await
        .unwrap();
    let b: Value = post_with_key(&app, &alice, "key-b", &body)
        .await
        .json()
        .await
        .unwrap();

    assert_ne!(a["id"], b["id"]);
    assert_eq!(ids(&list(&app, &alice, "").await).len(), 2);
}

#[tokio::test]
async fn an_idempotency_key_of_one_user_never_replays_to_another() {
    let app = spawn_app().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let alices = app.platform(&alice, "Upwork").await;
    let bobs = app.platform(&bob, "Upwork").await;

    let a = post_with_key(
        &app,
        &alice,
        "shared",
        &json!({"platformId": alices["id"], "date": "2024-01-15", "amount": 1}),
    )
    .await;
    let b = post_with_key(
        &app,
        &bob,
        "shared",
        &json!({"platformId": bobs["id"], "date": "2024-01-15", "amount": 2}),
    )
    .await;

    assert_eq!(a.status(), StatusCode::CREATED);
    assert_eq!(b.status(), StatusCode::CREATED);
    let b: Value = b.json().await.unwrap();
    assert_eq!(
        b["userId"],
        bob.id.as_str(),
        "bob gets his own earning, not alice's: {b}"
    );
    assert_eq!(ids(&list(&app, &bob, "").await), [id_of(&b)]);
}

// ---- routing ----

#[tokio::test]
async fn an_unknown_route_is_404_not_found_in_json() {
    let app = spawn_app().await;
    let alice = app.user().await;

    let with_token = app.get("/api/nope", &alice.token).await;
    let without = app.request(Method::GET, "/api/nope", None, None).await;

    assert_api_error(with_token, StatusCode::NOT_FOUND, "not_found").await;
    assert_api_error(without, StatusCode::NOT_FOUND, "not_found").await;
}
