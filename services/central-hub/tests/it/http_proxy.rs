//! Customer routes: authorization rule end to end and the proxy to session-manager.

use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::json;

use crate::harness::{
    admin_token, customer_token, dead_url, token_with, FakeSessionManager, Hub, HubOpts,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabled_customer_reaches_only_its_own_session() {
    let sm = FakeSessionManager::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;
    let admin = admin_token();
    let (s, _) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/7/enable",
            Some(&admin),
            Some(r#"{"expires_at":null}"#),
        )
        .await;
    assert_eq!(s, 200);

    let c7 = customer_token(7);
    let (s, b) = hub
        .call(Method::GET, "/api/whatsapp/status", Some(&c7), None)
        .await;
    assert_eq!(
        (s, b["state"].as_str(), b["cliente_id"].as_i64()),
        (200, Some("QR_REQUIRED"), Some(7)),
        "{b}"
    );
    let (s, b) = hub
        .call(Method::POST, "/api/whatsapp/init", Some(&c7), None)
        .await;
    assert_eq!((s, b["action"].as_str()), (200, Some("INITIALIZING")));
    let (s, b) = hub
        .call(Method::GET, "/api/whatsapp/qr", Some(&c7), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["qr_code_base64"],
        json!("data:image/png;base64,iVBORw0KGgo=")
    );
    assert_eq!(b["qr_available"], json!(true));

    // Another customer (not enabled) is refused and never reaches session-manager.
    let (s, b) = hub
        .call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(8)),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("QR_NOT_AUTHORIZED"))
    );
    // A token without cliente_id (e.g. an admin's) cannot pick a session.
    let (s, _) = hub
        .call(Method::GET, "/api/whatsapp/status", Some(&admin), None)
        .await;
    assert_eq!(s, 403);
    // Forged customer token → 401.
    let forged = token_with("wrong", json!({"sub": "x", "cliente_id": 7}));
    assert_eq!(
        hub.call(Method::GET, "/api/whatsapp/status", Some(&forged), None)
            .await
            .0,
        401
    );
    assert_eq!(
        hub.call(Method::GET, "/api/whatsapp/status", None, None)
            .await
            .0,
        401
    );

    let seen = sm.seen();
    let want = vec![
        ("GET".to_owned(), "/status".to_owned(), Some("7".to_owned())),
        ("POST".to_owned(), "/init".to_owned(), Some("7".to_owned())),
        ("GET".to_owned(), "/status".to_owned(), Some("7".to_owned())),
    ];
    assert_eq!(seen, want);
    assert!(
        hub.log().contains("GET /api/whatsapp/status 200"),
        "request log line missing:\n{}",
        hub.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_customers_are_refused() {
    let sm = FakeSessionManager::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;
    let admin = admin_token();

    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let (s, b) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/5/enable",
            Some(&admin),
            Some(&json!({"expires_at": past}).to_string()),
        )
        .await;
    assert_eq!((s, b["authorization"].as_str()), (200, Some("EXPIRED")));
    let (s, b) = hub
        .call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(5)),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("QR_NOT_AUTHORIZED"))
    );

    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({ "expires_at": future }).to_string();
    assert_eq!(
        hub.call(
            Method::POST,
            "/api/admin/whatsapp-qr/6/enable",
            Some(&admin),
            Some(&body)
        )
        .await
        .0,
        200
    );
    let c6 = customer_token(6);
    assert_eq!(
        hub.call(Method::GET, "/api/whatsapp/status", Some(&c6), None)
            .await
            .0,
        200
    );

    let (s, b) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/6/revoke",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, b["authorization"].as_str()), (200, Some("REVOKED")));
    assert_eq!(b["session"]["revoked_by"], json!("admin-ana"));
    let (s, b) = hub
        .call(Method::POST, "/api/whatsapp/init", Some(&c6), None)
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (403, Some("QR_NOT_AUTHORIZED"))
    );

    // Re-enabling clears the revoke.
    let (s, b) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/6/enable",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, b["session"]["revoked_at"].clone()), (200, json!(null)));
    assert_eq!(
        hub.call(Method::GET, "/api/whatsapp/qr", Some(&c6), None)
            .await
            .0,
        200
    );

    // Only customer 6 ever reached session-manager: its status, the revoke's logout, its QR.
    let seen: Vec<_> = sm
        .seen()
        .into_iter()
        .map(|(_, path, id)| (path, id.unwrap_or_default()))
        .collect();
    let want: Vec<(String, String)> = [("/status", "6"), ("/logout", "6"), ("/status", "6")]
        .iter()
        .map(|(p, i)| (p.to_string(), i.to_string()))
        .collect();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_manager_down_gives_502_and_degraded_status() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    hub.call(
        Method::POST,
        "/api/admin/whatsapp-qr/1/enable",
        Some(&admin_token()),
        None,
    )
    .await;

    let (s, b) = hub
        .call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(1)),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (502, Some("SESSION_MANAGER_UNREACHABLE")),
        "{b}"
    );

    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("degraded")), "{b}");
    assert_eq!(b["checks"]["database"]["status"], json!("healthy"));
    assert_eq!(b["checks"]["session_manager"]["status"], json!("unhealthy"));
    assert!(b["memory"]["rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert_eq!(b["dry_run"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_session_manager_gives_504_within_the_timeout() {
    let sm = FakeSessionManager::start(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&sm.url);
    opts.extra_env
        .push(("SESSION_MANAGER_TIMEOUT".into(), "300ms".into()));
    let hub = Hub::start(dir.path(), &opts).await;
    hub.call(
        Method::POST,
        "/api/admin/whatsapp-qr/3/enable",
        Some(&admin_token()),
        None,
    )
    .await;

    let start = Instant::now();
    let (s, b) = hub
        .call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(3)),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (504, Some("SESSION_MANAGER_TIMEOUT")),
        "{b}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );

    // /health of the fake is fast, so the hub is healthy overall.
    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("healthy")), "{b}");
}
