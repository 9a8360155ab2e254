//! One test binary for the API: each file is an area of the contract.
//!
//! The whole suite runs against SQLite by default, and against PostgreSQL
//! when `EARNTRACK_TEST_BACKEND=postgres` (with `POSTGRES_URL`): each test
//! then gets a database of its own, created and dropped around it.
//!
//! `helpers` is this suite's harness (the app in-process); `kit` is what it
//! shares with `tests/cluster` (databases, processes, accounts, SSE).

#[path = "../kit/mod.rs"]
mod kit;

mod helpers;

mod accounts;
mod admin;
mod compression;
mod connections;
mod earnings;
mod fast_path;
mod hardening;
mod ledger;
mod load_tool;
mod notifications;
mod process;
mod resume;
mod roles;
mod slow;
mod smoke;
mod stream;
