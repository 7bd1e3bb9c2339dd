//! Reading the config and its env files without ever blocking for good: only regular files,
//! opened without waiting for a writer, size-limited, and read on a helper thread with a
//! deadline (a FIFO, a device or a hung network mount must not freeze `check` or a reload).

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Why a file could not be read; `Display` reads after "cannot read FILE: ".
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    NotRegular(&'static str),
    TooBig { size: u64, max: u64 },
    Timeout(Duration),
    NotUtf8,
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(kind) => write!(
                f,
                "it is a {kind}, not a regular file; only regular files are read, so a reader never waits on a writer"
            ),
            ReadError::TooBig { size, max } => write!(
                f,
                "it is {size} bytes, more than the limit of {}",
                super::schema::show_size(*max)
            ),
            ReadError::Timeout(d) => write!(
                f,
                "reading it took longer than {}s (a hung mount?); it was given up",
                d.as_secs_f32()
            ),
            ReadError::NotUtf8 => write!(f, "it is not UTF-8 text"),
        }
    }
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO (named pipe)"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// Opens and reads `path` as text: at most `max` bytes, within `timeout`.
pub fn read_text(path: &Path, max: u64, timeout: Duration) -> Result<String, ReadError> {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel();
    // The read runs on its own thread: a read stuck in the kernel cannot be interrupted, so
    // the caller stops waiting and the thread ends whenever the read does.
    let spawned = std::thread::Builder::new()
        .name("config-read".into())
        .spawn(move || {
            let _ = tx.send(read_now(&path, max));
        });
    if let Err(e) = spawned {
        return Err(ReadError::Io(e));
    }
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(ReadError::Timeout(timeout)),
    }
}

fn read_now(path: &Path, max: u64) -> Result<String, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    // Checked on the open file, not the path, so it cannot be swapped in between.
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta.file_type())));
    }
    if meta.len() > max {
        return Err(ReadError::TooBig {
            size: meta.len(),
            max,
        });
    }
    let mut bytes = Vec::new();
    // +1 catches a file that grew after the stat.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooBig {
            size: bytes.len() as u64,
            max,
        });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_and_big_files_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t = std::time::Instant::now();
        let err = read_text(&fifo, 100, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular(_)), "{err}");
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(1));
        let err = read_text(Path::new("/dev/zero"), 100, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_text(dir.path(), 100, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 101]).unwrap();
        let err = read_text(&big, 100, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ReadError::TooBig { size: 101, .. }), "{err}");
        std::fs::write(&big, "ok").unwrap();
        assert_eq!(read_text(&big, 100, Duration::from_secs(5)).unwrap(), "ok");
    }
}
