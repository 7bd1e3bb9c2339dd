//! HTTP routes. Handlers only parse, ask the session actor, and render.
//!
//! Every error body has one shape: `{"error": "<human text>", "code": "<CODE>", ...}`
//! with optional extra fields (`retry`, `retry_after_seconds`, `fix`, `state`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::session::{InitOutcome, SendOutcome, Sessions, RETRY_AFTER_SECONDS};

/// How long a client may take to upload a `/send` body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler gets.
#[derive(Clone)]
pub struct App {
    pub sessions: Sessions,
    pub cfg: Arc<Config>,
}

/// The router with every route and the one-line-per-request log.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/init", post(init))
        .route("/status", get(status))
        .route("/send", post(send))
        .route("/logout", post(logout))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn(log_request))
        .with_state(app)
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

/// `sessions`: live browsers; `records`: customers held in memory (bounded:
/// refused requests add none, terminal ones are dropped after their grace).
async fn health(AxState(app): AxState<App>) -> Json<Value> {
    let c = app.sessions.counts().await;
    Json(json!({
        "status": "ok",
        "service": "session-manager",
        "sessions": c.sessions,
        "records": c.records,
        "sessions_by_state": c.by_state,
        "dry_run": app.cfg.dry_run,
    }))
}

async fn init(AxState(app): AxState<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    match app.sessions.init(id).await {
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

async fn status(AxState(app): AxState<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    Ok(Json(json!(app.sessions.status(id).await)))
}

#[derive(Deserialize)]
struct SendBody {
    phone: String,
    message: String,
}

/// Reads a body of at most `limit` bytes, answering 413 in the service's
/// error shape as soon as the declared or received size passes it.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the body is larger than MAX_BODY_BYTES={limit} bytes"),
        )
        .with("max_bytes", json!(limit))
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut buf = Vec::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_PAYLOAD",
                    "the request body could not be read",
                )
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "BODY_TIMEOUT",
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            ))
        })
}

async fn send(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    let body = read_body(&headers, body, app.cfg.max_body_bytes).await?;
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
    // If the client goes away, hyper drops this future, which drops the
    // reply channel; the worker sees that and skips or aborts the send.
    match app.sessions.send(id, phone.clone(), b.message).await {
        SendOutcome::Sent { dry_run } => Ok(Json(json!({
            "success": true,
            "cliente_id": id,
            "phone": phone,
            "dry_run": dry_run,
        }))),
        SendOutcome::NotReady(state) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SESSION_NOT_READY",
            "the session is not READY",
        )
        .with("state", json!(state))),
        SendOutcome::QueueFull(n) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "SEND_QUEUE_FULL",
            format!("{n} sends are already waiting for this session (SEND_QUEUE)"),
        )
        .with("retry_after_seconds", json!(RETRY_AFTER_SECONDS))),
        SendOutcome::Cancelled(why) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SEND_CANCELLED",
            why,
        )),
        SendOutcome::Failed(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "SEND_FAILED",
            format!("failed to send: {e}"),
        )),
    }
}

/// Destroys the customer's browser and deletes its profile. An id with no
/// session and no profile gets `NO_SESSION` and leaves no trace.
async fn logout(AxState(app): AxState<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let id = cliente_id(&headers)?;
    let action = if app.sessions.logout(id).await {
        "LOGGED_OUT"
    } else {
        "NO_SESSION"
    };
    Ok(Json(
        json!({ "success": true, "cliente_id": id, "action": action }),
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

    #[tokio::test]
    async fn streamed_body_over_the_limit_is_413_json() {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..10).map(|_| Ok(vec![b'x'; 10_000])).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let e = read_body(&HeaderMap::new(), body, 64_000)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.body["code"], "PAYLOAD_TOO_LARGE");
        assert!(e.body["error"].as_str().unwrap().contains("64000"));
        let ok = read_body(&HeaderMap::new(), Body::from("abc"), 3)
            .await
            .ok()
            .unwrap();
        assert_eq!(ok, b"abc");
    }

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
