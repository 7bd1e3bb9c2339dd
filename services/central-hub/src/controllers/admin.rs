//! Admin routes: enable, revoke and read a customer's QR authorization.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::repository::{storable, QrSessionRecord};
use crate::http::auth::AdminClaims;
use crate::http::error::{parse_cliente_id, ApiError};
use crate::http::state::AppState;
use crate::service::Authorization;

/// Upper bound on the `/logout` call made while revoking; the admin is kept waiting at most
/// this long (less when `SESSION_MANAGER_TIMEOUT` is shorter).
pub const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableBody {
    #[serde(default)]
    expires_at: Option<String>,
}

fn view(record: &QrSessionRecord) -> Value {
    let auth = Authorization::of(Some(record), Utc::now());
    json!({
        "cliente_id": record.cliente_id,
        "authorized": auth.is_authorized(),
        "authorization": auth,
        "session": record,
    })
}

/// Parses the optional JSON body; an empty body means `{"expires_at": null}`.
fn parse_enable_body(body: &Bytes) -> Result<Option<DateTime<Utc>>, ApiError> {
    let parsed: EnableBody = if body.iter().all(u8::is_ascii_whitespace) {
        EnableBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            // serde's wording stays in the log; the client gets the expected shape.
            tracing::info!("enable body rejected: {e}");
            ApiError::bad_request(
                "INVALID_JSON",
                r#"body must be empty or JSON {"expires_at": "<RFC 3339 date>" or null}"#,
            )
        })?
    };
    let Some(raw) = parsed.expires_at else {
        return Ok(None);
    };
    let invalid = |why: &str| {
        // `raw` is echoed back only in a bounded, escaped form (it is the caller's own input).
        let shown: String = raw.chars().take(64).collect();
        ApiError::bad_request(
            "INVALID_EXPIRES_AT",
            format!("expires_at {shown:?} {why}; send an RFC 3339 date such as 2030-01-31T23:59:59Z, or null for no expiry"),
        )
    };
    let parsed = DateTime::parse_from_rfc3339(&raw)
        .map_err(|_| invalid("is not an RFC 3339 date"))?
        .with_timezone(&Utc);
    // Validated before storing: an instant MariaDB cannot hold would come back as
    // "never expires" there and as something else on SQLite.
    storable(parsed)
        .map(Some)
        .map_err(|e| invalid(&format!("cannot be stored: {e}")))
}

pub async fn enable(
    State(st): State<AppState>,
    admin: AdminClaims,
    Path(raw_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let cliente_id = parse_cliente_id(&raw_id)?;
    let expires_at = parse_enable_body(&body)?;
    let record = st
        .qr
        .enable(cliente_id, &admin.admin, expires_at, Utc::now())
        .await?;
    tracing::info!(cliente_id, admin = %admin.admin, "qr access enabled");
    Ok(Json(view(&record)))
}

pub async fn revoke(
    State(st): State<AppState>,
    admin: AdminClaims,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cliente_id = parse_cliente_id(&raw_id)?;
    let record = st
        .qr
        .revoke(cliente_id, &admin.admin, Utc::now())
        .await?
        .ok_or_else(|| not_found(cliente_id))?;
    tracing::info!(cliente_id, admin = %admin.admin, "qr access revoked");
    // After the revoke is stored, so the customer cannot start a new session in between.
    let logout = close_browser_session(&st, cliente_id).await;
    let mut body = view(&record);
    body["session_logout"] = logout;
    Ok(Json(body))
}

/// Asks session-manager to close the customer's browser, so a revoked customer keeps
/// nothing running. Best effort: the revoke already holds (every proxied route checks it),
/// so a session-manager that is down or slow is reported, not fatal.
async fn close_browser_session(st: &AppState, cliente_id: i64) -> Value {
    let timeout = st.session_manager.timeout().min(LOGOUT_TIMEOUT);
    match st.session_manager.logout(cliente_id, timeout).await {
        Ok(up) if up.status.is_success() => {
            tracing::info!(cliente_id, "session-manager closed the browser session");
            json!({ "ok": true, "status": up.status.as_u16() })
        }
        Ok(up) => {
            tracing::warn!(
                cliente_id,
                status = up.status.as_u16(),
                "session-manager refused /logout"
            );
            json!({
                "ok": false,
                "status": up.status.as_u16(),
                "error": format!("session-manager answered /logout with {}", up.status.as_u16()),
            })
        }
        Err(e) => {
            tracing::warn!(cliente_id, "browser session not closed: {e}");
            json!({ "ok": false, "status": null, "error": e.public() })
        }
    }
}

pub async fn get(
    State(st): State<AppState>,
    _admin: AdminClaims,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cliente_id = parse_cliente_id(&raw_id)?;
    let record = st
        .qr
        .get(cliente_id)
        .await?
        .ok_or_else(|| not_found(cliente_id))?;
    Ok(Json(view(&record)))
}

fn not_found(cliente_id: i64) -> ApiError {
    ApiError::not_found(
        "QR_SESSION_NOT_FOUND",
        format!("no QR authorization exists for cliente_id {cliente_id}"),
    )
}
