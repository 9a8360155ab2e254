//! Notifications: the stored list (`GET /api/notifications`), per-user read
//! state (`POST /api/notifications/{id}/read` and `notification:read`), and
//! notifications sent by an admin — targeted or broadcast, live and on
//! resume.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_api_error, spawn_app, Sse, TestApp, User};

const NOTIFICATION_FIELDS: [&str; 8] = [
    "id",
    "title",
    "message",
    "type",
    "timestamp",
    "dismissible",
    "duration",
    "data",
];

/// `GET /api/notifications<query>` as `user`; the 200 body.
async fn list(app: &TestApp, user: &User, query: &str) -> Value {
    let res = app
        .get(&format!("/api/notifications{query}"), &user.token)
        .await;
    assert_eq!(res.status(), StatusCode::OK, "list {query}");
    res.json().await.unwrap()
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|n| n["title"].as_str().expect("a title").to_owned())
        .collect()
}

/// The listed notification titled `title`, if any.
fn find<'a>(page: &'a Value, title: &str) -> Option<&'a Value> {
    page["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .find(|n| n["title"] == title)
}

/// `POST /api/admin/notifications` as `admin`.
async fn send(app: &TestApp, admin: &User, body: Value) -> Response {
    app.post("/api/admin/notifications", &admin.token, body)
        .await
}

