//! Memory, CPU and size of each service's whole process tree, and reaping what a service
//! leaves behind. The sampler owns its caches; it reports to the actor by message.

pub mod cgroup;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::control::proto::{MemorySource, ProcInfo};
use crate::spawn::kill::signal_checked;
use crate::spawn::tree::{members, MarkerCache, Proc, Snapshot, TreeIndex, TreeKey};

/// What the sampler needs to find one service's tree.
#[derive(Debug, Clone)]
pub struct Target {
    /// The run this target belongs to; its sample carries it back.
    pub run: Option<u64>,
    pub service: String,
    pub main_pid: Option<i32>,
    pub sessions: Vec<i32>,
    pub cgroup: Option<PathBuf>,
    /// The service's `max_memory`: at or above it in RSS, PSS is read fresh.
    pub max_memory: Option<u64>,
    /// Measure CPU this tick (someone looks, or an alert rule may): otherwise the last
    /// measured percentage is repeated.
    pub cpu: bool,
    /// Someone looks (status, show, monit, a scrape): cached PSS is kept fresh too.
    pub looked: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub run: Option<u64>,
    pub service: String,
    pub memory_bytes: u64,
    pub memory_source: MemorySource,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub cgroup_bytes: Option<u64>,
    pub cpu_percent: f64,
    pub procs: Vec<ProcInfo>,
}

/// PSS of one process in bytes (shared pages split among sharers), from smaps_rollup.
pub fn pss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A process's PSS as last read (None: unreadable), the RSS it was read at, and its age in
/// ticks.
pub type PssEntry = (Option<u64>, u64, u32);

