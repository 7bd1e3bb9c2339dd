//! The control plane: reload with a diff, the socket's owner check, hostile frames, and
//! `lmctl start` / `shutdown` from a shell with no daemon.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const BEFORE: &str = r#"[services.keep]
command = "{helper}"
args = ["sleep"]

[services.change]
command = "{helper}"
args = ["env", "{dir}/change.env"]
env = { GREETING = "hello" }

[services.drop]
command = "{helper}"
args = ["sleep"]
"#;

const AFTER: &str = r#"[services.keep]
command = "{helper}"
args = ["sleep"]

[services.change]
command = "{helper}"
args = ["env", "{dir}/change.env"]
env = { GREETING = "bonjour" }

[services.added]
command = "{helper}"
args = ["sleep"]
"#;

fn reload_case(use_sighup: bool) {
    let d = Daemon::start(BEFORE);
    for s in ["keep", "change", "drop"] {
        d.wait_state(s, "running", Duration::from_secs(10));
    }
    wait_until("change.env", Duration::from_secs(5), || {
        d.path("change.env").exists()
    });
    let (keep, change, drop) = (
        d.pid("keep").unwrap(),
        d.pid("change").unwrap(),
        d.pid("drop").unwrap(),
    );

    // A broken config is rejected whole and disturbs nothing.
    let broken = AFTER.replace(
        "args = [\"sleep\"]\n\n[services.change]",
        "args = [\"sleep\"]\nstop_signal = \"NOPE\"\n\n[services.change]",
    );
    assert_ne!(broken, AFTER);
    d.write_config(&broken);
    if use_sighup {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.daemon_pid()),
            nix::sys::signal::Signal::SIGHUP,
        );
        wait_until("the refusal event", Duration::from_secs(5), || {
            d.merged_log().contains("reload refused")
        });
    } else {
        let out = d.lmctl(&["reload"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(":7:15: unknown signal \"NOPE\"") && err.contains("nothing was changed"),
            "{err}"
        );
    }
    assert_eq!(
        (d.pid("keep"), d.pid("change"), d.pid("drop")),
        (Some(keep), Some(change), Some(drop))
    );

    std::fs::remove_file(d.path("change.env")).unwrap();
    d.write_config(AFTER);
    if use_sighup {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.daemon_pid()),
            nix::sys::signal::Signal::SIGHUP,
        );
    } else {
        let out = d.ok(&["reload"]);
        assert!(out.contains("added (started): added"), "{out}");
        assert!(out.contains("removed (stopped): drop"), "{out}");
        assert!(out.contains("changed (restarted): change"), "{out}");
        assert!(out.contains("unchanged: keep"), "{out}");
    }
    d.wait_state("added", "running", Duration::from_secs(10));
    wait_until(
        "change restarted with the new env",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(d.path("change.env"))
                .is_ok_and(|t| t.contains("GREETING=bonjour"))
        },
    );
    assert_ne!(d.pid("change"), Some(change));
    assert_eq!(
        d.pid("keep"),
        Some(keep),
        "an unchanged service keeps its pid"
    );
    wait_until("drop gone from status", Duration::from_secs(10), || {
        d.svc("drop").is_null()
    });
    assert!(!alive(drop));
}

#[test]
fn reload_applies_a_diff() {
    reload_case(false);
}

#[test]
fn sighup_reloads_too() {
    reload_case(true);
}

#[test]
fn a_client_under_another_uid_is_refused() {
    let d = Daemon::start("[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    d.wait_state("s", "running", Duration::from_secs(10));
    let socket = d.state_dir.join("lmctl.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&d.state_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                LMCTL,
                "--socket",
            ])
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Even with the file modes opened up by mistake, the daemon checks the peer's uid.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&["stop"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 65534 may not control this daemon") && err.contains("PERMISSION_DENIED"),
        "{err}"
    );
    assert_eq!(d.state("s"), "running", "nothing was stopped");
}

