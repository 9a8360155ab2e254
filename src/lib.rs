//! EarnTrack push: the real-time backend of EarnTrack.
//!
//! A user's browser holds one Server-Sent Events stream (`GET /events`);
//! every committed change to their earnings and every notification reaches
//! all of their streams, in order, and nothing is lost across reconnects.
//!
//! The components, from the edge inwards:
//! - `http`: axum glue, one module per resource; `http::events` is the SSE
//!   transport and `http::poll` the long-poll fallback.
//! - `auth`: JWT HS256 and the extractors that find the token (header, query,
//!   cookie).
//! - `error`: `ApiError`, the contract's error shapes in one place.
//! - `domain`: pure types (money as exact hundredths, earnings,
//!   notifications, events), parsed from input at the boundary.
//! - `db`: all SQL, for SQLite and PostgreSQL alike; `db::event_log` is the
//!   durable log every event is appended to inside its change's transaction.
//! - `push`: fan-out. `Publisher` commits and hands frames to a `Broker`,
//!   which reaches each server's `Hub` (one broadcast channel per connected
//!   user); a `Feed` per subscriber merges log replay and live frames into
//!   one gap-free, duplicate-free sequence per log stream.
//! - `net`: the listener; a connection whose writes stall is cut off.
//! - `app`: builds all of it and runs until a stop signal, then drains.
//! - `ratelimit`: the per-user REST budget.
//! - `config`: flags and environment (clap).

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
pub mod serve;
pub mod telemetry;

pub use app::App;
pub use config::Config;
