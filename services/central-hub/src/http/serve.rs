//! The accept loop: hyper's HTTP/1 server with the bounds `axum::serve` does not offer.
//!
//! Why not `axum::serve`: it has no header-read timeout, no idle timeout and no connection
//! cap, so a flood of half-open connections pinned one file descriptor and a buffer each
//! until `accept` failed with "Too many open files" and `/health` stopped answering.
//!
//! Three bounds, each against a different client:
//! - **Header read timeout** (hyper's own): a request head must be complete within
//!   [`HttpLimits::header_read_timeout`] of the server starting to wait for it. Stops
//!   clients that trickle a header byte at a time (which the idle timeout would not catch).
//! - **Idle timeout**: a connection with no request running and no byte read or written for
//!   [`HttpLimits::idle_timeout`] is closed. Stops silent connections, including kept-alive
//!   ones between requests.
//! - **Connection cap**: at [`HttpLimits::max_connections`] open connections, accepting one
//!   more first closes the connection idle the longest (none running a request). A flood
//!   therefore evicts itself instead of locking out new clients such as a health probe; only
//!   when every connection is running a request is the newcomer turned away. The cap is
//!   lowered to fit the process's open-file limit, so `accept` itself keeps working.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::config::HttpLimits;

/// File descriptors kept out of the connection cap: the listener, database and
/// session-manager sockets, log files, and connections being closed after an eviction.
const RESERVED_FDS: usize = 64;

/// After the stop signal, how long a connection with no request running may stay open: enough
/// to flush an answer already produced, not enough for a half-sent request head to hold the
/// exit up to the shutdown grace.
const STOP_LINGER: Duration = Duration::from_millis(500);

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish
/// (connections are closed as soon as they are idle) and returns when none is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let max = effective_max_connections(limits.max_connections, open_files_limit());
    tracing::info!(
        "http limits: header read timeout {:?}, idle timeout {:?}, at most {max} connections",
        limits.header_read_timeout,
        limits.idle_timeout
    );
    let table = Arc::new(Table::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; `recv` returns `None` once all have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut evictions = EvictionLog::default();
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning on the error.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if table.len() >= max {
            if table.evict_longest_idle() {
                evictions.evicted += 1;
            } else {
                evictions.refused += 1;
                evictions.maybe_log(max);
                drop(stream);
                continue;
            }
        }
        evictions.maybe_log(max);
        let _ = stream.set_nodelay(true);
        let conn = table.insert();
        tokio::spawn(serve_one(
            stream,
            app.clone(),
            limits,
            conn,
            table.clone(),
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    // Returns once every connection task has dropped its sender.
    let _ = alive_rx.recv().await;
}

/// The cap actually used: the configured one, lowered so connections cannot exhaust the
/// open-file limit (then `accept` would fail for everyone, the health probe included).
pub fn effective_max_connections(configured: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(limit) => {
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(RESERVED_FDS)
                .max(1);
            if room < configured {
                tracing::warn!(
                    "HTTP_MAX_CONNECTIONS={configured} lowered to {room}: the open-file limit is {limit}"
                );
            }
            configured.min(room)
        }
        None => configured,
    }
}

/// The soft `RLIMIT_NOFILE` from `/proc/self/limits`; `None` when unknown or unlimited.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Counts evictions and refusals and logs them at most once a second, so a flood
/// does not turn into a flood of log lines.
#[derive(Default)]
struct EvictionLog {
    evicted: u64,
    refused: u64,
    last: Option<Instant>,
}

impl EvictionLog {
    fn maybe_log(&mut self, max: usize) {
        if self.evicted == 0 && self.refused == 0 {
            return;
        }
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            "connection cap {max} reached: closed {} idle connections, refused {} new ones",
            self.evicted,
            self.refused
        );
        self.evicted = 0;
        self.refused = 0;
        self.last = Some(Instant::now());
    }
}

/// What the accept loop and a connection's task share about one connection.
struct Conn {
    id: u64,
    /// Milliseconds since `Table::epoch` of the last byte moved or request finished.
    last_active_ms: AtomicU64,
    /// Requests running on this connection (0 or 1 for HTTP/1).
    in_flight: AtomicUsize,
    /// Woken when the accept loop evicts this connection to make room.
    evict: Notify,
}

