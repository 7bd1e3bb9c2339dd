//! We are a child subreaper: orphans of our services re-parent to us and must be reaped.
//!
//! A process-wide `waitpid(-1)` would steal exit statuses that `tokio::process` waits for
//! (ECHILD), so only zombies we did not spawn are reaped, one pid at a time.

use std::collections::HashSet;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::tree::read_proc;

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

/// Our direct children, from `/proc/self/task/*/children`: far cheaper than a full `/proc`
/// scan on every SIGCHLD.
pub fn children() -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Reaps zombie children of ours that are not in `owned` (pids tokio waits for).
/// Returns (pid, command) of each one reaped.
pub fn reap_adopted(owned: &HashSet<i32>) -> Vec<(i32, String)> {
    let mut reaped = Vec::new();
    for pid in children() {
        if owned.contains(&pid) {
            continue;
        }
        let Some(p) = read_proc(pid) else { continue };
        if p.is_zombie() {
            if let Ok(status) = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG)) {
                if status.pid().is_some() {
                    reaped.push((p.pid, p.comm.clone()));
                }
            }
        }
    }
    reaped
}
