//! The one error shape every route answers with:
//! `{"error": {"code": "SOME_CODE", "message": "…"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db::DbError;

/// An HTTP error with a stable machine-readable code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_data_exception() {
            tracing::warn!("database refused a value: {e}");
            return ApiError::bad_request(
                "INVALID_INPUT",
                "a value is out of the range the database can store",
            );
        }
        tracing::error!("database error: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            "the database is not answering; try again later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

/// Parses a path or claim value as a positive integer customer id.
pub fn parse_cliente_id(raw: &str) -> Result<i64, ApiError> {
    match raw.trim().parse::<i64>() {
        Ok(n) if n > 0 && raw.trim() == raw => Ok(n),
        _ => Err(ApiError::bad_request(
            "INVALID_CLIENTE_ID",
            format!("cliente_id must be a positive integer, got {raw:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cliente_ids() {
        assert_eq!(parse_cliente_id("42").unwrap(), 42);
        for bad in ["0", "-1", "abc", "1.5", "", " 3", "99999999999999999999"] {
            assert!(parse_cliente_id(bad).is_err(), "{bad}");
        }
    }
}
