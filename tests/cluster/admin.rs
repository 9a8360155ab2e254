//! The admin views, force-disconnect and the per-user stream limit cover
//! every server: a stream opened anywhere counts within 2 s, a dead
//! server's streams drop out within 30 s.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};

use crate::kit::sse::Next;
use crate::server::{Api, Cluster, User};
use crate::traffic::eventually;

/// `user`'s streams as `api` counts them in `GET /api/admin/connections`
/// (0 when absent), and that view's total.
async fn counted(api: &Api, admin: &User, user: &User) -> (u64, u64) {
    let (total, users) = api.connections(admin).await;
    let mine = users
        .iter()
        .find(|(id, _)| *id == user.id)
        .map_or(0, |u| u.1);
    (mine, total)
}

/// Wait until `api` counts `streams` of `user` and `streams` in all.
async fn wait_counted(
    api: &Api,
    admin: &User,
    user: &User,
    streams: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    let what = format!("server {} counts {streams} streams", api.name);
    eventually(within, &what, || async {
        (counted(api, admin, user).await == (streams, streams)).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_servers_admin_views_count_streams_opened_on_any_server_within_two_seconds() {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let [a, b, c] = &cluster.servers[..] else {
        unreachable!()
    };
    let admin = c.admin().await;
    let user = a.user().await;

    let _streams = [
        a.stream(&user).await,
        b.stream(&user).await,
        b.stream(&user).await,
    ];

    for server in [c, a, b] {
        wait_counted(server, &admin, &user, 3, Duration::from_secs(2)).await;
        let one = server
            .get(
                &format!("/api/admin/users/{}/connections", user.id),
                &admin.token,
            )
            .await;
        assert_eq!(one["userId"], user.id.as_str());
        assert_eq!(one["connections"], 3, "on {}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_disconnect_through_any_server_ends_the_users_streams_on_every_server_within_a_second(
) {
    let Some(cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let [a, b, c] = &cluster.servers[..] else {
        unreachable!()
    };
    let admin = c.admin().await;
    let user = a.user().await;
    let mut streams = [
        a.stream(&user).await.0,
        b.stream(&user).await.0,
        b.stream(&user).await.0,
    ];
    wait_counted(c, &admin, &user, 3, Duration::from_secs(2)).await;

    let path = format!("/api/admin/users/{}/connections", user.id);
    let closed = c
        .call(Method::DELETE, &path, &admin.token, None, StatusCode::OK)
        .await;
    let answered = Instant::now();

    assert_eq!(closed["closed"], 3);
    let ends = join_all(streams.iter_mut().map(|s| async move {
        let end = s.quiet_for(Duration::from_secs(2)).await;
        (end, answered.elapsed())
    }))
    .await;
    let slowest = ends.iter().map(|(_, after)| *after).max();
    crate::kit::report(&format!(
        "force-disconnect: the last stream ended {slowest:?} after the answer"
    ));
    for ((end, after), on) in ends.into_iter().zip(["A", "B", "B"]) {
        assert!(
            matches!(end, Some(Next::Ended)),
            "the stream on {on} ended cleanly: {end:?}"
        );
        assert!(
            after <= Duration::from_secs(1),
            "the stream on {on} ended after {after:?}"
        );
    }
    wait_counted(c, &admin, &user, 0, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_streams_drop_out_of_the_counts_within_30_seconds() {
    let Some(mut cluster) = Cluster::start(3, &[]).await else {
        return;
    };
    let admin = cluster.servers[2].admin().await;
    let user = cluster.servers[0].user().await;
    let _on_a = cluster.servers[0].stream(&user).await;
    let _on_b = [
        cluster.servers[1].stream(&user).await,
        cluster.servers[1].stream(&user).await,
    ];
    let c = cluster.servers[2].api();
    wait_counted(&c, &admin, &user, 3, Duration::from_secs(2)).await;

    cluster.servers[1].kill();

    // Polled for 35 s so that a late drop-out shows how late it was.
    let after = wait_counted(&c, &admin, &user, 1, Duration::from_secs(35)).await;
    crate::kit::report(&format!(
        "the killed server's streams dropped out after {after:?}"
    ));
    assert!(
        after <= Duration::from_secs(30),
        "dropped out after {after:?}"
    );
    let path = format!("/api/admin/users/{}/connections", user.id);
    assert_eq!(c.get(&path, &admin.token).await["connections"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_stream_limit_counts_streams_on_every_server() {
    let Some(cluster) = Cluster::start(3, &[("EARNTRACK_MAX_STREAMS_PER_USER", "2")]).await else {
        return;
    };
    let [a, b, c] = &cluster.servers[..] else {
        unreachable!()
    };
    let admin = c.admin().await;
    let user = a.user().await;
    let on_a = a.stream(&user).await;
    let _on_b = b.stream(&user).await;
    // The limit sees other servers' streams as presence does (≤ 500 ms late).
    wait_counted(c, &admin, &user, 2, Duration::from_secs(2)).await;

    let third = c.open(&user.token, None).await;

    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        third.headers().contains_key("retry-after"),
        "429 carries Retry-After"
    );
    let body: serde_json::Value = third.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    // Below the limit again once A's stream goes.
    drop(on_a);
    wait_counted(c, &admin, &user, 1, Duration::from_secs(2)).await;
    let (_on_c, _) = c.stream(&user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_granted_on_the_database_applies_on_every_server_within_a_second() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    // Known to both servers as a plain user, with a stream on each.
    for server in [a, b] {
        assert_eq!(
            status(server, Method::GET, "/api/admin/connections", &user).await,
            StatusCode::FORBIDDEN
        );
    }
    let (mut on_a, _) = a.stream(&user).await;
    let (mut on_b, _) = b.stream(&user).await;

    crate::kit::process::grant_admin(&cluster.db.url, &user.email).await;
    let granted = Instant::now();
    for (name, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let event = stream.event_within(Duration::from_secs(1)).await;
        assert_eq!(event.event, "auth:expired", "stream on {name}");
    }
    println!(
        "both streams got auth:expired {:?} after the grant",
        granted.elapsed()
    );
    for server in [a, b] {
        let got = status(server, Method::GET, "/api/admin/connections", &user).await;
        assert_eq!(got, StatusCode::OK, "admin on {}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_on_one_server_revokes_the_token_on_every_server_within_a_second() {
    let Some(cluster) = Cluster::start(2, &[]).await else {
        return;
    };
    let [a, b] = &cluster.servers[..] else {
        unreachable!()
    };
    let user = a.user().await;
    let (mut on_b, _) = b.stream(&user).await;
    let logged_out = status(a, Method::POST, "/api/auth/logout-all", &user).await;
    assert_eq!(logged_out, StatusCode::NO_CONTENT);
    let event = on_b.event_within(Duration::from_secs(1)).await;
    assert_eq!(event.event, "auth:expired");
    let refused = status(b, Method::GET, "/api/platforms", &user).await;
    assert_eq!(refused, StatusCode::UNAUTHORIZED);
}

/// The status `api` answers `user`'s request with.
async fn status(api: &Api, method: Method, path: &str, user: &User) -> StatusCode {
    let res = api.request(method, path, &user.token).send().await;
    res.unwrap_or_else(|e| panic!("request to server {}: {e}", api.name))
        .status()
}
