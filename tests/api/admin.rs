//! Admin: the role check, events to users / rooms / everyone, room
//! membership (live and on resume), the connection views and
//! force-disconnect; plus the operator's side: `/metrics` and the per-user
//! REST rate limit.

use std::time::Duration;

use eventsource_stream::Event;
use reqwest::{header, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    assert_api_error, spawn_app, spawn_app_with, start, test_config, Sse, TestApp, User,
};
use crate::kit::sse::Next;

/// `POST /api/admin/events` as `admin`.
async fn emit(app: &TestApp, admin: &User, target: Value, event: &str, data: Value) -> Response {
    app.post(
        "/api/admin/events",
        &admin.token,
        json!({"target": target, "event": event, "data": data}),
    )
    .await
}

/// `emit`, asserting 202.
async fn emit_ok(app: &TestApp, admin: &User, target: Value, event: &str, data: Value) {
    let res = emit(app, admin, target.clone(), event, data).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "event to {target}");
}

async fn join(app: &TestApp, admin: &User, room: &str, user: &str) -> Response {
    app.request(
        Method::PUT,
        &format!("/api/admin/rooms/{room}/members/{user}"),
        Some(&admin.token),
        None,
    )
    .await
}

async fn leave(app: &TestApp, admin: &User, room: &str, user: &str) -> Response {
    app.delete(
        &format!("/api/admin/rooms/{room}/members/{user}"),
        &admin.token,
    )
    .await
}

/// Asserts `stream` sends nothing for a moment.
async fn assert_quiet(stream: &mut Sse, who: &str) {
    if let Some(next) = stream.quiet_for(Duration::from_millis(300)).await {
        panic!("{who} got an unexpected {next:?}");
    }
}

// --- the role ---------------------------------------------------------------

/// Every admin route, with a body that would be accepted from an admin.
fn admin_routes(someone: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/api/admin/notifications".into(),
            Some(json!({"broadcast": true, "type": "info", "title": "t", "message": "m"})),
        ),
        (
            Method::POST,
            "/api/admin/events".into(),
            Some(json!({"target": {"all": true}, "event": "hello", "data": {}})),
        ),
        (Method::GET, "/api/admin/connections".into(), None),
        (
            Method::GET,
            format!("/api/admin/users/{someone}/connections"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/admin/users/{someone}/connections"),
            None,
        ),
        (
            Method::PUT,
            format!("/api/admin/rooms/team-1/members/{someone}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/admin/rooms/team-1/members/{someone}"),
            None,
        ),
    ]
}

#[tokio::test]
async fn a_non_admin_gets_403_forbidden_on_every_admin_route() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    for (method, path, body) in admin_routes(&alice.id) {
        // Act
        let res = app
            .request(method.clone(), &path, Some(&alice.token), body)
            .await;

        // Assert
        assert_api_error(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    assert_quiet(&mut stream, "a non-admin's stream (nothing was done)").await;
}

#[tokio::test]
async fn admin_routes_without_a_token_are_401() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.user().await;

    for (method, path, body) in admin_routes(&alice.id) {
        // Act
        let res = app.request(method.clone(), &path, None, body).await;

        // Assert
        assert_api_error(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    }
}

// --- events -------------------------------------------------------------------

#[tokio::test]
async fn an_event_to_a_user_reaches_that_users_stream_with_the_given_data() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;
    let data = json!({"text": "hi alice", "n": [1, 2, 3], "nested": {"ok": true}});

    // Act
    let res = emit(
        &app,
        &admin,
        json!({"user": alice.id}),
        "chat:message",
        data.clone(),
    )
    .await;

    // Assert
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let (event, got) = alices.expect("chat:message").await;
    assert_eq!(got, data);
    assert!(!event.id.is_empty(), "a logged event carries an id");
    let envelope: Value = serde_json::from_str(&event.data).unwrap();
    assert!(envelope["timestamp"].is_string(), "{envelope}");
    assert_quiet(&mut alices, "alice").await;
    assert_quiet(&mut bobs, "bob").await;
}

#[tokio::test]
async fn an_event_to_users_reaches_each_named_user_once() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob, carol) = (app.user().await, app.user().await, app.user().await);
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;
    let (mut carols, _) = app.stream_connected(&carol).await;

    // Act
    emit_ok(
        &app,
        &admin,
        json!({"users": [alice.id, bob.id, alice.id]}),
        "team:update",
        json!({"v": 1}),
    )
    .await;

    // Assert
    for (stream, who) in [(&mut alices, "alice"), (&mut bobs, "bob")] {
        assert_eq!(stream.expect("team:update").await.1, json!({"v": 1}));
        assert_quiet(stream, who).await;
    }
    assert_quiet(&mut carols, "carol").await;
}

