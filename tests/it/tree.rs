//! The whole process tree: memory over it, stop kills it, leftovers of a crashed daemon are
//! reaped, no zombies. Every test runs with cgroups and without.

use std::time::Duration;

use crate::harness::*;

const MODES: [&str; 2] = ["auto", "off"];

fn config(mode: &str, services: &str) -> String {
    format!("[supervisor]\nstate_dir = \"var\"\ncgroups = \"{mode}\"\nresource_interval = \"200ms\"\n\n{services}")
}

fn zombies_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(proc_) = lmsup::spawn::tree::read_proc(p) {
            if proc_.ppid == pid && proc_.is_zombie() {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn memory_counts_an_escaped_grandchild_and_stop_kills_it() {
    for mode in MODES {
        let d = Daemon::start(&config(
            mode,
            "[services.t]\ncommand = \"{helper}\"\nargs = [\"tree\", \"120\"]\n",
        ));
        wait_until("3 printed pids", Duration::from_secs(10), || {
            d.printed_pids("t").len() >= 3
        });
        let pids: Vec<i32> = d.printed_pids("t").into_iter().map(|(_, p)| p).collect();
        wait_until(
            &format!("[{mode}] memory over 120 MiB and 3 processes"),
            Duration::from_secs(10),
            || {
                let s = d.svc("t");
                s["memory_bytes"].as_u64().unwrap_or(0) >= 120 << 20
                    && s["processes"].as_u64().unwrap_or(0) >= 3
            },
        );
        let s = d.svc("t");
        if mode == "off" {
            assert_eq!(s["tree"], "group+markers");
        }
        let show = d.ok(&["show", "t"]);
        assert!(
            show.contains(&format!("{}", pids[pids.len() - 1])) || show.contains("tree"),
            "{show}"
        );
        d.ok(&["stop", "t"]);
        d.wait_state("t", "stopped", Duration::from_secs(10));
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        assert!(left.is_empty(), "[{mode}] still alive after stop: {left:?}");
    }
}

/// Nobody asks for a status while the tree grows: the daemon still samples a service
/// without a memory limit on its own (its slow period), so the first status shows what the
/// tree grew to since its first sample. A fixed wait on purpose: every way to look would
/// itself speed sampling up.
#[test]
fn an_unwatched_service_without_a_limit_is_still_sampled() {
    for mode in MODES {
        let d = Daemon::start(&config(
            mode,
            "[services.g]\ncommand = \"{helper}\"\nargs = [\"grow\", \"1\", \"100\"]\n",
        ));
        // 1 MiB every 100 ms in a child; 10 ticks of 200 ms make the slow period.
        std::thread::sleep(Duration::from_secs(6));
        let s = d.svc("g");
        assert!(
            s["memory_bytes"].as_u64().unwrap_or(0) >= 30 << 20
                && s["processes"].as_u64().unwrap_or(0) >= 2,
            "[{mode}] the first status after 6 s unasked: {s}"
        );
    }
}

#[test]
fn a_grandchild_growing_past_max_memory_restarts_the_service() {
    for mode in MODES {
        let d = Daemon::start(&config(
            mode,
            "[services.g]\ncommand = \"{helper}\"\nargs = [\"grow\", \"25\", \"100\"]\nmax_memory = \"150MiB\"\nbackoff = { initial = \"0s\" }\nmin_uptime = \"0s\"\nstart_grace = \"0s\"\n",
        ));
        d.wait_state("g", "running", Duration::from_secs(10));
        let first = d.pid("g").unwrap();
        wait_until(
            &format!("[{mode}] a memory restart"),
            Duration::from_secs(20),
            || d.pid("g").is_some_and(|p| p != first),
        );
        let events = d.events("g").join("\n");
        assert!(
            events.contains("over max_memory 150.0 MiB"),
            "[{mode}] {events}"
        );
        assert!(events.contains("biggest:"), "{events}");
        assert!(!alive(first));
        let err = d.svc("g")["last_error"].as_str().unwrap_or("").to_string();
        assert!(err.contains("over max_memory"), "{err}");
    }
}

/// An idle tree's last sample is reused while nothing under our cgroups runs (no read at
/// all); a tree that wakes and grows must still be caught within the usual reaction time,
/// not when the reuse would have expired (10 ticks, 10 s here). The test watches the log
/// file and /proc, not the daemon.
#[test]
fn a_tree_that_idles_then_grows_past_max_memory_is_caught_at_once() {
    for mode in MODES {
        let d = Daemon::start(&format!(
            "[supervisor]\nstate_dir = \"var\"\ncgroups = \"{mode}\"\nresource_interval = \"1s\"\n\n\
             [services.g]\ncommand = \"{{helper}}\"\nargs = [\"grow\", \"100\", \"4000\"]\n\
             max_memory = \"150MiB\"\nbackoff = {{ initial = \"60s\" }}\nstart_grace = \"0s\"\n"
        ));
        let main_pid = || {
            d.printed_pids("g")
                .into_iter()
                .find(|(label, _)| label == "main")
                .map(|(_, p)| p)
        };
        wait_until(
            &format!("[{mode}] g printed its pid"),
            Duration::from_secs(10),
            || main_pid().is_some(),
        );
        let started = std::time::Instant::now();
        let first = main_pid().unwrap_or_default();
        // 100 MiB at once, then 4 s of nothing (quiet ticks), then 200 MiB.
        wait_until(
            &format!("[{mode}] a memory restart"),
            Duration::from_secs(9),
            || !alive(first),
        );
        let after = started.elapsed();
        assert!(
            after >= Duration::from_millis(3500),
            "[{mode}] stopped before the second step ({after:?}): 100 MiB is under the limit"
        );
        assert!(
            after <= Duration::from_millis(7000),
            "[{mode}] the second step (4 s) was acted on only after {after:?}"
        );
        let events = d.events("g").join("\n");
        assert!(
            events.contains("over max_memory 150.0 MiB"),
            "[{mode}] {events}"
        );
    }
}

#[test]
fn leftovers_of_a_crashed_daemon_are_reaped_before_services_start_again() {
    for mode in MODES {
        let mut d = Daemon::start(&config(
            mode,
            "[services.t]\ncommand = \"{helper}\"\nargs = [\"tree\", \"5\"]\n",
        ));
        wait_until("3 printed pids", Duration::from_secs(10), || {
            d.printed_pids("t").len() >= 3
        });
        let old: Vec<i32> = d.printed_pids("t").into_iter().map(|(_, p)| p).collect();
        d.crash();
        assert!(
            old.iter().all(|p| alive(*p)),
            "the tree survives a daemon SIGKILL"
        );
        d.spawn();
        wait_until("new tree", Duration::from_secs(10), || {
            d.printed_pids("t").len() >= 6
        });
        let left: Vec<i32> = old.iter().copied().filter(|p| alive(*p)).collect();
        assert!(left.is_empty(), "[{mode}] old tree still alive: {left:?}");
        let reaped = d.events("t").join("\n");
        assert!(
            reaped.contains("left by an earlier daemon"),
            "[{mode}] {reaped}"
        );
        // No duplicates: exactly one tree (3 processes) carries our markers.
        wait_until("one tree", Duration::from_secs(5), || {
            marked_pids(&d.state_dir).len() == 3
        });
    }
}

#[test]
fn no_zombies_accumulate_over_200_spawn_exit_cycles() {
    for mode in MODES {
        let d = Daemon::start(&config(
            mode,
            "[services.churn]\ncommand = \"{helper}\"\nargs = [\"escape\", \"5\"]\nbackoff = { initial = \"0s\" }\nmin_uptime = \"0s\"\nstop_timeout = \"200ms\"\nstart_grace = \"0s\"\n",
        ));
        let daemon = d.daemon_pid();
        wait_until(
            &format!("[{mode}] 200 restarts"),
            Duration::from_secs(120),
            || d.svc("churn")["restarts"].as_u64().unwrap_or(0) >= 200,
        );
        d.ok(&["stop", "churn"]);
        d.wait_state("churn", "stopped", Duration::from_secs(10));
        wait_until(
            "no zombies under the daemon",
            Duration::from_secs(5),
            || zombies_of(daemon).is_empty(),
        );
        assert!(
            marked_pids(&d.state_dir).is_empty(),
            "[{mode}] escaped processes left: {:?}",
            marked_pids(&d.state_dir)
        );
    }
}

/// Cgroups are made ahead at boot for every autostart service, also for one that never
/// runs (its dependency failed): the daemon still leaves nothing under its root at exit.
#[test]
fn cgroups_made_ahead_for_services_that_never_ran_go_with_the_daemon() {
    let mut d = Daemon::start(&config(
        "auto",
        "[services.b]\ncommand = \"{helper}\"\nargs = [\"exit\", \"1\"]\nmax_restarts = 0\n\n\
         [services.a]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\ndepends_on = { b = \"ready\" }\n\n\
         [services.c]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstart_grace = \"0s\"\n",
    ));
    let log = d.merged_log();
    let Some(root) = log
        .lines()
        .find_map(|l| l.split("a cgroup per service under ").nth(1))
        .map(|r| std::path::PathBuf::from(r.trim()))
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run with a writable cgroup v2"
        );
        eprintln!("SKIPPED: no writable cgroup v2 here");
        return;
    };
    d.wait_state("b", "failed", Duration::from_secs(10));
    d.wait_state("c", "running", Duration::from_secs(10));
    assert_eq!(d.state("a"), "starting", "a waits for b");
    assert!(d.pid("a").is_none(), "a never ran");
    wait_until("a's cgroup made ahead", Duration::from_secs(10), || {
        root.join("a").join("cgroup.procs").exists()
    });
    assert_eq!(d.terminate(Duration::from_secs(15)), Some(0));
    assert!(!root.exists(), "{} left behind", root.display());
}
