//! Request and response types of the control socket: one JSON object per line.
//!
//! A connection carries one request line; the daemon answers with one response line, or for
//! `logs --follow` a stream of them until the client hangs up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Diagnostic, EnvSource};

/// Bumped on any incompatible change; the daemon refuses other versions with a clear error.
pub const PROTOCOL_VERSION: u32 = 1;
/// A request line longer than this is refused without being parsed.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Status,
    /// Empty `services`: every autostart service.
    Start {
        services: Vec<String>,
    },
    /// Empty `services`: all.
    Stop {
        services: Vec<String>,
    },
    Restart {
        services: Vec<String>,
    },
    Reload,
    /// `reveal`: send secret-looking values in clear; else they are masked before leaving the daemon.
    Env {
        service: String,
        reveal: bool,
    },
    Show {
        service: String,
    },
    Signal {
        service: String,
        signal: String,
    },
    Logs(LogsRequest),
    Shutdown,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StreamFilter {
    #[default]
    Both,
    Out,
    Err,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogsRequest {
    pub service: Option<String>,
    pub lines: usize,
    pub follow: bool,
    pub stream: StreamFilter,
    /// Only lines at most this old (by their timestamp).
    pub since_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Pong {
        pid: u32,
        instance: String,
        version: String,
        config: String,
        state_dir: String,
    },
    Status {
        services: Vec<ServiceStatus>,
    },
    /// A verb that changes things: one line per service it touched.
    Done {
        lines: Vec<String>,
    },
    Reload {
        diff: ReloadDiff,
    },
    Env {
        service: String,
        vars: Vec<EnvEntry>,
    },
    Show {
        service: Box<ServiceDetail>,
    },
    LogLine {
        line: String,
    },
    Error {
        code: String,
        message: String,
    },
    ConfigErrors {
        errors: Vec<Diagnostic>,
    },
}

impl Response {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Response::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => {
                let name = nix::sys::signal::Signal::try_from(s)
                    .map(|s| s.as_str())
                    .unwrap_or("?");
                write!(f, "signal {s} ({name})")
            }
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

/// One row of `lmctl status --json`: the fields DESIGN.md fixes, plus a few more.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    /// stopped, starting, running, ready, unhealthy, stopping, backoff, failed, exited
    pub state: String,
    pub pid: Option<i32>,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub processes: u32,
    /// unknown, healthy, unhealthy
    pub health: String,
    pub last_error: Option<String>,
    pub log_dropped: u64,
    /// Dependencies a starting service still waits for, with their condition.
    pub waiting_for: Vec<String>,
    /// The latest `STATUS=` a notify service sent.
    pub status_text: Option<String>,
    /// How the process tree is found: "cgroup" or "group+markers".
    pub tree: String,
    /// How `memory_bytes` was measured: "cgroup", "pss" or "rss".
    pub memory_source: String,
    /// Milliseconds until the next start attempt, in `backoff`.
    pub backoff_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReloadDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvEntry {
    pub key: String,
    pub value: String,
    pub source: EnvSource,
    pub masked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub command: String,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceDetail {
    pub status: ServiceStatus,
    /// The resolved config of the service (what the next spawn uses).
    pub config: serde_json::Value,
    pub tree: Vec<ProcInfo>,
    /// Memory of the tree measured each way, for comparison.
    pub memory: BTreeMap<String, u64>,
    pub exits: Vec<String>,
    pub probes: Vec<String>,
    pub events: Vec<String>,
}

/// Keys masked by `lmctl env` unless `--reveal`.
pub fn is_secret_key(key: &str, extra: &[String]) -> bool {
    crate::config::secrets::is_secret_name(key, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = Envelope {
            version: PROTOCOL_VERSION,
            request: Request::Start {
                services: vec!["a".into()],
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"request":{"verb":"start","services":["a"]}}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.request, req.request);
    }

    #[test]
    fn secrets() {
        assert!(is_secret_key("JWT_SECRET", &[]));
        assert!(is_secret_key("api_key", &[]));
        assert!(!is_secret_key("PORT", &[]));
        assert!(is_secret_key("DATABASE_URL", &["DATABASE_URL".into()]));
    }
}
