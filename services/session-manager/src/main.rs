//! session-manager: one headless Chromium per customer WhatsApp Web session.
//!
//! Layout: `config` (env), `http` (routes, request log), `session` (the actor
//! that owns all session state + one worker task per browser), `browser`
//! (launch, page driving, kill ladder), `cdp` (DevTools client over a pipe),
//! `server` (accept loop with connection limits), `procs`
//! (`/proc` scans, signals, profile lock), `qr` (QR PNG).

mod browser;
mod cdp;
mod config;
mod http;
mod procs;
mod qr;
mod server;
mod session;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let mut cfg = match config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("session-manager: {e}");
            return ExitCode::from(1);
        }
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .with_ansi(false);
    // Under the supervisor every line already gets its timestamp: one time per line.
    if std::env::var_os("LM_LOG_TIMESTAMPS").is_some_and(|v| !v.is_empty()) {
        log.without_time().init();
    } else {
        log.init();
    }
    cfg.tokens_dir = browser::absolute(&cfg.tokens_dir);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("session-manager: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-manager: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cfg: config::Config) -> anyhow::Result<()> {
    // 0700: the profiles below hold every customer's WhatsApp session.
    browser::make_private_dir(&cfg.tokens_dir)
        .with_context(|| format!("failed to create TOKENS_DIR {}", cfg.tokens_dir.display()))?;
    let mut sigterm =
        signal(SignalKind::terminate()).context("failed to install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("failed to install SIGINT handler")?;
    let addr = std::net::SocketAddr::new(cfg.bind, cfg.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("failed to read the bound address")?;
    let cfg = Arc::new(cfg);
    match cfg.find_chromium() {
        Some(p) => tracing::info!("browser: {}", p.display()),
        None => tracing::warn!(
            "no Chromium found (CHROMIUM_PATH or PATH); /init will answer BROWSER_NOT_FOUND"
        ),
    }
    let sessions = session::Sessions::start(cfg.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each browser holds a few descriptors in this process (two DevTools
    // pipes, stderr, the child handle); keep generous room for MAX_SESSIONS.
    let reserve = (cfg.max_sessions as u64)
        .saturating_mul(16)
        .saturating_add(64);
    let max_connections = server::fit_connection_cap(cfg.http_max_connections, reserve);
    if max_connections < cfg.http_max_connections {
        tracing::warn!(
            "HTTP_MAX_CONNECTIONS={} lowered to {max_connections} to fit RLIMIT_NOFILE",
            cfg.http_max_connections
        );
    }
    let limits = server::Limits {
        max_connections,
        header_timeout: cfg.http_header_timeout,
        idle_timeout: cfg.http_idle_timeout,
    };
    let app = http::router(http::App {
        sessions: sessions.clone(),
        cfg: cfg.clone(),
    });
    let server = tokio::spawn(server::serve(
        listener,
        app,
        limits,
        stop_rx,
        Duration::from_secs(2),
    ));
    tracing::info!(
        "listening on {local}, tokens in {}, max {} sessions",
        cfg.tokens_dir.display(),
        cfg.max_sessions
    );
    if cfg.dry_run {
        tracing::warn!("DRY_RUN=true: /send answers without sending anything");
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    // Linked customers come back by themselves after a restart.
    let restore = tokio::spawn({
        let (sessions, cfg) = (sessions.clone(), cfg.clone());
        async move { sessions.restore(cfg).await }
    });

    let sig = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    restore.abort();
    tracing::info!(
        "{sig}: destroying every browser (bound {:?})",
        cfg.shutdown_timeout
    );
    let started = std::time::Instant::now();
    let report = sessions.shutdown().await;
    if report.timed_out {
        tracing::error!("{} browser(s) had to be force-killed", report.browsers);
    }
    tracing::info!(
        "{} browser(s) destroyed in {:?}",
        report.browsers,
        started.elapsed()
    );
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .is_err()
    {
        tracing::warn!("HTTP server did not drain within 3s; exiting anyway");
    }
    Ok(())
}
