//! `GET /health` (liveness) and `GET /status` (dependencies, bounded).
//!
//! `/status` follows the seeds' proposal (PROPUESTA_ENDPOINT_STATUS): uptime, memory and
//! CPU of the process, the database and session-manager checks with their latency, each
//! bounded by [`CHECK_TIMEOUT`], and session-manager's session summary.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::http::state::AppState;

/// Each `/status` check gets at most this long (the seeds' proposal says 5 s), and they run
/// concurrently, so `/status` answers within about this bound even with both dependencies hung.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

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

struct Check<T> {
    /// What the check learned when it succeeded.
    value: Option<T>,
    latency_ms: u64,
    /// Our own words: `/status` needs no authentication, so no library or driver text.
    error: Option<String>,
}

impl<T> Check<T> {
    fn ok(&self) -> bool {
        self.value.is_some()
    }

    fn to_json(&self) -> Value {
        json!({
            "status": if self.ok() { "healthy" } else { "unhealthy" },
            "latency_ms": self.latency_ms,
            "timeout_ms": CHECK_TIMEOUT.as_millis() as u64,
            "error": self.error,
        })
    }
}

/// `fut` within CHECK_TIMEOUT. `what` names the dependency in the timeout message, which
/// must read the same whichever of two equal deadlines fires first (this one, or the
/// session-manager client's own).
async fn timed<T, F>(what: &str, fut: F) -> Check<T>
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let res = tokio::time::timeout(CHECK_TIMEOUT, fut).await;
    let latency_ms = start.elapsed().as_millis() as u64;
    match res {
        Ok(Ok(v)) => Check {
            value: Some(v),
            latency_ms,
            error: None,
        },
        Ok(Err(e)) => Check {
            value: None,
            latency_ms,
            error: Some(e),
        },
        Err(_) => Check {
            value: None,
            latency_ms,
            error: Some(format!(
                "{what} did not answer within {} ms",
                CHECK_TIMEOUT.as_millis()
            )),
        },
    }
}

/// What session-manager's `/health` says about its sessions. Today it reports a total
/// (`sessions`); a per-state count (`sessions_by_state`) and its `dry_run` are relayed
/// when it reports them, `null` otherwise.
fn session_summary(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    json!({
        "total": v.get("sessions").filter(|s| s.is_u64()).cloned(),
        "by_state": v.get("sessions_by_state").filter(|s| s.is_object()).cloned(),
        "dry_run": v.get("dry_run").filter(|s| s.is_boolean()).cloned(),
    })
}

pub async fn status(State(st): State<AppState>) -> Response {
    let db = timed("the database", async {
        st.db.ping().await.map_err(|e| {
            tracing::warn!("/status database check: {e}");
            "the database did not answer the check query".to_owned()
        })
    });
    let sm = timed("session-manager", async {
        let r = st
            .session_manager
            .health(CHECK_TIMEOUT)
            .await
            .map_err(|e| {
                tracing::warn!("/status session-manager check: {e}");
                e.public()
            })?;
        if r.status.is_success() {
            Ok(session_summary(&r.body))
        } else {
            Err(format!("GET /health answered {}", r.status.as_u16()))
        }
    });
    let (db, sm) = tokio::join!(db, sm);

    // DRY_RUN is meant to hold for the whole stack. The hub sends nothing itself, so the
    // dangerous case is a session-manager that says it sends for real while the hub's
    // operator believes DRY_RUN is on.
    let sm_dry_run = sm.value.as_ref().and_then(|s| s["dry_run"].as_bool());
    let mut warnings = Vec::new();
    if st.config.dry_run && sm_dry_run == Some(false) {
        warnings.push("DRY_RUN is true here but session-manager reports dry_run false: real messages would be sent; set DRY_RUN in session-manager's env".to_owned());
    }

    let (overall, code) = match (db.ok(), sm.ok() && warnings.is_empty()) {
        (false, _) => ("unhealthy", StatusCode::SERVICE_UNAVAILABLE),
        (true, false) => ("degraded", StatusCode::OK),
        (true, true) => ("healthy", StatusCode::OK),
    };
    let mut db_json = db.to_json();
    db_json["backend"] = json!(st.db.backend());
    let mut sm_json = sm.to_json();
    sm_json["url"] = json!(st.session_manager.base_url());
    sm_json["sessions"] = sm
        .value
        .as_ref()
        .map(|s| json!({ "total": s["total"], "by_state": s["by_state"] }))
        .unwrap_or(Value::Null);
    sm_json["dry_run"] = json!(sm_dry_run);

    let body = json!({
        "status": overall,
        "service": "central-hub",
        "timestamp": now_rfc3339(),
        "uptime_seconds": st.started.elapsed().as_secs(),
        "dry_run": st.config.dry_run,
        "memory": {
            "rss_bytes": crate::system::rss_bytes(),
            "rss_peak_bytes": crate::system::rss_peak_bytes(),
        },
        "cpu": st.cpu.sample(),
        "checks": { "database": db_json, "session_manager": sm_json },
        "warnings": warnings,
    });
    (code, Json(body)).into_response()
}
