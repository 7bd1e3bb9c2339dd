//! The open-file limit: the daemon needs several descriptors per service (pipes, a pidfd,
//! the sampler's open files), so it raises its soft `RLIMIT_NOFILE` to the hard limit, and
//! gives every child the soft limit it was itself started with, so a child that uses
//! `select()` sees the limit it would have had without us.

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit the daemon was started with; `u64::MAX` until `raise` ran.
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raises the soft limit to the hard one. Returns (before, after).
pub fn raise() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        let before = lim.rlim_cur;
        ORIGINAL_SOFT.store(before, Ordering::Relaxed);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Some((before, before));
            }
        }
        Some((before, lim.rlim_cur))
    }
}

/// In a child between clone and exec: puts the soft limit back. Async-signal-safe (one
/// atomic load, two system calls, no allocation).
pub fn restore_in_child() {
    let soft = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if soft == u64::MAX {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; failures leave the inherited limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur != soft {
            lim.rlim_cur = soft.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
