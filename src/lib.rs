//! EarnTrack push: the real-time backend of EarnTrack.
//!
//! A user's browser holds one Server-Sent Events stream (`GET /events`);
//! every committed change to their earnings and every notification reaches
//! all of their streams, in order, and nothing is lost across reconnects.
//!
//! The components in layers, bottom first; each imports only from the
//! layers below it (domain <- error <- db <- push <- auth, http <- app).
//! - `domain`: pure types, no IO (money as exact hundredths, earnings,
//!   notifications, events, `FieldErrors`), parsed from input at the
//!   boundary; the log's `StreamKey` and `Position`, and `Frame`, an event
//!   encoded once for every subscriber.
//! - `error`: `ApiError`, the contract's error shapes in one place.
//! - `db`: all SQL, for SQLite and PostgreSQL alike; `db::event_log` is the
//!   durable log every event is appended to inside its change's
//!   transaction, `db::notify` the NOTIFY / LISTEN of a cluster.
//! - `push`: fan-out, knows nothing about HTTP. `Publisher` owns a write
//!   from begin to commit and hands the frames to a `Broker`, which reaches
//!   each server's `Hub` (one broadcast channel per connected user); a
//!   `Feed` per subscriber merges log replay and live frames into one
//!   gap-free, duplicate-free sequence per log stream.
//! - `auth`: JWT HS256 keys and claims.
//! - `http`: axum glue, one module per resource; `http::extract` finds the
//!   token (header, query, cookie) for `AuthUser`; `http::sse` is the SSE
//!   transport core, carried by hyper (`http::events`) or, for most
//!   streams, the bare socket (`http::fast_path`); `http::poll` is the
//!   long-poll fallback.
//! - `app`: builds all of it and runs until a stop signal, then drains;
//!   `serve` is the accept loop, `jobs` the background tasks; `roles` is
//!   `earntrack admin grant|revoke` (and `EARNTRACK_ADMIN_EMAILS`).
//!
//! Infrastructure, below `http`: `config` (flags and environment, clap),
//! `telemetry` (logs, the Prometheus recorder) and `net` (the listener; a
//! connection whose writes stall is cut off) import nothing of the crate;
//! `ratelimit` (the per-user REST budget) sits just above `error`, whose
//! `RateLimited` it answers with.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod jobs;
pub mod net;
pub mod push;
pub mod ratelimit;
pub mod roles;
pub mod serve;
pub mod telemetry;

pub use app::App;
pub use config::Config;
