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

use super::proto::{Envelope, LogsRequest, Request, Response, MAX_REQUEST, PROTOCOL_VERSION};
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
        let resp = Response::error(
            "PERMISSION_DENIED",
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
            "TIMEOUT",
            "no complete request line within 5s",
        )),
        Ok(Err(e)) => Some(Response::error(
            "BAD_REQUEST",
            format!("cannot read the request: {e}"),
        )),
        Ok(Ok(_)) if buf.len() > MAX_REQUEST => Some(Response::error(
            "REQUEST_TOO_LARGE",
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
                Some(v) if v != u64::from(PROTOCOL_VERSION) => Response::error(
                    "VERSION_MISMATCH",
                    format!("client speaks protocol {v}, the daemon {PROTOCOL_VERSION}: use the lmctl that came with this daemon"),
                ),
                _ => Response::error("BAD_REQUEST", format!("malformed request: {e}")),
            };
            return write(&mut stream, &resp).await;
        }
    };
    if env.version != PROTOCOL_VERSION {
        let resp = Response::error(
            "VERSION_MISMATCH",
            format!("client speaks protocol {}, the daemon {PROTOCOL_VERSION}: use the lmctl that came with this daemon", env.version),
        );
        return write(&mut stream, &resp).await;
    }
    match env.request {
        Request::Logs(req) => serve_logs(stream, req, actor, logs).await,
        Request::Reload => {
            let resp = reload(&actor).await;
            write(&mut stream, &resp).await
        }
        req => {
            let (tx, rx) = oneshot::channel();
            let resp = if actor.send(Msg::Request { req, reply: tx }).is_err() {
                Response::error("SHUTTING_DOWN", "the daemon is shutting down")
            } else {
                rx.await.unwrap_or_else(|_| {
                    Response::error("SHUTTING_DOWN", "the daemon is shutting down")
                })
            };
            write(&mut stream, &resp).await
        }
    }
}

/// One reload at a time: two loads racing could hand the actor an older file last.
static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `lmctl reload`: the file is read and validated here, on a blocking thread, and handed to
/// the actor whole. A file that cannot load (too big, too deep, a FIFO as env file...)
/// never reaches the actor, and a big one does not stall it.
async fn reload(actor: &mpsc::UnboundedSender<Msg>) -> Response {
    let _one = RELOADING.lock().await;
    let config = match load_off_actor(actor).await {
        Err(errors) => return Response::ConfigErrors { errors },
        Ok(None) => return ask(actor, Request::Reload).await,
        Ok(Some(c)) => c,
    };
    let warnings = config.warnings.clone();
    let (tx, rx) = oneshot::channel();
    let msg = Msg::ReloadWith {
        config: Box::new(config),
        reply: tx,
    };
    if actor.send(msg).is_err() {
        return Response::error("SHUTTING_DOWN", "the daemon is shutting down");
    }
    let mut resp = rx
        .await
        .unwrap_or_else(|_| Response::error("SHUTTING_DOWN", "the daemon is shutting down"));
    // A command that cannot run does not stop a reload, but the operator hears of it.
    if let Response::Reload { diff } = &mut resp {
        diff.warnings.extend(
            warnings
                .iter()
                .map(|w| format!("{w} (its start will fail)")),
        );
    }
    resp
}

/// How long a reload's validation may take in all (reads are bounded one by one too).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

async fn ask(actor: &mpsc::UnboundedSender<Msg>, req: Request) -> Response {
    let (tx, rx) = oneshot::channel();
    if actor.send(Msg::Request { req, reply: tx }).is_err() {
        return Response::error("SHUTTING_DOWN", "the daemon is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| Response::error("SHUTTING_DOWN", "the daemon is shutting down"))
}

/// Loads the daemon's config file on a blocking thread: the config, or every error when it
/// does not validate; `Ok(None)` when the actor should read it itself.
async fn load_off_actor(
    actor: &mpsc::UnboundedSender<Msg>,
) -> Result<Option<crate::config::Config>, Vec<crate::config::Diagnostic>> {
    let Response::Pong { config, .. } = ask(actor, Request::Ping).await else {
        // Shutting down or similar: let the actor give its own answer.
        return Ok(None);
    };
    let path = std::path::PathBuf::from(config);
    if !path.exists() {
        // A path that does not survive being text (not UTF-8): the actor reads its own.
        return Ok(None);
    }
    let load = tokio::task::spawn_blocking({
        let path = path.clone();
        move || crate::config::load(&path)
    });
    match tokio::time::timeout(LOAD_TIMEOUT, load).await {
        Ok(Ok(Ok(c))) => Ok(Some(c)),
        Ok(Ok(Err(errors))) => Err(errors),
        Ok(Err(e)) => Err(vec![crate::config::Diagnostic::whole_file(
            &path,
            format!("validating the config failed ({e}); nothing was changed"),
        )]),
        Err(_) => Err(vec![crate::config::Diagnostic::whole_file(
            &path,
            format!(
                "validating the config took longer than {}s; nothing was changed",
                LOAD_TIMEOUT.as_secs()
            ),
        )]),
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
                &Response::error("UNKNOWN_SERVICE", format!("no service named `{svc}`")),
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
            &Response::error("SHUTTING_DOWN", "the log writer has stopped"),
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
