//! `earntrack`: parse the configuration, start logging, build the app and
//! run it until SIGTERM or SIGINT.

use clap::Parser;
use earntrack::config::Command;
use earntrack::db::Db;
use earntrack::{roles, telemetry, App, Config};

fn main() -> anyhow::Result<()> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// glibc keeps freed blocks below the mmap threshold in per-thread arenas for
/// good. argon2 allocates 19 MiB per password hash on whichever blocking
/// thread runs it, so 400 registrations left 1.4 GB of RSS behind. With a
/// fixed 128 KiB threshold such buffers are mapped and unmapped on their own
/// and RSS returns to the baseline (measured: 15 MB instead of 1.4 GB; and
/// 22 KiB per idle stream, where mimalloc measured 32 KiB).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters, and runs before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log_format);
    if let Some(Command::Admin { action }) = &config.command {
        let db = Db::connect(&config.database_url, 1).await?;
        println!("{}", roles::run(&db, action).await?);
        return Ok(());
    }
    if config.insecure_cookie_exposed() {
        // Tokens travel in that cookie: over plain HTTP anyone on the path
        // can read it. HTTPS (a TLS proxy in front) is expected.
        tracing::warn!(
            addr = %config.addr,
            "the auth cookie is not Secure on a non-loopback address: serve over HTTPS and set \
             EARNTRACK_COOKIE_SECURE=true"
        );
    }
    let app = App::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "listening");
    app.run_until_stopped(stop_signal()).await
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
