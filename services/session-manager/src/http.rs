//! HTTP routes. Handlers only parse, ask the session actor, and render.
//!
//! Every error body has one shape: `{"error": "<human text>", "code": "<CODE>", ...}`
//! with optional extra fields (`retry`, `retry_after_seconds`, `fix`, `state`).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::session::{InitOutcome, SendOutcome, Sessions, RETRY_AFTER_SECONDS};

/// The router with every route and the one-line-per-request log.
pub fn router(sessions: Sessions) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/init", post(init))
        .route("/status", get(status))
        .route("/send", post(send))
        .route("/logout", post(logout))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .layer(middleware::from_fn(log_request))
        .with_state(sessions)
}

/// An error answer.
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": error.into(), "code": code }),
        }
    }

    fn with(mut self, key: &str, v: Value) -> Self {
        self.body[key] = v;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// `X-Cliente-Id`: a positive integer.
fn cliente_id(headers: &HeaderMap) -> Result<u64, ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENTE_ID",
            format!("header X-Cliente-Id {why}: a positive integer is required"),
        )
    };
    let v = headers
        .get("x-cliente-id")
        .ok_or_else(|| bad("is missing"))?;
    let s = v.to_str().map_err(|_| bad("is not text"))?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is malformed"));
    }
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("is out of range")),
    }
}

async fn health(AxState(s): AxState<Sessions>) -> Json<Value> {
    Json(json!({ "status": "ok", "service": "session-manager", "sessions": s.count().await }))
}

async fn init(AxState(s): AxState<Sessions>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    match s.init(id).await {
        InitOutcome::Initializing(status) => Ok(Json(json!({
            "success": true,
            "message": "WhatsApp client initialization started",
            "cliente_id": id,
            "action": "INITIALIZING",
            "status": status,
            "next_steps": "Monitor /status endpoint for QR code or READY state",
        }))),
        InitOutcome::NoActionNeeded(status) => Ok(Json(json!({
            "success": true,
            "message": "Client already initialized",
            "cliente_id": id,
            "action": "NO_ACTION_NEEDED",
            "status": status,
        }))),
        InitOutcome::InProgress => Err(ApiError::new(
            StatusCode::CONFLICT,
            "INITIALIZATION_IN_PROGRESS",
            "initialization already in progress for this cliente_id",
        )
        .with("retry_after_seconds", json!(RETRY_AFTER_SECONDS))),
        InitOutcome::Failed(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INITIALIZATION_FAILED",
            format!("initialization failed: {e}"),
        )
        .with("retry", json!(true))),
        InitOutcome::BrowserNotFound => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BROWSER_NOT_FOUND",
            "no Chromium found: CHROMIUM_PATH is unset or not executable, and none of chromium, \
             chromium-browser, google-chrome is on PATH",
        )
        .with(
            "fix",
            json!("install it (`apt-get install -y chromium`) or set CHROMIUM_PATH to the browser binary"),
        )),
        InitOutcome::TooManySessions(max) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_SESSIONS",
            format!("MAX_SESSIONS={max} browsers are already running"),
        )),
        InitOutcome::ShuttingDown => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the service is shutting down",
        )),
    }
}

async fn status(
    AxState(s): AxState<Sessions>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    Ok(Json(json!(s.status(id).await)))
}

#[derive(Deserialize)]
struct SendBody {
    phone: String,
    message: String,
}

async fn send(
    AxState(s): AxState<Sessions>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    let invalid = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PAYLOAD", why);
    let b: SendBody = serde_json::from_slice(&body).map_err(|e| {
        invalid(format!(
            "body must be JSON {{\"phone\":\"...\",\"message\":\"...\"}}: {e}"
        ))
    })?;
    let phone = b.phone.trim().trim_start_matches('+').to_owned();
    if phone.is_empty() || !phone.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "phone must be digits (international format, optional leading +)".into(),
        ));
    }
    if b.message.is_empty() {
        return Err(invalid("message must not be empty".into()));
    }
    match s.send(id, phone.clone(), b.message).await {
        SendOutcome::Sent => Ok(Json(
            json!({ "success": true, "cliente_id": id, "phone": phone }),
        )),
        SendOutcome::NotReady(state) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SESSION_NOT_READY",
            "the session is not READY",
        )
        .with("state", json!(state))),
        SendOutcome::Failed(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "SEND_FAILED",
            format!("failed to send: {e}"),
        )),
    }
}

async fn logout(
    AxState(s): AxState<Sessions>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    s.logout(id).await;
    Ok(Json(
        json!({ "success": true, "cliente_id": id, "action": "LOGGED_OUT" }),
    ))
}

/// One log line per request: method, path, status, customer, duration.
async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let cliente = req
        .headers()
        .get("x-cliente-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .chars()
        .take(24)
        .collect::<String>();
    let resp = next.run(req).await;
    tracing::info!(
        target: "http",
        "{method} {path} {} cliente={cliente} {}ms",
        resp.status().as_u16(),
        start.elapsed().as_millis()
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cliente_ids() {
        let mut h = HeaderMap::new();
        assert!(cliente_id(&h).is_err());
        for bad in ["0", "-1", "abc", "1.5", "", " ", "99999999999999999999999"] {
            h.insert("x-cliente-id", bad.parse().unwrap());
            assert!(cliente_id(&h).is_err(), "{bad}");
        }
        h.insert("x-cliente-id", "42".parse().unwrap());
        assert_eq!(cliente_id(&h).ok(), Some(42));
    }
}