/// A notification with a unique title for `user`, sent by `admin`; the title.
async fn notify(app: &TestApp, admin: &User, user: &User, title: &str) -> String {
    let title = format!("{title} {}", uuid::Uuid::new_v4().simple());
    let res = send(
        app,
        admin,
        json!({"userIds": [user.id], "type": "info", "title": title, "message": "hello"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    title
}

/// The id of `user`'s listed notification titled `title`.
async fn id_of(app: &TestApp, user: &User, title: &str) -> String {
    let page = list(app, user, "").await;
    find(&page, title).unwrap_or_else(|| panic!("{title:?} is listed for {}: {page}", user.email))
        ["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn mark_read(app: &TestApp, user: &User, id: &str) -> Response {
    app.post(
        &format!("/api/notifications/{id}/read"),
        &user.token,
        json!({}),
    )
    .await
}

/// The next event on `stream` is a `notification`; its data.
async fn next_notification(stream: &mut Sse) -> Value {
    stream.expect("notification").await.1
}

/// Asserts `stream` sends nothing more for a moment (a duplicate or a leak
/// would show up here).
async fn assert_quiet(stream: &mut Sse, who: &str) {
    if let Some(next) = stream.quiet_for(Duration::from_millis(300)).await {
        panic!("{who} got an unexpected {next:?}");
    }
}

// --- the list -------------------------------------------------------------

#[tokio::test]
async fn creating_an_earning_stores_an_earning_created_notification() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;

    // Act
    app.earning(&alice, &platform, 100.0).await;

    // Assert
    let page = list(&app, &alice, "").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one stored notification: {page}");
    let n = &items[0];
    for field in NOTIFICATION_FIELDS {
        assert!(n.get(field).is_some(), "item has {field}: {n}");
    }
    assert_eq!(n["title"], "Earning Created");
    assert_eq!(n["type"], "success");
    assert_eq!(n["message"], "New earning of $100 added to Upwork");
    assert!(uuid::Uuid::parse_str(n["id"].as_str().unwrap()).is_ok());
    assert!(page.get("nextCursor").is_some_and(Value::is_null), "{page}");
}

#[tokio::test]
async fn notifications_are_listed_newest_first() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let mut sent = Vec::new();
    for name in ["first", "second (a broadcast)", "third"] {
        sent.push(if name.contains("broadcast") {
            broadcast(&app, &admin, name).await
        } else {
            notify(&app, &admin, &alice, name).await
        });
        // Timestamps have millisecond resolution: let each one be newer.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }

    // Act
    let page = list(&app, &alice, "").await;

    // Assert
    sent.reverse();
    assert_eq!(titles(&page), sent);
}

#[tokio::test]
async fn unread_true_lists_only_unread_notifications() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let kept = notify(&app, &admin, &alice, "kept").await;
    let read = notify(&app, &admin, &alice, "read").await;
    let id = id_of(&app, &alice, &read).await;
    assert_eq!(mark_read(&app, &alice, &id).await.status(), 204);

    // Act
    let unread = list(&app, &alice, "?unread=true").await;
    let all = list(&app, &alice, "").await;

    // Assert
    assert_eq!(titles(&unread), vec![kept.clone()]);
    let all_titles: HashSet<String> = titles(&all).into_iter().collect();
    assert_eq!(all_titles, HashSet::from([kept, read]), "{all}");
}

#[tokio::test]
async fn marking_read_answers_204_and_publishes_notification_read_to_all_of_the_users_streams() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let (mut tab1, _) = app.stream_connected(&alice).await;
    let (mut tab2, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;
    let title = notify(&app, &admin, &alice, "to read").await;
    let id = next_notification(&mut tab1).await["id"].clone();
    assert_eq!(next_notification(&mut tab2).await["id"], id);

    // Act
    let res = mark_read(&app, &alice, id.as_str().unwrap()).await;

    // Assert
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(res.content_length(), Some(0), "204 has no body");
    for tab in [&mut tab1, &mut tab2] {
        let (_, data) = tab.expect("notification:read").await;
        assert_eq!(data, json!({ "id": id }));
    }
    assert_quiet(&mut bobs, "another user").await;
    let unread = list(&app, &alice, "?unread=true").await;
    assert!(
        find(&unread, &title).is_none(),
        "no longer unread: {unread}"
    );
}

#[tokio::test]
async fn marking_another_users_notification_read_is_404() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let mallory = app.user().await;
    let title = notify(&app, &admin, &alice, "private").await;
    let id = id_of(&app, &alice, &title).await;
    let (mut alices, _) = app.stream_connected(&alice).await;

    // Act
    let res = mark_read(&app, &mallory, &id).await;

    // Assert
    assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
    let unread = list(&app, &alice, "?unread=true").await;
    assert!(find(&unread, &title).is_some(), "still unread: {unread}");
    assert_quiet(&mut alices, "the owner").await;
}

#[tokio::test]
async fn marking_a_malformed_or_unknown_id_read_is_404() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.user().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    for id in ["not-a-uuid", "123", unknown.as_str()] {
        // Act
        let res = mark_read(&app, &alice, id).await;

        // Assert
        assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn notifications_page_with_limit_and_next_cursor() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    for name in ["a", "b", "c"] {
        notify(&app, &admin, &alice, name).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let all = titles(&list(&app, &alice, "").await);

    // Act
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_owned();
    let mut pages = 0;
    loop {
        let page = list(&app, &alice, &query).await;
        pages += 1;
        let items = titles(&page);
        assert!(items.len() <= 1, "limit is respected: {page}");
        paged.extend(items);
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("?limit=1&cursor={cursor}"),
            None => {
                assert!(page.get("nextCursor").is_some_and(Value::is_null));
                break;
            }
        }
        assert!(pages <= 4, "paging ends");
    }

    // Assert
    assert_eq!(all.len(), 3);
    assert_eq!(paged, all, "the pages give the list, in order, once each");
    assert_eq!(pages, 3, "no empty page after the last one");
}

#[tokio::test]
async fn next_cursor_is_null_on_the_page_holding_the_last_notification() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    notify(&app, &admin, &alice, "only").await;

    // Act
    let page = list(&app, &alice, "?limit=1").await;

    // Assert
    assert_eq!(titles(&page).len(), 1);
    assert!(page["nextCursor"].is_null(), "the last page: {page}");
}

