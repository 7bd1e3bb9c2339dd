//! Each kind of config error gives its own message with line and column; nothing starts.

use crate::harness::*;

fn check(body: &str) -> (bool, String) {
    let d = Daemon::new("");
    // Exactly `body`, so line numbers are the test's own.
    std::fs::write(&d.config, body).unwrap();
    let out = d.lmctl(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).replace(&d.config.display().to_string(), "S");
    (out.status.success(), text)
}

#[test]
fn every_kind_of_error_names_line_and_column() {
    let (ok, text) = check(
        r#"[services.hub]
command = "sleep"
stop_timeout = "30"
stop_signal = "SIGNOPE"
restart = "sometimes"
depends_on = { ghost = "ready" }
env = { URL = "http://127.0.0.1:${services.sm.env.PORT}", X = "${UNDEFINED}" }
required_env = ["SESSION_MANAGER_BASE_URL"]
backoff = { initial = "soon" }
"#,
    );
    assert!(!ok, "check must fail");
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        "S:3:16: invalid duration \"30\"",
        "S:4:15: unknown signal \"SIGNOPE\"",
        "S:5:11: invalid restart policy \"sometimes\"",
        "S:6:16: service `hub` depends on `ghost`, which is not defined",
        "S:7:15: `${services.sm.env.PORT}` names no service of this config",
        "S:7:63: `${UNDEFINED}` is not defined for service `hub`",
        "S:8:17: service `hub` requires SESSION_MANAGER_BASE_URL but it is not set",
        "S:9:23: invalid duration \"soon\"",
    ];
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (got, want) in lines.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}\nwant {want:?}");
    }
}

#[test]
fn unknown_keys_and_cycles() {
    let (ok, text) = check("[services.a]\ncommand = \"sleep\"\nmax_memory_restart = \"1G\"\n");
    assert!(!ok);
    assert_eq!(
        text.trim(),
        "S:3:1: unknown key `max_memory_restart` in [services.a]; did you mean `max_memory`?"
    );

    let (ok, text) = check(
        "[services.a]\ncommand = \"sleep\"\ndepends_on = { b = \"ready\" }\n[services.b]\ncommand = \"sleep\"\ndepends_on = { a = \"started\" }\n",
    );
    assert!(!ok);
    assert_eq!(text.trim(), "S:6:16: dependency cycle: a -> b -> a");
}

#[test]
fn daemon_refuses_a_bad_config_and_starts_nothing() {
    let d = Daemon::new("");
    std::fs::write(
        &d.config,
        "[services.a]\ncommand = \"sleep\"\nargs = [\"9\"]\nstop_signal = \"BOGUS\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(DAEMON)
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4:15: unknown signal \"BOGUS\""), "{err}");
    assert!(marked_pids(&d.state_dir).is_empty());
}

#[test]
fn a_good_config_passes_with_its_start_order() {
    let (ok, text) = check(
        "[services.hub]\ncommand = \"sleep\"\ndepends_on = { sm = \"ready\" }\n[services.sm]\ncommand = \"sleep\"\nready = { tcp = \"127.0.0.1:1\" }\n",
    );
    assert!(ok, "{text}");
    assert!(text.contains("start order: sm -> hub"), "{text}");
}

/// Issue 15 §3: `comand` and `restrat` in one file are both reported, each with a
/// suggestion, and a wrong `statedir` does not hide the other errors.
#[test]
fn check_reports_every_unknown_key_with_a_suggestion() {
    let (ok, text) = check(
        "[supervisor]\nstatedir = \"v\"\n\n[services.a]\ncomand = \"sleep\"\ncommand = \"sleep\"\nrestrat = \"always\"\nstop_signal = \"NOPE\"\nhealth = { tcp = \"h:1\", retires = 3 }\n",
    );
    assert!(!ok);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "S:2:1: unknown key `statedir` in [supervisor]; did you mean `state_dir`?",
            "S:5:1: unknown key `comand` in [services.a]; did you mean `command`?",
            "S:7:1: unknown key `restrat` in [services.a]; did you mean `restart`?",
            "S:8:15: unknown signal \"NOPE\"; expected a name like \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\"",
            "S:9:25: unknown key `retires` in [services.a.health]; did you mean `retries`?",
        ],
        "{text}"
    );
}

/// Issue 15 §3: a command that is missing or cannot run is found by `check`, looked up with
/// the service's own PATH and cwd (not lmctl's).
#[test]
fn check_reports_commands_that_cannot_run() {
    let d = Daemon::new("");
    std::fs::create_dir(d.path("tools")).unwrap();
    std::fs::write(d.path("tools/run-me"), "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::write(d.path("tools/data"), "not a program").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.path("tools/run-me"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        &d.config,
        "[services.gone]\ncommand = \"lm-no-such-program\"\n[services.data]\ncommand = \"tools/data\"\n[services.ok]\ncommand = \"run-me\"\ncwd = \"tools\"\ninherit_env = []\nenv = { PATH = \".:/bin\" }\n",
    )
    .unwrap();
    let out = d.lmctl(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).replace(&d.config.display().to_string(), "S");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(
            "S:2:11: command `lm-no-such-program` of service `gone` is not found in its PATH"
        ),
        "{text}"
    );
    assert!(lines[1].starts_with("S:4:11: command "), "{text}");
    assert!(
        lines[1].contains(
            "tools/data of service `data` cannot be executed: it is not executable (chmod +x it)"
        ),
        "{text}"
    );
    // The daemon still starts the others (a missing binary of one service must not keep
    // the whole stack down at boot), and a reload says which ones will fail.
    let mut d = d;
    d.spawn();
    d.wait_state("ok", "running", std::time::Duration::from_secs(10));
    let log = d.merged_log();
    assert!(
        log.contains("warning: ") && log.contains("`gone` is not found in its PATH"),
        "{log}"
    );
    let out = d.ok(&["reload"]);
    assert!(out.contains("`gone` is not found in its PATH"), "{out}");
    assert!(out.contains("(its start will fail)"), "{out}");
}
