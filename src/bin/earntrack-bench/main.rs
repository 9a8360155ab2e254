//! `earntrack-bench`: a load tool for an EarnTrack push deployment.
//!
//! It opens N authenticated SSE streams (users registered through the API,
//! tokens in `?access_token=`), spread over several 127.0.0.x source
//! addresses and the threads of a multi-thread runtime, then:
//!
//! - `idle`: holds them and reports the server's RSS per stream and idle CPU;
//! - `fanout`: publishes broadcasts through the admin API (a burst, or one
//!   every `--interval-ms`) and reports deliveries/s and publish-to-delivery
//!   latency;
//! - `unicast`: sends events at a fixed rate to random single users (admin
//!   events or real `POST /api/earnings`) and reports write-to-delivery
//!   latency and lost events;
//! - `notify`: N publishers send admin events to single users back to back
//!   for D seconds, through every server, and report committed events/s
//!   (the write ceiling) and their delivery latency;
//! - `plot`: draws latency and RSS per stream against N from the JSON lines
//!   of several runs, as an SVG;
//! - `wakeup`: how late this machine wakes a sleeping thread, with no
//!   server: the floor under every latency measured on it.
//!
//! A cluster: `--url` takes a comma-separated list of servers. Users are
//! spread over them round-robin (all streams of a user on one server);
//! accounts are set up and events published through `--publish-url`
//! (default: the first `--url`). Deliveries on streams of a server other
//! than the publishing one are reported as cross-server, and each server
//! gets its own line (`per_server`).
//!
//! Every run prints a table and, as the last line of stdout, one JSON object.
//! Every loop is bounded by a count and a deadline (`--max-runtime-s`), and
//! the tool connects only to `--url` and `--publish-url`.
//!
//! The files: `cli` (the flags), one file per mode (`idle`, `fanout`,
//! `unicast`, `notify`, `plot`, `wakeup`), and what the modes share: `prepare` (flags
//! checked, servers reached, accounts set up), `streams` (open, drain,
//! close and sum), `publish` (event bodies, REST outcomes), `report` (the
//! table and JSON line); below them `accounts` (registration and the token
//! cache), `sse` (one stream), `http` (a small HTTP/1.1 client) and
//! `procfs` (memory and CPU of a process).

mod accounts;
mod cli;
mod fanout;
mod http;
mod idle;
mod notify;
mod plot;
mod prepare;
mod procfs;
mod publish;
mod report;
mod sse;
mod streams;
mod unicast;
mod wakeup;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rand::Rng;

use crate::cli::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.cmd {
        Cmd::Plot(args) => return exit_code(plot::run(args)),
        Cmd::Wakeup(args) => return exit_code(wakeup::run(args)),
        Cmd::Idle(a) => &a.common,
        Cmd::Fanout(a) => &a.common,
        Cmd::Unicast(a) => &a.common,
        Cmd::Notify(a) => &a.common,
    };
    let threads = common.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    // The last line of defence of "it stops by itself".
    let hard_stop = Duration::from_secs(common.max_runtime_s + 30);
    std::thread::spawn(move || {
        std::thread::sleep(hard_stop);
        eprintln!("error: --max-runtime-s exceeded; exiting");
        std::process::exit(3);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    exit_code(runtime.block_on(bench(cli.cmd, threads)))
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run a mode that opens streams, under a fresh run id (only events of this
/// run are counted).
async fn bench(cmd: Cmd, threads: usize) -> anyhow::Result<()> {
    let run: u64 = rand::thread_rng().gen_range(1..1u64 << 52);
    match cmd {
        Cmd::Idle(a) => idle::run(a, run, threads).await,
        Cmd::Fanout(a) => fanout::run(a, run, threads).await,
        Cmd::Unicast(a) => unicast::run(a, run, threads).await,
        Cmd::Notify(a) => notify::run(a, run, threads).await,
        Cmd::Plot(_) | Cmd::Wakeup(_) => unreachable!("handled in main"),
    }
}

/// Microseconds since the Unix epoch (the clock both ends of a measured
/// event read, on the same machine).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
