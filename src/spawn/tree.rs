//! A snapshot of `/proc`, and the members of a service's process tree in it.
//!
//! No single signal finds everything (DESIGN.md, Process model): descendants by parent
//! links, members of the service's session or process groups, and processes carrying our
//! env markers. Chromium's crashpad handlers leave the session but keep the markers; its
//! renderers overwrite their environ but keep the session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;

/// One process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub state: char,
    pub comm: String,
    /// Clock ticks since boot: with the pid, identifies a process across pid reuse.
    pub start_time: u64,
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub rss_bytes: u64,
}

impl Proc {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Parses `/proc/PID/stat`; the comm field may hold spaces and parentheses.
pub fn parse_stat(text: &str, page: u64) -> Option<Proc> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    Some(Proc {
        pid,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        state: f.first()?.chars().next()?,
        comm,
        utime_ticks: f.get(11)?.parse().ok()?,
        stime_ticks: f.get(12)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
        rss_bytes: f.get(21)?.parse::<u64>().ok()? * page,
    })
}

pub fn read_proc(pid: i32) -> Option<Proc> {
    // One read of a buffer that fits a stat line (~350 bytes; the command is at most
    // 16 bytes): `read_to_string` stats the file, sees size 0 and grows from 32 bytes, five
    // reads a process.
    let path = format!("/proc/{pid}/stat");
    let mut buf = [0u8; 2048];
    let file = fs::File::open(&path).ok()?;
    let n = std::io::Read::read(&mut &file, &mut buf).ok()?;
    if n == buf.len() {
        return parse_stat(&fs::read_to_string(&path).ok()?, page_size());
    }
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?, page_size())
}

/// Every process of the machine at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub procs: BTreeMap<i32, Proc>,
}

impl Snapshot {
    pub fn take() -> Snapshot {
        let page = page_size();
        let mut procs = BTreeMap::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                if let Some(p) = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|t| parse_stat(&t, page))
                {
                    procs.insert(pid, p);
                }
            }
        }
        Snapshot { procs }
    }

    /// Just these processes (those still there).
    pub fn of(pids: impl IntoIterator<Item = i32>) -> Snapshot {
        let page = page_size();
        let procs = pids
            .into_iter()
            .filter_map(|pid| {
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|t| parse_stat(&t, page))
                    .map(|p| (pid, p))
            })
            .collect();
        Snapshot { procs }
    }

    pub fn children_of(&self) -> HashMap<i32, Vec<i32>> {
        let mut map: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in self.procs.values() {
            map.entry(p.ppid).or_default().push(p.pid);
        }
        map
    }

    /// `roots` and all their descendants by parent links.
    pub fn descendants(&self, roots: &[i32], children: &HashMap<i32, Vec<i32>>) -> BTreeSet<i32> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<i32> = roots
            .iter()
            .copied()
            .filter(|p| self.procs.contains_key(p))
            .collect();
        while let Some(pid) = stack.pop() {
            if out.insert(pid) {
                if let Some(kids) = children.get(&pid) {
                    stack.extend(kids);
                }
            }
        }
        out
    }
}

/// Our services run as our uid: other users' processes cannot carry our markers, and reading
/// their environ (which takes the target's mm lock) could only stall us.
fn owned_by_us(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me)
}

