//! Expenses and invoices: the same contract as earnings (shapes, events and
//! their notifications, validation, ownership, paging, the event cursor,
//! idempotency, topics and resume), plus the invoice status machine and
//! the overdue sweep.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_api_error, spawn_app, spawn_app_with, TestApp, User};
use crate::kit::sse::{Next, Sse};

const CURSOR_HEADER: &str = "EarnTrack-Event-Cursor";

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

fn expense_body(date: &str, amount: f64, category: &str) -> Value {
    json!({"date": date, "amount": amount, "category": category})
}

fn invoice_body(number: &str, due: &str) -> Value {
    json!({"number": number, "client": "Acme", "issueDate": "2024-01-01", "dueDate": due, "amount": 1200})
}

async fn create(app: &TestApp, user: &User, kind: &str, body: Value) -> Value {
    let res = app.post(&format!("/api/{kind}"), &user.token, body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "POST /api/{kind}");
    res.json().await.unwrap()
}

async fn patch(
    app: &TestApp,
    user: &User,
    kind: &str,
    record: &Value,
    body: Value,
) -> reqwest::Response {
    let path = format!("/api/{kind}/{}", record["id"].as_str().unwrap());
    app.patch(&path, &user.token, body).await
}

async fn connected(app: &TestApp, user: &User, query: &str) -> Sse {
    let mut stream = app.stream(&user.token, query).await;
    assert_eq!(stream.status, StatusCode::OK);
    stream.expect("connected").await;
    stream
}

