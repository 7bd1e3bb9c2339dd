//! The writer thread: owns every log file, appends, rotates by size, feeds followers.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::{tail, Followed, LogMsg, LogStats, TailReply, DAEMON};
use crate::config::LogSettings;

/// One appended file with its size, rotated past `max_size`.
struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
}

impl LogFile {
    fn open(path: PathBuf) -> std::io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path,
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
        })
    }

    fn write_line(&mut self, line: &str, settings: &LogSettings) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        let rotation = if self.size > 0 && self.size + len > settings.max_size {
            self.rotate(settings.keep)
        } else {
            Ok(())
        };
        // A failed rotation is reported, but the line is still written.
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        rotation
    }

    /// `x.log` → `x.log.1` → … → `x.log.KEEP`; the oldest falls off. Whole lines only:
    /// rotation happens between two writes.
    fn rotate(&mut self, keep: u32) -> std::io::Result<()> {
        let _ = self.out.flush();
        // Renames may fail (someone deleted or moved the file, a full disk): rotation then
        // does what it can, and the file is reopened whatever happened, so writing goes on.
        let shifted = if keep == 0 {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)
                .map(drop)
        } else {
            let mut res = Ok(());
            for i in (1..keep).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    res = res.and(std::fs::rename(&from, rotated(&self.path, i + 1)));
                }
            }
            match std::fs::rename(&self.path, rotated(&self.path, 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => res.and(Err(e)),
                _ => res,
            }
        };
        *self = LogFile::open(self.path.clone())?;
        shifted
    }
}

pub fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

pub struct Writer {
    dir: PathBuf,
    settings: LogSettings,
    merged: LogFile,
    files: HashMap<(Arc<str>, &'static str), LogFile>,
    followers: broadcast::Sender<Followed>,
    /// Write errors are counted, not fatal: the daemon must outlive a full disk.
    errors: u64,
    /// Reused to format each child line.
    line_buf: String,
    /// `<state_dir>/events.jsonl`, rotated like the logs; opened on the first record.
    events_path: PathBuf,
    events: Option<LogFile>,
    stats: Arc<LogStats>,
}

/// The event history file for a log dir (`<state_dir>/logs` → `<state_dir>/events.jsonl`).
pub fn events_path(log_dir: &Path) -> PathBuf {
    log_dir
        .parent()
        .unwrap_or(log_dir)
        .join(crate::logs::EVENTS_FILE)
}

impl Writer {
    pub fn new(dir: PathBuf, mut settings: LogSettings) -> std::io::Result<Writer> {
        // `check` enforces these ranges; a LogSettings made some other way must not turn a
        // rotation into a loop over billions of file names either.
        let keep = crate::config::schema::LOG_KEEP.max as u32;
        settings.keep = settings.keep.min(keep);
        let min_size = crate::config::schema::LOG_MAX_SIZE.min as u64;
        settings.max_size = settings.max_size.max(min_size);
        let merged = LogFile::open(dir.join("supervisor.log"))?;
        let (followers, _) = broadcast::channel(4096);
        Ok(Writer {
            settings,
            merged,
            files: HashMap::new(),
            followers,
            errors: 0,
            line_buf: String::with_capacity(256),
            events_path: events_path(&dir),
            events: None,
            stats: Arc::new(LogStats::default()),
            dir,
        })
    }

    pub fn with_stats(mut self, stats: Arc<LogStats>) -> Writer {
        self.stats = stats;
        self
    }

    pub fn run(&mut self, mut rx: mpsc::UnboundedReceiver<LogMsg>) {
        while let Some(msg) = rx.blocking_recv() {
            self.handle(msg);
            // Drain what is queued, then flush once: few syscalls under load, fresh files when idle.
            let mut batch = 0;
            while batch < 4096 {
                match rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                }
                batch += 1;
            }
            self.flush();
        }
        self.flush();
    }

    fn flush(&mut self) {
        if self.merged.out.flush().is_err() {
            self.errors += 1;
        }
        for f in self.files.values_mut() {
            if f.out.flush().is_err() {
                self.errors += 1;
            }
        }
        if let Some(e) = self.events.as_mut() {
            if e.out.flush().is_err() {
                self.errors += 1;
            }
        }
    }

