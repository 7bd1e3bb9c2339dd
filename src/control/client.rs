//! The CLI's end of the control socket (blocking: lmctl does one thing at a time).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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

/// Sends one request and calls `each` for every response line until the daemon closes
/// the connection or `each` returns false.
pub fn stream(
    socket: &Path,
    request: Request,
    mut each: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    let mut conn = connect(socket)?;
    let io = |e| ClientError::Io {
        socket: socket.to_path_buf(),
        cause: e,
    };
    let mut line = serde_json::to_vec(&Envelope {
        version: PROTOCOL_VERSION,
        request,
    })
    .map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    // A daemon that refuses us answers and closes before reading: read its answer anyway.
    let write_err = conn.write_all(&line).err();
    let reader = BufReader::new(conn);
    let mut answered = false;
    for l in reader.lines() {
        let l = match l {
            Ok(l) => l,
            Err(e) => return Err(io(write_err.unwrap_or(e))),
        };
        answered = true;
        let resp: Response =
            serde_json::from_str(&l).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !each(resp) {
            break;
        }
    }
    match write_err {
        Some(e) if !answered => Err(io(e)),
        _ => Ok(()),
    }
}

/// One request, one response.
pub fn request(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let mut out = None;
    stream(socket, request, |r| {
        out = Some(r);
        false
    })?;
    out.ok_or_else(|| {
        ClientError::Protocol("the daemon closed the connection without answering".into())
    })
}
