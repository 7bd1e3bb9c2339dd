//! Alerts end to end: a real local HTTP receiver, a real daemon, real crashes.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::obs_util::{history, Receiver};

const T: Duration = Duration::from_secs(30);

#[test]
fn alerts_restart_storm_fires_once_then_resolves_when_fixed_and_stable() {
    let rx = Receiver::start();
    let d = Daemon::start(&format!(
        r#"[alerts]
min_interval = "0s"
[alerts.webhook.hook]
url = "http://127.0.0.1:{port}/hook"

[[alerts.rule]]
name = "storm"
services = ["flappy"]
restarts = {{ more_than = 2, within = "3s" }}
severity = "critical"
to = ["hook"]

[services.flappy]
command = "/bin/sh"
args = ["-c", "if [ -f {{dir}}/fixed ]; then exec {{helper}} sleep; else echo boom-$$ >&2; exit 3; fi"]
max_restarts = 1000
backoff = {{ initial = "100ms", max = "200ms" }}
"#,
        port = rx.port
    ));
    wait_until("the storm alert", T, || rx.count("storm", "firing") == 1);
    // Still crashing: no second message for the same incident.
    wait_until("more restarts", T, || {
        history(&d.state_dir)
            .iter()
            .filter(|e| e["kind"] == "restart")
            .count()
            >= 8
    });
    assert_eq!(rx.count("storm", "firing"), 1, "{:?}", rx.bodies());
    std::fs::write(d.path("fixed"), "").expect("fix it");
    wait_until("resolved", T, || rx.count("storm", "resolved") == 1);
    assert_eq!(rx.count("storm", "firing"), 1);
    assert_eq!(d.state("flappy"), "running");

    let b = rx.bodies();
    let fired = &b[0];
    assert_eq!(fired["service"], "flappy");
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["status"], "firing");
    assert!(fired["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(fired["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(fired["state"].is_string());
    let text = fired["text"].as_str().unwrap_or("");
    assert!(text.contains("storm") && text.contains("flappy"), "{text}");
    assert!(fired["summary"].as_str().is_some_and(|s| !s.is_empty()));
    let tail = fired["stderr_tail"].as_array().expect("stderr_tail");
    assert!(
        tail.iter()
            .any(|l| l.as_str().is_some_and(|l| l.starts_with("boom-"))),
        "{tail:?}"
    );
    // The decisions and deliveries are events too.
    let ev = history(&d.state_dir);
    assert_eq!(
        ev.iter()
            .filter(|e| e["kind"] == "alert_fired" && e["rule"] == "storm")
            .count(),
        1
    );
    assert!(ev
        .iter()
        .any(|e| e["kind"] == "alert_resolved" && e["service"] == "flappy"));
    assert!(ev
        .iter()
        .any(|e| e["kind"] == "alert_sent" && e["destination"] == "hook"));
    // `lmctl alerts` shows it is over, and when it last sent.
    let rules: serde_json::Value =
        serde_json::from_str(&d.ok(&["alerts", "--json"])).expect("json");
    assert_eq!(rules[0]["name"], "storm");
    assert!(rules[0]["firing"].as_array().is_some_and(|f| f.is_empty()));
    assert!(rules[0]["last_sent"].is_string());
}

#[test]
fn alerts_a_receiver_down_then_up_still_gets_the_alert_and_status_stays_fast() {
    let port = free_port();
    let d = Daemon::start(&format!(
        r#"[alerts]
[alerts.webhook.hook]
url = "http://127.0.0.1:{port}/x"
[[alerts.rule]]
name = "down"
state = "failed"
to = ["hook"]

[services.dies]
command = "{{helper}}"
args = ["exit", "2"]
max_restarts = 0
"#
    ));
    wait_until("a failed delivery attempt", T, || {
        history(&d.state_dir)
            .iter()
            .any(|e| e["kind"] == "alert_failed" && e["attempt"] == 1)
    });
    // The supervisor does not wait for the webhook.
    let t0 = Instant::now();
    for _ in 0..5 {
        // Exit 3: a service is failed (that is the point of the rule).
        assert_eq!(d.lmctl(&["status"]).status.code(), Some(3));
    }
    let per = t0.elapsed() / 5;
    eprintln!("RETRY: lmctl status took {per:?} while deliveries were failing");
    assert!(per < Duration::from_secs(1), "{per:?}");

    let rx = Receiver::start_on(port);
    wait_until("the alert after the receiver came up", T, || {
        rx.count("down", "firing") == 1
    });
    // The receiver has it before the engine's `alert_sent` reaches the history file.
    wait_until("alert_sent in the history", T, || {
        history(&d.state_dir)
            .iter()
            .any(|e| e["kind"] == "alert_sent")
    });
    let ev = history(&d.state_dir);
    let failed: Vec<_> = ev.iter().filter(|e| e["kind"] == "alert_failed").collect();
    let sent = ev
        .iter()
        .find(|e| e["kind"] == "alert_sent")
        .expect("alert_sent");
    eprintln!(
        "RETRY: {} failed attempt(s) before delivery on attempt {}",
        failed.len(),
        sent["attempt"]
    );
    assert!(sent["attempt"].as_u64().unwrap_or(0) >= 2);
    assert!(failed.iter().all(|e| e["retry_in_ms"].is_u64()));
    let st: serde_json::Value = serde_json::from_str(&d.ok(&["alerts", "--json"])).expect("json");
    assert!(st[0]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("hook")));
}

