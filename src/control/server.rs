//! The daemon's end of the control socket: peer check, one bounded request line per
//! connection, dispatch to the actor (or the log writer for `logs`).
//!
//! The daemon never waits on a client for good: reading the request and every write has a
//! deadline, and a follower (`logs -f`) holds no handle that keeps the daemon alive, so
//! shutdown ends it (the log writer stops, its broadcast closes, the follower returns).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::proto::{
    Envelope, ErrorCode, LogsRequest, Request, Response, MAX_REQUEST, PROTOCOL_VERSION,
};
use crate::logs::{tail, LogHandle, LogMsg};
use crate::supervisor::Msg;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one response (or one followed line) may take to be taken by the client: a
/// client that stops reading is dropped, not waited on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: UnixListener, actor: mpsc::UnboundedSender<Msg>, logs: LogHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let actor = actor.clone();
                let logs = logs.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, actor, logs).await;
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn write(stream: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write_line(stream, &line).await
}

/// `write_all` within [`WRITE_TIMEOUT`].
async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, line: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(line)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client did not read its answer in time",
        )),
    }
}

async fn handle(
    mut stream: UnixStream,
    actor: mpsc::UnboundedSender<Msg>,
    logs: LogHandle,
) -> std::io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
    if uid != 0 && uid != me {
        let resp = Response::error(ErrorCode::PermissionDenied,
            format!("uid {uid} may not control this daemon: run lmctl as root or as uid {me}, the daemon's owner"),
        );
        return write(&mut stream, &resp).await;
    }

    let mut buf = Vec::new();
    let read = {
        let mut reader = BufReader::new((&mut stream).take(MAX_REQUEST as u64 + 1));
        tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut buf)).await
    };
    let resp = match read {
        Err(_) => Some(Response::error(
            ErrorCode::Timeout,
            "no complete request line within 5s",
        )),
        Ok(Err(e)) => Some(Response::error(
            ErrorCode::BadRequest,
            format!("cannot read the request: {e}"),
        )),
        Ok(Ok(_)) if buf.len() > MAX_REQUEST => Some(Response::error(
            ErrorCode::RequestTooLarge,
            format!("a request may be at most {MAX_REQUEST} bytes"),
        )),
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => None,
    };
    if let Some(r) = resp {
        return write(&mut stream, &r).await;
    }
    let env: Envelope = match serde_json::from_slice(&buf) {
        Ok(e) => e,
        Err(e) => {
            // Tell an old or new client about a version mismatch before a parse error.
            let version = serde_json::from_slice::<serde_json::Value>(&buf)
                .ok()
                .and_then(|v| v.get("version")?.as_u64());
            let resp = match version {
                Some(v) if v != u64::from(PROTOCOL_VERSION) => Response::error(ErrorCode::VersionMismatch,
                    format!("client speaks protocol {v}, the daemon {PROTOCOL_VERSION}: use the lmctl that came with this daemon"),
                ),
                _ => Response::error(ErrorCode::BadRequest, format!("malformed request: {e}")),
            };
            return write(&mut stream, &resp).await;
        }
    };
    if env.version != PROTOCOL_VERSION {
        let resp = Response::error(ErrorCode::VersionMismatch,
            format!("client speaks protocol {}, the daemon {PROTOCOL_VERSION}: use the lmctl that came with this daemon", env.version),
        );
        return write(&mut stream, &resp).await;
    }
    match env.request {
        Request::Logs(req) => serve_logs(stream, req, actor, logs).await,
        req => {
            let (tx, rx) = oneshot::channel();
            let resp = if actor
                .send(Msg::Request {
                    req,
                    reply: tx,
                    uid: Some(uid),
                })
                .is_err()
            {
                Response::error(ErrorCode::ShuttingDown, "the daemon is shutting down")
            } else {
                rx.await.unwrap_or_else(|_| {
                    Response::error(ErrorCode::ShuttingDown, "the daemon is shutting down")
                })
            };
            write(&mut stream, &resp).await
        }
    }
}

async fn serve_logs(
    mut stream: UnixStream,
    req: LogsRequest,
    actor: mpsc::UnboundedSender<Msg>,
    logs: LogHandle,
) -> std::io::Result<()> {
    if let Some(svc) = &req.service {
        let (tx, rx) = oneshot::channel();
        let _ = actor.send(Msg::HasService(svc.clone(), tx));
        if !rx.await.unwrap_or(false) {
            return write(
                &mut stream,
                &Response::error(
                    ErrorCode::UnknownService,
                    format!("no service named `{svc}`"),
                ),
            )
            .await;
        }
    }
    let (tx, rx) = oneshot::channel();
    if logs
        .tx
        .send(LogMsg::Tail {
            req: req.clone(),
            reply: tx,
        })
        .is_err()
    {
        return write(
            &mut stream,
            &Response::error(ErrorCode::ShuttingDown, "the log writer has stopped"),
        )
        .await;
    }
    let Ok(reply) = rx.await else { return Ok(()) };
    for line in reply.lines {
        write(&mut stream, &Response::LogLine { line }).await?;
    }
    let Some(mut follow) = reply.follow else {
        return Ok(());
    };
    // A follower must not keep the log writer (and so the daemon) alive: once the daemon
    // drops its own handles at shutdown, the writer ends, `follow` reports `Closed` and this
    // connection ends with it.
    drop(logs);
    drop(actor);
    let (mut rd, mut wr) = stream.into_split();
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            // The client hung up (Ctrl-C): stop following.
            n = rd.read(&mut probe) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            got = follow.recv() => match got {
                Ok(f) => {
                    if tail::matches(&req, &f.service, f.kind) {
                        let mut line = serde_json::to_vec(&Response::LogLine { line: f.line.to_string() }).map_err(std::io::Error::other)?;
                        line.push(b'\n');
                        write_line(&mut wr, &line).await?;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let line = format!("[lmctl] {n} lines skipped: this follower fell behind");
                    let mut out = serde_json::to_vec(&Response::LogLine { line }).map_err(std::io::Error::other)?;
                    out.push(b'\n');
                    write_line(&mut wr, &out).await?;
                }
                Err(_) => return Ok(()),
            }
        }
    }
}