#[tokio::test]
async fn an_event_to_all_reaches_every_connected_user_exactly_once() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut alices_tab, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;

    // Act
    emit_ok(
        &app,
        &admin,
        json!({"all": true}),
        "system:notice",
        json!({"msg": "hello all"}),
    )
    .await;

    // Assert
    for stream in [&mut alices, &mut alices_tab, &mut bobs] {
        assert_eq!(
            stream.expect("system:notice").await.1,
            json!({"msg": "hello all"})
        );
        assert_quiet(stream, "a connected stream").await;
    }
}

#[tokio::test]
async fn event_names_must_match_the_pattern() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;
    let target = json!({"user": alice.id});
    let too_long = "a".repeat(65);

    for name in [
        "Bad Name",
        "",
        too_long.as_str(),
        "UPPER",
        "emoji-😀",
        "a.b",
    ] {
        // Act
        let res = emit(&app, &admin, target.clone(), name, json!({})).await;

        // Assert
        let body =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            body["error"]["fields"]["event"].is_string(),
            "{name:?}: {body}"
        );
    }
    assert_quiet(&mut stream, "alice (no invalid event published)").await;

    let longest = "a".repeat(64);
    for name in [longest.as_str(), "x", "a-b_c:d-0-9"] {
        emit_ok(&app, &admin, target.clone(), name, json!({})).await;
        stream.expect(name).await;
    }
}

#[tokio::test]
async fn a_bad_target_is_422() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    for target in [
        json!({"user": "not-a-uuid"}),
        json!({"user": 42}),
        json!({"users": []}),
        json!({"users": "nope"}),
        json!({"all": false}),
        json!({"room": ""}),
        json!({"room": "bad name"}),
        json!({"user": alice.id, "all": true}),
        json!({"everyone": true}),
        json!({}),
        json!("all"),
        json!(null),
    ] {
        // Act
        let res = emit(&app, &admin, target.clone(), "hello", json!({})).await;

        // Assert
        let body =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            body["error"]["fields"]["target"].is_string(),
            "{target}: {body}"
        );
    }
    let res = app
        .post("/api/admin/events", &admin.token, json!({"event": "hello"}))
        .await;
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["target"].is_string(), "{body}");
    assert_quiet(&mut stream, "alice").await;
}

#[tokio::test]
async fn an_event_for_an_unknown_user_is_422_even_beside_known_ones() {
    // Arrange: alice is known to the server (her stream and an event to
    // her put her in its memory); the other id belongs to nobody.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;
    emit_ok(&app, &admin, json!({"user": alice.id}), "hello", json!({})).await;
    stream.expect("hello").await;
    let unknown = uuid::Uuid::new_v4().to_string();

    for target in [
        json!({"user": unknown}),
        json!({"users": [alice.id, unknown]}),
    ] {
        // Act
        let res = emit(&app, &admin, target.clone(), "hello", json!({})).await;

        // Assert: refused as a whole, naming the id; alice gets nothing.
        let body =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let field = body["error"]["fields"]["target"]
            .as_str()
            .unwrap_or_default();
        assert!(field.contains(&unknown), "{target}: {body}");
    }
    assert_quiet(&mut stream, "alice").await;
}

// --- rooms --------------------------------------------------------------------

/// Posts `n` as a `room:msg` to room `team-1`.
async fn room_msg(app: &TestApp, admin: &User, n: &str) {
    emit_ok(
        app,
        admin,
        json!({"room": "team-1"}),
        "room:msg",
        json!({ "n": n }),
    )
    .await;
}

/// `name`, or `name=<data.n>` when the data has an `n`.
fn label(event: &Event) -> String {
    let envelope: Value = serde_json::from_str(&event.data).expect("a JSON envelope");
    match envelope["data"]["n"].as_str() {
        Some(n) => format!("{}={n}", event.event),
        None => event.event.clone(),
    }
}

/// The server may tell a user of their own membership changes
/// (`room:joined` / `room:left`); the contract neither requires nor forbids
/// it, so the room tests leave those out and hold either way.
fn is_membership_notice(event: &Event) -> bool {
    event.event == "room:joined" || event.event == "room:left"
}

