//! Child output and daemon events → per-service files and the merged `supervisor.log`.
//!
//! Pumps (one per child pipe) frame lines and timestamp them; one writer thread owns every
//! log file, rotates them and feeds followers. A full queue delays a pump briefly, then
//! drops and counts (a slow disk must not stall children for long).

pub mod append;
pub mod pump;
pub mod sink;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::mpsc;

use tokio::sync::{broadcast, oneshot};

use crate::config::LogSettings;
use crate::control::proto::LogsRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// The name daemon-wide events are filed under in the merged log.
pub const DAEMON: &str = "supervisord";

/// The event history, one JSON object per line, in the state dir (next to `logs/`).
pub const EVENTS_FILE: &str = "events.jsonl";

/// One formatted line as followers receive it.
#[derive(Debug, Clone)]
pub struct Followed {
    pub service: Arc<str>,
    /// "out", "err" or "event".
    pub kind: &'static str,
    pub line: Arc<str>,
}

/// The framed lines of one pipe read, in two allocations whatever their number: the bodies
/// back to back, each followed by `\n` (valid UTF-8: invalid input was replaced lossily), and
/// where each line ends with its "continued" flag (a piece of a split overlong line).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lines {
    text: String,
    /// (offset just past the line's `\n` in `text`, continued).
    ends: Vec<(usize, bool)>,
}

impl Lines {
    pub fn with_capacity(bytes: usize) -> Lines {
        Lines {
            text: String::with_capacity(bytes),
            // ~100-byte lines are the common case; more only costs a regrowth.
            ends: Vec::with_capacity(bytes / 64 + 1),
        }
    }

    /// Lines already in place: `text` holds each body followed by `\n`, `ends` where each
    /// `\n` ends (as in `ends`).
    pub fn from_parts(text: String, ends: Vec<(usize, bool)>) -> Lines {
        debug_assert!(ends.last().is_none_or(|&(end, _)| end == text.len()));
        Lines { text, ends }
    }

    /// Appends one line body (no `\n`); invalid UTF-8 becomes U+FFFD as before, per line.
    pub fn push(&mut self, line: &[u8], continued: bool) {
        match std::str::from_utf8(line) {
            Ok(s) => self.text.push_str(s),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(line)),
        }
        self.text.push('\n');
        self.ends.push((self.text.len(), continued));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of the bodies, a `\n` counted per line.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// (body without `\n`, continued) per line.
    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(end, continued)| {
            let line = &self.text[start..end - 1];
            start = end;
            (line, continued)
        })
    }
}

pub enum LogMsg {
    /// The framed lines of one pipe read, with the timestamp taken at the read.
    Lines {
        service: Arc<str>,
        stream: Stream,
        ts: String,
        lines: Lines,
        /// Frees queue room when the writer drops the message.
        _room: tokio::sync::OwnedSemaphorePermit,
    },
    /// Lines a pump could not queue in time.
    Dropped {
        service: Arc<str>,
        stream: Stream,
        count: u64,
    },
    /// A daemon event; `service` None for daemon-wide ones.
    Event {
        service: Option<String>,
        ts: String,
        text: String,
    },
    /// Last lines, plus a follower subscribed at the same instant (no gap, no duplicate).
    Tail {
        req: LogsRequest,
        reply: oneshot::Sender<TailReply>,
    },
    /// One JSON line for `<state_dir>/events.jsonl` (the event history).
    Record(String),
    /// Flush everything now (tests, shutdown).
    Flush(oneshot::Sender<()>),
}

/// Counters the writer keeps for `/metrics`: lines and bytes written and lines dropped, per
/// service and stream. Updated once per batch, read by a scrape; the lock is never held
/// across I/O.
#[derive(Default)]
pub struct LogStats {
    inner: std::sync::Mutex<std::collections::BTreeMap<(Arc<str>, &'static str), StreamCount>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCount {
    pub lines: u64,
    pub bytes: u64,
    pub dropped: u64,
}

impl LogStats {
    pub fn add(&self, service: &Arc<str>, stream: &'static str, f: impl FnOnce(&mut StreamCount)) {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match map.get_mut(&(service.clone(), stream)) {
            Some(c) => f(c),
            None => {
                let mut c = StreamCount::default();
                f(&mut c);
                map.insert((service.clone(), stream), c);
            }
        }
    }

    /// (service, stream, counts), sorted.
    pub fn snapshot(&self) -> Vec<(String, &'static str, StreamCount)> {
        let map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.iter()
            .map(|((s, k), c)| (s.to_string(), *k, *c))
            .collect()
    }
}

pub struct TailReply {
    pub lines: Vec<String>,
    pub follow: Option<broadcast::Receiver<Followed>>,
}

