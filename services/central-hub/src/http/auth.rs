//! Bearer JWT (HS256) extractors for admin and customer routes.
//!
//! No or invalid token → 401; a valid token of the wrong kind → 403.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::state::AppState;

/// The claims the hub reads; others are ignored. `exp` is required by the validator.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    cliente_id: Option<Value>,
}

/// Verifies HS256 bearer tokens with the configured secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &str) -> Self {
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation: Validation::new(Algorithm::HS256),
        }
    }

    fn verify(&self, parts: &Parts) -> Result<Claims, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("MISSING_TOKEN", "send Authorization: Bearer <JWT>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("INVALID_TOKEN", "Authorization header must be Bearer <JWT>")
            })?;
        decode::<Claims>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| ApiError::unauthorized("INVALID_TOKEN", format!("token rejected: {e}")))
    }
}

/// An authenticated admin; `admin` is the token's `sub`.
pub struct AdminClaims {
    pub admin: String,
}

impl FromRequestParts<AppState> for AdminClaims {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.tokens.verify(parts)?;
        if claims.role.as_deref() != Some("admin") {
            return Err(ApiError::forbidden(
                "FORBIDDEN",
                "this route needs a token with role \"admin\"",
            ));
        }
        let admin = match claims.sub {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(ApiError::unauthorized(
                    "INVALID_TOKEN",
                    "admin token has no sub claim",
                ))
            }
        };
        Ok(AdminClaims { admin })
    }
}

/// An authenticated customer; `cliente_id` comes from the token, never from the request.
pub struct CustomerClaims {
    pub cliente_id: i64,
}

impl FromRequestParts<AppState> for CustomerClaims {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.tokens.verify(parts)?;
        let id = match claims.cliente_id {
            Some(Value::Number(n)) => n.as_i64().filter(|n| *n > 0),
            Some(Value::String(s)) => s.parse::<i64>().ok().filter(|n| *n > 0),
            _ => None,
        };
        match id {
            Some(cliente_id) => Ok(CustomerClaims { cliente_id }),
            None => Err(ApiError::forbidden(
                "NO_CLIENTE_ID",
                "this route needs a token carrying a positive integer cliente_id claim",
            )),
        }
    }
}