/// Asserts `stream` sends exactly `expected` (as `label`s, in order, each
/// within 5 s), then nothing more for 300 ms.
async fn assert_receives(stream: &mut Sse, expected: &[&str], what: &str) {
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let event = stream.event().await;
        if !is_membership_notice(&event) {
            got.push(label(&event));
        }
    }
    while let Some(Next::Event(event)) = stream.quiet_for(Duration::from_millis(300)).await {
        if !is_membership_notice(&event) {
            got.push(label(&event));
        }
    }
    assert_eq!(got, expected, "{what}");
}

#[tokio::test]
async fn a_room_event_reaches_members_and_not_others() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let res = join(&app, &admin, "team-1", &alice.id).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;

    // Act
    room_msg(&app, &admin, "1").await;

    // Assert
    assert_receives(&mut alices, &["room:msg=1"], "room events").await;
    assert_receives(&mut bobs, &[], "bob is no member").await;
}

#[tokio::test]
async fn a_member_who_left_gets_no_further_room_events_live_or_on_resume() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    let (mut stream, _) = app.stream_connected(&alice).await;
    room_msg(&app, &admin, "member").await;
    let (last, _) = stream.expect("room:msg").await;

    // Act
    let res = leave(&app, &admin, "team-1", &alice.id).await;
    room_msg(&app, &admin, "left").await;
    emit_ok(&app, &admin, json!({"user": alice.id}), "direct", json!({})).await;

    // Assert
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_receives(&mut stream, &["direct"], "live").await;
    drop(stream);
    let mut resumed = app.resume(&alice.token, &last.id).await;
    resumed.expect("connected").await;
    assert_receives(&mut resumed, &["direct"], "on resume").await;
}

#[tokio::test]
async fn a_member_gets_room_events_published_while_offline_on_resume() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    let (stream, last_id) = app.stream_connected(&alice).await;
    drop(stream);

    // Act
    room_msg(&app, &admin, "offline").await;
    let mut resumed = app.resume(&alice.token, &last_id).await;

    // Assert
    resumed.expect("connected").await;
    assert_receives(&mut resumed, &["room:msg=offline"], "room events").await;
}

#[tokio::test]
async fn a_new_member_gets_no_room_events_from_before_joining_on_resume() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let bob = app.user().await;
    let (stream, before_join) = app.stream_connected(&bob).await;
    drop(stream);
    room_msg(&app, &admin, "before").await;

    // Act
    assert_eq!(join(&app, &admin, "team-1", &bob.id).await.status(), 204);
    room_msg(&app, &admin, "after").await;
    let mut resumed = app.resume(&bob.token, &before_join).await;

    // Assert
    resumed.expect("connected").await;
    assert_receives(&mut resumed, &["room:msg=after"], "room events").await;
}

#[tokio::test]
async fn a_live_stream_of_a_user_who_joins_receives_room_events_without_reconnecting() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;
    room_msg(&app, &admin, "before").await;

    // Act
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    room_msg(&app, &admin, "after").await;

    // Assert
    assert_receives(&mut stream, &["room:msg=after"], "room events").await;
}

#[tokio::test]
async fn joining_a_room_with_an_unknown_user_is_404() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    for user in [unknown.as_str(), "not-a-uuid"] {
        // Act
        let res = join(&app, &admin, "team-1", user).await;

        // Assert
        assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn room_membership_changes_are_idempotent_204s() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    // Act
    let joins = [
        join(&app, &admin, "team-1", &alice.id).await.status(),
        join(&app, &admin, "team-1", &alice.id).await.status(),
    ];
    room_msg(&app, &admin, "once").await;
    let leaves = [
        leave(&app, &admin, "team-1", &alice.id).await.status(),
        leave(&app, &admin, "team-1", &alice.id).await.status(),
    ];

    // Assert
    assert_eq!(joins, [StatusCode::NO_CONTENT; 2]);
    assert_eq!(leaves, [StatusCode::NO_CONTENT; 2]);
    assert_receives(
        &mut stream,
        &["room:msg=once"],
        "joined twice, one membership",
    )
    .await;
}