    fn handle(&mut self, msg: LogMsg) {
        match msg {
            LogMsg::Lines {
                service,
                stream,
                ts,
                lines,
                _room,
            } => {
                let kind = stream.as_str();
                let (n, bytes) = lines.iter().fold((0u64, 0u64), |(n, b), (t, _)| {
                    (n + 1, b + t.len() as u64 + 1)
                });
                self.stats.add(&service, kind, |c| {
                    c.lines += n;
                    c.bytes += bytes;
                });
                // One buffer for every line: no allocation per line on the hot path.
                let mut buf = std::mem::take(&mut self.line_buf);
                for (text, continued) in lines {
                    buf.clear();
                    for piece in [ts.as_str(), " ", &service, "|", kind] {
                        buf.push_str(piece);
                    }
                    if continued {
                        buf.push('+');
                    }
                    buf.push(' ');
                    buf.push_str(&text);
                    self.write(Some(&service), kind, &buf);
                }
                self.line_buf = buf;
            }
            LogMsg::Dropped {
                service,
                stream,
                count,
            } => {
                self.stats
                    .add(&service, stream.as_str(), |c| c.dropped += count);
                let ts = chrono::Local::now().format(&self.settings.timestamp);
                let line = format!(
                    "{ts} {service}|{} [supervisor] {count} lines dropped: the log queue was full",
                    stream.as_str()
                );
                self.write(Some(&service), stream.as_str(), &line);
            }
            LogMsg::Event { service, ts, text } => {
                let name = service.as_deref().unwrap_or(DAEMON);
                let line = format!("{ts} {name}|event {text}");
                let arc: Arc<str> = name.into();
                self.append_merged(&line);
                let _ = self.followers.send(Followed {
                    service: arc,
                    kind: "event",
                    line: line.into(),
                });
            }
            LogMsg::Tail { req, reply } => {
                self.flush();
                let lines = tail::read_tail(
                    &self.dir,
                    &req,
                    &self.settings.timestamp,
                    self.settings.keep,
                );
                let follow = req.follow.then(|| self.followers.subscribe());
                let _ = reply.send(TailReply { lines, follow });
            }
            LogMsg::Record(json) => {
                if self.events.is_none() {
                    match LogFile::open(self.events_path.clone()) {
                        Ok(f) => self.events = Some(f),
                        Err(_) => self.errors += 1,
                    }
                }
                if let Some(f) = self.events.as_mut() {
                    if f.write_line(&json, &self.settings).is_err() {
                        self.errors += 1;
                    }
                }
            }
            LogMsg::Flush(done) => {
                self.flush();
                let _ = done.send(());
            }
        }
    }

    fn append_merged(&mut self, line: &str) {
        if self.merged.write_line(line, &self.settings).is_err() {
            self.errors += 1;
        }
    }

    fn write(&mut self, service: Option<&Arc<str>>, kind: &'static str, line: &str) {
        if let Some(svc) = service {
            let key = (svc.clone(), kind);
            if !self.files.contains_key(&key) {
                match LogFile::open(self.dir.join(format!("{svc}.{kind}.log"))) {
                    Ok(f) => {
                        self.files.insert(key.clone(), f);
                    }
                    Err(_) => self.errors += 1,
                }
            }
            if let Some(f) = self.files.get_mut(&key) {
                if f.write_line(line, &self.settings).is_err() {
                    self.errors += 1;
                }
            }
        }
        self.append_merged(line);
        if self.followers.receiver_count() > 0 {
            let _ = self.followers.send(Followed {
                service: service.cloned().unwrap_or_else(|| DAEMON.into()),
                kind,
                line: line.into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19 defect 5, below `check`: settings past the ranges are clamped, so a rotation
    /// stays a handful of renames and the tail reads a bounded number of files.
    #[test]
    fn out_of_range_settings_are_clamped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = LogSettings {
            timestamp: "%s".into(),
            max_size: 1,
            keep: u32::MAX,
            max_line: 1024,
        };
        let mut w = Writer::new(dir.path().to_path_buf(), settings).expect("writer");
        assert_eq!(w.settings.keep, 100);
        assert_eq!(w.settings.max_size, 4096);
        let start = std::time::Instant::now();
        for i in 0..2000 {
            w.append_merged(&format!("{i:04} {}", "x".repeat(200)));
        }
        w.flush();
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert!(files <= 101, "{files} files");
    }
}
