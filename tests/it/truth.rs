//! `lmctl` never reports success for a failure: each behaviour a new user tripped over,
//! on real processes.

use std::time::{Duration, Instant};

use crate::harness::{alive, wait_until, Daemon};

#[test]
fn start_of_a_service_that_exits_at_once_fails_with_its_exit_code_and_stderr() {
    let d = Daemon::start(
        "[services.flaky]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo boom-on-stderr >&2; exit 3\"]\nmax_restarts = 1\nbackoff = { initial = \"100ms\" }\nautostart = false\n",
    );
    let out = d.lmctl(&["start", "flaky"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("flaky failed to start"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(
        err.contains("boom-on-stderr"),
        "the last stderr lines are printed: {err}"
    );
    assert_eq!(d.state("flaky"), "failed");
}

#[test]
fn start_counts_a_service_without_readiness_as_started_only_after_its_grace() {
    let d = Daemon::start(
        "[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstart_grace = \"700ms\"\nautostart = false\n",
    );
    let t0 = Instant::now();
    let out = d.ok(&["start", "s"]);
    assert!(t0.elapsed() >= Duration::from_millis(700), "{out}");
    assert_eq!(d.state("s"), "running");
    // A process that dies inside its grace is a failed start, not "running".
    let d = Daemon::start(
        "[services.s]\ncommand = \"{helper}\"\nargs = [\"exit\", \"0\", \"300\"]\nstart_grace = \"2s\"\nmax_restarts = 0\nautostart = false\n",
    );
    let out = d.lmctl(&["start", "s"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stop_waits_until_a_stubborn_tree_is_gone_and_says_sigkill_was_needed() {
    let d = Daemon::start(
        "[services.stubborn]\ncommand = \"{helper}\"\nargs = [\"ignore-term\"]\nstop_timeout = \"1s\"\nstart_grace = \"0s\"\n",
    );
    d.wait_state("stubborn", "running", Duration::from_secs(10));
    let pid = d.pid("stubborn").expect("pid");
    let t0 = Instant::now();
    let out = d.ok(&["stop", "stubborn"]);
    let took = t0.elapsed();
    assert!(
        !alive(pid),
        "stop returned while pid {pid} still lives: {out}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "returned after {took:?}: {out}"
    );
    assert!(out.contains("SIGKILL was needed"), "{out}");
    assert_eq!(d.state("stubborn"), "stopped");
    // The next start is a plain start, not "already stopping".
    let out = d.ok(&["start", "stubborn"]);
    assert!(!out.contains("already"), "{out}");
    let again = d.pid("stubborn").expect("a new pid");
    assert_ne!(again, pid);
    if d.merged_log().contains("a cgroup per service") {
        // A cgroup that was killed is renewed: the new run is in it, not killed by it.
        assert_eq!(d.svc("stubborn")["tree"], "cgroup");
        assert!(alive(again));
    }
    // --no-wait returns at once, while the tree is still being stopped.
    let t0 = Instant::now();
    let out = d.ok(&["stop", "stubborn", "--no-wait"]);
    assert!(t0.elapsed() < Duration::from_millis(900), "{out}");
    assert!(out.contains("stubborn: stopping"), "{out}");
    d.wait_state("stubborn", "stopped", Duration::from_secs(10));
}

/// SIGCONTs the daemon when the test ends, however it ends.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[test]
fn a_daemon_that_does_not_answer_is_reported_not_waited_on() {
    let d = Daemon::start("[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    let daemon = d.daemon_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    let _resume = Resume(daemon);
    let t0 = Instant::now();
    let out = std::process::Command::new(crate::harness::LMCTL)
        .arg("--config")
        .arg(&d.config)
        .arg("status")
        .env("LMCTL_DEADLINE_MS", "1500")
        .output()
        .expect("lmctl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "waited {:?}",
        t0.elapsed()
    );
    assert!(err.contains("did not answer"), "{err}");
    assert!(err.contains(&format!("pid {daemon}")), "{err}");
    assert!(err.contains("stopped by a signal"), "{err}");
    drop(_resume);
    wait_until("the daemon answers again", Duration::from_secs(10), || {
        d.lmctl(&["status"]).status.success()
    });
}

#[test]
fn start_of_a_service_added_to_the_file_but_not_loaded_says_reload() {
    let d = Daemon::start("[services.a]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    d.write_config(
        "[services.a]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n\n[services.extra]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n",
    );
    let out = d.lmctl(&["start", "extra"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("run `lmctl reload`"), "{err}");
}

#[test]
fn status_exits_3_when_a_service_failed() {
    let d = Daemon::start(
        "[services.ok]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n\n[services.bad]\ncommand = \"{helper}\"\nargs = [\"exit\", \"1\"]\nmax_restarts = 0\n",
    );
    d.wait_state("bad", "failed", Duration::from_secs(10));
    assert_eq!(d.lmctl(&["status"]).status.code(), Some(3));
    assert_eq!(d.lmctl(&["status", "--json"]).status.code(), Some(3));
    d.ok(&["stop", "bad"]);
    assert_eq!(d.lmctl(&["status"]).status.code(), Some(0));
}

#[test]
fn a_failed_cgroup_join_falls_back_and_limits_and_reaping_still_hold() {
    let mut d = Daemon::new(
        "[services.g]\ncommand = \"{helper}\"\nargs = [\"grow\", \"25\", \"100\"]\nmax_memory = \"150MiB\"\nbackoff = { initial = \"0s\" }\nmin_uptime = \"0s\"\nstart_grace = \"0s\"\n",
    );
    d.env
        .push(("LMSUP_FAILPOINTS".into(), "cgroup-join".into()));
    d.spawn();
    if !d.merged_log().contains("a cgroup per service") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run with a writable cgroup v2"
        );
        eprintln!("SKIPPED: no writable cgroup v2 here, so there is no join to fail");
        return;
    }
    wait_until("the fallback event", Duration::from_secs(10), || {
        d.events("g")
            .iter()
            .any(|l| l.contains("could not join its cgroup"))
    });
    assert_eq!(d.svc("g")["tree"], "group+markers");
    let first: Vec<i32> = d.printed_pids("g").into_iter().map(|(_, p)| p).collect();
    assert!(first.len() >= 2, "main and grower pids: {first:?}");
    // The grower is a grandchild outside any cgroup: the memory limit still sees it.
    wait_until("a memory restart", Duration::from_secs(15), || {
        d.events("g").iter().any(|l| l.contains("over max_memory"))
    });
    wait_until("the first tree gone", Duration::from_secs(10), || {
        first.iter().all(|p| !alive(*p))
    });
    d.ok(&["stop", "g"]);
    let all: Vec<i32> = d.printed_pids("g").into_iter().map(|(_, p)| p).collect();
    let left: Vec<i32> = all.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "still alive after stop: {left:?}");
}

/// clone3 refused as Docker's default seccomp profile refuses it (ENOSYS): every service
/// still starts, through the portable spawn, in its cgroup, with no "cannot execute".
#[test]
fn without_clone3_services_start_through_the_portable_spawn() {
    let mut d = Daemon::new(
        "[services.a]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstart_grace = \"0s\"\n\n\
         [services.b]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstart_grace = \"0s\"\n",
    );
    d.env
        .push(("LMSUP_FAILPOINTS".into(), "clone3-enosys".into()));
    d.spawn();
    for s in ["a", "b"] {
        d.wait_state(s, "running", Duration::from_secs(10));
        let events = d.events(s).join("\n");
        assert!(!events.contains("cannot execute"), "{s}: {events}");
        assert_eq!(d.svc(s)["restarts"], 0, "{s}: {events}");
    }
    if d.merged_log().contains("a cgroup per service") {
        for s in ["a", "b"] {
            assert_eq!(
                d.svc(s)["tree"],
                "cgroup",
                "{s} joined its cgroup by itself"
            );
        }
    }
    let pids: Vec<i32> = ["a", "b"].iter().filter_map(|s| d.pid(s)).collect();
    d.ok(&["stop", "a", "b"]);
    assert!(pids.iter().all(|p| !alive(*p)), "{pids:?}");
}

fn fd_target(pid: i32, fd: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn fds_of(pid: i32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

/// A child shares the daemon's descriptor table only until its first system call, which
/// gives it a table of its own holding the low slots its stdio comes through. With that
/// call refused (a kernel before 5.9), children get a copy of the table as before. Either
/// way: the daemon's own stdio is untouched, a child holds exactly 0, 1 and 2, its output
/// reaches its log, and once it is stopped the daemon holds nothing of its pipes.
#[test]
fn a_child_holds_only_its_stdio_and_the_daemon_keeps_its_own() {
    for failpoint in [None, Some("close-range-unshare")] {
        let mut d = Daemon::new(
            "[services.a]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstart_grace = \"0s\"\n\n\
             [services.b]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nstart_grace = \"0s\"\n",
        );
        if let Some(f) = failpoint {
            d.env.push(("LMSUP_FAILPOINTS".into(), f.into()));
        }
        d.spawn();
        let daemon = d.daemon_pid();
        let stdio: Vec<String> = ["0", "1", "2"]
            .iter()
            .map(|f| fd_target(daemon, f))
            .collect();
        for s in ["a", "b"] {
            d.wait_state(s, "running", Duration::from_secs(10));
        }
        wait_until("both pids in the logs", Duration::from_secs(10), || {
            ["a", "b"].iter().all(|s| !d.printed_pids(s).is_empty())
        });
        let a = d.pid("a").expect("a runs");
        let b = d.pid("b").expect("b runs");
        for (name, pid) in [("a", a), ("b", b)] {
            assert_eq!(
                fds_of(pid),
                ["0", "1", "2"],
                "{failpoint:?}: {name}'s descriptors"
            );
            for fd in ["1", "2"] {
                let t = fd_target(pid, fd);
                assert!(
                    t.starts_with("pipe:"),
                    "{failpoint:?}: {name} fd {fd} is {t}"
                );
                assert!(
                    !stdio.contains(&t),
                    "{failpoint:?}: {name} has the daemon's {fd}"
                );
            }
        }
        let now: Vec<String> = ["0", "1", "2"]
            .iter()
            .map(|f| fd_target(daemon, f))
            .collect();
        assert_eq!(now, stdio, "{failpoint:?}: the daemon's stdio was replaced");
        let a_pipes = [fd_target(a, "1"), fd_target(a, "2")];
        d.ok(&["stop", "a"]);
        wait_until(
            "the daemon lets go of a's pipes",
            Duration::from_secs(10),
            || {
                fds_of(daemon)
                    .iter()
                    .all(|fd| !a_pipes.contains(&fd_target(daemon, fd)))
            },
        );
        d.ok(&["stop", "b"]);
        assert!(!alive(a) && !alive(b), "{failpoint:?}");
    }
}

/// A boot spawns its services two at a time (two threads, two sets of descriptor slots):
/// still each child holds exactly its own stdio, no two children share a pipe, and each
/// one's output reaches its own log.
#[test]
fn services_spawned_two_at_a_time_keep_their_own_pipes() {
    let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
    let body: String = names
        .iter()
        .map(|n| format!("[services.{n}]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\nstart_grace = \"0s\"\n\n"))
        .collect();
    let d = Daemon::start(&body);
    for n in &names {
        d.wait_state(n, "running", Duration::from_secs(10));
    }
    wait_until("every pid in its log", Duration::from_secs(10), || {
        names.iter().all(|n| !d.printed_pids(n).is_empty())
    });
    let mut pipes = std::collections::HashSet::new();
    for n in &names {
        let pid = d.pid(n).expect("runs");
        assert_eq!(fds_of(pid), ["0", "1", "2"], "{n}'s descriptors");
        let printed: Vec<i32> = d.printed_pids(n).into_iter().map(|(_, p)| p).collect();
        assert_eq!(printed, [pid], "{n}'s log holds its own pid only");
        for fd in ["1", "2"] {
            let t = fd_target(pid, fd);
            assert!(t.starts_with("pipe:"), "{n} fd {fd} is {t}");
            assert!(
                pipes.insert(t.clone()),
                "{n} fd {fd} ({t}) is another child's"
            );
        }
    }
    let pids: Vec<i32> = names.iter().filter_map(|n| d.pid(n)).collect();
    let mut args = vec!["stop"];
    args.extend(names.iter().map(String::as_str));
    d.ok(&args);
    assert!(pids.iter().all(|p| !alive(*p)), "{pids:?}");
}