/// Create, patch and delete one record of `kind`, asserting each change's
/// event and the notification after it, as earnings publish them.
async fn assert_changes_publish(
    kind: &str,
    body: Value,
    change: Value,
    titles: [&str; 3],
    created_message: &str,
) {
    let app = spawn_app().await;
    let alice = app.user().await;
    let mut stream = connected(&app, &alice, "").await;

    let record = create(&app, &alice, kind, body).await;
    let (_, data) = stream.expect(&format!("{kind}:new")).await;
    assert_eq!(data, record, "{kind}:new carries the REST body");
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["type"], "success");
    assert_eq!(note["title"], titles[0]);
    assert_eq!(note["message"], created_message);

    let res = patch(&app, &alice, kind, &record, change.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    let (_, data) = stream.expect(&format!("{kind}:updated")).await;
    assert_eq!(keys(&data), ["changes", "id", "updatedAt", "userId"]);
    assert_eq!(data["id"], record["id"]);
    assert_eq!(data["userId"], alice.id.as_str());
    assert_eq!(data["updatedAt"], updated["updatedAt"]);
    assert_eq!(data["changes"], change, "only what changed");
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["title"], titles[1]);

    // The same patch again changes nothing and publishes nothing.
    let res = patch(&app, &alice, kind, &record, change).await;
    assert_eq!(res.status(), StatusCode::OK);

    let path = format!("/api/{kind}/{}", record["id"].as_str().unwrap());
    assert_eq!(
        app.delete(&path, &alice.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let (_, data) = stream.expect(&format!("{kind}:deleted")).await;
    assert_eq!(data, json!({"id": record["id"]}));
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["title"], titles[2]);
    assert_eq!(
        app.get(&path, &alice.token).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(stream.quiet_for(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn expense_changes_publish_their_events_then_notifications() {
    assert_changes_publish(
        "expenses",
        json!({"date": "2024-03-01", "amount": 45.5, "category": "software", "notes": "IDE"}),
        json!({"amount": 50, "notes": null}),
        ["Expense Added", "Expense Updated", "Expense Deleted"],
        "New expense of $45.50 (software) added",
    )
    .await;
}

#[tokio::test]
async fn invoice_changes_publish_their_events_then_notifications() {
    assert_changes_publish(
        "invoices",
        invoice_body("INV-0007", "2099-01-31"),
        json!({"client": "Globex"}),
        ["Invoice Created", "Invoice Updated", "Invoice Deleted"],
        "Invoice INV-0007 for Acme created: $1,200.00",
    )
    .await;
}

#[tokio::test]
async fn the_wire_shapes_are_the_contracts() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let mut body = expense_body("2024-03-01", 12.34, " fees ");
    body["platformId"] = platform["id"].clone();
    let expense = create(&app, &alice, "expenses", body).await;
    assert_eq!(
        keys(&expense),
        [
            "amount",
            "category",
            "createdAt",
            "date",
            "id",
            "notes",
            "platformId",
            "updatedAt",
            "userId"
        ]
    );
    assert_eq!(expense["category"], "fees", "text is trimmed");
    assert_eq!(expense["amount"].as_f64(), Some(12.34));
    assert_eq!(expense["platformId"], platform["id"]);
    assert_eq!(expense["notes"], Value::Null);

    let invoice = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-1", "2099-01-01"),
    )
    .await;
    assert_eq!(
        keys(&invoice),
        [
            "amount",
            "client",
            "createdAt",
            "dueDate",
            "id",
            "issueDate",
            "notes",
            "number",
            "paidAt",
            "platformId",
            "status",
            "updatedAt",
            "userId"
        ]
    );
    assert_eq!(
        invoice["status"], "draft",
        "a new invoice is a draft by default"
    );
    assert_eq!(invoice["paidAt"], Value::Null);
    let res = app
        .get(
            &format!("/api/invoices/{}", invoice["id"].as_str().unwrap()),
            &alice.token,
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap(), invoice);
}

#[tokio::test]
async fn an_invoice_moves_draft_sent_paid_and_nothing_else() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let invoice = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-0007", "2099-01-31"),
    )
    .await;
    let mut stream = connected(&app, &alice, "").await;

    let res = patch(
        &app,
        &alice,
        "invoices",
        &invoice,
        json!({"status": "paid"}),
    )
    .await;
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        body["error"]["fields"]["status"],
        "cannot change from draft to paid"
    );

    let res = patch(
        &app,
        &alice,
        "invoices",
        &invoice,
        json!({"status": "sent"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    stream.expect("invoices:updated").await;
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["title"], "Invoice Sent");

    let res = patch(
        &app,
        &alice,
        "invoices",
        &invoice,
        json!({"status": "paid"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let paid: Value = res.json().await.unwrap();
    assert_eq!(paid["status"], "paid");
    assert!(paid["paidAt"].is_string());
    let (_, data) = stream.expect("invoices:updated").await;
    assert_eq!(
        data["changes"],
        json!({"status": "paid", "paidAt": paid["paidAt"]})
    );
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["type"], "success");
    assert_eq!(note["title"], "Invoice Paid");
    assert_eq!(note["message"], "Invoice INV-0007 paid: $1,200.00");
    assert_eq!(note["data"]["invoiceId"], invoice["id"]);

    // Settled: back to draft or to void is refused, and so is any change
    // but the notes.
    for (body, field) in [
        (json!({"status": "draft"}), "status"),
        (json!({"status": "void"}), "status"),
        (json!({"amount": 1}), "amount"),
    ] {
        let res = patch(&app, &alice, "invoices", &invoice, body).await;
        let err =
            assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(err["error"]["fields"][field].is_string(), "{err}");
    }
    let res = patch(
        &app,
        &alice,
        "invoices",
        &invoice,
        json!({"notes": "thanks!"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    // A draft may be voided.
    let other = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-0008", "2099-01-31"),
    )
    .await;
    let res = patch(&app, &alice, "invoices", &other, json!({"status": "void"})).await;
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "void");
}

#[tokio::test]
async fn bad_bodies_get_every_bad_field_and_write_nothing() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let bob = app.user().await;
    let bobs_platform = app.platform(&bob, "Fiverr").await;
    let mut stream = connected(&app, &alice, "").await;

    let res = app
        .post(
            "/api/expenses",
            &alice.token,
            json!({"date": "2024-02-30", "amount": 1.005, "category": "", "platformId": "nope"}),
        )
        .await;
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        keys(&body["error"]["fields"]),
        ["amount", "category", "date", "platformId"]
    );

    // Another user's platform is no platform of mine.
    let mut expense = expense_body("2024-03-01", 5.0, "fees");
    expense["platformId"] = bobs_platform["id"].clone();
    let res = app.post("/api/expenses", &alice.token, expense).await;
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["error"]["fields"]["platformId"], "no such platform");

    let res = app
        .post(
            "/api/invoices",
            &alice.token,
            json!({"number": "X", "client": "A", "issueDate": "2024-02-01", "dueDate": "2024-01-01",
                   "amount": -5, "status": "paid"}),
        )
        .await;
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        keys(&body["error"]["fields"]),
        ["amount", "dueDate", "status"]
    );

    // A required field cannot be cleared.
    let invoice = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-1", "2099-01-01"),
    )
    .await;
    stream.expect("invoices:new").await;
    stream.expect("notification").await;
    let res = patch(
        &app,
        &alice,
        "invoices",
        &invoice,
        json!({"client": null, "number": 7}),
    )
    .await;
    let body = assert_api_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(keys(&body["error"]["fields"]), ["client", "number"]);

    // Not JSON, not an object.
    let res = app.post("/api/expenses", &alice.token, json!([1])).await;
    assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;

    // The same number twice is a conflict, and the refused write publishes
    // nothing (the change, its event and its notification are one
    // transaction).
    let res = app
        .post(
            "/api/invoices",
            &alice.token,
            invoice_body("INV-1", "2099-01-01"),
        )
        .await;
    assert_api_error(res, StatusCode::CONFLICT, "conflict").await;
    assert!(
        stream.quiet_for(Duration::from_millis(400)).await.is_none(),
        "nothing published"
    );
    // Numbers are per user.
    create(&app, &bob, "invoices", invoice_body("INV-1", "2099-01-01")).await;
    let res = app.get("/api/expenses", &alice.token).await;
    assert_eq!(res.json::<Value>().await.unwrap()["items"], json!([]));
}