#[tokio::test]
async fn a_member_who_leaves_and_rejoins_gets_nothing_from_the_gap_live_or_on_resume() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    let (mut live, before) = app.stream_connected(&alice).await;
    room_msg(&app, &admin, "member").await;

    // Act
    assert_eq!(leave(&app, &admin, "team-1", &alice.id).await.status(), 204);
    room_msg(&app, &admin, "gap").await;
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    room_msg(&app, &admin, "back").await;

    // Assert
    let expected = ["room:msg=member", "room:msg=back"];
    assert_receives(&mut live, &expected, "live").await;
    let mut resumed = app.resume(&alice.token, &before).await;
    resumed.expect("connected").await;
    assert_receives(&mut resumed, &expected, "on resume").await;
}

#[tokio::test]
async fn a_former_member_gets_on_resume_the_room_events_from_while_they_were_a_member() {
    // Arrange: alice's position is taken while she is a member.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    let (stream, position) = app.stream_connected(&alice).await;
    drop(stream);

    // Act
    room_msg(&app, &admin, "member").await;
    assert_eq!(leave(&app, &admin, "team-1", &alice.id).await.status(), 204);
    room_msg(&app, &admin, "left").await;
    let mut resumed = app.resume(&alice.token, &position).await;

    // Assert
    resumed.expect("connected").await;
    assert_receives(&mut resumed, &["room:msg=member"], "room events").await;
}

#[tokio::test]
async fn a_resume_delivers_room_events_of_a_membership_that_began_and_ended_while_offline() {
    // Arrange: bob's position is taken before he joins.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let bob = app.user().await;
    let (stream, position) = app.stream_connected(&bob).await;
    drop(stream);

    // Act: joined, an event while a member, left — all while offline.
    room_msg(&app, &admin, "before").await;
    assert_eq!(join(&app, &admin, "team-1", &bob.id).await.status(), 204);
    room_msg(&app, &admin, "member").await;
    assert_eq!(leave(&app, &admin, "team-1", &bob.id).await.status(), 204);
    room_msg(&app, &admin, "left").await;
    let mut resumed = app.resume(&bob.token, &position).await;

    // Assert
    resumed.expect("connected").await;
    assert_receives(&mut resumed, &["room:msg=member"], "room events").await;
}

#[tokio::test]
async fn room_membership_is_stored_and_survives_a_restart() {
    // Arrange
    let db_dir = tempfile::tempdir().unwrap();
    let mut app = start(test_config(&db_dir), tempfile::tempdir().unwrap()).await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    let (_, alices_position) = app.stream_connected(&alice).await;
    let (_, bobs_position) = app.stream_connected(&bob).await;

    // Act
    app.stop().await;
    drop(app);
    let app = start(test_config(&db_dir), tempfile::tempdir().unwrap()).await;
    room_msg(&app, &admin, "1").await;
    let mut alices = app.resume(&alice.token, &alices_position).await;
    let mut bobs = app.resume(&bob.token, &bobs_position).await;

    // Assert: on resume, and live on a new stream.
    alices.expect("connected").await;
    assert_receives(&mut alices, &["room:msg=1"], "room events").await;
    bobs.expect("connected").await;
    assert_receives(&mut bobs, &[], "bob is no member").await;
    let (mut fresh, _) = app.stream_connected(&alice).await;
    room_msg(&app, &admin, "2").await;
    assert_receives(&mut fresh, &["room:msg=2"], "room events").await;
    assert_receives(&mut alices, &["room:msg=2"], "room events").await;
}

// --- connections ------------------------------------------------------------

