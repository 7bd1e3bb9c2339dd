//! A minimal Chrome DevTools Protocol client.
//!
//! Why our own ~150 lines over tokio-tungstenite instead of chromiumoxide: we
//! need five commands (createTarget, attachToTarget, navigate, evaluate,
//! Browser.close), and we must own the browser process ourselves (process
//! group, env marker, kill ladder, crashpad escapees). chromiumoxide wants to
//! launch and own the process, pulls in a large generated protocol crate, and
//! would hide the child we need to reap and kill.
//!
//! One task owns the websocket; callers send a request with a oneshot for the
//! reply and the task matches replies by `id`. Events are ignored: the page is
//! polled with `Runtime.evaluate`, which also detects a hung renderer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

/// Upper bound on one command's round trip.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CdpError {
    #[error("failed to connect to DevTools at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("DevTools connection closed")]
    Closed,
    #[error("DevTools command {method} timed out")]
    Timeout { method: String },
    #[error("DevTools command {method} failed: {message}")]
    Remote { method: String, message: String },
}

struct Request {
    id: u64,
    text: String,
    reply: oneshot::Sender<Result<Value, String>>,
}

/// A connection to the browser's DevTools endpoint.
pub struct Cdp {
    tx: mpsc::UnboundedSender<Request>,
    next_id: AtomicU64,
    closed: watch::Receiver<bool>,
}

impl Cdp {
    /// Connects to `ws://127.0.0.1:PORT/devtools/browser/...`.
    pub async fn connect(url: &str) -> Result<Self, CdpError> {
        let (ws, _) =
            tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| CdpError::Connect {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let (closed_tx, closed) = watch::channel(false);
        tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut pending: HashMap<u64, oneshot::Sender<Result<Value, String>>> = HashMap::new();
            loop {
                tokio::select! {
                    req = rx.recv() => {
                        let Some(req) = req else { break };
                        if sink.send(Message::text(req.text)).await.is_err() {
                            let _ = req.reply.send(Err("connection closed".into()));
                            break;
                        }
                        pending.insert(req.id, req.reply);
                    }
                    msg = stream.next() => {
                        let text = match msg {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                            Some(Ok(_)) => continue,
                        };
                        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                        let Some(id) = v.get("id").and_then(Value::as_u64) else { continue };
                        if let Some(reply) = pending.remove(&id) {
                            let r = match v.get("error") {
                                Some(e) => Err(e.get("message").and_then(Value::as_str).unwrap_or("unknown error").to_owned()),
                                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                            };
                            let _ = reply.send(r);
                        }
                    }
                }
            }
            // Dropping `pending` fails every waiting caller with Closed.
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = Value::String(s.to_owned());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                id,
                text: msg.to_string(),
                reply,
            })
            .map_err(|_| CdpError::Closed)?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
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

    /// Resolves once the websocket is gone (browser exited or crashed).
    pub async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|v| *v).await;
    }
}