#[tokio::test]
async fn another_users_records_are_404() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let mallory = app.user().await;
    for (kind, body) in [
        ("expenses", expense_body("2024-03-01", 5.0, "fees")),
        ("invoices", invoice_body("INV-1", "2099-01-01")),
    ] {
        let record = create(&app, &alice, kind, body).await;
        let path = format!("/api/{kind}/{}", record["id"].as_str().unwrap());
        let res = app.get(&path, &mallory.token).await;
        assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
        let res = app
            .patch(&path, &mallory.token, json!({"notes": "mine"}))
            .await;
        assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
        let res = app.delete(&path, &mallory.token).await;
        assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
        let res = app
            .get(&format!("/api/{kind}/not-a-uuid"), &alice.token)
            .await;
        assert_api_error(res, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(
            app.get(&path, &alice.token).await.status(),
            StatusCode::OK,
            "untouched"
        );
        let list: Value = app
            .get(&format!("/api/{kind}"), &mallory.token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["items"], json!([]));
    }
}

#[tokio::test]
async fn lists_filter_page_and_carry_the_event_cursor() {
    let app = spawn_app().await;
    let alice = app.user().await;
    for (day, category) in [
        (1, "fees"),
        (2, "software"),
        (3, "fees"),
        (4, "fees"),
        (5, "travel"),
    ] {
        create(
            &app,
            &alice,
            "expenses",
            expense_body(&format!("2024-03-0{day}"), 10.0, category),
        )
        .await;
    }
    let res = app
        .get("/api/expenses?category=fees&limit=2", &alice.token)
        .await;
    assert!(res.headers().contains_key(CURSOR_HEADER));
    let page: Value = res.json().await.unwrap();
    let dates: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["date"].clone())
        .collect();
    assert_eq!(dates, ["2024-03-04", "2024-03-03"], "newest first");
    let next = page["nextCursor"].as_str().unwrap();
    let page: Value = app
        .get(
            &format!("/api/expenses?category=fees&limit=2&cursor={next}"),
            &alice.token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["date"], "2024-03-01");
    assert_eq!(page["nextCursor"], Value::Null);

    let page: Value = app
        .get("/api/expenses?from=2024-03-02&to=2024-03-04", &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);

    let sent = create(&app, &alice, "invoices", invoice_body("A", "2099-01-01")).await;
    patch(&app, &alice, "invoices", &sent, json!({"status": "sent"})).await;
    create(&app, &alice, "invoices", invoice_body("B", "2099-01-01")).await;
    let page: Value = app
        .get("/api/invoices?status=sent", &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["number"], "A");

    for query in [
        "/api/expenses?from=2024-13-01",
        "/api/expenses?limit=0",
        "/api/expenses?cursor=garbage",
        "/api/invoices?status=lost",
        "/api/expenses?category=%00",
    ] {
        let res = app.get(query, &alice.token).await;
        assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
    }
}

