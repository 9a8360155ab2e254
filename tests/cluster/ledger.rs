//! Expenses and invoices in a cluster: their events cross servers like
//! earnings', and the overdue sweep, which runs on every server, warns
//! about each overdue invoice exactly once.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::sse::{data, Next};
use crate::server::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_expenses_and_invoices_cross_servers() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let (mut stream, _) = b.stream(&user).await;
    let body = json!({"date": "2024-03-01", "amount": 12.5, "category": "fees"});
    let expense = a
        .call(
            Method::POST,
            "/api/expenses",
            &user.token,
            Some(body),
            StatusCode::CREATED,
        )
        .await;
    let (_, data) = stream.expect("expenses:new").await;
    assert_eq!(data, expense);
    let (_, note) = stream.expect("notification").await;
    assert_eq!(note["title"], "Expense Added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sweeping_servers_warn_about_each_overdue_invoice_once() {
    // A live channel of two slots: the hundreds of warnings overflow it
    // again and again, and the stream, which reads all the while, must
    // catch up from the log each time, never be ended as too slow (it was,
    // four times a run, before lags counted only while behind the log).
    let settings = [
        ("EARNTRACK_OVERDUE_SWEEP_SECS", "1"),
        ("EARNTRACK_CHANNEL_CAPACITY", "2"),
    ];
    let Some(cluster) = Cluster::start(3, &settings).await else {
        return;
    };
    let user = cluster.servers[0].user().await;
    let (mut stream, _) = cluster.servers[2].stream(&user).await;

    // Enough at once that every server's pass finds the same invoices and
    // the three race for each warning.
    let invoices: HashSet<String> = cluster
        .db
        .overdue_invoices(&user.id, 400)
        .await
        .into_iter()
        .collect();

    let mut warned = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Past the last warning, wait out more passes of every server.
        let wait = if warned.len() >= invoices.len() {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(20)
        };
        let next = tokio::time::timeout(wait, stream.next());
        match tokio::time::timeout_at(deadline, next).await {
            Ok(Ok(Next::Event(e))) => {
                let d = data(&e);
                if e.event == "notification" && d["type"] == "warning" {
                    warned.push(d["data"]["invoiceId"].as_str().unwrap().to_owned());
                }
            }
            Ok(Ok(other)) => panic!("the stream gave {other:?}"),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let distinct: HashSet<_> = warned.iter().cloned().collect();
    assert_eq!(distinct, invoices, "every overdue invoice was warned about");
    assert_eq!(warned.len(), invoices.len(), "and only once, by one server");

    let mut stored = 0;
    let mut cursor = String::new();
    loop {
        let page = cluster.servers[1]
            .get(
                &format!("/api/notifications?limit=100{cursor}"),
                &user.token,
            )
            .await;
        stored += page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "warning")
            .count();
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(stored, invoices.len(), "one stored warning each");
}