async fn connections(app: &TestApp, admin: &User) -> Value {
    let res = app.get("/api/admin/connections", &admin.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn count_of(view: &Value, user: &User) -> Option<u64> {
    view["users"]
        .as_array()
        .expect("users is an array")
        .iter()
        .find(|u| u["userId"] == user.id)
        .map(|u| u["connections"].as_u64().expect("connections is a number"))
}

async fn user_connections(app: &TestApp, admin: &User, user: &User) -> Value {
    let res = app
        .get(
            &format!("/api/admin/users/{}/connections", user.id),
            &admin.token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

#[tokio::test]
async fn connections_count_open_streams_per_user() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let _a1 = app.stream_connected(&alice).await;
    let _a2 = app.stream_connected(&alice).await;
    let _b1 = app.stream_connected(&bob).await;

    // Act
    let view = connections(&app, &admin).await;

    // Assert
    assert_eq!(view["total"], 3, "{view}");
    assert_eq!(view["users"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(count_of(&view, &alice), Some(2), "{view}");
    assert_eq!(count_of(&view, &bob), Some(1), "{view}");
}

#[tokio::test]
async fn long_polls_are_not_counted_as_connections() {
    // Arrange: a stream and a pending long-poll of alice.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let _stream = app.stream_connected(&alice).await;
    let poll = tokio::spawn({
        let request = app
            .client
            .get(app.url("/events/poll?timeout=10"))
            .bearer_auth(&alice.token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    });

    // Act: look while the long-poll is waiting.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < deadline {
        let view = connections(&app, &admin).await;
        let one = user_connections(&app, &admin, &alice).await;

        // Assert
        assert_eq!(view["total"], 1, "{view}");
        assert_eq!(one["connections"], 1, "{one}");
    }
    emit_ok(&app, &admin, json!({"user": alice.id}), "wake", json!({})).await;
    let polled = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long-poll answers")
        .unwrap();
    assert_eq!(
        polled["events"][0]["event"], "wake",
        "the poll was pending: {polled}"
    );
}

#[tokio::test]
async fn user_connections_reports_one_users_open_streams() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let _a1 = app.stream_connected(&alice).await;
    let _a2 = app.stream_connected(&alice).await;

    // Act
    let alices = user_connections(&app, &admin, &alice).await;
    let bobs = user_connections(&app, &admin, &bob).await;

    // Assert
    assert_eq!(alices, json!({"userId": alice.id, "connections": 2}));
    assert_eq!(bobs, json!({"userId": bob.id, "connections": 0}));
}

#[tokio::test]
async fn disconnecting_a_user_ends_their_streams_within_a_second() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let (mut a1, _) = app.stream_connected(&alice).await;
    let (mut a2, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;

    // Act
    let res = app
        .delete(
            &format!("/api/admin/users/{}/connections", alice.id),
            &admin.token,
        )
        .await;

    // Assert
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["closed"], 2, "{body}");
    assert!(
        a1.ends_within(Duration::from_secs(1)).await,
        "first stream ends"
    );
    assert!(
        a2.ends_within(Duration::from_secs(1)).await,
        "second stream ends"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let count = user_connections(&app, &admin, &alice).await["connections"].clone();
        if count == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's count drops to 0, still {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emit_ok(
        &app,
        &admin,
        json!({"user": bob.id}),
        "still-here",
        json!({}),
    )
    .await;
    bobs.expect("still-here").await;
    assert_eq!(count_of(&connections(&app, &admin).await, &bob), Some(1));
    let again = app
        .delete(
            &format!("/api/admin/users/{}/connections", alice.id),
            &admin.token,
        )
        .await;
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"closed": 0}));
}

// --- metrics ----------------------------------------------------------------

async fn metrics_text(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    res.text().await.unwrap()
}

/// Sum of a series over all its label sets (0 when absent).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("a sample value: {l}"))
        })
        .sum()
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_contract_series() {
    // Arrange: a stream, an event, and a request to a route with an id.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let earning = app.earning(&alice, &platform, 10.0).await;
    let id = earning["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/earnings/{id}"), &alice.token)
            .await
            .status(),
        200
    );
    assert_eq!(app.get("/api/earnings", &alice.token).await.status(), 200);
    let (mut stream, _) = app.stream_connected(&alice).await;
    emit_ok(
        &app,
        &admin,
        json!({"user": alice.id}),
        "ping-me",
        json!({}),
    )
    .await;
    stream.expect("ping-me").await;

    // Act
    let text = metrics_text(&app).await;

    // Assert
    for name in [
        "earntrack_open_streams",
        "earntrack_events_published_total",
        "earntrack_events_delivered_total",
        "earntrack_http_requests_total",
        "earntrack_http_request_duration_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} is exported:\n{text}"
        );
    }
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("earntrack_http_requests_total{"))
        .collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains("route=\"/api/earnings\"")),
        "a route label: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("route=\"/api/earnings/{id}\"")),
        "the route template, not the path: {requests:?}"
    );
    assert!(!text.contains(id), "no concrete id in a label");
}

/// The contract's series, each with a sample (not only a `# TYPE` line).
const SERIES: [&str; 7] = [
    "earntrack_open_streams",
    "earntrack_events_published_total",
    "earntrack_events_delivered_total",
    "earntrack_events_replayed_total",
    "earntrack_slow_subscriber_drops_total",
    "earntrack_http_requests_total",
    "earntrack_http_request_duration_seconds",
];

fn has_sample(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
    })
}

