//! The REST side of a run: the body of a measured admin event, the
//! outcome of every request, and the wait for requests in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::accounts::Account;
use crate::http;
use crate::now_us;
use crate::report::{percentile_ms, Report};

/// An admin event carrying the bench's timestamp (taken now, as the body is
/// written), sequence number and run id.
pub fn admin_event_body(target: Value, event: &str, run: u64, seq: u32) -> Vec<u8> {
    json!({
        "target": target,
        "event": event,
        "data": { "sentAt": now_us(), "seq": seq, "run": run },
    })
    .to_string()
    .into_bytes()
}

/// An earning of `account` on `date` whose notes carry the bench's
/// timestamp (`sent_us`), sequence number and run id.
pub fn earning_body(account: &Account, date: &str, run: u64, seq: u32, sent_us: u64) -> Vec<u8> {
    json!({
        "platformId": account.platform,
        "date": date,
        "hours": 1,
        "amount": 12.5,
        "notes": crate::sse::bench_notes(run, seq, sent_us),
    })
    .to_string()
    .into_bytes()
}

/// Outcome of the REST calls of a run.
#[derive(Default)]
pub struct Sent {
    pub ok: u64,
    errors: BTreeMap<String, u64>,
    rest_us: Vec<u32>,
}

impl Sent {
    /// Count one answer (`ok_status` is success) that took `took_us`;
    /// whether it succeeded.
    pub fn record(
        &mut self,
        result: anyhow::Result<http::Response>,
        took_us: u64,
        ok_status: u16,
    ) -> bool {
        match result {
            Ok(resp) if resp.status == ok_status => {
                self.ok += 1;
                self.rest_us.push(took_us.min(u32::MAX as u64) as u32);
                true
            }
            Ok(resp) => {
                let key = format!(
                    "status {} {}",
                    resp.status,
                    resp.error_code().unwrap_or_default()
                );
                *self.errors.entry(key).or_default() += 1;
                false
            }
            Err(e) => {
                let key: String = format!("{e:#}").chars().take(120).collect();
                *self.errors.entry(key).or_default() += 1;
                false
            }
        }
    }

    pub fn fields(&mut self, r: &mut Report) {
        self.rest_us.sort_unstable();
        let failed: u64 = self.errors.values().sum();
        r.set("rest_errors", failed);
        r.set("rest_p50_ms", percentile_ms(&self.rest_us, 50.0));
        r.set("rest_p99_ms", percentile_ms(&self.rest_us, 99.0));
        if !self.errors.is_empty() {
            let errors: Map<String, Value> = self
                .errors
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            r.set("rest_error_kinds", Value::Object(errors));
        }
    }
}

/// Wait until every one of the `permits` a sender holds while its request is
/// in flight is back: at most one request timeout (and a margin), and never
/// past the run's deadline.
pub async fn wait_in_flight(
    permits: &Arc<Semaphore>,
    concurrency: usize,
    request_timeout_s: u64,
    deadline: Instant,
) {
    let all = tokio::time::timeout_at(
        (Instant::now() + Duration::from_secs(request_timeout_s + 5))
            .min(deadline)
            .into(),
        permits.acquire_many(concurrency as u32),
    )
    .await;
    if all.is_err() {
        eprintln!("warning: requests still in flight at the deadline");
    }
}
