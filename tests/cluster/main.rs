//! The cluster contract, against real `earntrack` processes: several servers
//! on one PostgreSQL database are one service. An event published on any of
//! them reaches every matching stream, a cursor of one resumes on another,
//! the admin views and the per-user stream limit cover every server, and a
//! server that dies, stops, or loses its listener costs clients nothing.
//!
//! Needs `POSTGRES_URL` (a server where it may create databases). Without
//! it each test fails in CI (`CI` set) and elsewhere prints
//! `skipped: POSTGRES_URL unset (<test>)` and passes.
//!
//! - `kit` (shared with `tests/api`): a database per test, dropped even when
//!   the test panics; the `earntrack` process; accounts; a real SSE parser
//!   over a real socket.
//! - `db`: the cluster's listeners as PostgreSQL sees them.
//! - `server`: the cluster (`Cluster`, `Server`) and a server's HTTP face
//!   (`Api`).
//! - `traffic`: writers, clients that resume elsewhere, bounded waiting.

#[path = "../kit/mod.rs"]
mod kit;

mod db;
mod server;
mod traffic;

mod admin;
mod bus;
mod failover;
mod fanout;
mod ledger;
mod listener;
mod resume;
