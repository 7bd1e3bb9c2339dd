//! Revoking a customer's QR authorization also closes its browser session (issue 17).

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use crate::harness::{admin_token, dead_url, FakeSessionManager, Hub, HubOpts};

async fn enable_then_revoke(hub: &Hub, id: i64) -> (u16, serde_json::Value, Duration) {
    let admin = admin_token();
    let (s, _) = hub
        .call(
            Method::POST,
            &format!("/api/admin/whatsapp-qr/{id}/enable"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let start = Instant::now();
    let (s, b) = hub
        .call(
            Method::POST,
            &format!("/api/admin/whatsapp-qr/{id}/revoke"),
            Some(&admin),
            None,
        )
        .await;
    (s, b, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_closes_the_customers_browser_session() {
    let sm = FakeSessionManager::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;

    let (s, b, _) = enable_then_revoke(&hub, 31).await;
    assert_eq!(
        (s, b["authorization"].as_str()),
        (200, Some("REVOKED")),
        "{b}"
    );
    assert_eq!(b["session_logout"]["ok"], json!(true), "{b}");
    assert_eq!(b["session_logout"]["status"], json!(200), "{b}");
    assert_eq!(
        sm.seen(),
        vec![(
            "POST".to_owned(),
            "/logout".to_owned(),
            Some("31".to_owned())
        )]
    );
    assert!(
        hub.log().contains("closed the browser session"),
        "{}",
        hub.log()
    );

    // Revoking someone never enabled is a 404 and tells session-manager nothing.
    let (s, _) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/32/revoke",
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(sm.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_succeeds_when_session_manager_is_down_or_slow() {
    // Down.
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    let (s, b, _) = enable_then_revoke(&hub, 33).await;
    assert_eq!(
        (s, b["authorization"].as_str()),
        (200, Some("REVOKED")),
        "{b}"
    );
    assert_eq!(b["session_logout"]["ok"], json!(false), "{b}");
    assert_eq!(
        b["session_logout"]["error"],
        json!("session-manager is unreachable"),
        "{b}"
    );
    assert!(
        hub.log().contains("browser session not closed"),
        "{}",
        hub.log()
    );

    // Hung: the revoke waits at most the (short) session-manager timeout.
    let sm = FakeSessionManager::start(Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&sm.url);
    opts.extra_env
        .push(("SESSION_MANAGER_TIMEOUT".into(), "300ms".into()));
    let hub = Hub::start(dir.path(), &opts).await;
    let (s, b, took) = enable_then_revoke(&hub, 34).await;
    assert_eq!(
        (s, b["authorization"].as_str()),
        (200, Some("REVOKED")),
        "{b}"
    );
    assert_eq!(b["session_logout"]["ok"], json!(false), "{b}");
    assert_eq!(
        b["session_logout"]["error"],
        json!("session-manager did not answer within 300 ms")
    );
    assert!(took < Duration::from_secs(3), "revoke took {took:?}");
}
