//! Customer routes, proxied to session-manager for the token's own `cliente_id`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use crate::http::auth::CustomerClaims;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::session_manager::{UpstreamError, UpstreamResponse};

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        // The detail (address, errno) is for the operator's log, not the client.
        tracing::warn!("{e}");
        match e {
            UpstreamError::Unreachable(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "SESSION_MANAGER_UNREACHABLE",
                format!("{}; try again later", e.public()),
            ),
            UpstreamError::Timeout(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "SESSION_MANAGER_TIMEOUT",
                e.public(),
            ),
        }
    }
}

/// Fails with 403 `QR_NOT_AUTHORIZED` unless the customer may use its session now.
async fn authorize(st: &AppState, cliente_id: i64) -> Result<(), ApiError> {
    let auth = st.qr.check(cliente_id, Utc::now()).await?;
    if auth.is_authorized() {
        Ok(())
    } else {
        Err(ApiError::forbidden("QR_NOT_AUTHORIZED", auth.reason()))
    }
}

/// Relays session-manager's status, content type and body unchanged.
fn relay(up: UpstreamResponse) -> Response {
    let mut resp = (up.status, up.body).into_response();
    if let Some(ct) = up.content_type {
        resp.headers_mut().insert(CONTENT_TYPE, ct);
    }
    resp
}

pub async fn init(
    State(st): State<AppState>,
    customer: CustomerClaims,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&st, customer.cliente_id).await?;
    let ct = headers.get(CONTENT_TYPE).cloned();
    let up = st
        .session_manager
        .call(Method::POST, "/init", Some(customer.cliente_id), ct, body)
        .await?;
    Ok(relay(up))
}

/// The customer's session status from session-manager, once authorized.
async fn upstream_status(st: &AppState, cliente_id: i64) -> Result<UpstreamResponse, ApiError> {
    authorize(st, cliente_id).await?;
    Ok(st
        .session_manager
        .call(Method::GET, "/status", Some(cliente_id), None, Bytes::new())
        .await?)
}

pub async fn status(
    State(st): State<AppState>,
    customer: CustomerClaims,
) -> Result<Response, ApiError> {
    Ok(relay(upstream_status(&st, customer.cliente_id).await?))
}

/// session-manager has no `/qr`: the QR is the `qr_code_base64` field of its `/status`.
pub async fn qr(
    State(st): State<AppState>,
    customer: CustomerClaims,
) -> Result<Response, ApiError> {
    let up = upstream_status(&st, customer.cliente_id).await?;
    if !up.status.is_success() {
        return Ok(relay(up));
    }
    let status: Value = serde_json::from_slice(&up.body).map_err(|e| {
        tracing::warn!("session-manager /status did not return JSON: {e}");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "SESSION_MANAGER_BAD_RESPONSE",
            "session-manager answered /status with something other than JSON",
        )
    })?;
    let qr = status.get("qr_code_base64").cloned().unwrap_or(Value::Null);
    Ok(Json(json!({
        "cliente_id": customer.cliente_id,
        "state": status.get("state").cloned().unwrap_or(Value::Null),
        "needs_qr": status.get("needs_qr").cloned().unwrap_or(Value::Null),
        "qr_available": !qr.is_null(),
        "qr_code_base64": qr,
    }))
    .into_response())
}