#[test]
fn alerts_memory_rule_fires_before_max_memory_restarts_it() {
    let rx = Receiver::start();
    let d = Daemon::start(&format!(
        r#"[supervisor]
state_dir = "var"
resource_interval = "100ms"

[alerts]
[alerts.webhook.hook]
url = "http://127.0.0.1:{port}/"
[[alerts.rule]]
name = "fat"
services = ["grower"]
memory = {{ above = "60MiB", for = "200ms" }}
severity = "warning"
to = ["hook"]

[services.grower]
command = "{{helper}}"
args = ["grow", "10", "100"]
max_memory = "250MiB"
max_restarts = 0
"#,
        port = rx.port
    ));
    wait_until("a memory restart", T, || {
        history(&d.state_dir)
            .iter()
            .any(|e| e["kind"] == "memory_restart")
    });
    wait_until("the memory alert delivered", T, || {
        rx.count("fat", "firing") >= 1
    });
    let ev = history(&d.state_dir);
    let fired = ev
        .iter()
        .position(|e| e["kind"] == "alert_fired" && e["rule"] == "fat")
        .expect("alert_fired");
    let restart = ev
        .iter()
        .position(|e| e["kind"] == "memory_restart")
        .expect("memory_restart");
    assert!(
        fired < restart,
        "the warning came before the restart: {ev:?}"
    );
    let s = rx.bodies()[0]["summary"].as_str().unwrap_or("").to_string();
    assert!(s.contains("above 60 MiB") || s.contains("above"), "{s}");
}

