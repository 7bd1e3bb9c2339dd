//! Signals to pids we recorded, safe against pid reuse: through a pidfd opened after the
//! process's start time was checked, so a recycled pid is never hit.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

use super::tree::read_proc;

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the kernel hands us a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: fd is a fresh descriptor returned by the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> io::Result<()> {
    // SAFETY: plain syscall on a valid pidfd; null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends `sig` to `pid` only if it is still the process that started at `start_time`.
/// Returns false when the process is gone (or is another process now).
pub fn signal_checked(pid: i32, start_time: u64, sig: Signal) -> bool {
    match pidfd_open(pid) {
        Ok(fd) => {
            // The pidfd pins the process: if its start time matches now, it is ours.
            match read_proc(pid) {
                Some(p) if p.start_time == start_time => pidfd_send_signal(&fd, sig).is_ok(),
                _ => false,
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // Old kernel: check the start time, then signal by pid (a small race remains).
            match read_proc(pid) {
                Some(p) if p.start_time == start_time => {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
                }
                _ => false,
            }
        }
        Err(_) => false,
    }
}

/// Sends `sig` to a whole process group. ESRCH (group empty) is not an error.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
    }
}
