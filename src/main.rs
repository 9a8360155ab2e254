//! `earntrack`: parse the configuration, start logging, build the app and
//! run it until SIGTERM or SIGINT.

use clap::Parser;
use earntrack::{telemetry, App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log_format);
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
