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
command = "hub"
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
    let (ok, text) = check("[services.a]\ncommand = \"x\"\nmax_memory_restart = \"1G\"\n");
    assert!(!ok);
    assert!(
        text.starts_with("S:3:1: unknown field `max_memory_restart`, expected one of"),
        "{text}"
    );

    let (ok, text) = check(
        "[services.a]\ncommand = \"x\"\ndepends_on = { b = \"ready\" }\n[services.b]\ncommand = \"x\"\ndepends_on = { a = \"started\" }\n",
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
        "[services.hub]\ncommand = \"x\"\ndepends_on = { sm = \"ready\" }\n[services.sm]\ncommand = \"x\"\nready = { tcp = \"127.0.0.1:1\" }\n",
    );
    assert!(ok, "{text}");
    assert!(text.contains("start order: sm -> hub"), "{text}");
}
