//! Input that the schema cannot hold is refused the same way on both backends (issue 17):
//! one table of `expires_at` values and `sub` lengths, run against a hub on SQLite and a
//! hub on a private MariaDB (started lax, `sql_mode=''`, like many hosted servers).

use axum::http::Method;
use central_hub::db::{Db, MYSQL_SQL_MODE};
use serde_json::{json, Value};

use crate::harness::{admin_token, dead_url, token_with, Hub, HubOpts, SECRET};
use crate::mariadb::MariaDb;

/// `expires_at` sent → what the hub must answer and keep. `None` as the stored value means
/// "rejected, nothing stored". Every row gets its own customer id.
fn expires_at_table() -> Vec<(Value, u16, Option<&'static str>)> {
    vec![
        (json!(null), 200, None),
        // Year zero: a lax MariaDB stored NULL or 0000-00-00 = never expires.
        (json!("0000-01-01T00:00:00Z"), 400, None),
        // A leap second: a zero date on MariaDB, unreadable on SQLite.
        (json!("2016-12-31T23:59:60Z"), 400, None),
        (json!("0999-12-31T23:59:59Z"), 400, None),
        // In range as written, 0999 in UTC.
        (json!("1000-01-01T00:00:00+00:30"), 400, None),
        (
            json!("1000-01-01T00:00:00Z"),
            200,
            Some("1000-01-01T00:00:00Z"),
        ),
        (
            json!("1970-01-01T00:00:00Z"),
            200,
            Some("1970-01-01T00:00:00Z"),
        ),
        // Past the 32-bit TIMESTAMP range.
        (
            json!("2038-01-19T03:14:08Z"),
            200,
            Some("2038-01-19T03:14:08Z"),
        ),
        (
            json!("2030-01-01T01:00:00+01:00"),
            200,
            Some("2030-01-01T00:00:00Z"),
        ),
        // Nanoseconds: truncated to the microsecond on both, never rounded up.
        (
            json!("2030-01-01T00:00:00.123456789Z"),
            200,
            Some("2030-01-01T00:00:00.123456Z"),
        ),
        (
            json!("9999-12-31T23:59:59.999999Z"),
            200,
            Some("9999-12-31T23:59:59.999999Z"),
        ),
        // In range as written, year 10000 in UTC.
        (json!("9999-12-31T23:59:59-00:01"), 400, None),
        (json!("10000-01-01T00:00:00Z"), 400, None),
        (json!("2030-02-30T00:00:00Z"), 400, None),
        (json!(""), 400, None),
        (json!(12), 400, None),
    ]
}

/// Runs the table on one hub; returns one line per row: status, error code, stored value.
async fn run_expires_at_table(hub: &Hub) -> Vec<String> {
    let admin = admin_token();
    let mut out = vec![];
    for (i, (input, _, _)) in expires_at_table().into_iter().enumerate() {
        let id = 1000 + i;
        let body = json!({ "expires_at": input }).to_string();
        let (s, b) = hub
            .call(
                Method::POST,
                &format!("/api/admin/whatsapp-qr/{id}/enable"),
                Some(&admin),
                Some(&body),
            )
            .await;
        let (g, stored) = hub
            .call(
                Method::GET,
                &format!("/api/admin/whatsapp-qr/{id}"),
                Some(&admin),
                None,
            )
            .await;
        let kept = if g == 404 {
            "absent".to_owned()
        } else {
            format!(
                "{} {}",
                stored["session"]["expires_at"], stored["authorization"]
            )
        };
        out.push(format!(
            "{input} -> {s} {} | {kept}",
            b["error"]["code"].as_str().unwrap_or("-")
        ));
    }
    out
}

fn expected_lines() -> Vec<String> {
    let now = chrono::Utc::now();
    expires_at_table()
        .into_iter()
        .map(|(input, status, stored)| {
            let code = if status == 200 {
                "-"
            } else if input.is_string() {
                "INVALID_EXPIRES_AT"
            } else {
                // Not a string at all: the body does not have the route's shape.
                "INVALID_JSON"
            };
            let kept = match (status, stored) {
                (200, None) => "null \"AUTHORIZED\"".to_owned(),
                (200, Some(t)) => {
                    let at = chrono::DateTime::parse_from_rfc3339(t).unwrap();
                    let auth = if at <= now { "EXPIRED" } else { "AUTHORIZED" };
                    format!("\"{t}\" \"{auth}\"")
                }
                _ => "absent".to_owned(),
            };
            format!("{input} -> {status} {code} | {kept}")
        })
        .collect()
}

