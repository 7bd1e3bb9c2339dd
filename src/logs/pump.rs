//! Reads one child pipe: frames lines, splits overlong ones, keeps invalid UTF-8 lossily,
//! flushes a partial last line at EOF.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{Lines, LogHandle, LogMsg, Stream};

/// How long a pump waits for queue room before it drops a line. Long enough to ride out a
/// burst; short enough that a stuck disk cannot freeze a child writing to its pipe.
const QUEUE_WAIT: Duration = Duration::from_millis(250);

/// Called with the number of lines dropped, when some were.
pub type DropReport = Box<dyn Fn(u64) + Send + Sync>;

/// Line framing, independent of I/O: bytes in, whole lines out. Lines longer than
/// `max_line` are split (later pieces flagged `continued`); `\r\n` counts as `\n`.
pub struct Framer {
    buf: Vec<u8>,
    max_line: usize,
    continued: bool,
}

impl Framer {
    pub fn new(max_line: usize) -> Framer {
        Framer {
            // Grows only when a read ends inside a line.
            buf: Vec::new(),
            max_line: max_line.max(256),
            continued: false,
        }
    }

    /// Moves the partial line kept from the last read to the start of `chunk`, where the
    /// next read lands right after it: the line is then whole inside one buffer and that
    /// read can be framed in place too. Reads of ~100-byte lines almost always end inside
    /// a line, so without this only every other read was.
    pub fn prepare(&mut self, chunk: &mut Vec<u8>) {
        chunk.extend_from_slice(&self.buf);
        self.buf.clear();
    }

    /// The bytes of the partial line kept from the last read.
    pub fn kept(&self) -> usize {
        self.buf.len()
    }

    /// The lines of one read, `chunk[..]` (after what `prepare` put there). A big read of
    /// whole lines that needs nothing changed (valid UTF-8, no `\r`, none over `max_line`)
    /// becomes the `Lines` as it lies: the chunk is taken (left empty, without capacity)
    /// and only the partial line at its end is copied. Anything else is framed by `push`
    /// into new `Lines`, and the chunk stays for the next read. A small read is copied
    /// too, so a queued message never holds a buffer much bigger than its lines.
    pub fn frame(&mut self, chunk: &mut Vec<u8>) -> Lines {
        if self.buf.is_empty() && chunk.len() >= chunk.capacity() / 2 {
            if let Some(lines) = self.frame_in_place(chunk) {
                return lines;
            }
        }
        // A partial line kept from the last read can come out with this one, so room for it
        // too; the regrowth of a rarely overlong batch is one copy, not one per line.
        let mut lines = Lines::with_capacity(chunk.len() + 256);
        self.push(chunk, |l, c| lines.push(l, c));
        lines
    }

    fn frame_in_place(&mut self, chunk: &mut Vec<u8>) -> Option<Lines> {
        let last = memchr::memrchr(b'\n', chunk)?;
        if memchr::memchr(b'\r', &chunk[..last]).is_some() {
            return None;
        }
        let mut ends = Vec::with_capacity(chunk.len() / 64 + 1);
        let mut start = 0;
        // The first line ends a split overlong one when the last piece went out before.
        let mut continued = self.continued;
        for pos in memchr::memchr_iter(b'\n', &chunk[..=last]) {
            if pos - start > self.max_line {
                return None;
            }
            ends.push((pos + 1, continued));
            continued = false;
            start = pos + 1;
        }
        let tail = chunk.split_off(last + 1);
        let text = match String::from_utf8(std::mem::take(chunk)) {
            Ok(text) => text,
            Err(e) => {
                *chunk = e.into_bytes();
                chunk.extend_from_slice(&tail);
                return None;
            }
        };
        let mut lines = Lines::from_parts(text, ends);
        self.continued = false;
        self.buf = tail;
        self.split_partial(&mut |l, c| lines.push(l, c));
        Some(lines)
    }

