//! Admin routes over HTTP: auth (401/403), validation (400), 404, and the stored record.

use axum::http::Method;
use serde_json::json;

use crate::harness::{admin_token, customer_token, dead_url, token_with, Hub, HubOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_check_token_role_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    let admin = admin_token();
    let path = "/api/admin/whatsapp-qr/42";

    // No token, forged token, expired token, garbage → 401.
    let (s, b) = hub.call(Method::GET, path, None, None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("MISSING_TOKEN"))
    );
    let forged = token_with("not-the-secret", json!({"sub": "eve", "role": "admin"}));
    let (s, b) = hub.call(Method::GET, path, Some(&forged), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("INVALID_TOKEN"))
    );
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ana", "role": "admin", "exp": chrono::Utc::now().timestamp() - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(crate::harness::SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        hub.call(Method::GET, path, Some(&expired), None).await.0,
        401
    );
    assert_eq!(
        hub.call(Method::GET, path, Some("abc.def.ghi"), None)
            .await
            .0,
        401
    );

    // A valid customer token is the wrong role → 403.
    let (s, b) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/42/enable",
            Some(&customer_token(42)),
            Some("{}"),
        )
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("FORBIDDEN")));

    // Nothing stored → 404 for read and revoke.
    let (s, b) = hub.call(Method::GET, path, Some(&admin), None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("QR_SESSION_NOT_FOUND"))
    );
    assert_eq!(
        hub.call(
            Method::POST,
            "/api/admin/whatsapp-qr/42/revoke",
            Some(&admin),
            None
        )
        .await
        .0,
        404
    );

    // Bad ids, bad JSON, bad dates → 400 with a code.
    for bad in ["0", "-3", "abc", "1.5"] {
        let (s, b) = hub
            .call(
                Method::GET,
                &format!("/api/admin/whatsapp-qr/{bad}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (400, Some("INVALID_CLIENTE_ID")),
            "{bad}"
        );
    }
    let enable = "/api/admin/whatsapp-qr/42/enable";
    let (s, b) = hub
        .call(Method::POST, enable, Some(&admin), Some("{not json"))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("INVALID_JSON"))
    );
    let (s, b) = hub
        .call(
            Method::POST,
            enable,
            Some(&admin),
            Some(r#"{"expires_at":"tomorrow"}"#),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("INVALID_EXPIRES_AT"))
    );
    let (s, _) = hub
        .call(
            Method::POST,
            enable,
            Some(&admin),
            Some(r#"{"expires_at":12}"#),
        )
        .await;
    assert_eq!(s, 400);

    // Enable records the admin from `sub`; GET shows it.
    let (s, b) = hub
        .call(
            Method::POST,
            enable,
            Some(&admin),
            Some(r#"{"expires_at":"2099-01-31T23:59:59Z"}"#),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["authorized"], json!(true));
    assert_eq!(b["session"]["enabled_by"], json!("admin-ana"));
    let (s, b) = hub.call(Method::GET, path, Some(&admin), None).await;
    assert_eq!((s, b["session"]["cliente_id"].as_i64()), (200, Some(42)));
    assert!(b["session"]["expires_at"]
        .as_str()
        .unwrap()
        .starts_with("2099-01-31T23:59:59"));

    // Unknown routes keep the error shape.
    let (s, b) = hub.call(Method::GET, "/nope", None, None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
}
