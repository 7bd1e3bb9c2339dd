//! Bearer JWT (HS256) extractors for admin and customer routes.
//!
//! No or invalid token → 401; a valid token of the wrong kind → 403.
//!
//! Time claims: `exp` is required, `nbf` is honoured when present, and an `iat` in
//! the future is refused, all with a [`LEEWAY_SECONDS`] allowance for clock skew.
//! Rejections name what was wrong in our own words; the library's error text is
//! logged, never sent, so a client learns nothing about the verifier's internals.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::state::AppState;

/// Clock-skew allowance for `exp`, `nbf` and `iat`. The library's default is 60 s, which keeps
/// an expired (possibly leaked) token usable for a minute; the hub and its token issuer run on
/// NTP-synced hosts, so a few seconds suffice.
pub const LEEWAY_SECONDS: u64 = 5;

/// Longest `sub` an admin token may carry: it is stored in `enabled_by`/`revoked_by`.
/// Checked here so a long `sub` is a 400, not a database failure.
pub const MAX_SUB_CHARS: usize = crate::db::repository::MAX_ADMIN_CHARS;

/// The claims the hub reads; others are ignored. `exp` is required by the validator.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    cliente_id: Option<Value>,
    /// Seconds since the epoch; a float is accepted as some issuers write one.
    #[serde(default)]
    iat: Option<f64>,
}

/// A sentence for the 401 body: what was wrong, never how the library phrased it.
fn rejection_text(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token has expired",
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf is in the future)",
        ErrorKind::InvalidSignature => "token signature does not verify",
        ErrorKind::InvalidAlgorithm => "token must be signed with HS256",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (exp)",
        ErrorKind::InvalidAudience | ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => {
            "token is not meant for this service"
        }
        _ => "token is malformed",
    }
}

/// Verifies HS256 bearer tokens with the configured secret.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        // Off by default in jsonwebtoken: a token whose `nbf` is in the future would pass.
        validation.validate_nbf = true;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
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
        let claims = decode::<Claims>(token, &self.key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                tracing::info!("bearer token rejected: {e}");
                ApiError::unauthorized("INVALID_TOKEN", rejection_text(e.kind()))
            })?;
        // jsonwebtoken does not look at `iat`. A token "issued" in the future comes from a
        // broken or forged clock and would outlive its intended lifetime; refuse it.
        if let Some(iat) = claims.iat {
            let now = chrono::Utc::now().timestamp() as f64;
            if !iat.is_finite() || iat > now + LEEWAY_SECONDS as f64 {
                return Err(ApiError::unauthorized(
                    "INVALID_TOKEN",
                    "token iat (issued at) is in the future",
                ));
            }
        }
        Ok(claims)
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
        // The token is genuine, so this is a bad input rather than bad credentials: 400.
        let chars = admin.chars().count();
        if chars > MAX_SUB_CHARS {
            return Err(ApiError::bad_request(
                "INVALID_SUB",
                format!("token sub is {chars} characters; at most {MAX_SUB_CHARS} can be recorded"),
            ));
        }
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
