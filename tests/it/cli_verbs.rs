//! The verbs and arguments people bring from PM2: several services at once, logs merged
//! in time order (also with no daemon), `--json`, `--grep`, `flush` under load, aliases,
//! swapped arguments, exit codes, config discovery, completions, man page, version, the
//! computed systemd unit and `status --watch`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A service printing `NAME-SEQ` lines every `ms` milliseconds, forever.
fn ticker(name: &str, ms: u32) -> String {
    format!(
        "[services.{name}]\ncommand = \"sh\"\nargs = [\"-c\", \"i=0; while true; do echo {name}-$i; i=$((i+1)); sleep {}; done\"]\n\n",
        ms as f64 / 1000.0
    )
}

/// Sequence numbers of `NAME-SEQ` in lines (text or JSON `line` fields).
fn seqs_of(lines: &[String], name: &str) -> Vec<u64> {
    let tag = format!("{name}-");
    lines
        .iter()
        .filter_map(|l| l.rsplit_once(&tag).map(|(_, n)| n))
        .filter_map(|n| n.trim_end_matches('"').parse().ok())
        .collect()
}

fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn status_and_show_take_several_services_and_aliases_work() {
    let d = Daemon::start(&format!(
        "{}{}[services.c]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\nautostart = false\n",
        ticker("a", 200),
        ticker("b", 200)
    ));
    d.wait_state("a", "running", Duration::from_secs(10));
    d.wait_state("b", "running", Duration::from_secs(10));

    // Only the services named, in the order named; `ls` and `list` are `status`.
    for verb in ["status", "ls", "list"] {
        let out = d.ok(&[verb, "b", "a"]);
        let rows: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "{out}");
        assert!(
            rows[0].starts_with("b ") && rows[1].starts_with("a "),
            "{out}"
        );
        // Piped: no colour codes, no trailing spaces; HEALTH `-` without a probe.
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.lines().all(|l| l == l.trim_end()), "{out:?}");
        assert!(rows.iter().all(|r| r.ends_with(" -")), "{out}");
    }
    let json: Vec<Value> = serde_json::from_str(&d.ok(&["status", "a", "--json"])).unwrap();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["name"], "a");

    let out = d.lmctl(&["status", "a", "nope"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no service named `nope`") && err.contains("a, b"),
        "{err}"
    );

    // show / describe: several; the process tree has column headers.
    let out = d.ok(&["describe", "a", "b"]);
    assert!(
        out.contains("PID") && out.contains("PPID") && out.contains("COMMAND"),
        "{out}"
    );
    assert_eq!(out.matches("\nconfig:").count(), 2, "{out}");
    assert!(out.lines().all(|l| l == l.trim_end()), "{out:?}");
    let both: Vec<Value> = serde_json::from_str(&d.ok(&["show", "a", "b", "--json"])).unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[1]["status"]["name"], "b");
    let one: Value = serde_json::from_str(&d.ok(&["show", "a", "--json"])).unwrap();
    assert_eq!(one["status"]["name"], "a", "one service stays one object");
    let out = d.lmctl(&["show", "a", "zzz"]);
    assert_eq!(out.status.code(), Some(1));

    // kill = shutdown.
    let pid = d.daemon_pid();
    d.ok(&["kill"]);
    wait_until(
        "the daemon to exit after `lmctl kill`",
        Duration::from_secs(20),
        || !alive(pid),
    );
}

