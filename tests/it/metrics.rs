//! `/metrics`: Prometheus text that promtool accepts, counters that match known restarts,
//! limits on the listener, and what a scrape costs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::obs_util::{http_get, metric, try_http_get};

const T: Duration = Duration::from_secs(30);

fn promtool() -> Option<String> {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("promtool".into());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("promtool is missing: .ci/metrics-deps.sh installs it");
    }
    eprintln!("SKIP promtool check: promtool not installed (bash .ci/metrics-deps.sh)");
    None
}

#[test]
fn metrics_pass_promtool_and_count_known_restarts() {
    let port = free_port();
    let web = free_port();
    let d = Daemon::start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [services.web]\ncommand = \"{{helper}}\"\nargs = [\"http\"]\nenv = {{ PORT = \"{web}\" }}\n\
         ready = {{ tcp = \"127.0.0.1:{web}\" }}\nhealth = {{ http = \"http://127.0.0.1:{web}/\", interval = \"100ms\" }}\n\n\
         [services.stable]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\n\n\
         [services.crashy]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"echo oops >&2; exit 3\"]\nmax_restarts = 3\nbackoff = {{ initial = \"20ms\", max = \"20ms\" }}\n"
    ));
    d.wait_state("stable", "running", T);
    d.wait_state("crashy", "failed", T);
    d.ok(&["restart", "stable"]);
    d.ok(&["restart", "stable"]);

    let (status, body) = http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    let v = |s: &str| metric(&body, s);
    assert_eq!(
        v("lm_service_restarts_total{service=\"crashy\",reason=\"crash\"}"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        v("lm_service_restarts_total{service=\"stable\",reason=\"user\"}"),
        Some(2.0)
    );
    assert_eq!(
        v("lm_service_restarts_total{service=\"stable\",reason=\"crash\"}"),
        Some(0.0)
    );
    assert_eq!(v("lm_service_up{service=\"stable\"}"), Some(1.0));
    assert_eq!(v("lm_service_up{service=\"crashy\"}"), Some(0.0));
    assert_eq!(
        v("lm_service_state{service=\"crashy\",state=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        v("lm_service_last_exit_code{service=\"crashy\"}"),
        Some(3.0)
    );
    assert!(v("lm_log_lines_total{service=\"crashy\",stream=\"err\"}").unwrap_or(0.0) >= 4.0);
    assert_eq!(
        v("lm_log_dropped_lines_total{service=\"crashy\"}"),
        Some(0.0)
    );
    assert!(v("lm_daemon_resident_memory_bytes").unwrap_or(0.0) > 1e6);
    for family in [
        "lm_service_memory_bytes{service=\"stable\"}",
        "lm_service_cpu_seconds_total{service=\"stable\"}",
        "lm_service_processes{service=\"stable\"}",
    ] {
        assert!(v(family).is_some(), "{family} missing:\n{body}");
    }
    // Probe durations: a histogram per service and probe.
    wait_until("health probe durations", T, || {
        let (_, b) = http_get(port, "/metrics");
        metric(
            &b,
            "lm_service_probe_duration_seconds_count{service=\"web\",probe=\"health\"}",
        )
        .unwrap_or(0.0)
            >= 3.0
    });
    // The sampler's numbers show up once it has run.
    wait_until("memory of `stable` in /metrics", T, || {
        let (_, b) = http_get(port, "/metrics");
        metric(&b, "lm_service_memory_bytes{service=\"stable\"}").unwrap_or(0.0) > 0.0
            && metric(&b, "lm_service_processes{service=\"stable\"}") == Some(1.0)
    });

    let (_, body) = http_get(port, "/metrics");
    // Ready: the passing check (and a refused connection before it, under load).
    assert!(
        metric(
            &body,
            "lm_service_probe_duration_seconds_count{service=\"web\",probe=\"ready\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{body}"
    );
    if let Some(tool) = promtool() {
        let mut p = std::process::Command::new(tool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        p.stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("feed promtool");
        let out = p.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Anything but GET /metrics is refused.
    assert!(http_get(port, "/").0.contains("404"));
}

#[test]
fn metrics_listener_drops_slow_and_oversized_requests() {
    let port = free_port();
    let d = Daemon::start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[services.s]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\n"
    ));
    d.wait_state("s", "running", T);
    // A header larger than the limit: answered with an error or closed, never served.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let big = "x".repeat(64 * 1024);
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(!text.contains("200 OK"), "{text:.200}");
    // Many idle connections do not stop a real scrape for long: the idle ones are cut
    // after the header timeout, and the listener caps how many it holds.
    let idle: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let t0 = Instant::now();
    wait_until("a scrape to succeed despite idle connections", T, || {
        try_http_get(port, "/metrics").is_some_and(|(st, _)| st.contains("200"))
    });
    eprintln!("scrape served {:?} after 40 idle connections", t0.elapsed());
    drop(idle);
    // The supervisor itself never noticed.
    let t0 = Instant::now();
    d.ok(&["status"]);
    assert!(t0.elapsed() < Duration::from_secs(2));
}

/// (time per scrape, body size, daemon CPU seconds per scrape).
fn scrape_cost(n: usize, running: usize) -> (Duration, usize, f64) {
    let port = free_port();
    let mut body = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n");
    for i in 0..n {
        body.push_str(&format!(
            "[services.svc{i:04}]\ncommand = \"{{helper}}\"\nargs = [\"sleep\"]\nautostart = {}\n",
            i < running
        ));
    }
    let d = Daemon::start(&body);
    wait_until("the running services", Duration::from_secs(60), || {
        d.status()
            .iter()
            .filter(|s| s["state"] == "running")
            .count()
            == running
    });
    // Warm up, then time N scrapes end to end (connect, request, full body).
    let (_, first) = http_get(port, "/metrics");
    let cpu = |b: &str| metric(b, "lm_daemon_cpu_seconds_total").unwrap_or(0.0);
    let rounds = 20;
    let t0 = Instant::now();
    let mut last = String::new();
    for _ in 0..rounds {
        let (st, b) = http_get(port, "/metrics");
        assert!(st.contains("200"));
        last = b;
    }
    let took = t0.elapsed();
    // The daemon's CPU over the scrapes (the sampler's share included: an upper bound).
    let per_scrape_cpu = (cpu(&last) - cpu(&first)).max(0.0) / f64::from(rounds);
    (took / rounds, first.len(), per_scrape_cpu)
}

#[test]
fn metrics_scrape_cost_with_50_and_1000_services() {
    let (t50, b50, c50) = scrape_cost(50, 50);
    let (t1000, b1000, c1000) = scrape_cost(1000, 50);
    eprintln!(
        "SCRAPE: 50 services (50 running): {t50:?} per scrape, {b50} bytes, daemon CPU {:.1} ms per scrape; \
         1000 services (50 running): {t1000:?} per scrape, {b1000} bytes, daemon CPU {:.1} ms per scrape",
        c50 * 1000.0,
        c1000 * 1000.0
    );
    // Generous bounds (debug build, a shared 2-core machine): a scrape must stay cheap.
    assert!(t50 < Duration::from_millis(200), "{t50:?}");
    assert!(t1000 < Duration::from_millis(1000), "{t1000:?}");
}
