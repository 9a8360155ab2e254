//! The test kit both test binaries share (`tests/api` and `tests/cluster`):
//! what it takes to run `earntrack` for real and talk to it, written once.
//!
//! - `pg`: a fresh PostgreSQL database per test, dropped even when the test
//!   panics; and the rule for tests that need PostgreSQL (fail in CI, skip
//!   elsewhere, saying so).
//! - `process`: the `earntrack` binary as a child process on a free port,
//!   ready when `/readyz` says so, with signals and its captured output.
//! - `http`: registering users (plain and admin) over HTTP.
//! - `sse`: an SSE client over a real socket, with a real parser
//!   (`eventsource-stream`).
//!
//! Each suite keeps what is its own: `tests/api/helpers.rs` builds the app
//! in-process; `tests/cluster/server.rs` starts several processes on one
//! database.
//!
//! Why a module included by path (`#[path = "../kit/mod.rs"] mod kit;` in each
//! `main.rs`) and not a dev-only crate: the kit is a few hundred lines that
//! only these two binaries use, it needs the binary's path
//! (`env!("CARGO_BIN_EXE_earntrack")` exists only in integration tests of
//! this package), and a crate would add a manifest and a workspace for no
//! gain. Cargo does not build `tests/kit/` as a test of its own (it has no
//! `main.rs`). Each binary uses part of the kit, hence `dead_code` allowed.
#![allow(dead_code)]

use std::io::Write;

pub mod http;
pub mod pg;
pub mod process;
pub mod sse;

/// A line on the process's stderr, past the test harness's capture, so that
/// skips and measurements show in every run.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The running test's name, as the harness calls its thread.
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

/// True when running in CI (`CI` set, as CI systems and `.ci/run` do).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}
