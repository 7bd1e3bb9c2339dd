//! Database connection: embedded SQLite by default, MySQL/MariaDB on request.
//!
//! Why an enum over two typed pools instead of `sqlx::AnyPool`: the `Any`
//! driver in sqlx 0.8 cannot encode or decode `chrono` timestamps, and the
//! upsert syntax differs anyway (`ON CONFLICT` vs `ON DUPLICATE KEY`). Typed
//! pools keep real column types, driver options (SQLite `create_if_missing`,
//! WAL) and per-driver migrations, at the cost of two short query blocks in
//! [`repository`].

pub mod repository;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{MySqlPool, SqlitePool};

/// How long a request may wait for a pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Session SQL mode for every MySQL/MariaDB connection, whatever the server's default.
///
/// Why: a lax server (`sql_mode=''`, common on hosted MySQL) silently turns an out-of-range
/// date into `0000-00-00` or NULL (NULL `expires_at` = never expires) and truncates long
/// strings. Strict mode turns both into errors. `PIPES_AS_CONCAT` and
/// `NO_ENGINE_SUBSTITUTION` are what sqlx itself sets on connect; this statement replaces
/// that one, so they are kept.
pub const MYSQL_SQL_MODE: &str = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,PIPES_AS_CONCAT";

/// Failure to open, migrate or query the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("failed to create database directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid DATABASE_URL: {0}")]
    Url(sqlx::Error),
    #[error("failed to connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("failed to run migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
}

impl DbError {
    /// True when the database refused a value (SQLSTATE class 22, "data exception": too long,
    /// out of range, bad date) rather than being unavailable. Input validation should catch
    /// these first; this keeps a miss from looking like an outage.
    pub fn is_data_exception(&self) -> bool {
        match self {
            DbError::Query(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|c| c.starts_with("22"))
            }
            _ => false,
        }
    }
}

/// A pool for whichever backend `DATABASE_URL` names.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
}

impl Db {
    /// Connects and applies the embedded migrations for the backend.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(DbError::Url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            if let Some(parent) = opts.get_filename().parent() {
                create_dir(parent)?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(DbError::Connect)?;
            Db::Sqlite(pool)
        } else {
            // sqlx only knows the mysql:// scheme; MariaDB speaks the same protocol.
            let url = url.replacen("mariadb://", "mysql://", 1);
            let opts = MySqlConnectOptions::from_str(&url).map_err(DbError::Url)?;
            let pool = MySqlPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // Runs on every new pooled connection (reconnects included), before any query.
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        sqlx::query(&format!("SET SESSION sql_mode = '{MYSQL_SQL_MODE}'"))
                            .execute(&mut *conn)
                            .await
                            .map(|_| ())
                    })
                })
                .connect_with(opts)
                .await
                .map_err(DbError::Connect)?;
            Db::MySql(pool)
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(p).await?,
            Db::MySql(p) => sqlx::migrate!("./migrations/mysql").run(p).await?,
        }
        Ok(())
    }

    /// A cheap round trip that touches the table, used by `/status`.
    pub async fn ping(&self) -> Result<(), DbError> {
        const Q: &str = "SELECT COUNT(*) FROM ll_whatsapp_qr_sessions WHERE cliente_id = 0";
        match self {
            Db::Sqlite(p) => sqlx::query(Q).execute(p).await.map(|_| ())?,
            Db::MySql(p) => sqlx::query(Q).execute(p).await.map(|_| ())?,
        }
        Ok(())
    }

    /// `"sqlite"` or `"mysql"`, for `/status`.
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::MySql(_) => "mysql",
        }
    }

    /// Closes every pooled connection (graceful shutdown).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::MySql(p) => p.close().await,
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), DbError> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
        path: dir.display().to_string(),
        source,
    })
}
