//! The load tool (`earntrack-bench`) at a small N against a real server, so
//! it cannot rot: every mode runs end to end and its JSON line adds up. The
//! figures themselves are not asserted (see README, Performance).

use std::path::Path;

use serde_json::Value;

use crate::helpers::{spawn_app_with, TestApp};

async fn bench_app() -> TestApp {
    spawn_app_with(|c| {
        c.publisher_keys = vec![PUBLISHER_KEY.parse().unwrap()];
        c.max_streams_per_user = 100;
    })
    .await
}

/// The key the tool publishes with (`--publisher-key`).
const PUBLISHER_KEY: &str = "load-tool-publisher-key-0123456789abcdef";

/// Run the tool's `mode` with `args` against `app`; its JSON line.
async fn run(app: &TestApp, dir: &Path, args: &[&str]) -> Value {
    let output = dir.join("results.jsonl");
    let result = tokio::process::Command::new(env!("CARGO_BIN_EXE_earntrack-bench"))
        .args(args)
        .args([
            "--url",
            &app.base,
            "--publisher-key",
            PUBLISHER_KEY,
            "--settle-s",
            "0",
            "--max-runtime-s",
            "120",
        ])
        .arg("--output")
        .arg(&output)
        .arg("--token-cache")
        .arg(dir.join("tokens.json"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("the load tool runs");
    assert!(
        result.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    let lines = std::fs::read_to_string(&output).unwrap();
    serde_json::from_str(lines.lines().last().expect("a JSON line")).unwrap()
}

/// A unicast run of REST earnings to 10 users' streams, with `pace`.
fn earnings<'a>(pace: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "unicast",
        "--streams",
        "10",
        "--users",
        "10",
        "--via",
        "earnings",
    ];
    args.extend_from_slice(pace);
    args
}

#[tokio::test]
async fn the_load_tool_measures_fanout_unicast_and_idle_against_a_real_server() {
    let app = bench_app().await;
    let dir = tempfile::tempdir().unwrap();

    let fanout = run(
        &app,
        dir.path(),
        &[
            "fanout",
            "--streams",
            "30",
            "--users",
            "10",
            "--events",
            "5",
        ],
    )
    .await;
    assert_eq!(fanout["connected"], 30, "{fanout}");
    assert_eq!(fanout["deliveries"], 150, "{fanout}");
    for zero in ["lost", "duplicates", "reordered", "unexpected"] {
        assert_eq!(fanout[zero], 0, "{zero}: {fanout}");
    }
    assert!(fanout["p99_ms"].as_f64().unwrap() > 0.0, "{fanout}");

    let unicast = run(
        &app,
        dir.path(),
        &earnings(&["--rate", "40", "--duration-s", "1"]),
    )
    .await;
    assert_eq!(unicast["lost"], 0, "{unicast}");
    assert!(unicast["deliveries"].as_u64().unwrap() >= 30, "{unicast}");
    // The accounts of the first run came from the token cache.
    assert_eq!(unicast["accounts_created"], 0, "{unicast}");
    assert!(unicast["rate_kept"].is_boolean(), "{unicast}");

    // A rate no server keeps with one request in flight: 400 writes due
    // within 4 ms. The run must say that it fell behind, since its
    // latencies, measured from each actual send, no longer show the wait.
    let behind = run(
        &app,
        dir.path(),
        &earnings(&[
            "--rate",
            "100000",
            "--events",
            "400",
            "--rest-concurrency",
            "1",
        ]),
    )
    .await;
    assert_eq!(behind["lost"], 0, "{behind}");
    assert_eq!(behind["rate_kept"], false, "{behind}");
    assert!(behind["sends_late"].as_u64().unwrap() > 4, "{behind}");
    assert!(
        behind["schedule_lag_max_ms"].as_f64().unwrap() > 5.0,
        "{behind}"
    );

    let pid = std::process::id().to_string();
    let idle = run(
        &app,
        dir.path(),
        &[
            "idle",
            "--streams",
            "20",
            "--users",
            "10",
            "--hold-s",
            "1",
            "--server-pid",
            &pid,
        ],
    )
    .await;
    assert_eq!(idle["connected"], 20, "{idle}");
    assert_eq!(idle["dropped_during_hold"], 0, "{idle}");
    assert!(idle["server_rss_per_stream_kib"].is_number(), "{idle}");
}

/// `wakeup` needs no server: it times this machine's sleeps, and a sleep
/// never ends early.
#[tokio::test]
async fn the_load_tool_times_how_late_this_machine_wakes_a_thread() {
    let result = tokio::process::Command::new(env!("CARGO_BIN_EXE_earntrack-bench"))
        .args(["wakeup", "--samples", "200", "--sleep-us", "500"])
        .output()
        .await
        .expect("the load tool runs");
    assert!(result.status.success(), "{result:?}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(line["samples"], 200, "{line}");
    let (p50, p99, max) = (
        line["late_p50_ms"].as_f64().unwrap(),
        line["late_p99_ms"].as_f64().unwrap(),
        line["late_max_ms"].as_f64().unwrap(),
    );
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{line}");
}