#[tokio::test]
async fn a_bad_limit_cursor_or_unread_is_400() {
    // Arrange
    let app = spawn_app().await;
    let alice = app.user().await;

    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=-1",
        "?limit=abc",
        "?limit=1.5",
        "?cursor=garbage",
        "?unread=maybe",
    ] {
        // Act
        let res = app
            .get(&format!("/api/notifications{query}"), &alice.token)
            .await;

        // Assert
        assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn the_list_carries_the_event_cursor_to_resume_from_without_gap_or_duplicate() {
    // Arrange: state that is already listed, then load it.
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    app.earning(&alice, &platform, 100.0).await;
    broadcast(&app, &admin, "already listed").await;
    let res = app.get("/api/notifications", &alice.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cursor = res
        .headers()
        .get("EarnTrack-Event-Cursor")
        .expect("the EarnTrack-Event-Cursor header")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!cursor.is_empty());
    let later = notify(&app, &admin, &alice, "after loading").await;
    let later_broadcast = broadcast(&app, &admin, "broadcast after loading").await;

    // Act
    let mut stream = app
        .stream(&alice.token, &format!("?lastEventId={cursor}"))
        .await;

    // Assert: only what came after the load, then nothing.
    stream.expect("connected").await;
    assert_eq!(next_notification(&mut stream).await["title"], later);
    assert_eq!(
        next_notification(&mut stream).await["title"],
        later_broadcast
    );
    assert_quiet(&mut stream, "a resumed stream").await;
}

// --- broadcasts -------------------------------------------------------------

async fn broadcast(app: &TestApp, admin: &User, title: &str) -> String {
    let title = format!("{title} {}", uuid::Uuid::new_v4().simple());
    let res = send(
        app,
        admin,
        json!({"broadcast": true, "type": "info", "title": title, "message": "to everyone"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    title
}

#[tokio::test]
async fn a_broadcast_notification_reaches_every_connected_user_exactly_once() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;

    // Act
    let title = broadcast(&app, &admin, "maintenance").await;

    // Assert
    for (stream, who) in [(&mut alices, "alice"), (&mut bobs, "bob")] {
        let n = next_notification(stream).await;
        assert_eq!(n["title"], title, "{who}");
        assert_eq!(n["type"], "info");
        assert_eq!(n["message"], "to everyone");
        assert_quiet(stream, who).await;
    }
}

#[tokio::test]
async fn a_broadcast_notification_appears_in_every_users_list() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);

    // Act
    let title = broadcast(&app, &admin, "news").await;

    // Assert
    for user in [&alice, &bob] {
        let page = list(&app, user, "?unread=true").await;
        let n = find(&page, &title).unwrap_or_else(|| panic!("listed: {page}"));
        assert_eq!(n["message"], "to everyone");
    }
}

#[tokio::test]
async fn each_user_has_their_own_read_state_of_a_broadcast() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let title = broadcast(&app, &admin, "news").await;
    let id = id_of(&app, &alice, &title).await;
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;

    // Act
    let res = mark_read(&app, &alice, &id).await;

    // Assert
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        alices.expect("notification:read").await.1,
        json!({ "id": id })
    );
    let alices = list(&app, &alice, "?unread=true").await;
    assert!(find(&alices, &title).is_none(), "read for alice: {alices}");
    let bobs_list = list(&app, &bob, "?unread=true").await;
    assert!(
        find(&bobs_list, &title).is_some(),
        "unread for bob: {bobs_list}"
    );
    assert_quiet(&mut bobs, "bob (alice's read state is hers)").await;
}

/// Rows in every table of the app's database (either backend).
async fn rows_in_all_tables(app: &TestApp) -> i64 {
    let pool = &app.state.db.read;
    let list_tables = match app.state.db.backend {
        earntrack::db::Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        earntrack::db::Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = 'public'"
        }
    };
    let tables: Vec<String> = sqlx::query_scalar(list_tables)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut total = 0;
    for table in tables {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT CAST(COUNT(*) AS BIGINT) FROM \"{table}\""))
                .fetch_one(pool)
                .await
                .unwrap();
        total += n;
    }
    total
}

#[tokio::test]
async fn a_broadcast_does_not_write_one_row_per_user() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(app.user().await);
    }
    let before = rows_in_all_tables(&app).await;

    // Act
    let title = broadcast(&app, &admin, "cheap").await;

    // Assert
    let written = rows_in_all_tables(&app).await - before;
    assert!(
        written < users.len() as i64,
        "{written} rows for {} users",
        users.len()
    );
    let last = users.last().unwrap();
    assert!(find(&list(&app, last, "").await, &title).is_some());
}

#[tokio::test]
async fn a_user_offline_during_a_broadcast_gets_it_on_resume() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (stream, last_id) = app.stream_connected(&alice).await;
    drop(stream);

    // Act
    let title = broadcast(&app, &admin, "while you were away").await;
    let mut resumed = app.resume(&alice.token, &last_id).await;

    // Assert
    resumed.expect("connected").await;
    let n = next_notification(&mut resumed).await;
    assert_eq!(n["title"], title);
    assert_quiet(&mut resumed, "a resumed stream").await;
}

// --- targeted notifications and validation --------------------------------

#[tokio::test]
async fn a_targeted_notification_reaches_only_the_named_users() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let (alice, bob) = (app.user().await, app.user().await);
    let (mut alices, _) = app.stream_connected(&alice).await;
    let (mut bobs, _) = app.stream_connected(&bob).await;

    // Act
    let title = notify(&app, &admin, &alice, "just for alice").await;

    // Assert
    assert_eq!(next_notification(&mut alices).await["title"], title);
    assert_quiet(&mut alices, "alice").await;
    assert_quiet(&mut bobs, "bob").await;
    assert!(find(&list(&app, &alice, "").await, &title).is_some());
    assert!(find(&list(&app, &bob, "").await, &title).is_none());
}

