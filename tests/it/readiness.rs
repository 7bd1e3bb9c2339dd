//! Ready means ready: notify handshake, http/tcp probes, depends_on, health, watchdog,
//! and sd_notify to our own manager.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn dependent_spawns_only_after_its_dependency_sends_ready() {
    let d = Daemon::start(
        r#"[services.slow]
command = "{helper}"
args = ["notify", "1500"]
ready = { notify = true, timeout = "10s" }

[services.dep]
command = "{helper}"
args = ["sleep"]
depends_on = { slow = "ready" }
"#,
    );
    wait_until("dep waiting", Duration::from_secs(5), || {
        d.svc("dep")["waiting_for"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    });
    let waiting = d.svc("dep")["waiting_for"][0]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(waiting.starts_with("slow to be ready"), "{waiting}");
    assert_eq!(d.state("slow"), "starting");
    d.wait_state("dep", "running", Duration::from_secs(10));
    assert_eq!(d.state("slow"), "ready");
    assert_eq!(d.svc("slow")["status_text"], "serving", "STATUS= is shown");
    let log = d.merged_log();
    let ready = line_of(&log, "slow|event ready after").expect("ready event");
    let spawned = line_of(&log, "dep|event spawned pid").expect("dep spawn event");
    assert!(ready < spawned, "dep spawned before slow was ready:\n{log}");
}

#[test]
fn a_service_that_never_signals_ready_is_never_ready_and_ends_failed() {
    let d = Daemon::start(
        r#"[services.mute]
command = "{helper}"
args = ["notify", "never"]
ready = { notify = true, timeout = "400ms" }
backoff = { initial = "0s" }
max_restarts = 1
"#,
    );
    let mut seen = Vec::new();
    wait_until("failed", Duration::from_secs(10), || {
        let st = d.state("mute");
        seen.push(st.clone());
        st == "failed"
    });
    assert!(
        !seen.iter().any(|s| s == "ready" || s == "running"),
        "marked up without a ready signal: {seen:?}"
    );
    let err = d.svc("mute")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        err.contains("not ready within 400ms (no READY=1 on its NOTIFY_SOCKET)"),
        "{err}"
    );
    assert!(!d.merged_log().contains("mute|event ready after"));
}

#[test]
fn a_datagram_from_outside_the_service_is_ignored() {
    let d = Daemon::start(
        "[services.mute]\ncommand = \"{helper}\"\nargs = [\"notify\", \"never\"]\nready = { notify = true, timeout = \"20s\" }\n",
    );
    d.wait_state("mute", "starting", Duration::from_secs(5));
    let sock = UnixDatagram::unbound().unwrap();
    sock.send_to(b"READY=1\n", d.state_dir.join("notify/mute.sock"))
        .unwrap();
    wait_until("the ignore event", Duration::from_secs(5), || {
        d.merged_log().contains(&format!(
            "ignored a notify message from pid {}",
            std::process::id()
        ))
    });
    assert_eq!(d.state("mute"), "starting");
}

#[test]
fn http_and_tcp_readiness() {
    let (p1, p2) = (free_port(), free_port());
    let d = Daemon::start(&format!(
        r#"[services.web]
command = "{{helper}}"
args = ["http", "600"]
env = {{ PORT = "{p1}" }}
ready = {{ http = "http://127.0.0.1:${{PORT}}/health", timeout = "10s" }}

[services.raw]
command = "{{helper}}"
args = ["http", "300"]
env = {{ PORT = "{p2}" }}
ready = {{ tcp = "127.0.0.1:${{PORT}}", timeout = "10s" }}
"#
    ));
    d.wait_state("web", "ready", Duration::from_secs(10));
    d.wait_state("raw", "ready", Duration::from_secs(10));
    let events = d.events("web").join("\n");
    assert!(
        events.contains("ready after") && events.contains("probe passed"),
        "{events}"
    );
}

#[test]
fn an_http_ready_probe_that_answers_500_is_a_failed_start() {
    let p = free_port();
    let d = Daemon::start(&format!(
        "[services.bad]\ncommand = \"{{helper}}\"\nargs = [\"http\"]\nenv = {{ PORT = \"{p}\", HTTP_STATUS = \"500 Internal Server Error\" }}\nready = {{ http = \"http://127.0.0.1:{p}/\", timeout = \"700ms\" }}\nmax_restarts = 0\n"
    ));
    d.wait_state("bad", "failed", Duration::from_secs(10));
    let err = d.svc("bad")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(err.contains("status 500"), "{err}");
}

