//! Chaos against a real daemon (issue 19): for a bounded time, random SIGKILLs of services
//! (main processes and escaped grandchildren), restarts, stops and starts, reloads that
//! change, add and remove services, followers coming and going, garbage on the socket, all
//! while services flood the log with numbered lines. Then `shutdown`, and:
//!
//! - no orphan: no process carrying this daemon's marker is left;
//! - no zombie: the daemon's children are reaped while it runs;
//! - no lost line: every run of every flooding service is on disk as 0, 1, 2, … without a
//!   duplicate or a torn line (across rotated files), and without a gap other than lines
//!   the daemon counted as dropped under back-pressure (its `N lines dropped` markers);
//! - no panic: the daemon's stderr has none, and it exits 0;
//! - `shutdown` finishes.
//!
//! `LM_CHAOS_SECS` sets how long the faults go on (default 20 in CI); `LM_CHAOS_SEED` replays
//! a run (the seed is printed).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const FLOODERS: [&str; 3] = ["flood-a", "flood-b", "flood-c"];

fn config(generation: u64, with_extra: bool) -> String {
    let mut t = String::from(
        "[logs]\nmax_size = \"2MiB\"\nkeep = 100\n\n[services.tree]\ncommand = \"{helper}\"\nargs = [\"tree\", \"4\"]\nstop_timeout = \"2s\"\nbackoff = { initial = \"50ms\", max = \"200ms\" }\nmax_restarts = 1000000\n",
    );
    for (i, name) in FLOODERS.iter().enumerate() {
        // A reload changes one service's env at a time: that one restarts, the rest stay.
        let gen = if generation % 3 == i as u64 {
            generation
        } else {
            0
        };
        t.push_str(&format!(
            "\n[services.{name}]\ncommand = \"{{helper}}\"\nargs = [\"seq\", \"500\", \"20\"]\nenv = {{ GEN = \"{gen}\" }}\nstop_timeout = \"2s\"\nbackoff = {{ initial = \"50ms\", max = \"200ms\" }}\nmax_restarts = 1000000\n"
        ));
    }
    t.push_str(
        "\n[services.sleeper]\ncommand = \"{helper}\"\nargs = [\"ignore-term\"]\nstop_timeout = \"300ms\"\nbackoff = { initial = \"50ms\", max = \"200ms\" }\nmax_restarts = 1000000\n",
    );
    if with_extra {
        t.push_str("\n[services.extra]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstop_timeout = \"1s\"\n");
    }
    t
}

/// Children of `pid` that are zombies.
fn zombie_children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let mut f = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace())
            .into_iter()
            .flatten();
        let state = f.next().unwrap_or("");
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid && state == "Z" {
            out.push(p);
        }
    }
    out
}

