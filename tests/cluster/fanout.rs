//! An event published on any server reaches the matching streams on every
//! one, as the same frame, typically within 100 ms, whatever its size.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::kit::sse::data;
use crate::server::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earning_created_on_one_server_reaches_streams_on_every_server_as_the_same_frame() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let [a, b, c] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let platform = a.platform(&user).await;
    let mut streams = [
        a.stream(&user).await.0,
        b.stream(&user).await.0,
        c.stream(&user).await.0,
    ];

    // Latency of `earnings:new` on B and C, from the moment the POST to A
    // is sent: the streams are read while the request runs.
    let mut remote = Vec::new();
    for i in 0..10 {
        let notes = format!("fan-out {i}");
        let sent = Instant::now();
        let (earning, arrivals) = tokio::join!(
            a.earning(&user, &platform, &notes),
            join_all(streams.iter_mut().map(|s| async move {
                let new = s.event_within(Duration::from_secs(2)).await;
                let at = sent.elapsed();
                let notification = s.event_within(Duration::from_secs(2)).await;
                (new, notification, at)
            }))
        );

        let (new_on_a, notification_on_a, _) = &arrivals[0];
        assert_eq!(new_on_a.event, "earnings:new");
        assert_eq!(data(new_on_a)["id"], earning.as_str());
        assert_eq!(notification_on_a.event, "notification");
        assert!(!new_on_a.id.is_empty(), "a logged event has an id");
        for (server, (new, notification, at)) in ["B", "C"].iter().zip(&arrivals[1..]) {
            assert_eq!(new, new_on_a, "earnings:new on {server} is A's frame");
            assert_eq!(
                notification, notification_on_a,
                "notification on {server} is A's frame"
            );
            assert!(*at < Duration::from_secs(2), "{server} got it after {at:?}");
            remote.push(*at);
        }
    }

    remote.sort();
    crate::kit::report(&format!(
        "cross-server latency (POST to A sent -> earnings:new on B/C), {} samples: \
         min {:?}, median {:?}, max {:?}",
        remote.len(),
        remote[0],
        remote[remote.len() / 2],
        remote[remote.len() - 1]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_notifys_8000_byte_limit_reach_other_servers_in_full() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let [a, b, c] = &cluster.servers[..] else {
        unreachable!()
    };
    let admin = a.admin().await;
    let user = a.user().await;
    let (mut on_b, _) = b.stream(&user).await;
    let (mut on_c, _) = c.stream(&user).await;
    let big = json!({
        "text": "earnings €, ünïcode and \"quotes\" \\ ".repeat(500),
        "rows": (0..1500).map(|i| json!({"n": i})).collect::<Vec<_>>(),
    });
    assert!(big.to_string().len() > 20_000);

    a.call(
        Method::POST,
        "/api/admin/events",
        &admin.token,
        Some(json!({"target": {"user": user.id}, "event": "report:ready", "data": big})),
        StatusCode::ACCEPTED,
    )
    .await;

    let (event, delivered) = on_b.expect("report:ready").await;
    assert_eq!(delivered, big, "the data arrived on B intact");
    assert!(event.data.len() > 8000, "the frame is over NOTIFY's limit");
    let on_c = on_c.event().await;
    assert_eq!(on_c, event, "C got the same frame as B");
}
