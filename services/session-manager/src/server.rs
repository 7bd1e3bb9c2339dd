//! The HTTP/1 accept loop, with the limits `axum::serve` does not have.
//!
//! Why our own loop (issue 17): with `axum::serve`, 20,000 half-open
//! connections exhausted the file descriptors and memory and `/health` stopped
//! answering. Here:
//! - a connection has `HTTP_HEADER_TIMEOUT` to deliver its first request's
//!   headers and may then sit idle `HTTP_IDLE_TIMEOUT` between requests
//!   (hyper's own header-read timeout also covers a slow header after that);
//! - at most `HTTP_MAX_CONNECTIONS` are open. At the cap a new connection
//!   closes the oldest one that has no request in progress, so a flood of idle
//!   connections cannot lock out a real client such as the health probe; when
//!   every connection is busy the newcomer is closed instead.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// What the accept loop knows about one open connection.
struct Entry {
    busy: Arc<AtomicUsize>,
    kill: Arc<Notify>,
}

type Conns = Arc<Mutex<BTreeMap<u64, Entry>>>;

fn lock(c: &Conns) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish their request for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let conns: Conns = Arc::default();
    let mut next_id = 0u64;
    let mut last_warn: Option<Instant> = None;
    let mut warn = |msg: String| {
        // One line per second at most: a flood must not flood the log too.
        if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_warn = Some(Instant::now());
            tracing::warn!(target: "http", "{msg}");
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let sock = match accepted {
            Ok((sock, _)) => sock,
            Err(e) => {
                // Out of file descriptors below our cap (a low RLIMIT_NOFILE,
                // browsers holding many): free one the same way as at the cap.
                let freed = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                    && evict_oldest_idle(&mut lock(&conns));
                warn(format!(
                    "accept failed: {e}{}",
                    if freed {
                        "; closed the oldest idle connection"
                    } else {
                        ""
                    }
                ));
                // Let the closed connection's task run before trying again.
                tokio::time::sleep(Duration::from_millis(if freed { 1 } else { 20 })).await;
                continue;
            }
        };
        {
            let mut map = lock(&conns);
            if map.len() >= limits.max_connections {
                if evict_oldest_idle(&mut map) {
                    warn(format!(
                        "{} connections open (HTTP_MAX_CONNECTIONS): closed the oldest idle one",
                        limits.max_connections
                    ));
                } else {
                    warn(format!(
                        "{} connections open and all busy (HTTP_MAX_CONNECTIONS): refused one",
                        limits.max_connections
                    ));
                    drop(sock);
                    continue;
                }
            }
            next_id += 1;
        }
        let id = next_id;
        let busy = Arc::new(AtomicUsize::new(0));
        let kill = Arc::new(Notify::new());
        lock(&conns).insert(
            id,
            Entry {
                busy: busy.clone(),
                kill: kill.clone(),
            },
        );
        let (conns, app, stop) = (conns.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            connection(sock, app, limits, busy, kill, stop).await;
            lock(&conns).remove(&id);
        });
    }
    let deadline = Instant::now() + drain;
    while !lock(&conns).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Closes the oldest connection with no request in progress; false when every one is busy.
fn evict_oldest_idle(map: &mut BTreeMap<u64, Entry>) -> bool {
    let idle = map
        .iter()
        .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
        .map(|(id, _)| *id);
    match idle.and_then(|id| map.remove(&id)) {
        Some(old) => {
            old.kill.notify_one();
            true
        }
        None => false,
    }
}

/// Raises the soft open-file limit to the hard one (systemd's default soft
/// limit is 1024) and returns the connection cap that fits under it, keeping
/// `reserve` descriptors for browsers' pipes, profiles and logs.
pub fn fit_connection_cap(wanted: usize, reserve: u64) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let room = usize::try_from(lim.rlim_cur.saturating_sub(reserve)).unwrap_or(usize::MAX);
    wanted.min(room.max(16))
}

/// Counts a request as in progress while alive and stamps the end of it.
struct Busy {
    busy: Arc<AtomicUsize>,
    last: Arc<AtomicU64>,
    base: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.last
            .store(self.base.elapsed().as_millis() as u64, Ordering::Release);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(
    sock: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    busy: Arc<AtomicUsize>,
    kill: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let base = Instant::now();
    // Millis since `base` at the end of the last request; the first request
    // is measured from the accept.
    let last = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicBool::new(false));
    let svc = {
        let (busy, last, served) = (busy.clone(), last.clone(), served.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            busy.fetch_add(1, Ordering::AcqRel);
            served.store(true, Ordering::Release);
            let guard = Busy {
                busy: busy.clone(),
                last: last.clone(),
                base,
            };
            let mut app = app.clone();
            async move {
                // Router is always ready; `call` without `poll_ready` is fine for it.
                let resp =
                    tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await;
                drop(guard);
                resp as Result<_, Infallible>
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper restarts this timer whenever it waits for a request head, idle
    // keep-alive time included; our loop below enforces the shorter bound
    // for the first request, so hyper gets the longer of the two.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout));
    let conn = builder.serve_connection(TokioIo::new(sock), svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let limit = if served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        };
        let idle_since = base + Duration::from_millis(last.load(Ordering::Acquire));
        let idle = busy.load(Ordering::Acquire) == 0;
        if idle && Instant::now() >= idle_since + limit {
            // Dropping the connection closes the socket.
            return;
        }
        // While a request runs, look again one period later.
        let wake = if idle {
            idle_since + limit
        } else {
            Instant::now() + limit
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            () = kill.notified() => return,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}
