//! `/proc` scanning and signalling for browser trees.
//!
//! Invariant: nothing here matches a process by its name. A process is ours
//! only when it carries our exact env marker in `/proc/PID/environ`, our exact
//! `--user-data-dir=...` argument in `/proc/PID/cmdline`, or belongs to a
//! process group whose leader we spawned.

use std::path::Path;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Every numeric entry of `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

fn nul_fields(pid: i32, file: &str) -> Vec<Vec<u8>> {
    match std::fs::read(format!("/proc/{pid}/{file}")) {
        Ok(bytes) => bytes
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True when `/proc/PID/environ` has exactly the entry `entry` (`KEY=VALUE`).
pub fn environ_has(pid: i32, entry: &str) -> bool {
    nul_fields(pid, "environ")
        .iter()
        .any(|f| f == entry.as_bytes())
}

/// True when `/proc/PID/cmdline` has exactly the argument `arg`.
pub fn cmdline_has(pid: i32, arg: &str) -> bool {
    nul_fields(pid, "cmdline")
        .iter()
        .any(|f| f == arg.as_bytes())
}

/// The `--user-data-dir=` argument a browser with this profile carries.
pub fn profile_arg(profile: &Path) -> String {
    format!("--user-data-dir={}", profile.display())
}

/// `(ppid, pgid, state)` from `/proc/PID/stat`.
pub fn stat(pid: i32) -> Option<(i32, i32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything; fields
    // after the last ')' are positional.
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_ascii_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgid = it.next()?.parse().ok()?;
    Some((ppid, pgid, state))
}

/// True when the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((_, _, st)) if st != 'Z' && st != 'X')
}

/// Live processes (not us, not zombies) carrying `marker` in their environment,
/// `profile_arg` in their command line, or (when given) in process group `pgid`.
pub fn find_browser_procs(marker: &str, profile_arg: &str, pgid: Option<i32>) -> Vec<i32> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let Some((_, pg, st)) = stat(pid) else {
                return false;
            };
            if st == 'Z' || st == 'X' {
                return false;
            }
            pgid == Some(pg) || environ_has(pid, marker) || cmdline_has(pid, profile_arg)
        })
        .collect()
}

/// Sends `sig` to one pid; a vanished process is not an error.
pub fn signal_pid(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Sends `sig` to a process group; a vanished group is not an error.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileLockError {
    #[error(
        "profile {dir} is in use by a running Chromium (pid {pid}, per its SingletonLock); \
         stop that process or wait for it to exit"
    )]
    InUse { dir: String, pid: i32 },
    #[error("failed to clear stale Chromium lock in {dir}: {source}")]
    Clear { dir: String, source: std::io::Error },
}

/// Checks Chromium's `SingletonLock` (a symlink to `hostname-PID`) in a profile.
///
/// A lock held by a live Chromium using this very profile fails the launch
/// (a second browser would corrupt the profile or hand over to the first and
/// exit). A stale lock (dead PID, reused PID of another program, or another
/// host's) is removed together with its socket and cookie links.
pub fn check_profile_lock(profile: &Path) -> Result<(), ProfileLockError> {
    let lock = profile.join("SingletonLock");
    let Ok(target) = std::fs::read_link(&lock) else {
        return Ok(());
    };
    let target = target.to_string_lossy().into_owned();
    let (host, pid) = match target.rsplit_once('-') {
        Some((h, p)) => (h.to_owned(), p.parse::<i32>().ok()),
        None => (String::new(), None),
    };
    let same_host = hostname().is_some_and(|h| h == host);
    if let Some(pid) = pid {
        if same_host && alive(pid) && cmdline_has(pid, &profile_arg(profile)) {
            return Err(ProfileLockError::InUse {
                dir: profile.display().to_string(),
                pid,
            });
        }
    }
    for name in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        match std::fs::remove_file(profile.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ProfileLockError::Clear {
                    dir: profile.display().to_string(),
                    source,
                })
            }
        }
    }
    tracing::info!(profile = %profile.display(), lock = %target, "removed stale Chromium lock");
    Ok(())
}

/// This machine's host name, as Chromium writes it into `SingletonLock`.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
}

/// 16 random hex digits from the kernel, for markers.
pub fn random_hex() -> String {
    use std::io::Read;
    let mut buf = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok();
    if !ok {
        // Fall back to time and pid; uniqueness within this host is enough.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf = ((t as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_self() {
        let me = std::process::id() as i32;
        let (ppid, _pgid, st) = stat(me).unwrap();
        assert!(ppid > 0);
        assert_ne!(st, 'Z');
        assert!(alive(me));
    }

    #[test]
    fn stale_lock_is_removed_and_live_foreign_pid_is_stale() {
        let dir = std::env::temp_dir().join(format!("sm-lock-{}", random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = hostname().unwrap();
        // Our own pid is alive but does not carry the profile argument: stale.
        std::os::unix::fs::symlink(
            format!("{host}-{}", std::process::id()),
            dir.join("SingletonLock"),
        )
        .unwrap();
        check_profile_lock(&dir).unwrap();
        assert!(std::fs::symlink_metadata(dir.join("SingletonLock")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn random_is_random() {
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 16);
    }
}
