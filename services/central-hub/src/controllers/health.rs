//! `GET /health` (liveness) and `GET /status` (dependencies, bounded).

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::http::state::AppState;

/// Each `/status` check gets at most this long, and they run concurrently,
/// so `/status` answers within about this bound even with both dependencies hung.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn health() -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "service": "central-hub",
        "timestamp": now_rfc3339(),
    }))
}

struct Check {
    ok: bool,
    latency_ms: u64,
    error: Option<String>,
}

impl Check {
    fn to_json(&self) -> Value {
        json!({
            "status": if self.ok { "healthy" } else { "unhealthy" },
            "latency_ms": self.latency_ms,
            "timeout_ms": CHECK_TIMEOUT.as_millis() as u64,
            "error": self.error,
        })
    }
}

async fn timed<F, E>(fut: F) -> Check
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let res = tokio::time::timeout(CHECK_TIMEOUT, fut).await;
    let latency_ms = start.elapsed().as_millis() as u64;
    match res {
        Ok(Ok(())) => Check {
            ok: true,
            latency_ms,
            error: None,
        },
        Ok(Err(e)) => Check {
            ok: false,
            latency_ms,
            error: Some(e.to_string()),
        },
        Err(_) => Check {
            ok: false,
            latency_ms,
            error: Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        },
    }
}

pub async fn status(State(st): State<AppState>) -> Response {
    let db = timed(st.db.ping());
    let sm = timed(async {
        let r = st
            .session_manager
            .health(CHECK_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(format!("GET /health answered {}", r.status))
        }
    });
    let (db, sm) = tokio::join!(db, sm);

    let (overall, code) = match (db.ok, sm.ok) {
        (false, _) => ("unhealthy", StatusCode::SERVICE_UNAVAILABLE),
        (true, false) => ("degraded", StatusCode::OK),
        (true, true) => ("healthy", StatusCode::OK),
    };
    let mut db_json = db.to_json();
    db_json["backend"] = json!(st.db.backend());
    let mut sm_json = sm.to_json();
    sm_json["url"] = json!(st.session_manager.base_url());

    let body = json!({
        "status": overall,
        "service": "central-hub",
        "timestamp": now_rfc3339(),
        "uptime_seconds": st.started.elapsed().as_secs(),
        "dry_run": st.config.dry_run,
        "memory": { "rss_bytes": crate::system::rss_bytes() },
        "checks": { "database": db_json, "session_manager": sm_json },
    });
    (code, Json(body)).into_response()
}