/// Reads the env markers of a process; `None` when unreadable or absent.
pub fn read_markers(pid: i32) -> Option<(String, String)> {
    let data = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let mut service = None;
    let mut instance = None;
    for var in data.split(|b| *b == 0) {
        if let Some(v) = var.strip_prefix(b"LM_SERVICE=") {
            service = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = var.strip_prefix(b"LM_SUPERVISOR=") {
            instance = Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    Some((service?, instance?))
}

/// Remembers markers per (pid, start time): Chromium overwrites its environ after start, so
/// the first read is the one that counts, and re-reading every process each tick costs.
#[derive(Default)]
pub struct MarkerCache {
    seen: HashMap<(i32, u64), Option<(String, String)>>,
}

impl MarkerCache {
    pub fn get(&mut self, p: &Proc) -> Option<&(String, String)> {
        self.seen
            .entry((p.pid, p.start_time))
            .or_insert_with(|| {
                if owned_by_us(p.pid) {
                    read_markers(p.pid)
                } else {
                    None
                }
            })
            .as_ref()
    }

    /// Drops entries of processes that are gone.
    pub fn retain_live(&mut self, snap: &Snapshot) {
        self.seen
            .retain(|(pid, start), _| snap.procs.get(pid).is_some_and(|p| p.start_time == *start));
    }
}

/// What identifies one service's tree in a snapshot.
#[derive(Debug, Clone)]
pub struct TreeKey<'a> {
    pub service: &'a str,
    /// Marker values that count as ours: the current instance, or any of a set.
    pub instance_prefix: &'a str,
    /// The main pid while it runs: its session and descendants belong to the tree.
    pub main_pid: Option<i32>,
    /// Sessions (= the pgid of a session leader) this service's runs created and that may
    /// still hold members after the leader died.
    pub sessions: &'a [i32],
}

/// One pass over a snapshot that answers "which processes belong to service X" for every
/// service: children by parent, members by session and process group, marker holders by
/// service. Building it is O(processes); each lookup then costs only its own tree.
pub struct TreeIndex<'a> {
    snap: &'a Snapshot,
    children: HashMap<i32, Vec<i32>>,
    by_group: HashMap<i32, Vec<i32>>,
    by_marker: HashMap<String, Vec<i32>>,
}

impl<'a> TreeIndex<'a> {
    /// `instance_prefix`: marker values that count as ours.
    pub fn new(
        snap: &'a Snapshot,
        instance_prefix: &str,
        markers: &mut MarkerCache,
    ) -> TreeIndex<'a> {
        let me = std::process::id() as i32;
        let mut by_group: HashMap<i32, Vec<i32>> = HashMap::new();
        let mut by_marker: HashMap<String, Vec<i32>> = HashMap::new();
        for p in snap.procs.values() {
            if p.pid == me || p.pid == 1 {
                continue;
            }
            by_group.entry(p.sid).or_default().push(p.pid);
            if p.pgid != p.sid {
                by_group.entry(p.pgid).or_default().push(p.pid);
            }
            if let Some((svc, inst)) = markers.get(p) {
                if inst.starts_with(instance_prefix) {
                    by_marker.entry(svc.clone()).or_default().push(p.pid);
                }
            }
        }
        TreeIndex {
            snap,
            children: snap.children_of(),
            by_group,
            by_marker,
        }
    }

    /// Members of a service's tree: descendants of the main pid, members of its sessions,
    /// and marker holders (and their descendants). Our own pid is never a member.
    pub fn members(&self, service: &str, main_pid: Option<i32>, sessions: &[i32]) -> BTreeSet<i32> {
        let mut roots: Vec<i32> = main_pid.into_iter().collect();
        for s in sessions {
            roots.extend(self.by_group.get(s).into_iter().flatten());
        }
        roots.extend(self.by_marker.get(service).into_iter().flatten());
        let mut set = self.snap.descendants(&roots, &self.children);
        set.remove(&(std::process::id() as i32));
        set
    }
}

/// Members of one service's tree (see [`TreeIndex::members`]).
pub fn members(snap: &Snapshot, key: &TreeKey<'_>, markers: &mut MarkerCache) -> BTreeSet<i32> {
    TreeIndex::new(snap, key.instance_prefix, markers).members(
        key.service,
        key.main_pid,
        key.sessions,
    )
}

/// Now, in the unit of a process's start time (`/proc/PID/stat` field 22): clock ticks
/// since boot. None when `/proc/uptime` cannot be read.
pub fn ticks_since_boot() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    // Rounded up: a process started in this tick counts as born before.
    Some((secs * hz).ceil() as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let text = "4242 (a b) (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 123456 1000000 250 18446744073709551615";
        let p = parse_stat(text, 4096).unwrap();
        assert_eq!((p.pid, p.ppid, p.pgid, p.sid), (4242, 1, 4242, 4242));
        assert_eq!(p.comm, "a b) (c)");
        assert_eq!((p.utime_ticks, p.stime_ticks, p.start_time), (7, 3, 123456));
        assert_eq!(p.rss_bytes, 250 * 4096);
    }

    #[test]
    fn finds_own_process() {
        let snap = Snapshot::take();
        let me = std::process::id() as i32;
        assert!(snap.procs.contains_key(&me));
        let children = snap.children_of();
        assert!(snap.descendants(&[1], &children).contains(&me) || snap.procs.contains_key(&1));
    }
}