/// PSS of `pid` for this tick: from `cache` while its RSS stands still, and never when the
/// tree's RSS reached its limit (the limit decision then needs the values of now). While
/// someone looks (`looked`), a cached value is at most `watch::PSS_REFRESH` ticks old: a
/// sharer coming or going moves PSS without moving RSS. Nobody looking, that drift matters
/// to nothing (below the limit in RSS is below it in PSS), and `smaps_rollup` is the
/// costly read (a page-table walk): a tenth of an idle daemon's CPU at 50 services.
pub fn pss_cached(
    pid: i32,
    rss: u64,
    near_limit: bool,
    looked: bool,
    cache: Option<PssEntry>,
) -> PssEntry {
    match cache {
        Some((pss, at_rss, age))
            if !near_limit && at_rss == rss && (!looked || age < watch::PSS_REFRESH) =>
        {
            (pss, at_rss, age.saturating_add(1))
        }
        _ => (pss_bytes(pid), rss, 0),
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Samples every target: those with a cgroup through files kept open (`watch`), the
/// others from one `/proc` snapshot (descendants, sessions, markers).
pub struct Sampler {
    prefix: String,
    watcher: watch::Watcher,
    markers: MarkerCache,
    prev_ticks: HashMap<(i32, u64), u64>,
    prev_at: Option<Instant>,
    /// PSS per process with the RSS it was read at and its age in ticks: smaps_rollup is the
    /// costly read, and an idle process's PSS rarely moves while its RSS stands still.
    pss_cache: HashMap<(i32, u64), PssEntry>,
    /// Command lines per process: they do not change after exec, and reading
    /// `/proc/PID/cmdline` for every process every tick was most of an idle tick.
    commands: HashMap<(i32, u64), String>,
}

impl Sampler {
    pub fn new(instance_prefix: String) -> Self {
        Sampler {
            prefix: instance_prefix,
            watcher: watch::Watcher::new(),
            markers: MarkerCache::default(),
            prev_ticks: HashMap::new(),
            prev_at: None,
            pss_cache: HashMap::new(),
            commands: HashMap::new(),
        }
    }

    pub fn sample(&mut self, targets: &[Target]) -> Vec<Sample> {
        let (grouped, scanned): (Vec<&Target>, Vec<&Target>) =
            targets.iter().partition(|t| t.cgroup.is_some());
        let mut out = self.watcher.sample(&grouped);
        if !scanned.is_empty() {
            out.extend(self.sample_scanned(&scanned));
        }
        out
    }

    /// Targets without a cgroup: their trees are found in a scan of all of `/proc`.
    fn sample_scanned(&mut self, targets: &[&Target]) -> Vec<Sample> {
        let snap = Snapshot::take();
        self.markers.retain_live(&snap);
        let now = Instant::now();
        let elapsed = self
            .prev_at
            .map(|t| now.duration_since(t))
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let hz = clock_ticks();
        let mut ticks_now = HashMap::new();
        let mut pss_now = HashMap::new();
        let mut out = Vec::new();
        let index = TreeIndex::new(&snap, &self.prefix, &mut self.markers);
        let mut commands = HashMap::new();
        for t in targets {
            let pids = tree_of(&snap, &index, t);
            let mut s = Sample {
                run: t.run,
                service: t.service.clone(),
                ..Default::default()
            };
            let mut cpu_ticks = 0u64;
            let mut rss_sum = 0;
            for pid in &pids {
                if let Some(p) = snap.procs.get(pid).filter(|p| !p.is_zombie()) {
                    rss_sum += p.rss_bytes;
                }
            }
            let near_limit = t.max_memory.is_some_and(|max| rss_sum >= max);
            for pid in &pids {
                let Some(p) = snap.procs.get(pid) else {
                    continue;
                };
                if p.is_zombie() {
                    continue;
                }
                let ticks = p.utime_ticks + p.stime_ticks;
                if let Some(prev) = self.prev_ticks.get(&(p.pid, p.start_time)) {
                    cpu_ticks += ticks.saturating_sub(*prev);
                }
                ticks_now.insert((p.pid, p.start_time), ticks);
                let key = (p.pid, p.start_time);
                let entry = pss_cached(
                    p.pid,
                    p.rss_bytes,
                    near_limit,
                    t.looked,
                    self.pss_cache.get(&key).copied(),
                );
                pss_now.insert(key, entry);
                let pss = entry.0;
                s.rss_bytes += p.rss_bytes;
                s.pss_bytes += pss.unwrap_or(p.rss_bytes);
                let command = match self.commands.remove(&key) {
                    Some(c) => c,
                    None => command_of(p),
                };
                commands.insert(key, command.clone());
                s.procs.push(ProcInfo {
                    pid: p.pid,
                    ppid: p.ppid,
                    command,
                    rss_bytes: p.rss_bytes,
                    pss_bytes: pss,
                });
            }
            (s.memory_bytes, s.memory_source) = (s.pss_bytes, MemorySource::Pss);
            if elapsed > 0.0 {
                s.cpu_percent = (cpu_ticks as f64 / hz) / elapsed * 100.0;
            }
            out.push(s);
        }
        self.prev_ticks = ticks_now;
        self.pss_cache = pss_now;
        self.commands = commands;
        self.prev_at = Some(now);
        out
    }
}

/// The tree of a service without a cgroup: descendants, session members and marker
/// holders.
fn tree_of(snap: &Snapshot, index: &TreeIndex<'_>, t: &Target) -> Vec<i32> {
    let mut set = index.members(&t.service, t.main_pid, &t.sessions);
    set.retain(|p| snap.procs.contains_key(p));
    set.into_iter().collect()
}

/// "comm" plus the first bytes of the command line, for people reading `show`.
pub fn command_of(p: &Proc) -> String {
    match std::fs::read(format!("/proc/{}/cmdline", p.pid)) {
        Ok(bytes) if !bytes.is_empty() => {
            let mut s: String = String::from_utf8_lossy(&bytes)
                .replace('\0', " ")
                .trim_end()
                .to_string();
            if s.len() > 120 {
                let mut cut = 120;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push('…');
            }
            s
        }
        _ => format!("[{}]", p.comm),
    }
}

/// Kills a set of leftover processes: `first` signal, up to `grace` to exit, then SIGKILL.
/// Returns what was found, as (pid, command). Blocking: run it off the actor.
pub fn kill_leftovers(
    procs: Vec<Proc>,
    first: nix::sys::signal::Signal,
    grace: Duration,
) -> Vec<(i32, String)> {
    let found: Vec<(i32, String)> = procs.iter().map(|p| (p.pid, command_of(p))).collect();
    for p in &procs {
        signal_checked(p.pid, p.start_time, first);
    }
    let deadline = Instant::now() + grace;
    let alive = |p: &Proc| {
        crate::spawn::tree::read_proc(p.pid)
            .is_some_and(|q| q.start_time == p.start_time && !q.is_zombie())
    };
    while Instant::now() < deadline && procs.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in procs.iter().filter(|p| alive(p)) {
        signal_checked(p.pid, p.start_time, nix::sys::signal::Signal::SIGKILL);
    }
    // SIGKILL is not instant; wait (bounded) so a restart does not race the old tree.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && procs.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(10));
    }
    found
}

/// Leftovers of a service after its main process exited. With a cgroup, its members are
/// the whole answer (nothing forked inside can leave it) and no `/proc` scan is needed;
/// without one, the tree by sessions and markers in a fresh snapshot.
pub fn leftovers_now(
    service: &str,
    prefix: &str,
    sessions: &[i32],
    cgroup: Option<&std::path::Path>,
) -> Vec<Proc> {
    if let Some(cg) = cgroup {
        return cgroup::procs(cg)
            .into_iter()
            .filter_map(crate::spawn::tree::read_proc)
            .filter(|p| !p.is_zombie())
            .collect();
    }
    leftovers(&Snapshot::take(), service, prefix, sessions, None)
}

/// Leftovers of a service in `snap`: its tree without a main pid, i.e. what survived.
pub fn leftovers(
    snap: &Snapshot,
    service: &str,
    prefix: &str,
    sessions: &[i32],
    cgroup: Option<&std::path::Path>,
) -> Vec<Proc> {
    let mut markers = MarkerCache::default();
    let key = TreeKey {
        service,
        instance_prefix: prefix,
        main_pid: None,
        sessions,
    };
    let mut set = members(snap, &key, &mut markers);
    if let Some(cg) = cgroup {
        set.extend(cgroup::procs(cg));
    }
    set.into_iter()
        .filter_map(|p| snap.procs.get(&p).filter(|p| !p.is_zombie()).cloned())
        .collect()
}

/// Leftovers of earlier daemon instances on this state dir: marker holders whose instance is
/// not ours, plus the members of their process groups (Chromium's renderers keep the group but
/// lose the markers). Grouped by service.
pub fn stale_instances(
    snap: &Snapshot,
    prefix: &str,
    current: &str,
) -> BTreeMap<String, Vec<Proc>> {
    let me = std::process::id() as i32;
    let mut out: BTreeMap<String, Vec<Proc>> = BTreeMap::new();
    let mut groups: HashMap<i32, String> = HashMap::new();
    for p in snap.procs.values() {
        if p.pid == me || p.is_zombie() {
            continue;
        }
        if let Some((svc, inst)) = crate::spawn::tree::read_markers(p.pid) {
            if inst.starts_with(prefix) && inst != current {
                groups.insert(p.pgid, svc.clone());
                groups.insert(p.sid, svc.clone());
                out.entry(svc).or_default().push(p.clone());
            }
        }
    }
    for p in snap.procs.values() {
        if p.pid == me || p.pid == 1 || p.is_zombie() {
            continue;
        }
        let svc = groups.get(&p.pgid).or_else(|| groups.get(&p.sid));
        if let Some(svc) = svc {
            let list = out.entry(svc.clone()).or_default();
            if !list.iter().any(|q| q.pid == p.pid) {
                list.push(p.clone());
            }
        }
    }
    out
}
