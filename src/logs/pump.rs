//! Reads one child pipe: frames lines, splits overlong ones, keeps invalid UTF-8 lossily,
//! flushes a partial last line at EOF.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::error::SendTimeoutError;

use super::{LogHandle, LogMsg, Stream};

/// How long a pump waits for queue room before it drops a line. Long enough to ride out a
/// burst; short enough that a stuck disk cannot freeze a child writing to its pipe.
const QUEUE_WAIT: Duration = Duration::from_millis(250);

/// Called with the number of lines dropped, when some were.
pub type DropReport = Box<dyn Fn(u64) + Send + Sync>;

pub async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    service: Arc<str>,
    stream: Stream,
    logs: LogHandle,
    on_drop: DropReport,
) {
    let max_line = logs.max_line.max(256);
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut continued = false;
    let mut out = Sender {
        logs: &logs,
        service: &service,
        stream,
        dropped: 0,
        on_drop: &on_drop,
    };
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let line = buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&buf[start..end]);
            // A line longer than max_line is split even when its newline already arrived.
            let mut piece = line;
            while piece.len() > max_line {
                let cut = utf8_cut(piece, max_line);
                out.send(&piece[..cut], continued).await;
                continued = true;
                piece = &piece[cut..];
            }
            out.send(piece, continued).await;
            continued = false;
            start = end + 1;
        }
        buf.drain(..start);
        while buf.len() >= max_line {
            let cut = utf8_cut(&buf, max_line);
            out.send(&buf[..cut], continued).await;
            continued = true;
            buf.drain(..cut);
        }
    }
    if !buf.is_empty() {
        out.send(&buf, continued).await;
    }
    out.report_drops().await;
}

/// The largest cut ≤ `max` that does not split a UTF-8 sequence (backs off 3 bytes at most).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let max = max.min(bytes.len());
    (max.saturating_sub(3).max(1)..=max)
        .rev()
        .find(|&cut| cut == bytes.len() || (bytes[cut] & 0xC0) != 0x80)
        .unwrap_or(max)
}

struct Sender<'a> {
    logs: &'a LogHandle,
    service: &'a Arc<str>,
    stream: Stream,
    dropped: u64,
    on_drop: &'a DropReport,
}

impl Sender<'_> {
    async fn send(&mut self, bytes: &[u8], continued: bool) {
        if self.dropped > 0 {
            self.report_drops().await;
        }
        let msg = LogMsg::Line {
            service: self.service.clone(),
            stream: self.stream,
            ts: self.logs.now(),
            text: String::from_utf8_lossy(bytes).into_owned(),
            continued,
        };
        match self.logs.tx.send_timeout(msg, QUEUE_WAIT).await {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => self.dropped += 1,
            Err(SendTimeoutError::Closed(_)) => {}
        }
    }

    async fn report_drops(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let msg = LogMsg::Dropped {
            service: self.service.clone(),
            stream: self.stream,
            count: self.dropped,
        };
        if self.logs.tx.try_send(msg).is_ok() {
            (self.on_drop)(self.dropped);
            self.dropped = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_char_boundaries() {
        let s = "aé".repeat(10);
        let b = s.as_bytes();
        for max in 1..b.len() {
            let cut = utf8_cut(b, max);
            assert!(cut <= max && cut > 0);
            if cut < b.len() {
                assert!(
                    std::str::from_utf8(&b[..cut]).is_ok() || cut == max,
                    "max {max} cut {cut}"
                );
            }
        }
    }
}
