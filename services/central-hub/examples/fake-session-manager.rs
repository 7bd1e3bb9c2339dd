//! A trivial session-manager stand-in for benchmarks: fixed JSON answers,
//! no browser. Usage: `fake-session-manager PORT`.

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

async fn status(headers: HeaderMap) -> Json<Value> {
    let id = headers
        .get("x-cliente-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i64>().ok());
    Json(json!({"cliente_id": id, "state": "READY", "connected": true, "needs_qr": false}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: fake-session-manager PORT"))?
        .parse()?;
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/status", get(status))
        .route(
            "/init",
            post(|| async { Json(json!({"action": "NO_ACTION_NEEDED"})) }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
