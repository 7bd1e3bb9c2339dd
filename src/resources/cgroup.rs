//! A cgroup v2 directory per service, where the daemon may create one: membership that
//! `setsid` and re-parenting cannot escape, an atomic `cgroup.kill`, and a memory counter
//! (`memory.current`, read by `watch.rs` where the controller is on).

use std::path::{Path, PathBuf};

/// Candidate roots, strongest first: our own delegated cgroup (under systemd with
/// `Delegate=yes`), then a writable unified hierarchy.
pub fn find_root(instance_key: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") {
        for line in text.lines() {
            if let Some(rel) = line.strip_prefix("0::") {
                let base = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
                if base.join("cgroup.kill").exists() {
                    candidates.push(base.join(format!("lm-{instance_key}")));
                }
            }
        }
    }
    candidates.push(PathBuf::from(format!(
        "/sys/fs/cgroup/unified/leadmaster-{instance_key}"
    )));
    for c in candidates {
        let Some(parent) = c.parent() else { continue };
        if !parent.join("cgroup.procs").exists() {
            continue;
        }
        if std::fs::create_dir_all(&c).is_ok()
            && c.join("cgroup.procs").exists()
            && c.join("cgroup.kill").exists()
        {
            return Some(c);
        }
    }
    None
}

/// Creates (or reuses) the service's cgroup under `root`.
pub fn service_dir(root: &Path, service: &str) -> Option<PathBuf> {
    let dir = root.join(service);
    std::fs::create_dir_all(&dir).ok()?;
    dir.join("cgroup.procs").exists().then_some(dir)
}

pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process of the cgroup at once.
pub fn kill(dir: &Path) -> bool {
    std::fs::write(dir.join("cgroup.kill"), "1").is_ok()
}

/// Kills the cgroup and waits (bounded) until it is empty. Blocking: off the actor.
pub fn kill_and_wait(dir: &Path, timeout: std::time::Duration) {
    kill(dir);
    let deadline = std::time::Instant::now() + timeout;
    while populated(dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Makes a killed, empty cgroup new again. Some kernels (seen on 6.18) remember a
/// `cgroup.kill` in the cgroup and SIGKILL every later child that `clone3` puts straight
/// into it (`CLONE_INTO_CGROUP`); a removed and re-created cgroup starts clean.
pub fn renew(dir: &Path) -> bool {
    if populated(dir) {
        return false;
    }
    let _ = std::fs::remove_dir(dir);
    std::fs::create_dir_all(dir).is_ok() && dir.join("cgroup.procs").exists()
}

pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// Removes the daemon's root and what is left under it: the cgroups made ahead for
/// services that never ran (empty ones only; a populated cgroup cannot be removed).
pub fn remove_tree(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&e.path());
            }
        }
    }
    remove(root);
}
