//! Bearer tokens and error bodies (issue 17): time claims with a small leeway, no library
//! wording in answers, and oversize bodies answered in the JSON error shape.

use axum::http::Method;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::{admin_token, customer_token, dead_url, raw_exchange, Hub, HubOpts, SECRET};

/// Signs exactly `claims` (no `exp` added).
fn signed(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_are_checked_with_a_small_leeway() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    let now = chrono::Utc::now().timestamp();
    let hour = 3600;
    let path = "/api/admin/whatsapp-qr/42";
    let admin = |extra: Value| {
        let mut c = json!({"sub": "ana", "role": "admin", "exp": now + hour});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        signed(c)
    };

    // (claims, accepted?) — accepted means the route ran (404: nothing stored), not a 401.
    let cases = [
        ("plain", admin(json!({})), true),
        // Expired 30 s ago: inside jsonwebtoken's default 60 s leeway, outside ours (5 s).
        ("exp 30s ago", admin(json!({"exp": now - 30})), false),
        // 1 s ago: inside the 5 s leeway, with room for a slow machine.
        (
            "exp 1s ago (within leeway)",
            admin(json!({"exp": now - 1})),
            true,
        ),
        ("nbf in an hour", admin(json!({"nbf": now + hour})), false),
        ("nbf now", admin(json!({"nbf": now})), true),
        ("iat in an hour", admin(json!({"iat": now + hour})), false),
        ("iat 60s ahead", admin(json!({"iat": now + 60})), false),
        ("iat now", admin(json!({"iat": now})), true),
        (
            "iat not a number",
            admin(json!({"iat": "yesterday"})),
            false,
        ),
        (
            "no exp",
            signed(json!({"sub": "ana", "role": "admin"})),
            false,
        ),
    ];
    for (what, token, accepted) in cases {
        let (s, b) = hub.call(Method::GET, path, Some(&token), None).await;
        if accepted {
            assert_eq!(s, 404, "{what}: {b}");
        } else {
            assert_eq!(
                (s, b["error"]["code"].as_str()),
                (401, Some("INVALID_TOKEN")),
                "{what}: {b}"
            );
        }
    }
}

/// Words that only a library's error text would put in a body.
const INTERNALS: [&str; 12] = [
    "InvalidSignature",
    "ExpiredSignature",
    "ImmatureSignature",
    "Error(",
    "kind",
    "os error",
    "tcp connect",
    "Connection refused",
    "client error",
    "line 1 column",
    "expected value",
    "sqlx",
];

fn assert_no_internals(what: &str, body: &Value) {
    let text = body.to_string();
    for word in INTERNALS {
        assert!(!text.contains(word), "{what}: {word:?} leaked in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_do_not_echo_library_internals() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    let admin = admin_token();
    let path = "/api/admin/whatsapp-qr/42";

    let forged = encode(
        &Header::default(),
        &json!({"sub": "eve", "role": "admin", "exp": chrono::Utc::now().timestamp() + 60}),
        &EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
    )
    .unwrap();
    let expired = signed(json!({"sub": "ana", "role": "admin", "exp": 1}));
    for (what, token) in [
        ("forged", forged.as_str()),
        ("expired", expired.as_str()),
        ("garbage", "abc.def.ghi"),
    ] {
        let (s, b) = hub.call(Method::GET, path, Some(token), None).await;
        assert_eq!(s, 401, "{what}: {b}");
        assert_no_internals(what, &b);
    }
    let (s, b) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/42/enable",
            Some(&admin),
            Some("{not json"),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("INVALID_JSON"))
    );
    assert_no_internals("bad json", &b);

    // session-manager is down: 502 without the HTTP client's wording.
    hub.call(
        Method::POST,
        "/api/admin/whatsapp-qr/42/enable",
        Some(&admin),
        None,
    )
    .await;
    let (s, b) = hub
        .call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(42)),
            None,
        )
        .await;
    assert_eq!(s, 502, "{b}");
    assert_no_internals("502", &b);
    let (_, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_no_internals("/status", &b);
    // The detail is still there for the operator.
    assert!(hub.log().contains("Connection refused") || hub.log().contains("os error"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_in_the_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    let admin = admin_token();
    let enable = "/api/admin/whatsapp-qr/42/enable";

    // Just over the limit, with a Content-Length: refused before the body is read.
    let big = format!(r#"{{"expires_at":null,"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let (s, b) = hub
        .call(Method::POST, enable, Some(&admin), Some(&big))
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{b}"
    );

    // Declares 3 MB (past axum's own 2 MiB limit, which answered in plain text).
    let head = format!(
        "POST {enable} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: 3000000\r\nConnection: close\r\n\r\n"
    );
    let (s, b) = raw_exchange(hub.port, head.as_bytes()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{b}"
    );

    // Chunked, so no length is declared: counted while reading.
    let mut req = format!(
        "POST {enable} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..9 {
        req.extend_from_slice(format!("2000\r\n{}\r\n", "y".repeat(0x2000)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (s, b) = raw_exchange(hub.port, &req).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE")),
        "{b}"
    );

    // A normal body still works.
    let (s, _) = hub
        .call(
            Method::POST,
            enable,
            Some(&admin),
            Some(r#"{"expires_at":null}"#),
        )
        .await;
    assert_eq!(s, 200);
}