#[tokio::test]
async fn a_list_then_a_resume_from_its_cursor_misses_nothing() {
    let app = spawn_app().await;
    let alice = app.user().await;
    create(
        &app,
        &alice,
        "expenses",
        expense_body("2024-03-01", 1.0, "a"),
    )
    .await;
    let res = app.get("/api/expenses", &alice.token).await;
    let cursor = res.headers()[CURSOR_HEADER].to_str().unwrap().to_owned();
    assert_eq!(
        res.json::<Value>().await.unwrap()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let invoice = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-9", "2099-01-01"),
    )
    .await;
    let mut stream = app.resume(&alice.token, &cursor).await;
    stream.expect("connected").await;
    let (_, data) = stream.expect("invoices:new").await;
    assert_eq!(data, invoice);
    stream.expect("notification").await;
    assert!(
        stream.quiet_for(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
}

#[tokio::test]
async fn an_idempotent_retry_creates_one_record_and_keys_are_per_resource() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let send = |path: &'static str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(&alice.token)
            .header("Idempotency-Key", "retry-1")
            .json(&body)
            .send()
    };
    let first = send("/api/expenses", expense_body("2024-03-01", 9.0, "fees"))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = send("/api/expenses", expense_body("2024-03-01", 9.0, "fees"))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    // The same key on invoices is another request.
    let invoice = send("/api/invoices", invoice_body("INV-1", "2099-01-01"))
        .await
        .unwrap();
    assert_eq!(invoice.status(), StatusCode::CREATED);
    assert!(!invoice.headers().contains_key("idempotent-replayed"));
    let list: Value = app
        .get("/api/expenses", &alice.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn topics_select_expenses_and_invoices_like_earnings() {
    let app = spawn_app().await;
    let alice = app.user().await;
    let platform = app.platform(&alice, "Upwork").await;
    let mut expenses_only = connected(&app, &alice, "?topics=expenses").await;
    let mut invoices_and_notes = connected(&app, &alice, "?topics=invoices,notifications").await;

    app.earning(&alice, &platform, 10.0).await;
    create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-1", "2099-01-01"),
    )
    .await;
    create(
        &app,
        &alice,
        "expenses",
        expense_body("2024-03-01", 1.0, "fees"),
    )
    .await;

    let (_, data) = expenses_only.expect("expenses:new").await;
    assert_eq!(data["category"], "fees");
    assert!(expenses_only
        .quiet_for(Duration::from_millis(300))
        .await
        .is_none());

    let mut names = vec![];
    while let Some(Next::Event(e)) = invoices_and_notes
        .quiet_for(Duration::from_millis(500))
        .await
    {
        names.push(e.event);
    }
    // earnings:new and expenses:new are filtered out, every notification passes.
    assert_eq!(
        names,
        [
            "notification",
            "invoices:new",
            "notification",
            "notification"
        ]
    );

    let res = app
        .streams
        .get(app.url("/events?topics=expenses,bills"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_api_error(res, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn an_overdue_invoice_warns_its_owner_once() {
    let app = spawn_app_with(|c| c.overdue_sweep_secs = 1).await;
    let alice = app.user().await;
    let mut stream = connected(&app, &alice, "?topics=notifications").await;
    let overdue = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-0003", "2024-01-31"),
    )
    .await;
    let paid = create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-0004", "2024-01-31"),
    )
    .await;
    patch(&app, &alice, "invoices", &paid, json!({"status": "sent"})).await;
    patch(&app, &alice, "invoices", &paid, json!({"status": "paid"})).await;
    create(
        &app,
        &alice,
        "invoices",
        invoice_body("INV-0005", "2099-01-31"),
    )
    .await;

    let mut warnings = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(Next::Event(e)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let note = crate::kit::sse::data(&e);
        if note["type"] == "warning" {
            warnings.push(note);
        }
    }
    assert_eq!(
        warnings.len(),
        1,
        "one warning in four sweeps: {warnings:?}"
    );
    assert_eq!(warnings[0]["title"], "Invoice Overdue");
    assert_eq!(
        warnings[0]["message"],
        "Invoice INV-0003 (Acme) is overdue: $1,200.00 was due 2024-01-31"
    );
    assert_eq!(warnings[0]["data"]["invoiceId"], overdue["id"]);
    let list: Value = app
        .get("/api/notifications", &alice.token)
        .await
        .json()
        .await
        .unwrap();
    let stored = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] == "warning")
        .count();
    assert_eq!(stored, 1, "the warning is kept in the list too");

    // A new due date that is past again earns a new warning.
    patch(
        &app,
        &alice,
        "invoices",
        &overdue,
        json!({"dueDate": "2024-02-15"}),
    )
    .await;
    let again = loop {
        let (_, note) = stream.expect("notification").await;
        if note["type"] == "warning" {
            break note;
        }
    };
    assert!(again["message"]
        .as_str()
        .unwrap()
        .ends_with("was due 2024-02-15"));
}
