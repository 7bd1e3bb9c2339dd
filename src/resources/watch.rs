//! The sampler's cheap path for services with a cgroup: files kept open and re-read in
//! place, and only what changed is read again.
//!
//! An idle tick used to open, read and close `cgroup.procs`, `/proc/PID/stat` and a missing
//! `memory.current` for every service (~10 µs each). Re-reading an open file at offset 0 is
//! ~1.7 µs, so each service costs three `pread`s a tick: its members (`cgroup.procs`), its
//! tree's CPU (`cpu.stat`, which also counts descendants that already exited) and each
//! member's resident size (`statm`). `smaps_rollup` (PSS, ~40 µs) is read only when a
//! process's RSS moved, every `PSS_REFRESH` ticks while someone looks, or when the RSS sum
//! reaches the service's `max_memory`: PSS ≤ RSS, so below that the limit decision needs
//! no PSS.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::control::proto::{MemorySource, ProcInfo};

use super::{Sample, Target};

/// While someone looks, re-read a process's PSS at least this often (in ticks) while its
/// RSS stands still: an idle process's PSS moves only when a page sharer comes or goes.
pub const PSS_REFRESH: u32 = 30;

/// A tree whose last full read is older than this (in ticks) is read again even when
/// nothing under our cgroups ran: a bound on what no CPU time can still change (swap-in,
/// a huge-page collapse by khugepaged).
const QUIET_REUSE_MAX: u64 = 10;

/// Ticks without a sample after which a service's or a process's open files are closed:
/// longer than the slowest sampling period (every 10th tick).
const FORGET_AFTER: u64 = 25;

/// Reads a whole pseudo-file from offset 0 into `buf`. procfs and cgroupfs files are
/// seq_files: a read shorter than asked is the end, and reading at 0 again regenerates them.
pub fn read_from_start(file: &File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    loop {
        let start = buf.len();
        let room = buf.capacity() - start;
        buf.resize(buf.capacity(), 0);
        let n = match file.read_at(&mut buf[start..], start as u64) {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        };
        buf.truncate(start + n);
        if n < room {
            return Ok(());
        }
        buf.reserve(buf.len());
    }
}

/// One member process, with its `statm` open.
struct Member {
    ppid: i32,
    command: String,
    statm: File,
    rss: u64,
    pss: Option<super::PssEntry>,
    /// The tick this member was last listed in its cgroup.
    seen: u64,
}

/// One service's cgroup, with its files open. Belongs to one run: a restart may re-create
/// the directory (see `cgroup::renew`), and an open file of the old one reads nothing.
struct Group {
    run: Option<u64>,
    dir: PathBuf,
    procs: File,
    cpu: Option<File>,
    memory: Option<File>,
    /// `usage_usec` of `cpu.stat` and when it was read.
    last_cpu: Option<(u64, Instant)>,
    /// CPU % between the last two reads of `cpu.stat`.
    cpu_percent: f64,
    members: Vec<i32>,
    seen: u64,
    /// The last full sample, the tick it was read at and the CPU usage of the whole subtree
    /// then (see `Watcher::quiet_usage`).
    last: Option<(Sample, u64, u64)>,
}

impl Group {
    fn open(dir: &Path, run: Option<u64>) -> Option<Group> {
        Some(Group {
            run,
            dir: dir.to_path_buf(),
            procs: File::open(dir.join("cgroup.procs")).ok()?,
            cpu: File::open(dir.join("cpu.stat")).ok(),
            memory: File::open(dir.join("memory.current")).ok(),
            last_cpu: None,
            cpu_percent: 0.0,
            members: Vec::new(),
            seen: 0,
            last: None,
        })
    }
}

#[derive(Default)]
pub struct Watcher {
    groups: HashMap<String, Group>,
    members: HashMap<i32, Member>,
    tick: u64,
    buf: Vec<u8>,
    page: u64,
    /// `cpu.stat` of the cgroup that holds every service's (hierarchical: it counts them all).
    root: Option<(PathBuf, File)>,
}

impl Watcher {
    pub fn new() -> Watcher {
        Watcher {
            page: crate::spawn::tree::page_size(),
            ..Default::default()
        }
    }

    /// Samples targets that have a cgroup. Not every service is a target every tick (see
    /// the actor), so groups and members are forgotten (their files closed) only after
    /// `FORGET_AFTER` ticks without a sample.
    pub fn sample(&mut self, targets: &[&Target]) -> Vec<Sample> {
        self.tick += 1;
        let tick = self.tick;
        let usage = self.quiet_usage(targets);
        let out = targets
            .iter()
            .filter_map(|t| match self.unchanged(t, tick, usage) {
                Some(s) => Some(s),
                None => self.sample_one(t, tick, usage),
            })
            .collect();
        let keep = |seen: u64| tick.saturating_sub(seen) <= FORGET_AFTER;
        self.groups.retain(|_, g| keep(g.seen));
        self.members.retain(|_, m| keep(m.seen));
        out
    }