    /// Feeds `data`; calls `emit(line, continued)` for every piece that is complete. Lines
    /// wholly inside `data` are framed where they lie; only a partial line is copied, to be
    /// completed by a later read.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        let max = self.max_line;
        let mut rest = data;
        if !self.buf.is_empty() {
            let Some(pos) = find_newline(rest) else {
                self.buf.extend_from_slice(rest);
                self.split_partial(&mut emit);
                return;
            };
            self.buf.extend_from_slice(&rest[..pos]);
            emit_line(&self.buf, max, &mut self.continued, &mut emit);
            self.buf.clear();
            rest = &rest[pos + 1..];
        }
        while let Some(pos) = find_newline(rest) {
            emit_line(&rest[..pos], max, &mut self.continued, &mut emit);
            rest = &rest[pos + 1..];
        }
        self.buf.extend_from_slice(rest);
        self.split_partial(&mut emit);
    }

    /// A partial line longer than max_line goes out in pieces now rather than growing.
    fn split_partial(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        let max = self.max_line;
        if self.buf.len() <= max {
            return;
        }
        let mut start = 0;
        while self.buf.len() - start > max {
            let cut = utf8_cut(&self.buf[start..], max);
            emit(&self.buf[start..start + cut], self.continued);
            self.continued = true;
            start += cut;
        }
        self.buf.drain(..start);
    }

    /// End of stream: the partial last line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, self.continued);
            self.buf.clear();
        }
    }
}

const CHUNK_MIN: usize = 1024;
const CHUNK_MAX: usize = 64 * 1024;
/// A pipe that keeps a full read waiting this many times grows to `PIPE_BIG`: the child
/// can then write ahead while we are descheduled, instead of blocking on a full 64 KiB
/// pipe. Only chatty pipes grow; a pipe holds pages only for what it holds unread.
const FULL_READS_TO_GROW: u32 = 4;
const PIPE_BIG: libc::c_int = 1024 * 1024;

pub async fn pump(
    mut reader: crate::spawn::Output,
    service: Arc<str>,
    stream: Stream,
    logs: LogHandle,
    on_drop: DropReport,
) {
    let mut framer = Framer::new(logs.max_line);
    // Starts small and grows ×4 each time a read fills it, up to CHUNK_MAX: a quiet
    // service's pipes hold 1 KiB each (64 KiB each kept ~1 MiB resident at 50 services,
    // the allocator's headers alone touching a page per buffer); a chatty one reaches full
    // size within four reads. Capacity only: reads do not zero it first.
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_MIN);
    let mut out = Sender {
        logs: &logs,
        service: &service,
        stream,
        dropped: 0,
        on_drop: &on_drop,
    };
    let mut size = CHUNK_MIN;
    let mut full_reads = 0;
    loop {
        // Empty when the last read's chunk became its `Lines`. Room for `size` bytes after
        // the partial line: a read of what the child wrote in one go is then whole, not
        // 64 KiB less that partial line followed by a read of a few bytes.
        chunk.clear();
        chunk.reserve_exact(framer.kept() + size);
        framer.prepare(&mut chunk);
        let kept = chunk.len();
        match reader.read_buf(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let full = chunk.len() - kept >= size;
        if full && size < CHUNK_MAX {
            size = (size * 4).min(CHUNK_MAX);
        } else if full {
            full_reads += 1;
            if full_reads == FULL_READS_TO_GROW {
                // Refused past the user's pipe quota (or pipe-max-size): the pipe stays as
                // it is, which costs only speed.
                // SAFETY: F_SETPIPE_SZ on the pipe this reader owns.
                unsafe { libc::fcntl((*reader).as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BIG) };
            }
        }
        let lines = framer.frame(&mut chunk);
        out.send(lines, full).await;
    }
    // The partial line `prepare` moved into the chunk for the read that found the end.
    let mut lines = framer.frame(&mut chunk);
    framer.finish(|l, c| lines.push(l, c));
    out.send(lines, false).await;
    out.report_drops().await;
}

