//! `wakeup`: how late this machine wakes a thread that slept, with no
//! server involved. Every latency the other modes measure crosses several
//! such wake-ups (the tool's sender, the server's threads, the tool's
//! reader), so on a shared box this is the floor under their tail. Run it
//! alone for the idle box, or beside a load for a loaded one.

use std::time::{Duration, Instant};

use crate::cli::WakeupArgs;
use crate::report::{emit, latency_fields, Report};

pub fn run(a: &WakeupArgs) -> anyhow::Result<()> {
    let sleep = Duration::from_micros(a.sleep_us);
    // How much later than asked each sleep ended, in µs.
    let mut late: Vec<u32> = (0..a.samples)
        .map(|_| {
            let started = Instant::now();
            std::thread::sleep(sleep);
            let over = started.elapsed().saturating_sub(sleep);
            over.as_micros().min(u128::from(u32::MAX)) as u32
        })
        .collect();
    late.sort_unstable();
    let mut r = Report::default();
    r.set("mode", "wakeup");
    if let Some(label) = &a.label {
        r.set("label", label.clone());
    }
    r.set("samples", a.samples);
    r.set("sleep_us", a.sleep_us);
    latency_fields(&mut r, "late_", &late);
    r.set("loadavg_1m", crate::procfs::loadavg_1m());
    r.set("timestamp", chrono::Utc::now().to_rfc3339());
    emit(&r, "wakeup", a.output.as_ref())
}