    fn sample_one(&mut self, t: &Target, tick: u64, usage: Option<u64>) -> Option<Sample> {
        let dir = t.cgroup.as_deref()?;
        let fresh = match self.groups.get(&t.service) {
            Some(g) => g.run != t.run || g.dir != dir,
            None => true,
        };
        if fresh {
            let g = Group::open(dir, t.run)?;
            self.groups.insert(t.service.clone(), g);
        }
        let group = self.groups.get_mut(&t.service)?;
        group.seen = tick;
        let pids = match read_from_start(&group.procs, &mut self.buf) {
            Ok(()) => parse_pids(&self.buf),
            Err(_) => {
                // The directory went away under us (a renewal): read it afresh next tick.
                group.seen = 0;
                Vec::new()
            }
        };
        // A member that left may have orphaned others: their parent links changed. Its
        // open file goes now.
        let left: Vec<i32> = group
            .members
            .iter()
            .filter(|p| !pids.contains(p))
            .copied()
            .collect();
        let reparented = !left.is_empty();
        for pid in left {
            self.members.remove(&pid);
        }
        group.members.clone_from(&pids);
        let now = Instant::now();
        // The first read of a run is the baseline the next one measures from.
        let read_cpu = t.cpu || group.last_cpu.is_none();
        if let Some(f) = group.cpu.as_ref().filter(|_| read_cpu) {
            if read_from_start(f, &mut self.buf).is_ok() {
                if let Some(usec) = usage_usec(&self.buf) {
                    if let Some((prev, at)) = group.last_cpu {
                        let secs = now.duration_since(at).as_secs_f64();
                        if secs > 0.0 {
                            group.cpu_percent =
                                usec.saturating_sub(prev) as f64 / 1e6 / secs * 100.0;
                        }
                    }
                    group.last_cpu = Some((usec, now));
                }
            }
        }
        let cpu_percent = group.cpu_percent;
        let cgroup_bytes = group
            .memory
            .as_ref()
            .and_then(|f| read_from_start(f, &mut self.buf).ok())
            .and_then(|()| std::str::from_utf8(&self.buf).ok()?.trim().parse().ok());

        let mut live = Vec::with_capacity(pids.len());
        let mut rss_sum = 0u64;
        for pid in pids {
            let Some(rss) = self.member_rss(pid, tick, reparented) else {
                continue;
            };
            rss_sum += rss;
            live.push(pid);
        }
        // Below the limit in RSS is below it in PSS; at or above it, the decision needs
        // every member's PSS as of now.
        let near_limit = t.max_memory.is_some_and(|max| rss_sum >= max);
        let mut s = Sample {
            run: t.run,
            service: t.service.clone(),
            rss_bytes: rss_sum,
            cgroup_bytes,
            cpu_percent,
            ..Default::default()
        };
        for pid in live {
            let Some(m) = self.members.get_mut(&pid) else {
                continue;
            };
            let entry = super::pss_cached(pid, m.rss, near_limit, t.looked, m.pss);
            m.pss = Some(entry);
            let pss = entry.0;
            s.pss_bytes += pss.unwrap_or(m.rss);
            s.procs.push(ProcInfo {
                pid,
                ppid: m.ppid,
                command: m.command.clone(),
                rss_bytes: m.rss,
                pss_bytes: pss,
            });
        }
        (s.memory_bytes, s.memory_source) = match s.cgroup_bytes {
            Some(b) => (b, MemorySource::Cgroup),
            None => (s.pss_bytes, MemorySource::Pss),
        };
        if let Some(g) = self.groups.get_mut(&t.service) {
            g.last = usage.map(|u| (s.clone(), tick, u));
        }
        Some(s)
    }

    /// CPU time (µs) used so far by everything under the cgroup that holds the targets'
    /// cgroups, or None when they do not share one parent or it cannot be read.
    fn quiet_usage(&mut self, targets: &[&Target]) -> Option<u64> {
        let parent = targets.first()?.cgroup.as_deref()?.parent()?;
        if !targets
            .iter()
            .all(|t| t.cgroup.as_deref().and_then(Path::parent) == Some(parent))
        {
            return None;
        }
        if self.root.as_ref().is_none_or(|(dir, _)| dir != parent) {
            let file = File::open(parent.join("cpu.stat")).ok()?;
            self.root = Some((parent.to_path_buf(), file));
        }
        let (_, file) = self.root.as_ref()?;
        read_from_start(file, &mut self.buf).ok()?;
        usage_usec(&self.buf)
    }

