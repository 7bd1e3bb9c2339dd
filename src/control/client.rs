//! The CLI's end of the control socket (blocking: lmctl does one thing at a time).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::{Envelope, Request, Response, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon is running on {socket} ({cause}); start one with `lmctl start`")]
    NotRunning {
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("permission denied on {socket}: the control socket is for its owner and root only")]
    Permission { socket: PathBuf },
    #[error("talking to the daemon on {socket} failed: {cause}")]
    Io {
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("the daemon on {socket} did not answer within {}s ({who}); it may be stopped (SIGSTOP) or stuck: check it with `ps -o pid,stat,wchan -p <pid>`, or restart it", timeout.as_secs())]
    NotAnswering {
        socket: PathBuf,
        timeout: std::time::Duration,
        who: String,
    },
    #[error(
        "the daemon sent something unreadable ({0}); is lmctl the same version as the daemon?"
    )]
    Protocol(String),
}

pub fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Permission {
            socket: socket.to_path_buf(),
        },
        _ => ClientError::NotRunning {
            socket: socket.to_path_buf(),
            cause: e,
        },
    })
}

/// How long one answer may take unless the caller says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Who is on the other end of the socket, for an error that says it does not answer.
fn describe_peer(conn: &UnixStream) -> String {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let Ok(cred) = getsockopt(conn, PeerCredentials) else {
        return "pid unknown".into();
    };
    let pid = cred.pid();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = &t[t.rfind(')')? + 1..];
            rest.split_whitespace().next().map(str::to_string)
        });
    match state.as_deref() {
        Some("T") => format!(
            "pid {pid}, process state T: stopped by a signal; `kill -CONT {pid}` resumes it"
        ),
        Some("t") => format!("pid {pid}, process state t: stopped by a debugger"),
        Some("D") => format!("pid {pid}, process state D: blocked in the kernel (disk or mount)"),
        Some(s) => format!("pid {pid}, process state {s}"),
        None => format!("pid {pid}"),
    }
}

/// Sends one request and calls `each` for every response line until the daemon closes
/// the connection or `each` returns false. Each answer line must come within `deadline`
/// (None: wait as long as it takes, for `logs -f`).
pub fn stream_with(
    socket: &Path,
    request: Request,
    deadline: Option<Duration>,
    mut each: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    let mut bad = None;
    stream_lines_with(socket, request, deadline, |l| {
        match serde_json::from_str(&l) {
            Ok(resp) => each(resp),
            Err(e) => {
                bad = Some(ClientError::Protocol(e.to_string()));
                false
            }
        }
    })?;
    bad.map_or(Ok(()), Err)
}

/// One request, and its first answer line as the daemon wrote it (JSON, not parsed): for
/// answers that are printed rather than read (`status --json` at a thousand services).
pub fn request_line(socket: &Path, request: Request) -> Result<String, ClientError> {
    let mut out = None;
    stream_lines_with(socket, request, Some(deadline()), |l| {
        out = Some(l);
        false
    })?;
    out.ok_or_else(|| {
        ClientError::Protocol("the daemon closed the connection without answering".into())
    })
}

/// [`stream_with`] on raw answer lines.
fn stream_lines_with(
    socket: &Path,
    request: Request,
    deadline: Option<Duration>,
    mut each: impl FnMut(String) -> bool,
) -> Result<(), ClientError> {
    let conn = connect(socket)?;
    let _ = conn.set_write_timeout(deadline);
    let _ = conn.set_read_timeout(deadline);
    let who = || describe_peer(&conn);
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            ClientError::NotAnswering {
                socket: socket.to_path_buf(),
                timeout: deadline.unwrap_or_default(),
                who: who(),
            }
        } else {
            ClientError::Io {
                socket: socket.to_path_buf(),
                cause: e,
            }
        }
    };
    let mut line = serde_json::to_vec(&Envelope {
        version: PROTOCOL_VERSION,
        request,
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    // A daemon that refuses us answers and closes before reading: read its answer anyway.
    let write_err = (&conn).write_all(&line).err();
    // Big enough for a thousand services' status in a few reads.
    let reader = BufReader::with_capacity(64 * 1024, &conn);
    let mut answered = false;
    for l in reader.lines() {
        let l = match l {
            Ok(l) => l,
            Err(e) => return Err(io(write_err.unwrap_or(e))),
        };
        answered = true;
        if !each(l) {
            break;
        }
    }
    match write_err {
        Some(e) if !answered => Err(io(e)),
        _ => Ok(()),
    }
}

/// [`stream_with`] without a deadline (a follower waits for lines as long as it takes).
pub fn stream(
    socket: &Path,
    request: Request,
    each: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    stream_with(socket, request, None, each)
}

/// The deadline for one answer: `LMCTL_DEADLINE_MS` when set (scripts that want to fail
/// fast), else [`DEFAULT_DEADLINE`].
pub fn deadline() -> Duration {
    std::env::var("LMCTL_DEADLINE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_DEADLINE)
}

/// One request, one response, within [`deadline`].
pub fn request(socket: &Path, request: Request) -> Result<Response, ClientError> {
    request_within(socket, request, deadline())
}

/// One request, one response, within `deadline`.
pub fn request_within(
    socket: &Path,
    request: Request,
    deadline: Duration,
) -> Result<Response, ClientError> {
    let mut out = None;
    stream_with(socket, request, Some(deadline), |r| {
        out = Some(r);
        false
    })?;
    out.ok_or_else(|| {
        ClientError::Protocol("the daemon closed the connection without answering".into())
    })
}