#[tokio::test]
async fn a_fresh_server_exports_every_contract_series_from_the_start() {
    // Arrange: a server process of its own (the recorder is process-wide,
    // so only a new process shows what an operator's first scrape sees).
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_earntrack"))
        .env_clear()
        .env("EARNTRACK_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("m.db").display()),
        )
        .env("JWT_SECRET", "metrics-test-secret-0123456789abcdefgh")
        .env("EARNTRACK_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary starts");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let log: Value = serde_json::from_str(&line).unwrap_or_default();
            if log["fields"]["message"] == "listening" {
                return log["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server listens within 10 s");
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Act
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Assert
    let missing: Vec<&str> = SERIES
        .into_iter()
        .filter(|n| !has_sample(&text, n))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");
}

#[tokio::test]
async fn event_counters_increase_when_events_flow() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;
    let (mut tab, _) = app.stream_connected(&alice).await;
    let before = metrics_text(&app).await;

    // Act
    for n in 0..3 {
        emit_ok(
            &app,
            &admin,
            json!({"user": alice.id}),
            "counted",
            json!({"n": n}),
        )
        .await;
    }
    for _ in 0..3 {
        stream.expect("counted").await;
        tab.expect("counted").await;
    }
    let after = metrics_text(&app).await;

    // Assert: the recorder is process-global and tests run in parallel, so
    // other tests may add to the counters too: 3 events published, each
    // delivered to 2 streams, and our 2 streams still open.
    for (name, ours) in [
        ("earntrack_events_published_total", 3.0),
        ("earntrack_events_delivered_total", 6.0),
    ] {
        let (was, now) = (total(&before, name), total(&after, name));
        assert!(now - was >= ours, "{name} went from {was} to {now}");
    }
    let open = total(&after, "earntrack_open_streams");
    assert!(open >= 2.0, "open streams {open}");
    let (was, now) = (
        total(&before, "earntrack_http_requests_total"),
        total(&after, "earntrack_http_requests_total"),
    );
    assert!(now - was >= 4.0, "requests went from {was} to {now}");
}

#[tokio::test]
async fn metric_labels_carry_no_user_ids_tokens_or_event_names() {
    // Arrange: requests whose paths and events carry ids and names.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let (mut stream, _) = app.stream_connected(&alice).await;
    let res = app
        .client
        .get(app.url(&format!("/events?access_token={}", bob.token)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    assert_eq!(join(&app, &admin, "team-1", &alice.id).await.status(), 204);
    user_connections(&app, &admin, &alice).await;
    user_connections(&app, &admin, &bob).await;
    let stray = app
        .get(&format!("/no-such-route/{}", alice.id), &alice.token)
        .await;
    assert_eq!(stray.status(), StatusCode::NOT_FOUND);
    let secret_name = format!("free-form-{}", uuid::Uuid::new_v4().simple());
    emit_ok(
        &app,
        &admin,
        json!({"user": alice.id}),
        &secret_name,
        json!({}),
    )
    .await;
    assert_receives(&mut stream, &[secret_name.as_str()], "the event").await;

    // Act
    let text = metrics_text(&app).await;

    // Assert
    for user in [&alice, &bob, &admin] {
        assert!(!text.contains(&user.id), "no user id in the metrics");
        assert!(!text.contains(&user.token), "no token in the metrics");
    }
    assert!(!text.contains(&secret_name), "no free-form event name");
    let uuid_like = text.lines().filter(|l| !l.starts_with('#')).find(|l| {
        l.split(|c: char| !c.is_ascii_hexdigit() && c != '-')
            .any(|w| uuid::Uuid::parse_str(w).is_ok())
    });
    assert_eq!(uuid_like, None, "no UUID in any label");
}

// --- rate limit -------------------------------------------------------------

#[tokio::test]
async fn the_sixth_quick_request_of_a_user_is_429_rate_limited_and_others_are_unaffected() {
    // Arrange
    let app = spawn_app_with(|c| c.rate_limit_per_min = 5).await;
    let (alice, bob) = (app.user().await, app.user().await);
    for n in 1..=5 {
        let res = app.get("/api/platforms", &alice.token).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "request {n} is within the budget"
        );
    }

    // Act
    let sixth = app.get("/api/platforms", &alice.token).await;
    let bobs = app.get("/api/platforms", &bob.token).await;

    // Assert
    let retry_after = sixth
        .headers()
        .get(header::RETRY_AFTER)
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_api_error(sixth, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(
        bobs.status(),
        StatusCode::OK,
        "another user has their own budget"
    );
}
