//! Request bodies are read here, once, bounded in size and time, before any handler runs.
//!
//! Why a middleware: axum's own limit (2 MiB) answers in plain text, which breaks the one
//! error shape every client parses, and nothing bounded how long a body may trickle in.
//! The hub's bodies are a few hundred bytes (`{"expires_at": ...}`, session-manager's
//! `/init` payload), so the limit is small.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::state::AppState;

/// Largest request body accepted; more → 413 `PAYLOAD_TOO_LARGE`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Reads the body within `HTTP_BODY_TIMEOUT` (else 408 `REQUEST_TIMEOUT`): while a request
/// runs the idle timeout does not apply, so this is what bounds a trickled body.
pub async fn bounded_body(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let limit = st.config.http.body_timeout;
    // Refuse a declared oversize body before reading any of it.
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    // Chunked bodies have no declared length: count while reading.
    let read = tokio::time::timeout(limit, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                format!("request body not received within {} ms", limit.as_millis()),
            )
        })?;
    let bytes = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => {
            tracing::debug!("request body not read: {e}");
            return Err(ApiError::bad_request(
                "INVALID_BODY",
                "the request body could not be read",
            ));
        }
    };
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
}
