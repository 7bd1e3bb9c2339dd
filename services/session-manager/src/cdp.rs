//! A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe`.
//!
//! Why a pipe and not a port: a DevTools port on 127.0.0.1 is unauthenticated
//! and open to every local user (issue 17: `nobody` attached to a customer's
//! page and read root-only files through `file://`). With the pipe, Chromium
//! reads commands from its fd 3 and writes replies and events to its fd 4;
//! only the process holding the other ends (us) can talk to it. Messages are
//! JSON texts, each terminated by a NUL byte.
//!
//! Why our own client instead of chromiumoxide: we need a handful of commands
//! and must own the browser process ourselves (process group, env marker,
//! kill ladder, crashpad escapees). chromiumoxide wants to launch and own the
//! process and pulls in a large generated protocol crate.
//!
//! One task writes, one task reads; replies are matched by `id` through a
//! shared map. Events are ignored: the page is polled with `Runtime.evaluate`,
//! which also detects a hung renderer.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};

/// Upper bound on one command's round trip.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message we accept from the browser. We never ask for screenshots
/// or bodies, so anything this big is a broken peer; it closes the connection
/// rather than growing a buffer without limit.
const MAX_MESSAGE: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    #[error("failed to set up the DevTools pipe: {0}")]
    Pipe(std::io::Error),
    #[error("DevTools connection closed")]
    Closed,
    #[error("DevTools command {method} timed out")]
    Timeout { method: String },
    #[error("DevTools command {method} failed: {message}")]
    Remote { method: String, message: String },
}

type Reply = oneshot::Sender<Result<Value, String>>;
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

/// A DevTools connection to one browser.
pub struct Cdp {
    tx: mpsc::UnboundedSender<(u64, String, Reply)>,
    next_id: AtomicU64,
    closed: watch::Receiver<bool>,
}

impl Cdp {
    /// Takes our ends of the two pipes: `to_browser` is read by Chromium as
    /// its fd 3, `from_browser` is written by Chromium as its fd 4.
    pub fn from_pipes(to_browser: OwnedFd, from_browser: OwnedFd) -> Result<Self, CdpError> {
        let mut writer = pipe::Sender::from_owned_fd(to_browser).map_err(CdpError::Pipe)?;
        let mut reader = pipe::Receiver::from_owned_fd(from_browser).map_err(CdpError::Pipe)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, String, Reply)>();
        let (closed_tx, closed) = watch::channel(false);
        let closed_tx = Arc::new(closed_tx);
        let pending: Pending = Arc::default();

        let (p, c) = (pending.clone(), closed_tx.clone());
        tokio::spawn(async move {
            while let Some((id, text, reply)) = rx.recv().await {
                if *c.borrow() {
                    let _ = reply.send(Err("connection closed".into()));
                    continue;
                }
                lock(&p).insert(id, reply);
                let mut bytes = text.into_bytes();
                bytes.push(0);
                if writer.write_all(&bytes).await.is_err() {
                    // Dropping the reply senders fails every waiting caller.
                    lock(&p).clear();
                    let _ = c.send(true);
                    break;
                }
            }
        });

        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
            let mut chunk = vec![0u8; 64 << 10];
            'read: loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    dispatch(&pending, &buf[..end]);
                    buf.drain(..=end);
                }
                if buf.len() > MAX_MESSAGE {
                    tracing::error!("DevTools message over {MAX_MESSAGE} bytes; closing");
                    break 'read;
                }
            }
            lock(&pending).clear();
            let _ = closed_tx.send(true);
        });
        Ok(Cdp {
            tx,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    /// Sends one command (to a page when `session` is given) and waits for its result.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, CdpError> {
        self.call_within(method, params, session, CALL_TIMEOUT)
            .await
    }

    /// `call` with its own bound on the round trip.
    pub async fn call_within(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        if *self.closed.borrow() {
            return Err(CdpError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = Value::String(s.to_owned());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((id, msg.to_string(), reply))
            .map_err(|_| CdpError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(CdpError::Timeout {
                method: method.to_owned(),
            }),
            Ok(Err(_)) => Err(CdpError::Closed),
            Ok(Ok(Err(message))) => Err(CdpError::Remote {
                method: method.to_owned(),
                message,
            }),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    /// Resolves once the pipe is gone (browser exited or crashed).
    pub async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|v| *v).await;
    }
}

/// The map stays usable after a panic elsewhere: it holds only senders.
fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, Reply>> {
    p.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands one reply to its caller; events (no `id`) and junk are skipped.
fn dispatch(pending: &Pending, msg: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(msg) else {
        return;
    };
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        return;
    };
    let Some(reply) = lock(pending).remove(&id) else {
        return;
    };
    let r = match v.get("error") {
        Some(e) => Err(e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned()),
        None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
    };
    let _ = reply.send(r);
}
