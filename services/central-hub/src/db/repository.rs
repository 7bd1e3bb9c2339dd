//! `ll_whatsapp_qr_sessions` data access: SQL only, no business rules.
//!
//! Each operation has one statement per backend; they differ only where the
//! dialects do (the upsert). Time is passed in by the caller so tests and the
//! service decide what "now" is.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, DbError};

/// One row of `ll_whatsapp_qr_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QrSessionRecord {
    pub id: i64,
    pub cliente_id: i64,
    pub enabled: bool,
    pub enabled_by: Option<String>,
    pub revoked_by: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SELECT_BY_CLIENTE: &str = "SELECT id, cliente_id, enabled, enabled_by, revoked_by, \
     expires_at, revoked_at, created_at, updated_at \
     FROM ll_whatsapp_qr_sessions WHERE cliente_id = ?";

const UPSERT_SQLITE: &str = "INSERT INTO ll_whatsapp_qr_sessions \
     (cliente_id, enabled, enabled_by, revoked_by, expires_at, revoked_at, created_at, updated_at) \
     VALUES (?, 1, ?, NULL, ?, NULL, ?, ?) \
     ON CONFLICT(cliente_id) DO UPDATE SET enabled = 1, enabled_by = excluded.enabled_by, \
     revoked_by = NULL, expires_at = excluded.expires_at, revoked_at = NULL, updated_at = excluded.updated_at";

const UPSERT_MYSQL: &str = "INSERT INTO ll_whatsapp_qr_sessions \
     (cliente_id, enabled, enabled_by, revoked_by, expires_at, revoked_at, created_at, updated_at) \
     VALUES (?, 1, ?, NULL, ?, NULL, ?, ?) \
     ON DUPLICATE KEY UPDATE enabled = 1, enabled_by = VALUES(enabled_by), \
     revoked_by = NULL, expires_at = VALUES(expires_at), revoked_at = NULL, updated_at = VALUES(updated_at)";

const REVOKE: &str = "UPDATE ll_whatsapp_qr_sessions \
     SET enabled = 0, revoked_by = ?, revoked_at = ?, updated_at = ? WHERE cliente_id = ?";

/// Runs the same sqlx expression on whichever pool this is. The two pool types differ, so
/// one closure cannot take both; the expression is written once and compiled for each.
macro_rules! on_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::MySql($p) => $body,
        }
    };
}

/// Repository over the QR authorization table.
#[derive(Clone, Debug)]
pub struct QrSessionRepository {
    db: Db,
}

impl QrSessionRepository {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The row for `cliente_id`, if any.
    pub async fn find(&self, cliente_id: i64) -> Result<Option<QrSessionRecord>, DbError> {
        Ok(on_pool!(&self.db, p => {
            sqlx::query_as(SELECT_BY_CLIENTE).bind(cliente_id).fetch_optional(p).await?
        }))
    }

    /// Inserts an enabled row or updates the existing one, clearing any revoke.
    pub async fn upsert_enabled(
        &self,
        cliente_id: i64,
        admin: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<QrSessionRecord, DbError> {
        // The dialects differ only here.
        let sql = match &self.db {
            Db::Sqlite(_) => UPSERT_SQLITE,
            Db::MySql(_) => UPSERT_MYSQL,
        };
        on_pool!(&self.db, p => {
            sqlx::query(sql)
                .bind(cliente_id)
                .bind(admin)
                .bind(expires_at)
                .bind(now)
                .bind(now)
                .execute(p)
                .await?;
        });
        self.find(cliente_id)
            .await?
            .ok_or(DbError::Query(sqlx::Error::RowNotFound))
    }

    /// Marks the row revoked; `None` when there is no row for `cliente_id`.
    pub async fn revoke(
        &self,
        cliente_id: i64,
        admin: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<QrSessionRecord>, DbError> {
        if self.find(cliente_id).await?.is_none() {
            return Ok(None);
        }
        on_pool!(&self.db, p => {
            sqlx::query(REVOKE)
                .bind(admin)
                .bind(now)
                .bind(now)
                .bind(cliente_id)
                .execute(p)
                .await?;
        });
        self.find(cliente_id).await
    }
}
