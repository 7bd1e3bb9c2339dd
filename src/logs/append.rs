//! An appended file whose write buffer exists only while it holds something.
//!
//! `BufWriter::with_capacity(64 KiB)` per file kept a buffer per service and stream for the
//! daemon's life; the pages a first line touched stayed resident (two per file, ~1 MiB of
//! heap at 50 services). Here the buffer is freed at every flush, and the writer flushes
//! once per drained queue, so an idle file costs no buffer and a busy one re-takes the
//! same freed chunk from the allocator.

use std::fs::File;
use std::io::Write;

/// A write this big (or a buffer grown to it) goes straight to the file.
const DIRECT: usize = 64 * 1024;

pub struct Appender {
    file: File,
    buf: Vec<u8>,
}

impl Appender {
    pub fn new(file: File) -> Appender {
        Appender {
            file,
            buf: Vec::new(),
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.buf.len() + data.len() > DIRECT {
            self.flush()?;
        }
        if data.len() >= DIRECT {
            return self.file.write_all(data);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Writes what is buffered and frees the buffer. On an error the bytes stay buffered,
    /// to be tried again at the next flush.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buf)?;
        self.buf = Vec::new();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_writes_wait_for_flush_and_big_ones_go_through_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let mut a = Appender::new(file);
        a.write_all(b"one\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"");
        let big = vec![b'x'; DIRECT];
        a.write_all(&big).expect("write big");
        // The small line went first, then the big one, straight through.
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(&on_disk[..4], b"one\n");
        assert_eq!(on_disk.len(), 4 + DIRECT);
        a.write_all(b"two\n").expect("write");
        a.flush().expect("flush");
        assert_eq!(a.buf.capacity(), 0, "the buffer is freed at flush");
        assert_eq!(&std::fs::read(&path).expect("read")[4 + DIRECT..], b"two\n");
    }
}
