//! Wiring: database, listener, readiness, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{redact_url, Config};
use crate::db::Db;
use crate::http::routes::router;
use crate::http::serve::serve;
use crate::http::state::AppState;

/// After a stop signal, in-flight requests get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A failure that stops the hub before or while serving; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database {url}: {source}")]
    Database {
        url: String,
        source: crate::db::DbError,
    },
    #[error("failed to listen on {addr}: {source}; choose a free PORT or fix BIND")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("failed to read the listening address: {0}")]
    Serve(std::io::Error),
}

/// Runs the hub until `shutdown` resolves, then drains for at most [`SHUTDOWN_GRACE`].
/// `on_ready` is called once the socket listens (the binary sends `READY=1` there).
pub async fn run(
    config: Config,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let db = Db::connect(&config.database_url)
        .await
        .map_err(|source| StartError::Database {
            url: redact_url(&config.database_url),
            source,
        })?;
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(
        "central-hub listening on http://{local} (database {}, session-manager {}, dry_run {})",
        db.backend(),
        config.session_manager_base_url,
        config.dry_run
    );
    let limits = config.http;
    let app = router(AppState::new(config, db.clone()));
    on_ready(local);

    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let graceful = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    let server = serve(listener, app, limits, graceful);
    let deadline = async move {
        let _ = rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = server => {}
        () = deadline => tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway"),
    }
    db.close().await;
    tracing::info!("central-hub stopped");
    Ok(())
}