/// One complete line (its `\n` already removed): `\r\n` counts as `\n`, and a line longer
/// than max_line is split even when its newline already arrived.
fn emit_line(line: &[u8], max: usize, continued: &mut bool, emit: &mut impl FnMut(&[u8], bool)) {
    let mut piece = line.strip_suffix(b"\r").unwrap_or(line);
    while piece.len() > max {
        let cut = utf8_cut(piece, max);
        emit(&piece[..cut], *continued);
        *continued = true;
        piece = &piece[cut..];
    }
    emit(piece, *continued);
    *continued = false;
}

/// The first `\n` in `hay`, eight bytes at a time: a byte-by-byte search was the biggest
/// cost of framing ~100-byte lines.
fn find_newline(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mut words = hay.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w) ^ NL;
        // Non-zero iff some byte of x is zero, i.e. a byte of the word is '\n' (exact for
        // the lowest such byte, which is the one wanted).
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|b| *b == b'\n').map(|p| at + p)
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
    /// Queues the lines of one read as one message. They arrived at the same instant: one
    /// timestamp for all of them (formatting it is most of the per-line cost).
    /// `full`: the read filled its buffer, so more is likely waiting; a short read tells a
    /// writer holding this stream's flood that it has ended.
    async fn send(&mut self, lines: Lines, full: bool) {
        if lines.is_empty() {
            return;
        }
        if self.dropped > 0 {
            self.report_drops().await;
        }
        let count = lines.len() as u64;
        // Room is almost always there: no timer (nor a clock read) for that case.
        let permit = match self.logs.room.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let room = self.logs.room.clone().acquire_owned();
                match tokio::time::timeout(QUEUE_WAIT, room).await {
                    Ok(Ok(permit)) => permit,
                    // The writer is gone: the daemon is exiting.
                    Ok(Err(_)) => return,
                    Err(_) => {
                        self.dropped += count;
                        return;
                    }
                }
            }
        };
        let _ = self.logs.tx.send(LogMsg::Lines {
            service: self.service.clone(),
            stream: self.stream,
            ts: self.logs.now(),
            lines,
            _room: permit,
        });
        if !full {
            // A syscall only if the writer is parked right now: in a flood's hold, where
            // this is the point (or, rarely, already back waiting for its queue).
            self.logs.writer.unpark();
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
        if self.logs.tx.send(msg).is_ok() {
            (self.on_drop)(self.dropped);
            self.dropped = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(chunks: &[&[u8]], max: usize) -> Vec<(String, bool)> {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |l, cont| {
                out.push((String::from_utf8_lossy(l).into_owned(), cont))
            });
        }
        f.finish(|l, cont| out.push((String::from_utf8_lossy(l).into_owned(), cont)));
        out
    }

    #[test]
    fn frames_lines_across_chunks() {
        let got = frame(&[b"ab", b"c\r\nd", b"\n\npartial"], 256);
        let want = vec![
            ("abc".into(), false),
            ("d".into(), false),
            ("".into(), false),
            ("partial".into(), false),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn splits_overlong_lines_and_marks_continuations() {
        let long = "y".repeat(600);
        let got = frame(&[long.as_bytes(), b"\nnext\n"], 256);
        let lens: Vec<(usize, bool)> = got.iter().map(|(l, c)| (l.len(), *c)).collect();
        assert_eq!(
            lens,
            vec![(256, false), (256, true), (88, true), (4, false)]
        );
    }

    #[test]
    fn keeps_invalid_utf8_lossily() {
        let got = frame(&[b"ok \xff\xfe end\n"], 256);
        assert_eq!(got[0].0, "ok \u{fffd}\u{fffd} end");
    }

    /// The framer as it was before it framed lines in place: copy everything into one
    /// buffer, then search it byte by byte. The reference for the equivalence test.
    fn frame_reference(chunks: &[Vec<u8>], max: usize) -> Vec<(Vec<u8>, bool)> {
        let max = max.max(256);
        let (mut buf, mut continued, mut out) = (Vec::new(), false, Vec::new());
        for data in chunks {
            buf.extend_from_slice(data);
            let mut start = 0;
            while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
                let end = start + pos;
                let line = &buf[start..end];
                let mut piece = line.strip_suffix(b"\r").unwrap_or(line);
                while piece.len() > max {
                    let cut = utf8_cut(piece, max);
                    out.push((piece[..cut].to_vec(), continued));
                    continued = true;
                    piece = &piece[cut..];
                }
                out.push((piece.to_vec(), continued));
                continued = false;
                start = end + 1;
            }
            buf.drain(..start);
            while buf.len() > max {
                let cut = utf8_cut(&buf, max);
                out.push((buf[..cut].to_vec(), continued));
                continued = true;
                buf.drain(..cut);
            }
        }
        if !buf.is_empty() {
            out.push((buf, continued));
        }
        out
    }

    /// Up to 12 lines of up to `max_len` bytes: mostly `x` (weight `x_weight` against 1 each
    /// for `\r`, the two bytes of `é`, and any byte), each with its `\n` nine times in ten.
    fn raw_lines(
        x_weight: u32,
        max_len: usize,
    ) -> impl proptest::strategy::Strategy<Value = Vec<(Vec<u8>, bool)>> {
        proptest::collection::vec(
            (
                proptest::collection::vec(
                    proptest::prop_oneof![
                        x_weight => proptest::prelude::Just(b'x'),
                        1 => proptest::prelude::Just(b'\r'),
                        1 => proptest::prelude::Just(0xC3u8),
                        1 => proptest::prelude::Just(0xA9u8),
                        1 => proptest::num::u8::ANY,
                    ],
                    0..max_len,
                ),
                proptest::bool::weighted(0.9),
            ),
            0..12,
        )
    }

    /// The bytes a child wrote: each line, then its `\n` when it has one.
    fn joined(lines: &[(Vec<u8>, bool)]) -> Vec<u8> {
        let mut data = Vec::new();
        for (line, newline) in lines {
            data.extend_from_slice(line);
            if *newline {
                data.push(b'\n');
            }
        }
        data
    }

    proptest::proptest! {
        /// Same pieces, same flags as the reference, for any bytes in any chunking: lines
        /// short and long, `\r\n`, multi-byte and invalid UTF-8, lines across reads.
        #[test]
        fn framing_in_place_matches_the_reference(
            // Up to well past max_line (256), so lines are split, also across reads.
            lines in raw_lines(6, 900),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..10),
        ) {
            let data = joined(&lines);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for c in cuts {
                chunks.push(data[from..c].to_vec());
                from = c;
            }
            let mut f = Framer::new(256);
            let mut got = Vec::new();
            for c in &chunks {
                f.push(c, |l, cont| got.push((l.to_vec(), cont)));
            }
            f.finish(|l, cont| got.push((l.to_vec(), cont)));
            proptest::prop_assert_eq!(got, frame_reference(&chunks, 256));
        }

        /// `frame` (lines in place where it can, `push` where it cannot) gives what `push`
        /// gives, whatever the reads' sizes against their buffers' capacities.
        #[test]
        fn frame_matches_push(
            lines in raw_lines(20, 400),
            cuts in proptest::collection::vec((proptest::num::usize::ANY, 0usize..3), 0..10),
        ) {
            let data = joined(&lines);
            let mut cuts: Vec<(usize, usize)> =
                cuts.iter().map(|(c, slack)| (c % (data.len() + 1), *slack)).collect();
            cuts.push((data.len(), 0));
            cuts.sort_unstable();
            let (mut by_frame, mut by_push) = (Vec::new(), Vec::new());
            let (mut f, mut p) = (Framer::new(256), Framer::new(256));
            let mut from = 0;
            for (c, slack) in cuts {
                let piece = &data[from..c];
                // As the pump reads: the kept partial line first, the read after it. Capacity
                // exactly what the chunk holds, twice it (in place still allowed), or 4×
                // (copied).
                let mut chunk = Vec::new();
                f.prepare(&mut chunk);
                let len = chunk.len() + piece.len();
                chunk.reserve_exact(len * (1 + slack * slack) + 1 - chunk.len());
                chunk.extend_from_slice(piece);
                let got = f.frame(&mut chunk);
                by_frame.extend(got.iter().map(|(l, cont)| (l.to_owned(), cont)));
                p.push(piece, |l, cont| by_push.push((String::from_utf8_lossy(l).into_owned(), cont)));
                from = c;
            }
            // As at the pump's EOF: a `prepare` for a read that returned nothing.
            let mut chunk = Vec::new();
            f.prepare(&mut chunk);
            by_frame.extend(f.frame(&mut chunk).iter().map(|(l, cont)| (l.to_owned(), cont)));
            f.finish(|l, cont| by_frame.push((String::from_utf8_lossy(l).into_owned(), cont)));
            p.finish(|l, cont| by_push.push((String::from_utf8_lossy(l).into_owned(), cont)));
            proptest::prop_assert_eq!(by_frame, by_push);
        }

        #[test]
        fn find_newline_finds_the_first(
            hay in proptest::collection::vec(
                proptest::prop_oneof![8 => proptest::num::u8::ANY, 1 => proptest::prelude::Just(b'\n')],
                0..80,
            ),
        ) {
            proptest::prop_assert_eq!(find_newline(&hay), hay.iter().position(|b| *b == b'\n'));
        }
    }

    #[test]
    fn a_big_read_of_whole_lines_becomes_its_lines_in_place() {
        let mut f = Framer::new(256);
        let mut chunk = Vec::with_capacity(16);
        chunk.extend_from_slice(b"one\ntwo\nthr");
        let ptr = chunk.as_ptr();
        let lines = f.frame(&mut chunk);
        assert_eq!(chunk.capacity(), 0, "the chunk was taken");
        assert_eq!(lines.text.as_ptr(), ptr, "no copy of the lines");
        let got: Vec<&str> = lines.iter().map(|(l, _)| l).collect();
        assert_eq!(got, ["one", "two"]);
        // The partial line goes first into the next read's buffer, so that read is in place
        // too.
        let mut chunk = Vec::with_capacity(8);
        f.prepare(&mut chunk);
        chunk.extend_from_slice(b"ee\nfo");
        let ptr = chunk.as_ptr();
        let lines = f.frame(&mut chunk);
        assert_eq!(lines.iter().map(|(l, _)| l).collect::<Vec<_>>(), ["three"]);
        assert_eq!(lines.text.as_ptr(), ptr, "no copy of the lines");
        // A small read is copied and its chunk kept for the next read.
        let mut chunk = Vec::with_capacity(64);
        f.prepare(&mut chunk);
        chunk.extend_from_slice(b"ur\n");
        let lines = f.frame(&mut chunk);
        assert_eq!(lines.iter().map(|(l, _)| l).collect::<Vec<_>>(), ["four"]);
        assert_eq!(chunk.capacity(), 64, "kept for the next read");
    }

    #[test]
    fn a_split_lines_last_piece_framed_in_place_stays_a_continuation() {
        let mut f = Framer::new(256);
        let mut chunk = Vec::with_capacity(300);
        f.prepare(&mut chunk);
        chunk.extend_from_slice(&[b'y'; 300]);
        let lines = f.frame(&mut chunk);
        assert_eq!(
            lines.iter().map(|(l, c)| (l.len(), c)).collect::<Vec<_>>(),
            [(256, false)]
        );
        let mut chunk = Vec::with_capacity(64);
        f.prepare(&mut chunk);
        chunk.extend_from_slice(b"zz\nnext\n");
        let ptr = chunk.as_ptr();
        let lines = f.frame(&mut chunk);
        assert_eq!(lines.text.as_ptr(), ptr, "framed in place");
        let got: Vec<(usize, bool)> = lines.iter().map(|(l, c)| (l.len(), c)).collect();
        assert_eq!(got, [(46, true), (4, false)]);
    }

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