/// Every `seq PID N` line of a service's out log (rotated files oldest first), checked
/// whole; returns the sequence numbers per run, and the lines the daemon said it dropped.
fn runs(d: &Daemon, service: &str) -> (BTreeMap<String, Vec<u64>>, u64) {
    let base = d.state_dir.join(format!("logs/{service}.out.log"));
    let mut files = Vec::new();
    for i in (1..=100).rev() {
        let p = std::path::PathBuf::from(format!("{}.{i}", base.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(base);
    let tag = format!(" {service}|out seq ");
    let drop_tag = format!(" {service}|out [supervisor] ");
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut dropped = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for l in text.lines() {
            if let Some((_, rest)) = l.split_once(&drop_tag) {
                dropped += rest
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                continue;
            }
            let Some((_, rest)) = l.split_once(&tag) else {
                continue;
            };
            let mut parts = rest.split(' ');
            let pid = parts.next().expect("pid").to_string();
            let n: u64 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("torn line in {}: {l}", f.display()));
            assert_eq!(
                parts.next(),
                Some("x".repeat(40).as_str()),
                "torn line in {}: {l}",
                f.display()
            );
            out.entry(pid).or_default().push(n);
        }
    }
    (out, dropped)
}

/// SIGKILL `pid` only if it still carries this daemon's marker: a pid read a moment ago may
/// have been reused by someone else's process since.
fn kill_ours(d: &Daemon, pid: i32) {
    let key = lmsup::daemon::state_key(&d.state_dir);
    let ours =
        lmsup::spawn::tree::read_markers(pid).is_some_and(|(_, inst)| inst.starts_with(&key));
    if ours {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// `lmctl logs -f` processes the test started: killed by their own pid if still there when
/// the test ends, failed or not.
struct Followers(Vec<Child>);

impl Drop for Followers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `lmctl ARGS` whose outcome the chaos does not care about (the service may be gone).
fn try_lmctl(d: &Daemon, args: &[&str]) {
    let _ = d.lmctl(args);
}

#[test]
fn chaos_kills_restarts_reloads_and_floods_leave_nothing_behind() {
    let secs: u64 = std::env::var("LM_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("LM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9)
        });
    eprintln!("chaos: {secs}s, LM_CHAOS_SEED={seed}");
    let mut rng = Rng(seed);
    let mut d = Daemon::start(&config(0, false));
    for s in FLOODERS {
        d.wait_state(s, "running", Duration::from_secs(15));
    }
    let all = ["tree", "flood-a", "flood-b", "flood-c", "sleeper", "extra"];
    let mut followers = Followers(Vec::new());
    let mut generation = 0;
    let mut with_extra = false;
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let start = Instant::now();
    let mut zombies_seen: BTreeMap<i32, Instant> = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let svc = all[rng.below(all.len() as u64) as usize];
        let action = match rng.below(100) {
            0..=34 => "kill-main",
            35..=44 => "kill-tree",
            45..=59 => "restart",
            60..=67 => "stop-start",
            68..=77 => "reload",
            78..=85 => "follow",
            86..=92 => "garbage",
            _ => "status",
        };
        *counts.entry(action).or_default() += 1;
        match action {
            "kill-main" => {
                if let Some(pid) = d.pid(svc) {
                    kill_ours(&d, pid);
                }
            }
            "kill-tree" => {
                // Every process of the service's tree we can see, escaped grandchildren too.
                for (_, pid) in d.printed_pids("tree") {
                    if rng.below(2) == 0 {
                        kill_ours(&d, pid);
                    }
                }
            }
            "restart" => try_lmctl(&d, &["restart", svc, "--no-wait"]),
            "stop-start" => {
                try_lmctl(&d, &["stop", svc, "--no-wait"]);
                try_lmctl(&d, &["start", svc, "--no-wait"]);
            }
            "reload" => {
                generation += 1;
                if rng.below(3) == 0 {
                    with_extra = !with_extra;
                }
                d.write_config(&config(generation, with_extra));
                let out = d.lmctl(&["reload"]);
                assert!(
                    out.status.success(),
                    "reload failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "follow" => {
                if followers.0.len() < 3 {
                    let child = Command::new(LMCTL)
                        .arg("--config")
                        .arg(&d.config)
                        .args(["logs", "-f", "-n", "10"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn follower");
                    followers.0.push(child);
                } else {
                    let mut f = followers.0.remove(0);
                    let _ = f.kill();
                    let _ = f.wait();
                }
            }
            "garbage" => {
                if let Ok(mut s) = UnixStream::connect(d.state_dir.join("lmctl.sock")) {
                    let junk: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                    let _ = s.write_all(&junk);
                    if rng.below(2) == 0 {
                        let _ = s.write_all(b"\n");
                    }
                }
            }
            _ => {
                let st = d.lmctl(&["status", "--json"]);
                assert!(st.status.success(), "status failed: {st:?}");
            }
        }
        assert!(!d.daemon_exited(), "the daemon died: {}", d.daemon_stderr());
        // A zombie child of the daemon is fine for a moment (exit, then reap), never for long.
        let now = Instant::now();
        let zs = zombie_children(d.daemon_pid());
        zombies_seen.retain(|p, _| zs.contains(p));
        for z in zs {
            let since = *zombies_seen.entry(z).or_insert(now);
            assert!(
                now - since < Duration::from_secs(5),
                "pid {z} has been a zombie child of the daemon for 5s"
            );
        }
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
    }
    eprintln!("chaos: actions {counts:?}");

    // Shutdown finishes, the daemon exits 0 without a panic, and leaves nothing.
    let t = Instant::now();
    let out = d.lmctl(&["shutdown"]);
    assert!(out.status.success(), "shutdown failed: {out:?}");
    let mut daemon = d.child.take().expect("daemon");
    let code = loop {
        if let Ok(Some(st)) = daemon.try_wait() {
            break st.code();
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            let _ = daemon.wait();
            panic!("the daemon did not exit within 30s of shutdown");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "chaos: shutdown took {:?} with {} followers attached",
        t.elapsed(),
        followers.0.len()
    );
    // Followers still attached were ended by the shutdown.
    for f in &mut followers.0 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(f.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "a follower outlived the daemon");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let stderr = d.daemon_stderr();
    assert_eq!(code, Some(0), "daemon exit: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    wait_until(
        "no process of the daemon left",
        Duration::from_secs(5),
        || marked_pids(&d.state_dir).is_empty(),
    );

    // No lost, duplicated or torn line (torn ones fail inside `runs`).
    let mut total = 0;
    let mut runs_seen = 0;
    let mut all_dropped = 0;
    for s in FLOODERS {
        let (by_pid, dropped) = runs(&d, s);
        let mut missing = 0;
        for (pid, seq) in by_pid {
            // A reused pid starts again at 0: split there.
            let mut run: Vec<u64> = Vec::new();
            for n in seq.into_iter().chain([0]) {
                if n == 0 && !run.is_empty() {
                    assert!(
                        run.windows(2).all(|w| w[0] < w[1]),
                        "{s} run {pid}: a line repeated or out of order"
                    );
                    let last = run[run.len() - 1];
                    missing += last + 1 - run.len() as u64;
                    total += run.len();
                    runs_seen += 1;
                    run.clear();
                }
                run.push(n);
            }
        }
        assert!(
            missing <= dropped,
            "{s}: {missing} lines missing but only {dropped} reported dropped"
        );
        all_dropped += dropped;
    }
    eprintln!(
        "chaos: {runs_seen} runs, {total} lines checked, {all_dropped} reported dropped, seed {seed}"
    );
    assert!(
        runs_seen >= 3 && total > 10_000,
        "too little happened: {runs_seen} runs, {total} lines"
    );
}
