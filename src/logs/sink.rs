//! The writer thread: owns every log file, appends, rotates by size, feeds followers.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::append::Appender;
use super::{tail, Followed, Lines, LogMsg, LogStats, TailReply, DAEMON};
use crate::config::LogSettings;

/// One appended file with its size, rotated past `max_size`.
struct LogFile {
    path: PathBuf,
    out: Appender,
    size: u64,
}

impl LogFile {
    fn open(path: PathBuf) -> std::io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            path,
            out: Appender::new(file),
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

    /// Appends whole formatted lines, `buf[..ends[0]]`, `buf[ends[0]..ends[1]]`, …, each
    /// ending in `\n`, with as few writes as rotation allows: the same rule as `write_line`
    /// line by line (rotate before a line that would take a non-empty file past `max_size`),
    /// so each run of lines that fits goes out in one write.
    fn write_lines(
        &mut self,
        buf: &[u8],
        ends: &[usize],
        settings: &LogSettings,
    ) -> std::io::Result<()> {
        let mut result = Ok(());
        let (mut from, mut next) = (0usize, 0usize);
        while next < ends.len() {
            if self.size > 0 && self.size + (ends[next] - from) as u64 > settings.max_size {
                // A failed rotation is reported, but the lines are still written.
                result = result.and(self.rotate(settings.keep));
            }
            // The first line goes in even when it alone passes max_size (as in write_line);
            // the ones after it while the file stays within max_size.
            let room = settings.max_size.saturating_sub(self.size);
            let fit = ends[next + 1..].partition_point(|&end| ((end - from) as u64) <= room);
            let upto = ends[next + fit];
            self.out.write_all(&buf[from..upto])?;
            self.size += (upto - from) as u64;
            from = upto;
            next += fit + 1;
        }
        result
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

/// The batch buffer: a flood of one stream's batches is formatted into it and written when
/// the next batch would not fit, when none came for `HOLD`, or when another stream's lines
/// or an event come. On this machine's ext4, appending 54 MB in ~256 KiB writes took 17-21
/// ms of CPU, in the ~85 KiB writes of single pipe reads 24-28 ms (benches/README.md).
const BATCH_CAPACITY: usize = 384 * 1024;

/// Pending lines of at least a full pipe read (64 KiB) are a flood's: the writer sleeps
/// `HOLD` and takes what came meanwhile before writing them, for as long as a full read's
/// worth keeps coming in each `HOLD`. Anything less is written as soon as the queue is
/// drained, as before; a flood's last lines do not wait: the pump's short read that ends it
/// unparks the writer.
const FULL_READ: u64 = 64 * 1024;
const HOLD: Duration = Duration::from_millis(1);

pub struct Writer {
    dir: PathBuf,
    settings: LogSettings,
    merged: LogFile,
    files: HashMap<(Arc<str>, &'static str), LogFile>,
    /// Made by the first `logs -f` and dropped when no follower is left: its 4096 slots
    /// are ~300 KiB, resident from creation.
    followers: Option<broadcast::Sender<Followed>>,
    /// Write errors are counted, not fatal: the daemon must outlive a full disk.
    errors: u64,
    /// Formatted lines not yet written, all of `pending`'s service and stream, and where
    /// each ends: batches drained together go out in one write per file (`BATCH_CAPACITY`).
    batch_buf: Vec<u8>,
    batch_ends: Vec<usize>,
    pending: Option<(Arc<str>, &'static str)>,
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
        Ok(Writer {
            settings,
            merged,
            files: HashMap::new(),
            followers: None,
            errors: 0,
            batch_buf: Vec::with_capacity(BATCH_CAPACITY),
            batch_ends: Vec::with_capacity(4096),
            pending: None,
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

    pub fn run(&mut self, rx: mpsc::Receiver<LogMsg>) {
        while let Ok(msg) = rx.recv() {
            self.handle(msg);
            self.drain(&rx);
            // A flood: wait a little and take what came meanwhile, so its batches go out in
            // big writes and the pumps' sends find nobody to wake (a wake-up per pipe read
            // was a cross-CPU interrupt each). A pump's short read unparks us: the end.
            while self.holding() {
                let parked = std::time::Instant::now();
                std::thread::park_timeout(HOLD);
                let unparked = parked.elapsed() < HOLD;
                let came = self.drain(&rx);
                // Unparked by a short read, or less than a full read meanwhile: the flood is
                // ending, its last lines go now.
                if unparked || came < FULL_READ {
                    break;
                }
            }
            // Then flush once: few syscalls under load, fresh files when idle.
            self.flush();
        }
        self.flush();
    }

    /// Handles what is queued (up to 4096 messages); the bytes of child lines among them.
    fn drain(&mut self, rx: &mpsc::Receiver<LogMsg>) -> u64 {
        let mut bytes = 0;
        for _ in 0..4096 {
            let Ok(m) = rx.try_recv() else { break };
            if let LogMsg::Lines { lines, .. } = &m {
                bytes += lines.bytes() as u64;
            }
            self.handle(m);
        }
        bytes
    }

    /// Whether the pending lines are a flood's (at least one full pipe read of them), held
    /// for `HOLD` for the next reads', to go out in bigger writes.
    fn holding(&self) -> bool {
        self.pending.is_some() && self.batch_buf.len() as u64 >= FULL_READ
    }

    fn flush(&mut self) {
        self.write_pending();
        if self.batch_buf.capacity() > BATCH_CAPACITY {
            // Grown by one batch of overlong lines: not kept through the idle time after.
            self.batch_buf = Vec::with_capacity(BATCH_CAPACITY);
        }
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
        if !matches!(msg, LogMsg::Lines { .. }) {
            // Whatever this message writes goes after the lines before it.
            self.write_pending();
        }
        match msg {
            LogMsg::Lines {
                service,
                stream,
                ts,
                lines,
                _room,
            } => {
                let kind = stream.as_str();
                self.stats.add(&service, kind, |c| {
                    c.lines += lines.len() as u64;
                    c.bytes += lines.bytes() as u64;
                });
                self.write_batch(&service, kind, &ts, &lines);
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
                if let Some(f) = self.following() {
                    let _ = f.send(Followed {
                        service: arc,
                        kind: "event",
                        line: line.into(),
                    });
                }
            }
            LogMsg::Tail { req, reply } => {
                self.flush();
                let lines = tail::read_tail(
                    &self.dir,
                    &req,
                    &self.settings.timestamp,
                    self.settings.keep,
                );
                let follow = req.follow.then(|| {
                    self.followers
                        .get_or_insert_with(|| broadcast::channel(4096).0)
                        .subscribe()
                });
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

    /// The followers' channel while someone follows; dropped with the last follower.
    fn following(&mut self) -> Option<&broadcast::Sender<Followed>> {
        if self.followers.as_ref()?.receiver_count() == 0 {
            self.followers = None;
        }
        self.followers.as_ref()
    }

    fn append_merged(&mut self, line: &str) {
        if self.merged.write_line(line, &self.settings).is_err() {
            self.errors += 1;
        }
    }

    /// The service's file for `kind`, opened on first use; None when it cannot be opened
    /// (the caller counts the error; the lines still reach the merged log). Takes the
    /// fields it needs so the caller can hold `settings` and `merged` meanwhile.
    fn service_file<'a>(
        files: &'a mut HashMap<(Arc<str>, &'static str), LogFile>,
        dir: &Path,
        svc: &Arc<str>,
        kind: &'static str,
    ) -> Option<&'a mut LogFile> {
        let key = (svc.clone(), kind);
        if !files.contains_key(&key) {
            let f = LogFile::open(dir.join(format!("{svc}.{kind}.log"))).ok()?;
            files.insert(key.clone(), f);
        }
        files.get_mut(&key)
    }

    /// One pipe read's lines, `TS SERVICE|KIND[+] TEXT` each, formatted once into the buffer
    /// that both the service's file and the merged log take whole (split only where one of
    /// them rotates): the cost per line is two copies, not two writes and a lookup. Written
    /// by `write_pending`, so a backlog of one stream's batches goes out in one write.
    fn write_batch(&mut self, service: &Arc<str>, kind: &'static str, ts: &str, lines: &Lines) {
        // `TS SVC|KIND+ `: the plain prefix is this without the '+'.
        let mut prefix = Vec::with_capacity(ts.len() + service.len() + 8);
        for piece in [ts, " ", service, "|", kind, "+ "] {
            prefix.extend_from_slice(piece.as_bytes());
        }
        let plain_len = prefix.len() - 2;
        let formatted = lines.bytes() + lines.len() * prefix.len();
        let same = matches!(&self.pending, Some((s, k)) if s == service && *k == kind);
        if !same || self.batch_buf.len() + formatted > BATCH_CAPACITY {
            self.write_pending();
            self.pending = Some((service.clone(), kind));
        }
        let buf = &mut self.batch_buf;
        let mut start = 0;
        for &(end, continued) in &lines.ends {
            if continued {
                buf.extend_from_slice(&prefix);
            } else {
                buf.extend_from_slice(&prefix[..plain_len]);
                buf.push(b' ');
            }
            buf.extend_from_slice(&lines.text.as_bytes()[start..end]);
            self.batch_ends.push(buf.len());
            start = end;
        }
    }

    /// Writes the formatted lines held for `pending` to its service's file and the merged
    /// log, and hands them to followers.
    fn write_pending(&mut self) {
        let Some((service, kind)) = self.pending.take() else {
            return;
        };
        let mut buf = std::mem::take(&mut self.batch_buf);
        let mut ends = std::mem::take(&mut self.batch_ends);
        let failed = match Self::service_file(&mut self.files, &self.dir, &service, kind) {
            Some(f) => f.write_lines(&buf, &ends, &self.settings).is_err(),
            None => true,
        };
        self.errors += u64::from(failed);
        if self
            .merged
            .write_lines(&buf, &ends, &self.settings)
            .is_err()
        {
            self.errors += 1;
        }
        if let Some(followers) = self.following() {
            let mut start = 0;
            for &end in &ends {
                // Each formatted line is valid UTF-8: ASCII prefix + a body from a `str`.
                let line = String::from_utf8_lossy(&buf[start..end - 1]);
                let _ = followers.send(Followed {
                    service: service.clone(),
                    kind,
                    line: line.into(),
                });
                start = end;
            }
        }
        buf.clear();
        ends.clear();
        self.batch_buf = buf;
        self.batch_ends = ends;
    }

    fn write(&mut self, service: Option<&Arc<str>>, kind: &'static str, line: &str) {
        if let Some(svc) = service {
            let failed = match Self::service_file(&mut self.files, &self.dir, svc, kind) {
                Some(f) => f.write_line(line, &self.settings).is_err(),
                None => true,
            };
            self.errors += u64::from(failed);
        }
        self.append_merged(line);
        if let Some(followers) = self.following() {
            let _ = followers.send(Followed {
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

    fn settings(max_size: u64, keep: u32) -> LogSettings {
        LogSettings {
            timestamp: "%s".into(),
            max_size,
            keep,
            max_line: 1024,
        }
    }

    /// Every file of a rotated log, oldest first: `x.log.KEEP` … `x.log.1`, `x.log`.
    fn generations(path: &Path, keep: u32) -> Vec<String> {
        let mut out: Vec<String> = (1..=keep)
            .rev()
            .map(|i| std::fs::read_to_string(rotated(path, i)).unwrap_or_default())
            .collect();
        out.push(std::fs::read_to_string(path).unwrap_or_default());
        out
    }

    /// Lines of assorted lengths, one far past max_size, as `write_lines` takes them.
    fn numbered(n: usize, big_at: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let len = if i == big_at {
                    9000
                } else {
                    20 + (i * 37) % 300
                };
                format!("{i:05} {}\n", "x".repeat(len))
            })
            .collect()
    }

    /// A batch written in one go rotates exactly where the same lines written one by one do:
    /// at a line boundary, before the line that would pass max_size, with nothing lost or
    /// written twice across the split, whatever the batch sizes.
    #[test]
    fn batches_rotate_at_the_same_line_boundaries_as_single_lines() {
        // 64-byte lines fill a file to exactly max_size: the edge of the rule.
        let even: Vec<String> = (0..300)
            .map(|i| format!("{i:05} {}\n", "e".repeat(57)))
            .collect();
        same_rotation_as_single_lines(&numbered(400, 123));
        let files = same_rotation_as_single_lines(&even);
        assert!(
            files.iter().any(|f| f.len() == 4096),
            "no file filled exactly"
        );
    }

    /// Checks batches of several sizes against line-by-line writes; returns the files.
    fn same_rotation_as_single_lines(lines: &[String]) -> Vec<String> {
        let max = 4096u64;
        let keep = 100;
        let one = tempfile::tempdir().expect("tempdir");
        let mut single = LogFile::open(one.path().join("x.log")).expect("open");
        for l in lines {
            single
                .write_line(&l[..l.len() - 1], &settings(max, keep))
                .expect("write_line");
        }
        single.out.flush().expect("flush");
        let want = generations(&one.path().join("x.log"), keep);
        for batch in [1, 2, 7, 40, 400] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut f = LogFile::open(dir.path().join("x.log")).expect("open");
            for chunk in lines.chunks(batch) {
                let mut buf = Vec::new();
                let mut ends = Vec::new();
                for l in chunk {
                    buf.extend_from_slice(l.as_bytes());
                    ends.push(buf.len());
                }
                f.write_lines(&buf, &ends, &settings(max, keep))
                    .expect("write_lines");
            }
            f.out.flush().expect("flush");
            let got = generations(&dir.path().join("x.log"), keep);
            assert_eq!(got, want, "batches of {batch}");
            // Every file holds whole lines, within max_size unless one line alone is bigger.
            for file in got.iter().filter(|g| !g.is_empty()) {
                assert!(file.ends_with('\n'));
                assert!(file.len() as u64 <= max || file.lines().count() == 1);
            }
            let all: String = got.concat();
            assert_eq!(
                all,
                lines.concat(),
                "batches of {batch}: lost or doubled lines"
            );
        }
        want
    }

    /// A file that already holds data when the writer opens it counts that data.
    #[test]
    fn a_batch_into_a_nonempty_file_rotates_before_crossing_max_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, "y".repeat(4000) + "\n").expect("seed");
        let mut f = LogFile::open(path.clone()).expect("open");
        let buf = format!("aaaa\n{}\ncc\n", "b".repeat(100));
        let ends = [5, 5 + 101, 5 + 101 + 3];
        f.write_lines(buf.as_bytes(), &ends, &settings(4096, 2))
            .expect("write_lines");
        f.out.flush().expect("flush");
        let old = std::fs::read_to_string(rotated(&path, 1)).expect("rotated");
        assert_eq!(old, "y".repeat(4000) + "\naaaa\n");
        let new = std::fs::read_to_string(&path).expect("current");
        assert_eq!(new, format!("{}\ncc\n", "b".repeat(100)));
    }

    /// One batch reaches the service file and the merged log whole, prefixed per line, `+`
    /// on continuations, lossy UTF-8 kept; both files hold the same bytes.
    #[test]
    fn a_batch_goes_to_the_service_file_and_the_merged_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::new(dir.path().to_path_buf(), settings(1 << 20, 2)).expect("writer");
        let mut lines = Lines::default();
        lines.push(b"first", false);
        lines.push(b"piece one", false);
        lines.push(b"piece two", true);
        lines.push(b"bad \xff byte", false);
        lines.push(b"", false);
        let room = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = room.clone().try_acquire_owned().expect("permit");
        w.handle(LogMsg::Lines {
            service: "svc".into(),
            stream: crate::logs::Stream::Err,
            ts: "T".into(),
            lines,
            _room: permit,
        });
        w.flush();
        let want = "T svc|err first\nT svc|err piece one\nT svc|err+ piece two\nT svc|err bad \u{fffd} byte\nT svc|err \n";
        let own = std::fs::read_to_string(dir.path().join("svc.err.log")).expect("svc");
        let merged = std::fs::read_to_string(dir.path().join("supervisor.log")).expect("merged");
        assert_eq!(own, want);
        assert_eq!(merged, want);
        // The permit went back when the writer was done with the batch.
        assert_eq!(room.available_permits(), 1);
        let stats = w.stats.snapshot();
        assert_eq!(stats[0].2.lines, 5);
        // Bodies 5, 9, 9, 12 (U+FFFD is 3 bytes) and 0, plus 5 newlines.
        assert_eq!(stats[0].2.bytes, 5 + 9 + 9 + 12 + 5);
    }

    /// Lines `from..from + n`, each its number and 90 x's, as one batch.
    fn numbered_lines(from: usize, n: usize) -> Lines {
        let mut lines = Lines::default();
        for i in from..from + n {
            lines.push(format!("{i:06} {}", "x".repeat(90)).as_bytes(), false);
        }
        lines
    }

    /// Batches held back to be written together keep the merged log in arrival order: a
    /// batch of another stream, or an event, between two of one stream's batches stays
    /// between them; a backlog bigger than the buffer goes out whole and in order.
    #[test]
    fn held_batches_keep_arrival_order_across_streams_and_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::new(dir.path().to_path_buf(), settings(1 << 30, 2)).expect("writer");
        let room = Arc::new(tokio::sync::Semaphore::new(64));
        let mut next = 0;
        let mut batch = |w: &mut Writer, svc: &str, stream, n: usize| {
            let lines = numbered_lines(next, n);
            next += n;
            w.handle(LogMsg::Lines {
                service: svc.into(),
                stream,
                ts: "T".into(),
                lines,
                _room: room.clone().try_acquire_owned().expect("permit"),
            });
        };
        use crate::logs::Stream::{Err, Out};
        batch(&mut w, "a", Out, 3);
        batch(&mut w, "a", Out, 2);
        w.handle(LogMsg::Event {
            service: Some("a".into()),
            ts: "T".into(),
            text: "between".into(),
        });
        batch(&mut w, "a", Out, 1);
        batch(&mut w, "b", Out, 2);
        batch(&mut w, "a", Err, 1);
        batch(&mut w, "a", Out, 1);
        // ~1.2 MiB of one stream queued at once: several buffers' worth.
        for _ in 0..40 {
            batch(&mut w, "b", Out, 300);
        }
        w.flush();
        let merged = std::fs::read_to_string(dir.path().join("supervisor.log")).expect("merged");
        let tags: Vec<String> = merged
            .lines()
            .map(|l| {
                let mut f = l.split(' ');
                let (who, what) = (f.nth(1).unwrap_or(""), f.next().unwrap_or(""));
                format!("{who} {}", &what[..what.len().min(6)])
            })
            .collect();
        // (who, how many lines) in arrival order; the event's text cut to six characters
        // like the numbers.
        let order = [
            ("a|out", 5),
            ("a|event", 0),
            ("a|out", 1),
            ("b|out", 2),
            ("a|err", 1),
            ("a|out", 1),
            ("b|out", 12000),
        ];
        let mut want: Vec<String> = Vec::new();
        let mut n = 0;
        for (who, k) in order {
            if k == 0 {
                want.push(format!("{who} betwee"));
            }
            for _ in 0..k {
                want.push(format!("{who} {n:06}"));
                n += 1;
            }
        }
        assert_eq!(tags.len(), want.len(), "lines in the merged log");
        assert_eq!(tags, want);
        let b = std::fs::read_to_string(dir.path().join("b.out.log")).expect("b");
        assert_eq!(b.lines().count(), 12002);
        assert!(
            merged.len() > 2 * BATCH_CAPACITY,
            "the backlog spans several buffers"
        );
    }

    /// A flood's lines are held only while more of them come: the last ones reach the file
    /// once the writer finds nothing new after its short sleep, without any other message to
    /// push them out, and a quiet stream's line after them goes out at once.
    #[test]
    fn a_held_flood_is_written_when_it_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::new(dir.path().to_path_buf(), settings(1 << 30, 2)).expect("writer");
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::spawn(move || w.run(rx));
        let room = Arc::new(tokio::sync::Semaphore::new(64));
        let send = |n: usize, from: usize| {
            tx.send(LogMsg::Lines {
                service: "f".into(),
                stream: crate::logs::Stream::Out,
                ts: "T".into(),
                lines: numbered_lines(from, n),
                _room: room.clone().try_acquire_owned().expect("permit"),
            })
            .expect("send");
        };
        let path = dir.path().join("f.out.log");
        let count = || {
            std::fs::read_to_string(&path)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        let wait_for = |n: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while count() < n && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            count()
        };
        // Three full pipe reads' worth (~65 KiB each, formatted): a flood.
        for k in 0..3 {
            send(650, k * 650);
        }
        assert_eq!(wait_for(1950), 1950, "the flood's last lines stayed held");
        send(1, 1950);
        assert_eq!(wait_for(1951), 1951, "a lone line after the flood");
        drop(tx);
        writer.join().expect("writer thread");
        let text = std::fs::read_to_string(&path).expect("log");
        for (i, line) in text.lines().enumerate() {
            assert!(
                line.starts_with(&format!("T f|out {i:06} ")),
                "line {i}: {line}"
            );
        }
    }

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
