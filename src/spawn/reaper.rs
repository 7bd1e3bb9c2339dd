//! We are a child subreaper: orphans of our services re-parent to us and must be reaped.
//!
//! A process-wide `waitpid(-1)` would steal exit statuses that `tokio::process` waits for
//! (ECHILD), so only zombies we did not spawn are reaped, one pid at a time.

use std::collections::HashSet;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::tree::Snapshot;

/// Makes orphaned descendants re-parent to this process instead of init.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments has no memory effects.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reaps zombie children of ours that are not in `owned` (pids tokio waits for).
/// Returns (pid, command) of each one reaped.
pub fn reap_adopted(snap: &Snapshot, owned: &HashSet<i32>) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut reaped = Vec::new();
    for p in snap.procs.values() {
        if p.ppid == me && p.is_zombie() && !owned.contains(&p.pid) {
            if let Ok(status) = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG)) {
                if status.pid().is_some() {
                    reaped.push((p.pid, p.comm.clone()));
                }
            }
        }
    }
    reaped
}
