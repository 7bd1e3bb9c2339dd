//! QR authorization rules on top of the repository.
//!
//! The one rule: a customer is authorized only when its row exists, is
//! enabled, is not revoked and has not expired (`expires_at` null = never).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::repository::{QrSessionRecord, QrSessionRepository};
use crate::db::DbError;

/// Why a customer is or is not authorized; the controller turns it into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Authorization {
    Authorized,
    NotFound,
    Disabled,
    Revoked,
    Expired,
}

impl Authorization {
    /// Applies the rule to one row at instant `now`.
    pub fn of(record: Option<&QrSessionRecord>, now: DateTime<Utc>) -> Authorization {
        let Some(r) = record else {
            return Authorization::NotFound;
        };
        if r.revoked_at.is_some() {
            Authorization::Revoked
        } else if !r.enabled {
            Authorization::Disabled
        } else if r.expires_at.is_some_and(|e| e <= now) {
            Authorization::Expired
        } else {
            Authorization::Authorized
        }
    }

    pub fn is_authorized(self) -> bool {
        self == Authorization::Authorized
    }

    /// A sentence for the 403 message.
    pub fn reason(self) -> &'static str {
        match self {
            Authorization::Authorized => "authorized",
            Authorization::NotFound => "QR access has not been enabled for this customer",
            Authorization::Disabled => "QR access is disabled for this customer",
            Authorization::Revoked => "QR access was revoked for this customer",
            Authorization::Expired => "QR access for this customer has expired",
        }
    }
}

/// Use cases of the QR authorization module.
#[derive(Clone, Debug)]
pub struct QrAuthorizationService {
    repo: QrSessionRepository,
}

impl QrAuthorizationService {
    pub fn new(repo: QrSessionRepository) -> Self {
        Self { repo }
    }

    /// Whether `cliente_id` may use its WhatsApp session now, and why not.
    pub async fn check(
        &self,
        cliente_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Authorization, DbError> {
        let rec = self.repo.find(cliente_id).await?;
        Ok(Authorization::of(rec.as_ref(), now))
    }

    /// Enables (or re-enables, clearing a revoke) the customer.
    pub async fn enable(
        &self,
        cliente_id: i64,
        admin: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<QrSessionRecord, DbError> {
        self.repo
            .upsert_enabled(cliente_id, admin, expires_at, now)
            .await
    }

    /// Revokes the customer; `None` when it was never enabled.
    pub async fn revoke(
        &self,
        cliente_id: i64,
        admin: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<QrSessionRecord>, DbError> {
        self.repo.revoke(cliente_id, admin, now).await
    }

    /// The stored row, if any.
    pub async fn get(&self, cliente_id: i64) -> Result<Option<QrSessionRecord>, DbError> {
        self.repo.find(cliente_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn rec(enabled: bool, expires_in: Option<i64>, revoked: bool) -> QrSessionRecord {
        let now = Utc::now();
        QrSessionRecord {
            id: 1,
            cliente_id: 7,
            enabled,
            enabled_by: Some("admin".into()),
            revoked_by: None,
            expires_at: expires_in.map(|s| now + Duration::seconds(s)),
            revoked_at: revoked.then_some(now),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn rule_table() {
        let now = Utc::now();
        let cases = [
            (None, Authorization::NotFound),
            (Some(rec(true, None, false)), Authorization::Authorized),
            (
                Some(rec(true, Some(3600), false)),
                Authorization::Authorized,
            ),
            (Some(rec(true, Some(-1), false)), Authorization::Expired),
            (Some(rec(false, None, false)), Authorization::Disabled),
            (Some(rec(true, None, true)), Authorization::Revoked),
            (Some(rec(false, Some(3600), true)), Authorization::Revoked),
        ];
        for (r, want) in cases {
            assert_eq!(Authorization::of(r.as_ref(), now), want, "{r:?}");
        }
    }
}
