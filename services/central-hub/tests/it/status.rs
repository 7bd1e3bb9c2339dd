//! `/status` as the seeds propose it (issue 17): process CPU and memory, session-manager's
//! session summary, 5 s check timeouts, and a warning when DRY_RUN is not held stack-wide.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use crate::harness::{FakeOpts, FakeSessionManager, Hub, HubOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_cpu_memory_and_the_session_summary() {
    let sm = FakeSessionManager::start_with(FakeOpts {
        health: json!({
            "status": "ok", "service": "session-manager", "sessions": 3,
            "sessions_by_state": {"READY": 2, "QR_REQUIRED": 1}, "dry_run": true
        }),
        ..FakeOpts::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;

    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("healthy")), "{b}");
    assert!(b["cpu"]["percent"].as_f64().is_some(), "{b}");
    assert!(b["cpu"]["user_seconds"].as_f64().is_some(), "{b}");
    assert!(b["cpu"]["system_seconds"].as_f64().is_some(), "{b}");
    assert!(
        b["memory"]["rss_bytes"].as_u64().unwrap() > 1_000_000,
        "{b}"
    );
    assert!(
        b["memory"]["rss_peak_bytes"].as_u64().unwrap()
            >= b["memory"]["rss_bytes"].as_u64().unwrap(),
        "{b}"
    );
    for check in ["database", "session_manager"] {
        assert_eq!(b["checks"][check]["timeout_ms"], json!(5000), "{b}");
    }
    let sessions = &b["checks"]["session_manager"]["sessions"];
    assert_eq!(sessions["total"], json!(3), "{b}");
    assert_eq!(sessions["by_state"]["READY"], json!(2), "{b}");
    assert_eq!(
        b["checks"]["session_manager"]["dry_run"],
        json!(true),
        "{b}"
    );
    assert_eq!(b["warnings"], json!([]), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_session_manager_is_given_5s_then_reported() {
    let sm = FakeSessionManager::start_with(FakeOpts {
        health_delay: Duration::from_secs(30),
        ..FakeOpts::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;

    let start = Instant::now();
    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    let took = start.elapsed();
    assert_eq!((s, b["status"].as_str()), (200, Some("degraded")), "{b}");
    assert_eq!(
        b["checks"]["session_manager"]["error"],
        json!("session-manager did not answer within 5000 ms"),
        "{b}"
    );
    assert_eq!(b["checks"]["session_manager"]["sessions"], json!(null));
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "/status took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_degraded_when_session_manager_would_send_for_real() {
    let sm = FakeSessionManager::start_with(FakeOpts {
        health: json!({"status": "ok", "service": "session-manager", "sessions": 0, "dry_run": false}),
        ..FakeOpts::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The hub runs with the default DRY_RUN=true.
    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;
    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("degraded")), "{b}");
    assert_eq!(b["dry_run"], json!(true));
    assert_eq!(b["checks"]["session_manager"]["dry_run"], json!(false));
    assert!(
        b["warnings"][0].as_str().unwrap().contains("DRY_RUN"),
        "{b}"
    );

    // With DRY_RUN=false on the hub, a sending session-manager is what was asked for.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&sm.url);
    opts.extra_env.push(("DRY_RUN".into(), "false".into()));
    let hub = Hub::start(dir.path(), &opts).await;
    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("healthy")), "{b}");
}