#[test]
fn failing_health_probes_restart_the_service() {
    let p = free_port();
    let fail = "{dir}/fail";
    let d = Daemon::start(&format!(
        r#"[services.web]
command = "{{helper}}"
args = ["http"]
env = {{ PORT = "{p}", FAIL_FILE = "{fail}" }}
ready = {{ tcp = "127.0.0.1:{p}", timeout = "10s" }}
health = {{ http = "http://127.0.0.1:{p}/health", interval = "150ms", timeout = "1s", retries = 2 }}
backoff = {{ initial = "0s" }}
"#
    ));
    d.wait_state("web", "ready", Duration::from_secs(10));
    wait_until("healthy", Duration::from_secs(5), || {
        d.svc("web")["health"] == "healthy"
    });
    let first = d.pid("web").unwrap();
    std::fs::write(d.path("fail"), "").unwrap();
    wait_until("a restart after unhealthy", Duration::from_secs(10), || {
        d.pid("web").is_some_and(|p| p != first)
    });
    let events = d.events("web").join("\n");
    assert!(events.contains("health probe failed (2/2)"), "{events}");
    assert!(
        events.contains("unhealthy: 2 health probes failed in a row"),
        "{events}"
    );
    std::fs::remove_file(d.path("fail")).unwrap();
    wait_until("healthy again", Duration::from_secs(10), || {
        d.svc("web")["health"] == "healthy"
    });
}

#[test]
fn a_service_that_stops_pinging_the_watchdog_is_restarted() {
    let d = Daemon::start(
        r#"[services.dog]
command = "{helper}"
args = ["notify", "0", "100", "5"]
ready = { notify = true, timeout = "5s" }
watchdog = "600ms"
backoff = { initial = "0s" }
"#,
    );
    d.wait_state("dog", "ready", Duration::from_secs(5));
    let first = d.pid("dog").unwrap();
    // 5 pings at 100 ms keep it alive past 600 ms; then it goes silent.
    wait_until("a watchdog restart", Duration::from_secs(10), || {
        d.pid("dog").is_some_and(|p| p != first)
    });
    let events = d.events("dog").join("\n");
    assert!(
        events.contains("watchdog: no WATCHDOG=1 within 600ms"),
        "{events}"
    );
    let env = std::fs::read(format!("/proc/{}/environ", d.pid("dog").unwrap())).unwrap_or_default();
    assert!(String::from_utf8_lossy(&env).contains("WATCHDOG_USEC=600000"));
}

#[test]
fn the_daemon_tells_its_own_manager_ready_only_when_every_autostart_service_is() {
    let mut d = Daemon::new(
        r#"[services.slow]
command = "{helper}"
args = ["notify", "1200"]
ready = { notify = true, timeout = "10s" }

[services.plain]
command = "{helper}"
args = ["sleep"]
"#,
    );
    let sock_path = d.path("systemd.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    d.env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    let t0 = Instant::now();
    d.spawn();
    let mut ready_at = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while ready_at.is_none() && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.lines().any(|l| l == "READY=1") {
                ready_at = Some(t0.elapsed());
                assert_eq!(
                    d.state("slow"),
                    "ready",
                    "READY=1 sent before slow was ready"
                );
                assert!(msg.contains("STATUS=2/2 services ready"), "{msg}");
            }
        }
    }
    let ready_at = ready_at.expect("READY=1 never came");
    assert!(
        ready_at >= Duration::from_millis(1200),
        "READY=1 too early: {ready_at:?}"
    );
    d.terminate(Duration::from_secs(10));
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        stopping |= String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1 at shutdown");
}

#[test]
fn lmctl_start_waits_for_ready_and_fails_with_the_reason() {
    let d = Daemon::start(
        r#"[services.good]
command = "{helper}"
args = ["notify", "500"]
ready = { notify = true, timeout = "5s" }
autostart = false

[services.bad]
command = "{helper}"
args = ["notify", "never"]
ready = { notify = true, timeout = "300ms" }
max_restarts = 0
autostart = false
"#,
    );
    let t0 = Instant::now();
    d.ok(&["start", "good"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "returned before ready"
    );
    assert_eq!(d.state("good"), "ready");
    let out = d.lmctl(&["start", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad failed to start: it is failed") && err.contains("not ready within 300ms"),
        "{err}"
    );
    d.ok(&["stop", "good"]);
    let out = d.lmctl(&["start", "good", "--no-wait"]);
    assert!(out.status.success());
    assert_eq!(d.state("good"), "starting", "--no-wait returns at once");
}