struct Table {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }
}

impl Table {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            last_active_ms: AtomicU64::new(self.now_ms()),
            in_flight: AtomicUsize::new(0),
            evict: Notify::new(),
        });
        self.lock().insert(conn.id, conn.clone());
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection idle the longest; false when every one is running a request.
    /// A linear scan: it runs only at the cap, and the cap is a few thousand at most.
    fn evict_longest_idle(&self) -> bool {
        let mut conns = self.lock();
        let victim = conns
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.last_active_ms.load(Ordering::Relaxed))
            .map(|c| c.id);
        match victim.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                // `notify_one` stores the wake-up if the task is not waiting right now.
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves one connection until it ends, is evicted, or stays idle too long.
async fn serve_one(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    conn: Arc<Conn>,
    table: Arc<Table>,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let io = TokioIo::new(Tracked {
        inner: stream,
        conn: conn.clone(),
        table: table.clone(),
    });
    let inner = TowerToHyperService::new(app);
    let svc = {
        let conn = conn.clone();
        let table = table.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let running = Running::start(conn.clone(), table.clone());
            let fut = inner.call(req);
            async move {
                let resp = fut.await;
                drop(running);
                resp
            }
        })
    };
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(http);

    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut stopping = *stop.borrow();
    if stopping {
        http.as_mut().graceful_shutdown();
        idle.as_mut()
            .reset(tokio::time::Instant::now() + STOP_LINGER);
    }
    loop {
        tokio::select! {
            res = http.as_mut() => {
                if let Err(e) = res {
                    // Timeouts and resets are routine under load; not worth more than debug.
                    tracing::debug!("connection ended: {e}");
                }
                break;
            }
            () = conn.evict.notified() => break,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    // hyper finishes a running request (or the answer being written) and
                    // then closes; an idle or half-sent connection is dropped shortly after.
                    http.as_mut().graceful_shutdown();
                    idle.as_mut().reset(tokio::time::Instant::now() + STOP_LINGER);
                }
            }
            () = &mut idle => {
                let last = conn.last_active_ms.load(Ordering::Relaxed);
                let quiet = Duration::from_millis(table.now_ms().saturating_sub(last));
                let running = conn.in_flight.load(Ordering::Acquire) > 0;
                // Stopping: a half-received head is not a request to wait for.
                if !running && (stopping || quiet >= limits.idle_timeout) {
                    break;
                }
                // A running request is bounded elsewhere (body read, session-manager
                // timeout); look again a full period later. Otherwise bytes moved since the
                // timer was set: wait for the rest of the idle period.
                let next = if running {
                    limits.idle_timeout
                } else {
                    limits.idle_timeout.saturating_sub(quiet).max(Duration::from_millis(10))
                };
                idle.as_mut().reset(tokio::time::Instant::now() + next);
            }
        }
    }
    table.remove(conn.id);
}

/// Marks a request as running for as long as it lives.
struct Running {
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Running {
    fn start(conn: Arc<Conn>, table: Arc<Table>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Running { conn, table }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // The idle period starts when the request ends, not when it started.
        self.conn
            .last_active_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that records when a byte last moved, for the idle timeout and eviction.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Tracked {
    fn touch(&self) {
        self.conn
            .last_active_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(effective_max_connections(1024, Some(20_000)), 1024);
        assert_eq!(effective_max_connections(1024, Some(1024)), 960);
        assert_eq!(effective_max_connections(1024, Some(10)), 1);
        assert_eq!(effective_max_connections(7, None), 7);
    }

    #[test]
    fn eviction_picks_the_longest_idle_connection_not_a_running_one() {
        let t = Table::default();
        let a = t.insert();
        let b = t.insert();
        let c = t.insert();
        a.last_active_ms.store(5, Ordering::Relaxed);
        b.last_active_ms.store(1, Ordering::Relaxed);
        c.last_active_ms.store(0, Ordering::Relaxed);
        c.in_flight.store(1, Ordering::Relaxed);
        assert!(t.evict_longest_idle());
        assert!(!t.lock().contains_key(&b.id), "b was idle the longest");
        assert!(t.evict_longest_idle());
        assert!(!t.evict_longest_idle(), "c is running a request");
        assert_eq!(t.len(), 1);
    }
}
