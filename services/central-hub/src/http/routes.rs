//! The route table; no logic here.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use super::body::bounded_body;
use super::error::ApiError;
use super::logging::log_request;
use super::state::AppState;
use crate::controllers::{admin, health, whatsapp};

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/{cliente_id}/enable", post(admin::enable))
        .route("/{cliente_id}/revoke", post(admin::revoke))
        .route("/{cliente_id}", get(admin::get));
    let whatsapp = Router::new()
        .route("/init", post(whatsapp::init))
        .route("/status", get(whatsapp::status))
        .route("/qr", get(whatsapp::qr));

    Router::new()
        .route("/health", get(health::health))
        .route("/status", get(health::status))
        .nest("/api/admin/whatsapp-qr", admin)
        .nest("/api/whatsapp", whatsapp)
        .fallback(|| async { ApiError::not_found("NOT_FOUND", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "method not allowed on this route",
            )
        })
        // Inner layer first: bodies are bounded before any handler, and the 413/408 answers
        // still get their log line from the outer layer.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            bounded_body,
        ))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}
