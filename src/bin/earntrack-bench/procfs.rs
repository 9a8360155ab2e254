//! Process figures from `/proc` (Linux): resident memory from
//! `/proc/<pid>/status` and CPU time (user + system, all threads) from
//! `/proc/<pid>/stat`.

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times. `sysconf(_SC_CLK_TCK)`
/// is 100 on every Linux architecture the bench runs on.
const CLK_TCK: f64 = 100.0;

/// `VmRSS` of `pid` in KiB ("self" for this process).
pub fn rss_kib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU seconds (user + system, all threads) used so far by `pid`.
pub fn cpu_s(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its closing parenthesis. Field 3 (state) is then
    // index 0, so utime (14) and stime (15) are indexes 11 and 12.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .context("malformed /proc stat")
    };
    Ok((ticks(11)? + ticks(12)?) / CLK_TCK)
}

/// The soft limit on open files of this process, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The 1-minute load average of the machine.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A sampled process: `None` when no pid was given.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub cpu_s: f64,
}

pub fn sample(pid: &str) -> anyhow::Result<Sample> {
    Ok(Sample {
        rss_kib: rss_kib(pid)?,
        cpu_s: cpu_s(pid)?,
    })
}