fn raw(socket: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn garbage_truncated_and_oversized_frames_never_wedge_the_daemon() {
    let d = Daemon::start("[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    let socket = d.state_dir.join("lmctl.sock");
    assert!(raw(&socket, b"garbage\n").contains("\"code\":\"BAD_REQUEST\""));
    assert!(raw(&socket, b"{\"version\":2,\"request\":{\"verb\":\"sto").contains("BAD_REQUEST"));
    assert!(raw(
        &socket,
        b"{\"version\":99,\"request\":{\"verb\":\"ping\"}}\n"
    )
    .contains("VERSION_MISMATCH"));
    assert!(raw(
        &socket,
        b"{\"version\":2,\"request\":{\"verb\":\"stop\",\"services\":[7]}}\n"
    )
    .contains("BAD_REQUEST"));
    assert!(raw(&socket, &vec![b'a'; 200_000]).contains("REQUEST_TOO_LARGE"));
    assert!(raw(&socket, b"").is_empty());
    // A client that connects and says nothing does not block others.
    let _stalled = UnixStream::connect(&socket).unwrap();
    // Random bytes, deterministic (LCG), 300 frames.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..300 {
        let len = (i * 37) % 512 + 1;
        let frame: Vec<u8> = (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .chain(std::iter::once(b'\n'))
            .collect();
        let answer = raw(&socket, &frame);
        assert!(
            answer.is_empty() || answer.contains("\"type\":\"error\""),
            "frame {i}: {answer}"
        );
    }
    assert!(d.lmctl(&["ping"]).status.success());
    d.wait_state("s", "running", Duration::from_secs(10));
}

#[test]
fn lmctl_start_from_a_shell_brings_everything_up_and_shutdown_leaves_nothing() {
    let mut d = Daemon::new(
        "[services.a]\ncommand = \"{helper}\"\nargs = [\"notify\", \"300\"]\nready = { notify = true, timeout = \"5s\" }\n\n[services.b]\ncommand = \"{helper}\"\nargs = [\"tree\", \"5\"]\ndepends_on = { a = \"ready\" }\n",
    );
    let out = d.ok(&["start"]);
    assert!(out.contains("started leadmaster-supervisord (pid"), "{out}");
    let ping: serde_json::Value = serde_json::from_str(&d.ok(&["ping", "--json"])).unwrap();
    let daemon = ping["pid"].as_i64().unwrap() as i32;
    d.extra_pids.push(daemon);
    assert_eq!(d.state("a"), "ready");
    assert_eq!(d.state("b"), "running");
    wait_until("b's tree", Duration::from_secs(5), || {
        d.printed_pids("b").len() >= 3
    });
    // A second start finds the daemon and does nothing new.
    let again = d.ok(&["start"]);
    assert!(!again.contains("started leadmaster-supervisord"), "{again}");
    let pids = marked_pids(&d.state_dir);
    assert!(pids.len() >= 4, "{pids:?}");
    let out = d.ok(&["shutdown"]);
    assert!(out.contains("all services stopped"), "{out}");
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        !alive(daemon)
    });
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "left: {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    assert!(!d.state_dir.join("lmctl.sock").exists());
    let after = d.lmctl(&["status"]);
    assert_eq!(after.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&after.stderr).contains("no daemon is running"));
}

#[test]
fn restart_warns_when_the_config_on_disk_changed() {
    let mut d = Daemon::new("[services.s]\ncommand = \"{helper}\"\nargs = [\"env\", \"{dir}/s.env\"]\nenv_file = [\"s.dotenv\"]\n");
    std::fs::write(d.path("s.dotenv"), "TOKEN=old\n").unwrap();
    d.spawn();
    d.wait_state("s", "running", Duration::from_secs(10));
    let out = d.ok(&["restart", "s"]);
    assert!(!out.contains("warning"), "{out}");
    std::fs::write(d.path("s.dotenv"), "TOKEN=new\n").unwrap();
    let out = d.ok(&["restart", "s"]);
    assert!(
        out.contains("warning: the config on disk differs from the running one for s")
            && out.contains("lmctl reload"),
        "{out}"
    );
    let out = d.ok(&["reload"]);
    assert!(out.contains("changed (restarted): s"), "{out}");
    wait_until("the new env", Duration::from_secs(10), || {
        std::fs::read_to_string(d.path("s.env")).is_ok_and(|t| t.contains("TOKEN=new"))
    });
}
