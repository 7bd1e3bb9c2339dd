//! The `/metrics` listener (`[metrics] listen`). Anyone on the host can connect, so it is
//! bounded: at most `MAX_CONNECTIONS` at once (more are closed at accept), the request head
//! must arrive within `HEADER_TIMEOUT` and fit in `MAX_HEAD`, a request body is never read,
//! and a whole connection lives at most `CONNECTION_TIMEOUT`. Each scrape is one message to
//! the actor, answered from what it already holds.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{render, AlertStats, DaemonSelf};
use crate::logs::LogStats;
use crate::supervisor::Msg;

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_HEAD: usize = 16 * 1024;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// A scrape waits this long for the actor, then answers 503.
pub const ACTOR_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Sources {
    pub actor: mpsc::UnboundedSender<Msg>,
    pub logs: Arc<LogStats>,
    pub alerts: Option<Arc<AlertStats>>,
}

/// Binds `addr`; the error names the address so the daemon's message is actionable.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, src: Sources) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: close at once rather than queue.
            drop(stream);
            continue;
        };
        let src = src.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let src = src.clone();
                async move { Ok::<_, Infallible>(answer(req, &src).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

async fn answer(req: hyper::Request<Incoming>, src: &Sources) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: metrics are on GET /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET /metrics is served\n".into(),
        );
    }
    match scrape(src).await {
        Some(body) => text(StatusCode::OK, body),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor did not answer in time; try again\n".into(),
        ),
    }
}

/// One scrape: ask the actor, read the writer's counters and our own /proc entries.
pub async fn scrape(src: &Sources) -> Option<String> {
    let t0 = Instant::now();
    let (tx, rx) = oneshot::channel();
    src.actor.send(Msg::Metrics(tx)).ok()?;
    let snap = tokio::time::timeout(ACTOR_TIMEOUT, rx).await.ok()?.ok()?;
    let me = DaemonSelf::read(t0.elapsed().as_secs_f64());
    let logs = src.logs.snapshot();
    Some(render(&snap, &logs, src.alerts.as_deref(), &me))
}