#[tokio::test]
async fn the_notification_event_has_the_contract_fields_and_matches_the_list() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    // Act
    let title = notify(&app, &admin, &alice, "shape").await;

    // Assert
    let n = next_notification(&mut stream).await;
    let mut keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = NOTIFICATION_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{n}");
    let listed = list(&app, &alice, "").await;
    let stored = find(&listed, &title).expect("listed");
    for field in NOTIFICATION_FIELDS {
        assert_eq!(n[field], stored[field], "{field} of event and list agree");
    }
}

#[tokio::test]
async fn every_notification_type_is_accepted() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    for kind in ["success", "error", "info", "warning"] {
        // Act
        let res = send(
            &app,
            &admin,
            json!({"userIds": [alice.id], "type": kind, "title": kind, "message": "m"}),
        )
        .await;

        // Assert
        assert_eq!(res.status(), StatusCode::ACCEPTED, "type {kind}");
        let n = next_notification(&mut stream).await;
        assert_eq!(n["type"], kind);
        assert_eq!(n["title"], kind);
    }
}

#[tokio::test]
async fn an_unknown_type_is_422_naming_the_type_field() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;

    // Act
    let res = send(
        &app,
        &admin,
        json!({"userIds": [alice.id], "type": "bogus", "title": "t", "message": "m"}),
    )
    .await;

    // Assert
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["type"].is_string(), "{body}");
    assert!(list(&app, &alice, "").await["items"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn missing_fields_are_422_listing_every_bad_field() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;

    // Act
    let missing_title = send(
        &app,
        &admin,
        json!({"userIds": [alice.id], "type": "info", "message": "m"}),
    )
    .await;
    let empty = send(&app, &admin, json!({})).await;

    // Assert
    let body = assert_api_error(
        missing_title,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let fields = body["error"]["fields"].as_object().expect("fields");
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        vec!["title"],
        "only the bad field: {body}"
    );
    let body = assert_api_error(empty, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    for field in ["type", "title", "message", "userIds"] {
        assert!(
            body["error"]["fields"][field].is_string(),
            "fields.{field} listed at once: {body}"
        );
    }
}

#[tokio::test]
async fn duration_dismissible_and_data_are_carried_to_the_event() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;

    // Act
    let res = send(
        &app,
        &admin,
        json!({
            "userIds": [alice.id], "type": "warning", "title": "Sticky", "message": "m",
            "duration": 12000, "dismissible": false, "data": {"link": "/earnings", "n": 3}
        }),
    )
    .await;

    // Assert
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let n = next_notification(&mut stream).await;
    assert_eq!(n["duration"], 12000);
    assert_eq!(n["dismissible"], false);
    assert_eq!(n["data"], json!({"link": "/earnings", "n": 3}));
    let stored = list(&app, &alice, "").await["items"][0].clone();
    assert_eq!(stored["duration"], 12000);
    assert_eq!(stored["dismissible"], false);
}

#[tokio::test]
async fn an_unknown_user_id_is_422_and_nobody_is_notified() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;
    let alice = app.user().await;
    let (mut stream, _) = app.stream_connected(&alice).await;
    let nobody = uuid::Uuid::new_v4().to_string();

    // Act
    let res = send(
        &app,
        &admin,
        json!({"userIds": [alice.id, nobody], "type": "info", "title": "t", "message": "m"}),
    )
    .await;

    // Assert
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["error"]["fields"]["userIds"].is_string(), "{body}");
    assert_quiet(&mut stream, "alice (no partial write)").await;
    assert!(list(&app, &alice, "").await["items"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn neither_user_ids_nor_broadcast_is_422() {
    // Arrange
    let app = spawn_app().await;
    let admin = app.admin().await;

    for recipients in [
        json!({}),
        json!({"broadcast": false}),
        json!({"userIds": []}),
    ] {
        let mut body = json!({"type": "info", "title": "t", "message": "m"});
        body.as_object_mut()
            .unwrap()
            .extend(recipients.as_object().unwrap().clone());

        // Act
        let res = send(&app, &admin, body.clone()).await;

        // Assert
        let err =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(
            err["error"]["fields"]
                .as_object()
                .is_some_and(|f| !f.is_empty()),
            "{body} -> {err}"
        );
    }
}
