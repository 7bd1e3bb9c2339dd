//! Restarts, backoff, give-up, policies, stop ladder, daemon shutdown.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

fn sigkill(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Delays of "restarting in X" events, in ms.
fn restart_delays(d: &Daemon, name: &str) -> Vec<u64> {
    d.events(name)
        .iter()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .map(|t| {
            lmsup::config::units::parse_duration(t)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(u64::MAX)
        })
        .collect()
}

#[test]
fn sigkilled_service_comes_back_with_a_new_pid() {
    let d = Daemon::start(
        "[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nbackoff = { initial = \"0s\" }\n",
    );
    d.wait_state("s", "running", Duration::from_secs(10));
    let old = d.pid("s").unwrap();
    sigkill(old);
    wait_until("a new pid", Duration::from_secs(10), || {
        d.pid("s").is_some_and(|p| p != old) && d.state("s") == "running"
    });
    let s = d.svc("s");
    assert_eq!(s["restarts"], 1);
    assert_eq!(s["last_exit"]["signal"], 9);
    assert_eq!(s["last_restart_reason"], "crash");
    assert!(d.ok(&["status"]).contains("last restart: crash"));
    assert!(!alive(old));
}

#[test]
fn crash_loop_backs_off_exponentially_then_fails_after_max_restarts() {
    let d = Daemon::start(
        r#"[services.crash]
command = "{helper}"
args = ["exit", "7"]
backoff = { initial = "100ms", max = "400ms", factor = 2.0 }
min_uptime = "5s"
max_restarts = 4
"#,
    );
    d.wait_state("crash", "failed", Duration::from_secs(15));
    assert_eq!(restart_delays(&d, "crash"), vec![100, 200, 400, 400]);
    let spawns = d
        .events("crash")
        .iter()
        .filter(|l| l.contains("spawned pid"))
        .count();
    assert_eq!(spawns, 5, "max_restarts = 4 means 5 runs in all");
    let s = d.svc("crash");
    assert_eq!(s["restarts"], 4);
    assert_eq!(s["last_exit"]["code"], 7);
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("gave up after 5 failed runs") && err.contains("lmctl restart crash"),
        "{err}"
    );

    // A user restart starts afresh.
    d.ok(&["restart", "crash", "--no-wait"]);
    wait_until("a fresh crash loop", Duration::from_secs(10), || {
        d.events("crash")
            .iter()
            .filter(|l| l.contains("spawned pid"))
            .count()
            >= 6
    });
}

#[test]
fn a_run_longer_than_min_uptime_resets_the_backoff() {
    let d = Daemon::start(
        r#"[services.flaky]
command = "{helper}"
args = ["exit", "1", "400"]
backoff = { initial = "50ms", max = "5s", factor = 4.0 }
min_uptime = "300ms"
max_restarts = 2
start_grace = "0s"
"#,
    );
    wait_until("4 restarts", Duration::from_secs(15), || {
        restart_delays(&d, "flaky").len() >= 4
    });
    assert!(
        restart_delays(&d, "flaky").iter().all(|ms| *ms == 50),
        "{:?}",
        restart_delays(&d, "flaky")
    );
    assert_ne!(
        d.state("flaky"),
        "failed",
        "runs that lasted min_uptime never count toward max_restarts"
    );
}

