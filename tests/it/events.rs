//! The event history: `<state_dir>/events.jsonl` and `lmctl events`.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::obs_util::history;

const T: Duration = Duration::from_secs(20);

fn events_json(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json"];
    all.extend_from_slice(args);
    d.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect()
}

#[test]
fn events_of_before_a_daemon_restart_are_still_shown_after_it() {
    let mut d = Daemon::start(
        "[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n\n[services.crashy]\ncommand = \"{helper}\"\nargs = [\"exit\", \"7\"]\nmax_restarts = 1\nbackoff = { initial = \"50ms\" }\n",
    );
    d.wait_state("s", "running", T);
    d.wait_state("crashy", "failed", T);
    d.ok(&["restart", "s"]);
    let first_pid = d.pid("s").expect("s runs");
    assert_eq!(d.terminate(T), Some(0));

    d.spawn();
    d.wait_state("s", "running", T);
    let ev = events_json(&d, &[]);
    // Every record has the fixed fields.
    for e in &ev {
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert!(e["kind"].is_string(), "{e}");
        assert!(e.get("service").is_some(), "{e}");
    }
    let spawns_of_s: Vec<&Value> = ev
        .iter()
        .filter(|e| e["service"] == "s" && e["kind"] == "spawn")
        .collect();
    assert!(
        spawns_of_s.iter().any(|e| e["pid"] == first_pid),
        "the spawn of before the restart is still there: {spawns_of_s:?}"
    );
    assert!(spawns_of_s.len() >= 3, "{spawns_of_s:?}");
    // Exit with its code, restart with reason and delay, the user request with its uid.
    assert!(ev
        .iter()
        .any(|e| e["service"] == "crashy" && e["kind"] == "exit" && e["exit_code"] == 7));
    assert!(ev.iter().any(|e| e["service"] == "crashy"
        && e["kind"] == "restart"
        && e["reason"] == "crash"
        && e["delay_ms"].is_u64()));
    let uid = nix::unistd::getuid().as_raw();
    assert!(ev.iter().any(|e| e["service"].is_null()
        && e["kind"] == "user_request"
        && e["verb"] == "restart s"
        && e["uid"] == uid));
    assert!(ev.iter().any(|e| e["kind"] == "daemon_exit"));

    // A service filter, and --since.
    let only = events_json(&d, &["crashy"]);
    assert!(!only.is_empty() && only.iter().all(|e| e["service"] == "crashy"));
    let none = events_json(&d, &["crashy", "--since", "0s"]);
    assert!(none.is_empty(), "{none:?}");
    // The human form has the text of the merged log.
    let text = d.ok(&["events", "crashy"]);
    assert!(text.contains("exited with exit code 7"), "{text}");
    // It reads the files: it works with no daemon running.
    assert_eq!(d.terminate(T), Some(0));
    assert!(d
        .ok(&["events"])
        .contains("all services stopped; daemon exiting"));
}

#[test]
fn events_follow_prints_new_events() {
    let d = Daemon::start("[services.s]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    d.wait_state("s", "running", T);
    let mut f = std::process::Command::new(LMCTL)
        .arg("--config")
        .arg(&d.config)
        .args(["events", "s", "-f", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("lmctl events -f");
    let out = f.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // The history so far comes first, then what happens next.
    let first = rx.recv_timeout(T).expect("history printed");
    assert!(first.contains("\"service\":\"s\""), "{first}");
    d.ok(&["stop", "s"]);
    let deadline = std::time::Instant::now() + T;
    let mut saw_stop = false;
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains("\"kind\":\"stop\"") => {
                saw_stop = true;
                break;
            }
            _ => {}
        }
    }
    let _ = f.kill();
    let _ = f.wait();
    assert!(saw_stop, "lmctl events -f printed the stop");
    assert!(history(&d.state_dir).iter().any(|e| e["kind"] == "stop"));
}

#[test]
fn the_history_is_rotated_with_the_logs() {
    let d = Daemon::start(
        "[logs]\nmax_size = \"4KiB\"\nkeep = 2\n\n[services.crashy]\ncommand = \"{helper}\"\nargs = [\"exit\", \"1\"]\nmax_restarts = 30\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n",
    );
    d.wait_state("crashy", "failed", Duration::from_secs(60));
    let base = d.state_dir.join("events.jsonl");
    assert!(lmsup::logs::sink::rotated(&base, 1).exists());
    assert!(lmsup::logs::sink::rotated(&base, 2).exists());
    assert!(!lmsup::logs::sink::rotated(&base, 3).exists());
    assert!(std::fs::metadata(&base).expect("current file").len() <= 4096 + 1024);
    // Rotated files are read too, oldest first.
    let ev = events_json(&d, &["crashy"]);
    assert!(ev.iter().any(|e| e["kind"] == "failed"));
}
