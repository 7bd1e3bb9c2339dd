//! `ll_whatsapp_qr_sessions` data access: SQL only, no business rules.
//!
//! Each operation has one statement per backend; they differ only where the
//! dialects do (the upsert). Time is passed in by the caller so tests and the
//! service decide what "now" is.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::{Db, DbError};

/// Longest text `enabled_by`/`revoked_by` hold: `VARCHAR(255)`, counted in characters.
pub const MAX_ADMIN_CHARS: usize = 255;

/// Why an instant cannot be stored so that both backends give it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unstorable {
    #[error("leap seconds (second 60) cannot be stored")]
    LeapSecond,
    #[error("the year must be between 1000 and 9999 (UTC)")]
    OutOfRange,
}

/// Checks that `t` survives a round trip through either backend and truncates it to the
/// microsecond, the finest unit MariaDB's `DATETIME(6)` keeps.
///
/// Why: outside `DATETIME`'s range (years 1000–9999) a lax MariaDB stores a zero date or
/// NULL, and NULL means "never expires", while SQLite keeps the text as given; a leap second
/// is a zero date on one and an unreadable row on the other. Truncating (rather than letting
/// MariaDB round) makes both keep the same instant, and an expiry never moves later.
pub fn storable(t: DateTime<Utc>) -> Result<DateTime<Utc>, Unstorable> {
    // chrono represents 23:59:60 as second 59 with nanoseconds >= 1e9.
    if t.nanosecond() >= 1_000_000_000 {
        return Err(Unstorable::LeapSecond);
    }
    if !(1000..=9999).contains(&t.year()) {
        return Err(Unstorable::OutOfRange);
    }
    // Not `DurationRound`: it works through i64 nanoseconds, which end in 1677 and 2262.
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
        .ok_or(Unstorable::OutOfRange)
}

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
///
/// The second form also names `$at`, which turns an instant into the value to bind for
/// that backend. Why: sqlx binds `DateTime<Utc>` to MySQL as a `TIMESTAMP`, whose range is
/// 1970–2038, and MariaDB stores an out-of-range `TIMESTAMP` parameter as NULL even in
/// strict mode (NULL `expires_at` = never expires; after 2038 every `revoked_at` would be
/// NULL = not revoked). A naive UTC value binds as `DATETIME`, the column's own type.
macro_rules! on_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Sqlite($p) => $body,
            Db::MySql($p) => $body,
        }
    };
    ($db:expr, $p:ident, $at:ident => $body:expr) => {
        match $db {
            Db::Sqlite($p) => {
                let $at = |t: DateTime<Utc>| t;
                $body
            }
            Db::MySql($p) => {
                let $at = |t: DateTime<Utc>| t.naive_utc();
                $body
            }
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
        debug_assert!(admin.chars().count() <= MAX_ADMIN_CHARS);
        debug_assert!(expires_at.is_none_or(|t| storable(t) == Ok(t)));
        // The dialects differ only here.
        let sql = match &self.db {
            Db::Sqlite(_) => UPSERT_SQLITE,
            Db::MySql(_) => UPSERT_MYSQL,
        };
        on_pool!(&self.db, p, at => {
            sqlx::query(sql)
                .bind(cliente_id)
                .bind(admin)
                .bind(expires_at.map(at))
                .bind(at(now))
                .bind(at(now))
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
        on_pool!(&self.db, p, at => {
            sqlx::query(REVOKE)
                .bind(admin)
                .bind(at(now))
                .bind(at(now))
                .bind(cliente_id)
                .execute(p)
                .await?;
        });
        self.find(cliente_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn storable_instants() {
        assert_eq!(
            storable(t("0000-01-01T00:00:00Z")),
            Err(Unstorable::OutOfRange)
        );
        assert_eq!(
            storable(t("0999-12-31T23:59:59.999999Z")),
            Err(Unstorable::OutOfRange)
        );
        assert_eq!(
            storable(t("2016-12-31T23:59:60Z")),
            Err(Unstorable::LeapSecond)
        );
        assert_eq!(
            storable(t("1000-01-01T00:00:00Z")),
            Ok(t("1000-01-01T00:00:00Z"))
        );
        assert_eq!(
            storable(t("9999-12-31T23:59:59.999999999Z")),
            Ok(t("9999-12-31T23:59:59.999999Z"))
        );
    }
}