#[test]
fn alerts_command_destination_gets_json_on_stdin_and_env() {
    let d = Daemon::start(
        r#"[alerts]
[alerts.command.script]
command = "/bin/sh"
args = ["-c", "cat > {dir}/alert.json.tmp && env | grep ^LM_ALERT_ > {dir}/alert.env && mv {dir}/alert.json.tmp {dir}/alert.json"]
[[alerts.rule]]
name = "gave-up"
state = "failed"
severity = "critical"
to = ["script"]

[services.dies]
command = "/bin/sh"
args = ["-c", "echo last-words >&2; exit 9"]
max_restarts = 0
"#,
    );
    let file = d.path("alert.json");
    wait_until("the command to run", T, || file.exists());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert_eq!(v["rule"], "gave-up");
    assert_eq!(v["service"], "dies");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["state"], "failed");
    assert!(v["stderr_tail"]
        .as_array()
        .is_some_and(|t| t.iter().any(|l| l == "last-words")));
    let env = std::fs::read_to_string(d.path("alert.env")).expect("env");
    assert!(env.contains("LM_ALERT_RULE=gave-up"), "{env}");
    assert!(env.contains("LM_ALERT_SERVICE=dies"), "{env}");
    assert!(env.contains("LM_ALERT_STATUS=firing"), "{env}");

    // `alerts test` sends through the same destination and says how it went.
    std::fs::remove_file(&file).expect("rm");
    let out = d.ok(&["alerts", "test", "gave-up"]);
    assert!(out.contains("script: sent"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    assert_eq!(v["status"], "test");
    let bad = d.lmctl(&["alerts", "test", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no alert rule named `nope`"));
}

#[test]
fn alerts_secrets_from_env_file_are_masked() {
    let rx = Receiver::start();
    let d = Daemon::new(
        r#"[alerts]
env_file = "alerts.env"
[alerts.webhook.hook]
url = "${HOOK_URL}"
[[alerts.rule]]
name = "gave-up"
state = "failed"
to = ["hook"]

[services.dies]
command = "{helper}"
args = ["exit", "1"]
max_restarts = 0
"#,
    );
    let secret = format!("http://127.0.0.1:{}/T000/SECRET-TOKEN-123", rx.port);
    std::fs::write(d.path("alerts.env"), format!("HOOK_URL={secret}\n")).expect("env");
    let mut d = d;
    d.spawn();
    wait_until("delivery", T, || rx.count("gave-up", "firing") == 1);
    let shown = d.ok(&["alerts"]);
    assert!(shown.contains("${HOOK_URL}"), "{shown}");
    assert!(!shown.contains("SECRET-TOKEN"), "{shown}");
    let all = std::fs::read_to_string(d.state_dir.join("events.jsonl")).expect("events");
    assert!(!all.contains("SECRET-TOKEN"));
    assert!(!d.merged_log().contains("SECRET-TOKEN"));
}

#[test]
fn alerts_check_reports_unknown_service_bad_duration_and_no_destination() {
    let d = Daemon::new(
        r#"[alerts]
[alerts.webhook.hook]
url = "http://127.0.0.1:9/"
[[alerts.rule]]
name = "a"
services = ["nosuch"]
state = "failed"
to = ["hook"]
[[alerts.rule]]
name = "b"
restarts = { more_than = 3, within = "an hour" }
to = ["hook"]
[[alerts.rule]]
name = "c"
state = "failed"
[[alerts.rule]]
name = "d"
state = "failed"
unhealthy_for = "1m"
to = ["mail"]

[services.s]
command = "{helper}"
args = ["sleep"]
"#,
    );
    let out = d.lmctl(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("names service `nosuch`, which is not defined"),
        "{text}"
    );
    assert!(
        text.contains("invalid duration") || text.contains("an hour"),
        "{text}"
    );
    assert!(text.contains("alert rule `c` has no destination"), "{text}");
    assert!(
        text.contains("alert rule `d` must have exactly one condition"),
        "{text}"
    );
    assert!(
        text.contains("sends to `mail`, which is not defined"),
        "{text}"
    );
    // Every problem with a file:line:col.
    for l in text.lines() {
        assert!(l.contains("supervisor.toml:"), "{l}");
    }
}

#[test]
fn alerts_daemon_recovered_fires_after_a_daemon_crash() {
    let rx = Receiver::start();
    let mut d = Daemon::start(&format!(
        r#"[alerts]
[alerts.webhook.hook]
url = "http://127.0.0.1:{port}/"
[[alerts.rule]]
name = "recovered"
daemon_recovered = true
to = ["hook"]

[services.s]
command = "{{helper}}"
args = ["sleep"]
"#,
        port = rx.port
    ));
    d.wait_state("s", "running", T);
    let old = d.pid("s").expect("pid");
    d.crash();
    d.spawn();
    wait_until("the recovered alert", T, || {
        rx.count("recovered", "firing") == 1
    });
    assert!(!alive(old));
    let b = &rx.bodies()[0];
    assert!(b["service"].is_null());
    assert!(
        b["summary"]
            .as_str()
            .unwrap_or("")
            .contains("crash of an earlier one"),
        "{b}"
    );
}

#[test]
fn alerts_reload_adds_a_rule() {
    let rx = Receiver::start();
    let svc = "[services.dies]\ncommand = \"{helper}\"\nargs = [\"exit\", \"1\"]\nmax_restarts = 0\nautostart = false\n";
    let d = Daemon::start(svc);
    assert!(d.ok(&["alerts"]).contains("no alert rules"));
    d.write_config(&format!(
        "[alerts]\n[alerts.webhook.hook]\nurl = \"http://127.0.0.1:{}/\"\n[[alerts.rule]]\nname = \"gave-up\"\nstate = \"failed\"\nto = [\"hook\"]\n\n{svc}",
        rx.port
    ));
    d.ok(&["reload"]);
    let _ = d.lmctl(&["start", "dies"]);
    wait_until("the alert of a rule added by reload", T, || {
        rx.count("gave-up", "firing") == 1
    });
}