/// A `sub` of `n` copies of `c` → the enable's status and error code.
async fn run_sub_lengths(hub: &Hub) -> Vec<String> {
    let mut out = vec![];
    for (i, (c, n)) in [('a', 255), ('a', 256), ('a', 300), ('ñ', 255), ('ñ', 256)]
        .into_iter()
        .enumerate()
    {
        let sub: String = std::iter::repeat_n(c, n).collect();
        let token = token_with(SECRET, json!({"sub": sub, "role": "admin"}));
        let id = 2000 + i;
        let (s, b) = hub
            .call(
                Method::POST,
                &format!("/api/admin/whatsapp-qr/{id}/enable"),
                Some(&token),
                None,
            )
            .await;
        let stored_ok = s != 200 || b["session"]["enabled_by"] == json!(sub);
        out.push(format!(
            "{c}x{n} -> {s} {} stored_intact={stored_ok}",
            b["error"]["code"].as_str().unwrap_or("-")
        ));
    }
    out
}

const SUB_EXPECTED: [&str; 5] = [
    "ax255 -> 200 - stored_intact=true",
    "ax256 -> 400 INVALID_SUB stored_intact=true",
    "ax300 -> 400 INVALID_SUB stored_intact=true",
    // 255 characters of two bytes each: the limit counts characters, as utf8mb4 does.
    "ñx255 -> 200 - stored_intact=true",
    "ñx256 -> 400 INVALID_SUB stored_intact=true",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_inputs_give_the_same_outcome_on_sqlite_and_mariadb() {
    let Some(maria) =
        MariaDb::start("the_same_inputs_give_the_same_outcome_on_sqlite_and_mariadb").await
    else {
        return;
    };
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = Hub::start(sqlite_dir.path(), &HubOpts::new(&dead_url())).await;
    let maria_dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&dead_url());
    opts.database_url = Some(maria.url());
    let mysql = Hub::start(maria_dir.path(), &opts).await;

    let want = expected_lines();
    let on_sqlite = run_expires_at_table(&sqlite).await;
    let on_mariadb = run_expires_at_table(&mysql).await;
    assert_eq!(on_sqlite, want, "sqlite differs from the table");
    assert_eq!(on_mariadb, want, "mariadb differs from the table");

    assert_eq!(run_sub_lengths(&sqlite).await, SUB_EXPECTED, "sqlite");
    assert_eq!(run_sub_lengths(&mysql).await, SUB_EXPECTED, "mariadb");
    assert!(
        !mysql.log().contains("DATABASE_UNAVAILABLE") && !mysql.log().contains("database error"),
        "a bad input reached the database as an error:\n{}",
        mysql.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sessions_run_in_strict_mode_on_a_lax_server() {
    let Some(maria) = MariaDb::start("mariadb_sessions_run_in_strict_mode_on_a_lax_server").await
    else {
        return;
    };
    let db = Db::connect(&maria.url()).await.unwrap();
    let Db::MySql(pool) = &db else {
        panic!("expected a MySQL pool")
    };
    let mode: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    for flag in MYSQL_SQL_MODE.split(',') {
        assert!(mode.split(',').any(|m| m == flag), "{flag} not in {mode}");
    }
    // Straight SQL, past the hub's own validation: the server itself must refuse.
    for (what, sql) in [
        (
            "a 300-character enabled_by",
            "INSERT INTO ll_whatsapp_qr_sessions (cliente_id, enabled, enabled_by, created_at, \
             updated_at) VALUES (1, 1, REPEAT('x', 300), NOW(), NOW())",
        ),
        (
            "an impossible date",
            "INSERT INTO ll_whatsapp_qr_sessions (cliente_id, enabled, expires_at, created_at, \
             updated_at) VALUES (2, 1, '2030-02-30 00:00:00', NOW(), NOW())",
        ),
        (
            "a zero date",
            "INSERT INTO ll_whatsapp_qr_sessions (cliente_id, enabled, expires_at, created_at, \
             updated_at) VALUES (3, 1, '0000-00-00 00:00:00', NOW(), NOW())",
        ),
    ] {
        let res = sqlx::query(sql).execute(pool).await;
        assert!(res.is_err(), "{what} was stored: {res:?}");
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ll_whatsapp_qr_sessions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
