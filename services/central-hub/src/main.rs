//! Binary entry: read env, set up logging, run the server, map failures to exit 1.

use std::process::ExitCode;

use central_hub::config::Config;
use central_hub::server;
use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("central-hub: {e}");
            return ExitCode::from(1);
        }
    };

    let log = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        );
    // Under the supervisor every line already gets its timestamp: one time per line.
    if std::env::var_os("LM_LOG_TIMESTAMPS").is_some_and(|v| !v.is_empty()) {
        log.without_time().init();
    } else {
        log.init();
    }

    let on_ready = |_addr| {
        // Only does something when NOTIFY_SOCKET is set.
        if let Err(e) = sd_notify::notify(false, &[NotifyState::Ready]) {
            tracing::warn!("failed to send READY=1: {e}");
        }
    };

    match server::run(config, on_ready, stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("central-hub: {e}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, after telling the manager we are stopping.
async fn stop_signal() {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot install signal handlers: {e}; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{name} received, shutting down");
    if let Err(e) = sd_notify::notify(false, &[NotifyState::Stopping]) {
        tracing::warn!("failed to send STOPPING=1: {e}");
    }
}
