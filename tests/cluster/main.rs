//! The cluster contract, against real `earntrack` processes: several servers
//! on one PostgreSQL database are one service. An event published on any of
//! them reaches every matching stream, a cursor of one resumes on another,
//! the admin views and the per-user stream limit cover every server, and a
//! server that dies, stops, or loses its listener costs clients nothing.
//!
//! Needs `POSTGRES_URL` (a server where it may create databases); each test
//! prints `skipped: POSTGRES_URL unset` and passes without it.
//!
//! - `db`: a database per test, dropped even when the test panics.
//! - `server`: the processes (`Cluster`, `Server`) and their HTTP face (`Api`).
//! - `sse`: a real SSE parser over a real socket.
//! - `traffic`: writers, clients that resume elsewhere, bounded waiting.

use std::io::Write;

mod db;
mod server;
mod sse;
mod traffic;

mod admin;
mod failover;
mod fanout;
mod listener;
mod resume;

/// A line on the process's stderr, past the test harness's capture, so that
/// skips and measurements show in every run.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
