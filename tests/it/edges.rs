//! Edge cases found in review: each once made the daemon hang, forget, or lose something.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::*;

const STUBBORN: &str =
    "command = \"{helper}\"\nargs = [\"ignore-term\"]\nstop_timeout = \"1500ms\"\n";

#[test]
fn a_sighup_during_shutdown_does_not_keep_the_daemon_alive() {
    let mut d = Daemon::start(&format!("[services.slow]\n{STUBBORN}"));
    wait_until("slow up", Duration::from_secs(10), || {
        !d.printed_pids("slow").is_empty()
    });
    d.write_config(&format!("[services.slow]\n{STUBBORN}\n[services.added]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\n"));
    let daemon = Pid::from_raw(d.daemon_pid());
    let _ = kill(daemon, Signal::SIGTERM);
    wait_until("stopping", Duration::from_secs(5), || {
        d.merged_log().contains("slow|event sent SIGTERM")
    });
    let _ = kill(daemon, Signal::SIGHUP);
    assert_eq!(d.terminate(Duration::from_secs(10)), Some(0));
    assert!(d
        .merged_log()
        .contains("SIGHUP ignored: the daemon is shutting down"));
    assert!(marked_pids(&d.state_dir).is_empty());
}

#[test]
fn a_deleted_log_file_is_recreated_and_writing_goes_on() {
    let d = Daemon::start(
        "[logs]\nmax_size = \"4KiB\"\nkeep = 2\n\n[services.w]\ncommand = \"{helper}\"\nargs = [\"lines\", \"100\", \"plain\", \"exit\"]\nrestart = \"never\"\n",
    );
    let out = d.state_dir.join("logs/w.out.log");
    let merged = d.state_dir.join("logs/supervisor.log");
    wait_until("first run logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("partial-tail"))
    });
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&merged).unwrap();
    d.ok(&["restart", "w", "--no-wait"]);
    wait_until(
        "second run logged in recreated files",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&out).is_ok_and(|t| t.contains("partial-tail"))
                && std::fs::read_to_string(&merged).is_ok_and(|t| t.contains("w|out partial-tail"))
        },
    );
}

#[test]
fn start_does_not_hang_on_a_dependency_that_gave_up() {
    let d = Daemon::start(
        "[services.a]\ncommand = \"./missing\"\nmax_restarts = 0\nautostart = false\n\n[services.b]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\ndepends_on = { a = \"ready\" }\nautostart = false\n",
    );
    let t0 = Instant::now();
    let out = d.lmctl(&["start", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b failed to start: it is starting: waiting for a to be ready (it is failed)"),
        "{err}"
    );
}

#[test]
fn a_restart_cannot_resurrect_a_service_a_reload_removed() {
    let d = Daemon::start(&format!("[services.keep]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\n\n[services.gone]\n{STUBBORN}"));
    wait_until("gone up", Duration::from_secs(10), || {
        !d.printed_pids("gone").is_empty()
    });
    let pid = d.pid("gone").unwrap();
    d.write_config("[services.keep]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    d.ok(&["reload"]);
    assert_eq!(d.state("gone"), "stopping");
    d.ok(&["restart", "gone", "--no-wait"]);
    wait_until("gone forgotten", Duration::from_secs(10), || {
        d.svc("gone").is_null()
    });
    assert!(!alive(pid));
    assert!(marked_pids(&d.state_dir)
        .iter()
        .all(|p| Some(*p) == d.pid("keep")));
}

#[test]
fn a_service_re_added_while_its_removal_is_under_way_keeps_running() {
    let d = Daemon::start(&format!("[services.x]\n{STUBBORN}"));
    wait_until("x up", Duration::from_secs(10), || {
        !d.printed_pids("x").is_empty()
    });
    d.write_config("[services.other]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    d.ok(&["reload"]);
    assert_eq!(d.state("x"), "stopping");
    d.write_config(&format!("[services.other]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\n\n[services.x]\n{STUBBORN}"));
    d.ok(&["reload"]);
    wait_until("x running again", Duration::from_secs(10), || {
        d.state("x") == "running"
    });
}

#[test]
fn since_works_with_a_timestamp_format_without_offset() {
    let d = Daemon::start(
        "[logs]\ntimestamp = \"%Y-%m-%d %H:%M:%S%.3f\"\n\n[services.s]\ncommand = \"{helper}\"\nargs = [\"lines\", \"5\", \"plain\", \"exit\"]\nrestart = \"never\"\n",
    );
    wait_until("lines", Duration::from_secs(10), || {
        d.ok(&["logs", "s", "--out"]).contains("partial-tail")
    });
    assert_eq!(
        d.ok(&["logs", "s", "--out", "--since", "1h"])
            .lines()
            .count(),
        6
    );
    wait_until("the lines to age", Duration::from_secs(5), || {
        d.ok(&["logs", "s", "--out", "--since", "200ms"])
            .lines()
            .count()
            == 0
    });
}

#[test]
fn systemd_hears_ready_even_when_a_dependency_gave_up() {
    use std::os::unix::net::UnixDatagram;
    let mut d = Daemon::new(
        "[services.a]\ncommand = \"./missing\"\nmax_restarts = 0\n\n[services.b]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\ndepends_on = { a = \"ready\" }\n",
    );
    let path = d.path("systemd.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    d.env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    d.spawn();
    let mut buf = [0u8; 4096];
    let mut ready = false;
    while !ready {
        let n = sock.recv(&mut buf).expect("READY=1 never came");
        ready = String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1");
    }
    assert_eq!(d.state("a"), "failed");
    assert_eq!(d.state("b"), "starting", "b keeps waiting and says so");
}