#[test]
fn usage_errors_exit_2_with_a_hint_and_failed_operations_exit_1() {
    let d = Daemon::start(&ticker("web", 500));
    d.wait_state("web", "running", Duration::from_secs(10));
    let out = d.lmctl(&["signal", "web", "SIGTERM"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("lmctl signal SIGTERM web"), "{err}");
    assert!(!err.contains("no service named"), "{err}");
    let out = d.lmctl(&["signal", "SIGBOGUS", "web"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.lmctl(&["no-such-verb"]);
    assert_eq!(out.status.code(), Some(2));
    let out = d.lmctl(&["logs", "--grep", "("]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let out = d.lmctl(&["signal", "SIGUSR1", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    // The right order works (the shell loop survives SIGCONT).
    d.ok(&["signal", "SIGCONT", "web"]);
}

#[test]
fn logs_of_several_services_merge_in_time_order_with_json_and_grep() {
    let d = Daemon::start(&format!("{}{}", ticker("a", 30), ticker("b", 30)));
    let merged_has = |n: u32| {
        let m = d.merged_log();
        m.contains(&format!("a-{n}\n")) && m.contains(&format!("b-{n}\n"))
    };
    wait_until("40 lines of each", Duration::from_secs(30), || {
        merged_has(40)
    });

    let out = d.lmctl(&["logs", "a", "b", "-n", "60"]);
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 60, "{lines:?}");
    // Only a's and b's lines (their output, and events such as "started").
    assert!(
        lines.iter().all(|l| l.contains(" a|") || l.contains(" b|")),
        "{lines:?}"
    );
    // Time order: timestamps never go back, and both services are there.
    let stamps: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{lines:#?}");
    for name in ["a", "b"] {
        let s = seqs_of(&lines, name);
        assert!(s.len() > 10, "{name}: {lines:?}");
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "{name} has gaps: {s:?}"
        );
    }

    // --json: one object per line.
    let out = d.lmctl(&["logs", "a", "b", "-n", "5", "--json"]);
    let objs: Vec<Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 5);
    for o in &objs {
        assert!(o["service"] == "a" || o["service"] == "b", "{o}");
        assert_eq!(o["stream"], "out");
        assert!(o["line"].as_str().unwrap().starts_with(['a', 'b']));
        assert!(chrono::DateTime::parse_from_str(
            o["time"].as_str().unwrap(),
            "%Y-%m-%dT%H:%M:%S%.3f%:z"
        )
        .is_ok());
    }

    // --grep applies before -n.
    let out = d.lmctl(&["logs", "--grep", r"^\S+ a\|out a-(1|2)$", "-n", "10"]);
    let lines = stdout_lines(&out);
    assert_eq!(seqs_of(&lines, "a"), [1, 2], "{lines:?}");
}

#[test]
fn following_several_services_joins_tail_and_live_lines_without_gap_or_duplicate() {
    let d = Daemon::start(&format!("{}{}", ticker("a", 20), ticker("b", 20)));
    wait_until("some lines", Duration::from_secs(30), || {
        d.merged_log().contains("b-20\n")
    });
    let mut child = Command::new(LMCTL)
        .arg("--config")
        .arg(&d.config)
        .args(["logs", "a", "b", "-f", "-n", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = d;
    guard.extra_pids.push(child.id() as i32);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seqs_of(&got, "a").len() < 60 || seqs_of(&got, "b").len() < 60 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => panic!("follow stalled; got {got:#?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for name in ["a", "b"] {
        let s = seqs_of(&got, name);
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "{name}: gap or duplicate where the tail meets the follow: {s:?}"
        );
    }
    assert!(got.iter().all(|l| l.contains(" a|") || l.contains(" b|")));
    // An unknown name fails at once instead of following nothing.
    let out = guard.lmctl(&["logs", "a", "ghost", "-f"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`ghost`"));
}

#[test]
fn logs_read_the_files_when_no_daemon_runs() {
    let mut d = Daemon::start(&format!("{}{}", ticker("a", 30), ticker("b", 30)));
    wait_until("lines of both", Duration::from_secs(30), || {
        d.merged_log().contains("a-10\n") && d.merged_log().contains("b-10\n")
    });
    d.terminate(Duration::from_secs(20));
    let out = d.lmctl(&["logs", "a", "-n", "5"]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no daemon is running") && err.contains("var/logs"),
        "{err}"
    );
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 5, "{stdout}");
    assert!(lines.iter().all(|l| l.contains(" a|")), "{stdout}");
    let out = d.lmctl(&["logs", "a", "b", "--json", "-n", "8"]);
    assert!(out.status.success());
    let services: Vec<String> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["service"].to_string())
        .collect();
    assert_eq!(services.len(), 8);
    // -f with no daemon: the tail, a note, and exit 0 (nothing will ever come).
    let out = d.lmctl(&["logs", "-f", "-n", "3"]);
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout_lines(&out).len(), 3);
    assert!(err.contains("nothing to follow"), "{err}");
    // An unknown service is still an error.
    let out = d.lmctl(&["logs", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn flush_while_the_service_writes_loses_no_later_line() {
    let d = Daemon::start(
        "[services.w]\ncommand = \"sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt 1500 ]; do echo seq-$i; i=$((i+1)); sleep 0.002; done; echo finished; sleep 1000\"]\n",
    );
    let file = d.state_dir.join("logs/w.out.log");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_until("200 lines written", Duration::from_secs(30), || {
        read().contains("seq-200\n")
    });
    let out = d.ok(&["flush", "w"]);
    assert!(out.contains("emptied 1 file(s)"), "{out}");
    assert!(out.contains("supervisor.log"), "{out}");
    wait_until("the service to finish", Duration::from_secs(60), || {
        read().contains("finished")
    });
    let after: Vec<String> = read().lines().map(str::to_string).collect();
    let s = seqs_of(&after, "seq");
    let first = *s.first().expect("lines after the flush");
    assert!(first > 200, "older lines were not flushed: first {first}");
    assert_eq!(
        s,
        (first..1500).collect::<Vec<u64>>(),
        "a line written after the flush is missing"
    );
    // The merged log kept everything.
    let merged: Vec<String> = d.merged_log().lines().map(str::to_string).collect();
    assert_eq!(seqs_of(&merged, "seq"), (0..1500).collect::<Vec<u64>>());

    // `flush` with no service empties every log, the merged one too, and removes rotations.
    std::fs::write(d.state_dir.join("logs/supervisor.log.1"), "old\n").unwrap();
    let out = d.ok(&["flush"]);
    assert!(out.contains("removed 1 rotated"), "{out}");
    assert!(!d.state_dir.join("logs/supervisor.log.1").exists());
    assert!(!d.merged_log().contains("seq-0\n"));
    // The daemon goes on writing into the emptied file.
    d.ok(&["stop", "w"]);
    wait_until(
        "a stop event in the emptied merged log",
        Duration::from_secs(20),
        || d.merged_log().contains(" w|event "),
    );
}

#[test]
fn the_config_is_found_by_flag_env_and_folder_and_the_error_lists_where_it_looked() {
    let d = Daemon::start(&ticker("x", 500));
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |dir: &std::path::Path, env: Option<&std::path::Path>| {
        let mut c = Command::new(LMCTL);
        c.current_dir(dir).args(["ping"]).env_remove("LMCTL_CONFIG");
        if let Some(e) = env {
            c.env("LMCTL_CONFIG", e);
        }
        c.output().unwrap()
    };
    // In the config's folder.
    assert!(run(d.dir.path(), None).status.success());
    // Through $LMCTL_CONFIG, from anywhere.
    assert!(run(elsewhere.path(), Some(&d.config)).status.success());
    // Nowhere (assuming no /etc/leadmaster/supervisor.toml on a test machine).
    if !std::path::Path::new("/etc/leadmaster/supervisor.toml").exists() {
        let out = run(elsewhere.path(), None);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for place in [
            "--config",
            "$LMCTL_CONFIG",
            "/etc/leadmaster/supervisor.toml",
            &elsewhere
                .path()
                .join("supervisor.toml")
                .display()
                .to_string(),
        ] {
            assert!(err.contains(place), "{place} missing from: {err}");
        }
    }
    // --config wins over the environment.
    let out = Command::new(LMCTL)
        .current_dir(elsewhere.path())
        .env("LMCTL_CONFIG", "/nonexistent.toml")
        .arg("--config")
        .arg(&d.config)
        .arg("ping")
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn completions_parse_and_the_man_page_renders() {
    let out = Command::new(LMCTL)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("lmctl.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    for word in ["describe", "flush", "monit", "--grep"] {
        assert!(body.contains(word), "{word} not completed");
    }
    for shell in ["zsh", "fish"] {
        let out = Command::new(LMCTL)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 500, "{shell}");
    }
    let out = Command::new(LMCTL)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = Command::new(LMCTL).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH lmctl"),
        "{page}"
    );
    let out = Command::new(LMCTL)
        .args(["man", "--dir"])
        .arg(dir.path().join("man"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("man/lmctl-logs.1").exists());
    assert!(dir.path().join("man/lmctl.1").exists());
}

#[test]
fn help_has_examples_and_version_names_the_commit() {
    let out = Command::new(LMCTL).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("lmctl logs"),
        "{help}"
    );
    for alias in ["ls", "list", "describe", "kill"] {
        assert!(help.contains(alias), "alias {alias} not shown: {help}");
    }
    let out = Command::new(LMCTL).arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    let commit = v.split(['(', ')']).nth(1).unwrap_or_default().to_string();
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()) && commit.len() >= 7,
        "{v}"
    );
    let d = Daemon::start(&ticker("x", 500));
    let out = d.ok(&["version"]);
    assert!(
        out.contains("lmctl 0.") && out.contains("leadmaster-supervisord 0."),
        "{out}"
    );
    assert!(out.contains(&format!("pid {}", d.daemon_pid())), "{out}");
}

#[test]
fn startup_computes_description_and_stop_timeout_from_the_config() {
    let d = Daemon::new(
        "[services.db]\ncommand = \"sleep\"\nstop_timeout = \"45s\"\n\n[services.api]\ncommand = \"sleep\"\ndepends_on = { db = \"started\" }\nstop_timeout = \"2m\"\n",
    );
    let unit = d.ok(&["startup"]);
    assert!(
        unit.contains("Description=LeadMaster Supervisor (api, db)"),
        "{unit}"
    );
    // api stops first (2m), then db (45s): 165s, plus the 20s margin.
    assert!(unit.contains("TimeoutStopSec=185\n"), "{unit}");
    assert!(unit.contains("api 2m, then db 45s"), "{unit}");
    assert!(
        unit.contains("\nUser=leadmaster\nGroup=leadmaster\n"),
        "{unit}"
    );
}

#[test]
fn status_watch_reprints_a_plain_table_and_monit_refuses_without_a_terminal() {
    let d = Daemon::start(&ticker("w", 500));
    d.wait_state("w", "running", Duration::from_secs(10));
    let out = d.lmctl(&["monit"]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("status --watch"), "{err}");

    let mut child = Command::new(LMCTL)
        .arg("--config")
        .arg(&d.config)
        .args(["status", "--watch", "200ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = d;
    guard.extra_pids.push(child.id() as i32);
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut tables = 0;
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tables < 3 && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        assert!(!line.contains('\x1b'), "colour when piped: {line:?}");
        if line.starts_with("NAME ") {
            tables += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(tables, 3, "the table is reprinted");
}
