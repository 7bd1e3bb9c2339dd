//! Admin routes: enable, revoke and read a customer's QR authorization.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::repository::QrSessionRecord;
use crate::http::auth::AdminClaims;
use crate::http::error::{parse_cliente_id, ApiError};
use crate::http::state::AppState;
use crate::service::Authorization;

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
            ApiError::bad_request(
                "INVALID_JSON",
                format!("body is not valid JSON for this route: {e}"),
            )
        })?
    };
    match parsed.expires_at {
        None => Ok(None),
        Some(raw) => DateTime::parse_from_rfc3339(&raw)
            .map(|d| Some(d.with_timezone(&Utc)))
            .map_err(|_| {
                ApiError::bad_request(
                    "INVALID_EXPIRES_AT",
                    format!("expires_at must be an RFC 3339 date such as 2030-01-31T23:59:59Z or null, got {raw:?}"),
                )
            }),
    }
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
    Ok(Json(view(&record)))
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
