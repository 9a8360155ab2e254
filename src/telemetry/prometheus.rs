//! Metrics: the Prometheus recorder `/metrics` renders, and every series
//! the server reports, described (and at zero) from the start.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The Prometheus recorder is process-global (the `metrics` facade has one
/// recorder); several apps in one test process share it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
            }
            handle
        })
        .clone()
}

/// Every series exists from the start (at zero), so dashboards and alerts
/// see them before the first event, drop or stream.
fn describe_metrics() {
    use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_gauge!("earntrack_open_streams", "SSE streams open on this server");
    describe_gauge!(
        "earntrack_hub_channels",
        "users with a live channel on this server"
    );
    describe_counter!(
        "earntrack_events_published_total",
        "events committed and published, by topic"
    );
    describe_counter!(
        "earntrack_events_delivered_total",
        "event frames written to streams, by topic"
    );
    describe_counter!(
        "earntrack_events_replayed_total",
        "events read from the log for resumes and catch-ups"
    );
    describe_counter!(
        "earntrack_slow_subscriber_drops_total",
        "streams closed because they could not keep up"
    );
    describe_counter!(
        "earntrack_http_requests_total",
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        "earntrack_http_request_duration_seconds",
        "HTTP request latency by method and route template"
    );
    describe_histogram!(
        "earntrack_write_batch_seconds",
        "How long the writer held one batch of write units (begin to commit and answers)"
    );
    describe_histogram!(
        "earntrack_group_commit_requests",
        "Write units that shared one commit"
    );
    describe_histogram!(
        "earntrack_wal_restart_checkpoint_seconds",
        "SQLite: the writer's own checkpoint past EARNTRACK_SQLITE_WAL_MAX_MB"
    );
    gauge!("earntrack_open_streams").set(0.0);
    gauge!("earntrack_hub_channels").set(0.0);
    for topic in ["earnings", "notifications", "other"] {
        counter!("earntrack_events_published_total", "topic" => topic).absolute(0);
        counter!("earntrack_events_delivered_total", "topic" => topic).absolute(0);
    }
    counter!("earntrack_events_replayed_total").absolute(0);
    counter!("earntrack_slow_subscriber_drops_total").absolute(0);
}