/// Cheap to clone; what pumps and the actor hold.
#[derive(Clone)]
pub struct LogHandle {
    /// Unbounded, so daemon events and control requests are never dropped or blocked; child
    /// lines are bounded by `room` instead.
    pub tx: mpsc::Sender<LogMsg>,
    /// Permits for queued batches of child lines (each up to 64 KiB): 1024 bounds the queue
    /// near 64 MiB. A batch holds its permit until the writer has taken it (formatted into
    /// its buffer of at most 384 KiB, written at the latest when the flood ends).
    pub room: Arc<tokio::sync::Semaphore>,
    pub timestamp: Arc<str>,
    /// `timestamp` parsed once (None if it does not parse: then it is parsed per call, as
    /// before): re-parsing the format was a good part of the cost of a pipe read.
    timestamp_items: Option<Arc<[chrono::format::Item<'static>]>>,
    pub max_line: usize,
    pub stats: Arc<LogStats>,
    /// The writer thread, unparked by a pump whose read came back short: a flood it holds
    /// (`sink::HOLD`) has then ended, and its last lines go out at once.
    pub writer: std::thread::Thread,
}

impl LogHandle {
    /// Starts the writer thread for `dir` (created if missing).
    pub fn start(
        dir: PathBuf,
        settings: &LogSettings,
    ) -> std::io::Result<(LogHandle, std::thread::JoinHandle<()>)> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let mut writer = sink::Writer::new(dir, settings.clone())?.with_stats(stats.clone());
        let join = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            LogHandle {
                tx,
                room: Arc::new(tokio::sync::Semaphore::new(1024)),
                timestamp: settings.timestamp.clone().into(),
                timestamp_items: chrono::format::StrftimeItems::new(&settings.timestamp)
                    .parse_to_owned()
                    .ok()
                    .map(Arc::from),
                max_line: settings.max_line,
                stats,
                writer: join.thread().clone(),
            },
            join,
        ))
    }

    pub fn now(&self) -> String {
        let now = chrono::Local::now();
        match &self.timestamp_items {
            Some(items) => now.format_with_items(items.iter()).to_string(),
            None => now.format(&self.timestamp).to_string(),
        }
    }

    /// Records a daemon event; never blocks the caller (the actor).
    pub fn event(&self, service: Option<&str>, text: impl Into<String>) {
        let _ = self.tx.send(LogMsg::Event {
            service: service.map(str::to_string),
            ts: self.now(),
            text: text.into(),
        });
    }

    /// Appends one line to the event history; never blocks the caller.
    pub fn record(&self, json: String) {
        let _ = self.tx.send(LogMsg::Record(json));
    }

    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(LogMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Rotates `path` like the other logs (`max_size`, `keep`) when it is bigger than
/// `max_size`: `path.1` … `path.keep`, the oldest dropped.
pub fn rotate_if_big(path: &Path, max_size: u64, keep: u32) {
    let big = std::fs::metadata(path).is_ok_and(|m| m.len() > max_size);
    if !big {
        return;
    }
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    for i in (1..keep).rev() {
        let from = crate::logs::sink::rotated(path, i);
        if from.exists() {
            let _ = std::fs::rename(&from, crate::logs::sink::rotated(path, i + 1));
        }
    }
    let _ = std::fs::rename(path, crate::logs::sink::rotated(path, 1));
}

/// The daemon's own stdout/stderr file (`daemon.out`, opened by `lmctl start` and inherited
/// as fds 1 and 2) rotated while the daemon runs: when fd 2 is that file and it has grown
/// past `max_size`, it is rotated and fds 1 and 2 move to a fresh file. Anything else on
/// fd 2 (a terminal, the journal) is left alone. Returns true when it rotated.
pub fn rotate_own_output(expected: &Path, max_size: u64, keep: u32) -> bool {
    use std::os::fd::AsRawFd;
    // One fstat every check; the path comparison only once fd 2 is a big file.
    let big = nix::sys::stat::fstat(2)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size as u64 > max_size);
    if !big {
        return false;
    }
    let Ok(target) = std::fs::read_link("/proc/self/fd/2") else {
        return false;
    };
    let same = std::fs::canonicalize(expected).is_ok_and(|e| e == target);
    if !same || !std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() > max_size) {
        return false;
    }
    rotate_if_big(&target, max_size, keep);
    let Ok(fresh) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&target)
    else {
        return false;
    };
    // SAFETY: dup2 onto our own standard descriptors; `fresh` stays valid for the call.
    unsafe {
        libc::dup2(fresh.as_raw_fd(), 1);
        libc::dup2(fresh.as_raw_fd(), 2);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format parsed once gives what parsing it per call gave.
    #[test]
    fn preparsed_timestamps_match_the_format() {
        use chrono::TimeZone;
        let t = chrono::Local
            .timestamp_opt(1_700_000_000, 123_456_789)
            .single()
            .expect("time");
        let default = crate::config::DEFAULT_TIMESTAMP;
        for fmt in [default, "%Y-%m-%dT%H:%M:%S%.6f%:z", "%s", "[%b %e %T]"] {
            let items = chrono::format::StrftimeItems::new(fmt)
                .parse_to_owned()
                .expect("parses");
            let once = t.format_with_items(items.iter()).to_string();
            assert_eq!(once, t.format(fmt).to_string(), "{fmt}");
        }
    }

    #[test]
    fn lines_keep_bodies_flags_and_lossy_utf8() {
        let mut l = Lines::with_capacity(4);
        l.push(b"plain", false);
        l.push("caf\u{e9}".as_bytes(), true);
        l.push(b"bad \xc3 end", false);
        l.push(b"", false);
        let got: Vec<(&str, bool)> = l.iter().collect();
        assert_eq!(
            got,
            vec![
                ("plain", false),
                ("caf\u{e9}", true),
                ("bad \u{fffd} end", false),
                ("", false)
            ]
        );
        assert_eq!(l.len(), 4);
        assert_eq!(l.bytes(), 6 + 6 + 12 + 1);
    }
}