    /// The last sample again, when nothing under our cgroups has run since it was read:
    /// a tree that used no CPU cannot have forked, exited or faulted a page in, so its
    /// members and their memory are what they were (its CPU is 0 %). Idle services then
    /// cost no read at all, even while someone looks: what a status shows is then at most
    /// `QUIET_REUSE_MAX` ticks old and still true, but for PSS drifting as processes
    /// outside the tree stop sharing its pages. Not at or over the limit (PSS there is
    /// read every tick).
    fn unchanged(&mut self, t: &Target, tick: u64, usage: Option<u64>) -> Option<Sample> {
        let g = self.groups.get_mut(&t.service)?;
        let (last, at, then) = g.last.as_ref()?;
        let reuse = g.run == t.run
            && Some(g.dir.as_path()) == t.cgroup.as_deref()
            && usage == Some(*then)
            && tick.saturating_sub(*at) < QUIET_REUSE_MAX
            && t.max_memory.is_none_or(|max| last.rss_bytes < max);
        if !reuse {
            return None;
        }
        let s = Sample {
            cpu_percent: 0.0,
            ..last.clone()
        };
        g.seen = tick;
        g.cpu_percent = 0.0;
        for pid in &g.members {
            if let Some(m) = self.members.get_mut(pid) {
                m.seen = tick;
            }
        }
        Some(s)
    }

    /// The member's RSS now, opening its files the first time it is seen. None when it is
    /// gone or a zombie (no memory left to count).
    fn member_rss(&mut self, pid: i32, tick: u64, reparented: bool) -> Option<u64> {
        if let Some(m) = self.members.get_mut(&pid) {
            // An open `statm` of a process that was reaped fails (ESRCH), so a reused pid
            // cannot be read through it: it gets a fresh entry below.
            if read_from_start(&m.statm, &mut self.buf).is_ok() {
                if let Some(rss) = statm_rss(&self.buf, self.page) {
                    m.seen = tick;
                    m.rss = rss;
                    if reparented {
                        if let Some(p) = crate::spawn::tree::read_proc(pid) {
                            m.ppid = p.ppid;
                        }
                    }
                    return Some(rss);
                }
            }
            self.members.remove(&pid);
        }
        let statm = File::open(format!("/proc/{pid}/statm")).ok()?;
        let p = crate::spawn::tree::read_proc(pid).filter(|p| !p.is_zombie())?;
        read_from_start(&statm, &mut self.buf).ok()?;
        let rss = statm_rss(&self.buf, self.page)?;
        self.members.insert(
            pid,
            Member {
                ppid: p.ppid,
                command: super::command_of(&p),
                statm,
                rss,
                pss: None,
                seen: tick,
            },
        );
        Some(rss)
    }
}

fn parse_pids(buf: &[u8]) -> Vec<i32> {
    buf.split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok()?.trim().parse().ok())
        .collect()
}

/// `usage_usec` of a `cpu.stat`.
fn usage_usec(buf: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(buf).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident bytes from `statm` (its second field, in pages). A zombie's or a kernel
/// thread's `statm` is all zeros: None, nothing to count.
fn statm_rss(buf: &[u8], page: u64) -> Option<u64> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut f = text.split_whitespace();
    let size: u64 = f.next()?.parse().ok()?;
    let resident: u64 = f.next()?.parse().ok()?;
    (size > 0).then_some(resident * page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statm_and_skips_zombies() {
        assert_eq!(
            statm_rss(b"2000 300 100 1 0 50 0\n", 4096),
            Some(300 * 4096)
        );
        assert_eq!(statm_rss(b"0 0 0 0 0 0 0\n", 4096), None);
        assert_eq!(statm_rss(b"garbage", 4096), None);
    }

    #[test]
    fn parses_cpu_stat_and_pid_lists() {
        let stat = b"usage_usec 1337\nuser_usec 1000\nsystem_usec 337\n";
        assert_eq!(usage_usec(stat), Some(1337));
        assert_eq!(usage_usec(b"user_usec 5\n"), None);
        assert_eq!(parse_pids(b"12\n345\n\n"), vec![12, 345]);
    }

    #[test]
    fn rereads_an_open_proc_file_in_place_and_grows_past_the_first_buffer() {
        let f = File::open("/proc/self/status").expect("own status");
        let mut buf = Vec::new();
        read_from_start(&f, &mut buf).expect("read");
        let first = String::from_utf8_lossy(&buf).to_string();
        assert!(first.contains("VmRSS:"), "{first}");
        read_from_start(&f, &mut buf).expect("read again");
        assert!(String::from_utf8_lossy(&buf).contains("VmRSS:"));

        // A file bigger than the initial 4 KiB buffer is read whole.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        let text: String = (0..3000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, &text).expect("write");
        let f = File::open(&path).expect("open");
        read_from_start(&f, &mut buf).expect("read big");
        assert_eq!(buf, text.as_bytes());
    }
}