#[test]
fn on_failure_honours_stop_exit_codes() {
    let d = Daemon::start(
        r#"[services.deliberate]
command = "{helper}"
args = ["exit", "3"]
restart = "on-failure"
stop_exit_codes = [3]

[services.clean]
command = "{helper}"
args = ["exit", "0"]
restart = "on-failure"

[services.failing]
command = "{helper}"
args = ["exit", "1", "50"]
restart = "on-failure"
backoff = { initial = "0s" }
max_restarts = 1
min_uptime = "10s"
"#,
    );
    d.wait_state("deliberate", "exited", Duration::from_secs(10));
    d.wait_state("clean", "exited", Duration::from_secs(10));
    d.wait_state("failing", "failed", Duration::from_secs(10));
    assert_eq!(d.svc("deliberate")["restarts"], 0);
    assert_eq!(d.svc("clean")["restarts"], 0);
    assert_eq!(d.svc("failing")["restarts"], 1);
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_stop_timeout() {
    let d = Daemon::start("[services.stubborn]\ncommand = \"{helper}\"\nargs = [\"ignore-term\"]\nstop_timeout = \"1s\"\n");
    d.wait_state("stubborn", "running", Duration::from_secs(10));
    wait_until(
        "the helper to install its handler",
        Duration::from_secs(5),
        || !d.printed_pids("stubborn").is_empty(),
    );
    let pid = d.pid("stubborn").unwrap();
    let t0 = Instant::now();
    d.ok(&["stop", "stubborn"]);
    wait_until("the stubborn pid to die", Duration::from_secs(10), || {
        !alive(pid)
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "killed before stop_timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "SIGKILL came late: {took:?}");
    d.wait_state("stubborn", "stopped", Duration::from_secs(5));
    assert_eq!(d.svc("stubborn")["last_exit"]["signal"], 9);
}

#[test]
fn daemon_sigterm_leaves_no_process_alive() {
    let mut d = Daemon::start(
        r#"[services.base]
command = "{helper}"
args = ["sleep"]

[services.tree]
command = "{helper}"
args = ["tree", "5"]
depends_on = { base = "started" }

[services.stubborn]
command = "{helper}"
args = ["ignore-term"]
stop_timeout = "500ms"
"#,
    );
    wait_until("the tree to print 3 pids", Duration::from_secs(10), || {
        d.printed_pids("tree").len() >= 3
    });
    wait_until("stubborn up", Duration::from_secs(10), || {
        !d.printed_pids("stubborn").is_empty()
    });
    let mut pids: Vec<i32> = d.printed_pids("tree").into_iter().map(|(_, p)| p).collect();
    pids.push(d.pid("base").unwrap());
    pids.push(d.pid("stubborn").unwrap());
    assert!(pids.iter().all(|p| alive(*p)));
    let code = d.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "still alive after daemon SIGTERM: {left:?}"
    );
    assert!(marked_pids(&d.state_dir).is_empty());
    // Reverse dependency order: tree stopped before base.
    let log = d.merged_log();
    let tree_stop = log
        .find("tree|event sent SIGTERM")
        .expect("tree stop event");
    let base_stop = log
        .find("base|event sent SIGTERM")
        .expect("base stop event");
    assert!(tree_stop < base_stop, "dependents stop first");
}

#[test]
fn missing_executable_fails_with_the_os_error_and_daemon_stays_healthy() {
    let d = Daemon::start(
        "[services.ghost]\ncommand = \"./no/such/binary\"\nbackoff = { initial = \"0s\" }\nmax_restarts = 1\n\n[services.fine]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n",
    );
    d.wait_state("ghost", "failed", Duration::from_secs(10));
    let err = d.svc("ghost")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(err.contains("No such file or directory"), "{err}");
    let out = d.lmctl(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a failed service: status exits 3"
    );
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("No such file or directory"), "{table}");
    assert!(d.lmctl(&["ping"]).status.success());
    d.wait_state("fine", "running", Duration::from_secs(10));
}

#[test]
fn one_daemon_per_state_dir() {
    let d = Daemon::start("[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    let out = std::process::Command::new(DAEMON)
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("(pid {}) already runs", d.daemon_pid())),
        "{err}"
    );
    assert!(
        d.lmctl(&["ping"]).status.success(),
        "the first daemon is untouched"
    );
}

#[test]
fn stop_start_and_status_table() {
    let d = Daemon::start("[services.a]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n\n[services.b]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nautostart = false\n");
    d.wait_state("a", "running", Duration::from_secs(10));
    assert_eq!(d.state("b"), "stopped", "autostart = false");
    let pid = d.pid("a").unwrap();
    d.ok(&["stop"]);
    d.wait_state("a", "stopped", Duration::from_secs(10));
    assert!(!alive(pid));
    d.ok(&["start", "b"]);
    assert_eq!(d.state("b"), "running", "start waits until running");
    let table = d.ok(&["status"]);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert!(table.contains("b") && table.contains("running"), "{table}");
    let bad = d.lmctl(&["stop", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no service named `nope`"));
}

#[test]
fn a_second_sigterm_escalates_to_sigkill() {
    let mut d = Daemon::start("[services.stubborn]\ncommand = \"{helper}\"\nargs = [\"ignore-term\"]\nstop_timeout = \"60s\"\n");
    wait_until("stubborn up", Duration::from_secs(10), || {
        !d.printed_pids("stubborn").is_empty()
    });
    let pid = d.pid("stubborn").unwrap();
    let daemon = Pid::from_raw(d.daemon_pid());
    let _ = kill(daemon, Signal::SIGTERM);
    wait_until("stopping", Duration::from_secs(5), || {
        d.merged_log().contains("stubborn|event sent SIGTERM")
    });
    let t0 = Instant::now();
    let _ = kill(daemon, Signal::SIGTERM);
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the second signal did not cut the 60s stop_timeout short"
    );
    assert!(!alive(pid));
}
