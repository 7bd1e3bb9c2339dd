//! Request and response types of the control socket: one JSON object per line.
//!
//! A connection carries one request line; the daemon answers with one response line, or for
//! `logs --follow` a stream of them until the client hangs up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Diagnostic, EnvSource};

/// Bumped on any incompatible change; the daemon refuses other versions with a clear error.
pub const PROTOCOL_VERSION: u32 = 2;
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
    /// `lmctl alerts`: every rule with its state.
    Alerts,
    /// `lmctl alerts test RULE`: send a test message to the rule's destinations.
    AlertTest {
        rule: String,
    },
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
    /// A verb that changes things: one outcome per service it touched, plus warnings.
    Outcomes {
        outcomes: Vec<Outcome>,
        warnings: Vec<String>,
    },
    /// Every service stopped and the daemon exited (the answer to `shutdown`).
    ShutDown,
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
        code: ErrorCode,
        message: String,
    },
    ConfigErrors {
        errors: Vec<Diagnostic>,
    },
    Alerts {
        rules: Vec<AlertRuleState>,
    },
    /// One line per destination: delivered, or why not.
    AlertTest {
        rule: String,
        results: Vec<AlertDelivery>,
    },
}

/// A rule of `[alerts]` and where it stands, for `lmctl alerts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertRuleState {
    pub name: String,
    pub severity: String,
    /// The condition, as a short text ("restarts > 3 within 1h").
    pub condition: String,
    pub to: Vec<String>,
    /// Services (or "daemon") for which the rule fires now, with since when (RFC 3339).
    pub firing: Vec<AlertFiring>,
    pub last_sent: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertFiring {
    pub service: Option<String>,
    pub since: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlertDelivery {
    pub destination: String,
    pub ok: bool,
    pub detail: String,
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
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
    pub state: StateName,
    pub pid: Option<i32>,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub processes: u32,
    pub health: Health,
    pub last_error: Option<String>,
    pub log_dropped: u64,
    /// Dependencies a starting service still waits for, with their condition.
    pub waiting_for: Vec<String>,
    /// The latest `STATUS=` a notify service sent.
    pub status_text: Option<String>,
    /// How the process tree is found.
    pub tree: TreeKind,
    /// How `memory_bytes` was measured.
    pub memory_source: MemorySource,
    /// Milliseconds until the next start attempt, in `backoff`.
    pub backoff_ms: Option<u64>,
    /// Why the latest automatic restart happened.
    #[serde(default)]
    pub last_restart_reason: Option<RestartReason>,
    /// How the latest stop went: how long it took and whether SIGKILL was needed.
    #[serde(default)]
    pub last_stop: Option<StopReport>,
    /// Whether the service has a health probe (`health` is meaningless without one).
    #[serde(default)]
    pub has_health: bool,
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

/// The states of `status --json`, as DESIGN.md names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Stopped,
    Starting,
    Running,
    Ready,
    Unhealthy,
    Stopping,
    Backoff,
    Failed,
    Exited,
}

impl StateName {
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Stopped => "stopped",
            StateName::Starting => "starting",
            StateName::Running => "running",
            StateName::Ready => "ready",
            StateName::Unhealthy => "unhealthy",
            StateName::Stopping => "stopping",
            StateName::Backoff => "backoff",
            StateName::Failed => "failed",
            StateName::Exited => "exited",
        }
    }

    /// Not running and nothing will start it by itself.
    pub fn is_down(self) -> bool {
        matches!(
            self,
            StateName::Stopped | StateName::Failed | StateName::Exited
        )
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum TreeKind {
    #[serde(rename = "cgroup")]
    Cgroup,
    #[serde(rename = "group+markers")]
    GroupMarkers,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    Cgroup,
    #[default]
    Pss,
    Rss,
}

impl MemorySource {
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Cgroup => "cgroup",
            MemorySource::Pss => "pss",
            MemorySource::Rss => "rss",
        }
    }
}

impl std::fmt::Display for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why an automatic restart happened (the `reason` label of the restart metrics).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// The process exited (or could not be spawned, or was not ready in time).
    Crash,
    Memory,
    Health,
    Watchdog,
    User,
}

impl RestartReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Memory => "memory",
            RestartReason::Health => "health",
            RestartReason::Watchdog => "watchdog",
            RestartReason::User => "user",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopReport {
    pub took_ms: u64,
    pub sigkill: bool,
}

/// Error codes of `Response::Error`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    UnknownService,
    ShuttingDown,
    BadSignal,
    NotRunning,
    SignalFailed,
    BadRequest,
    Timeout,
    RequestTooLarge,
    VersionMismatch,
    PermissionDenied,
    Busy,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl std::fmt::Display for TreeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            TreeKind::Cgroup => "cgroup",
            TreeKind::GroupMarkers => "group+markers",
        })
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a verb did to one service.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Start asked for: it is starting (the client then waits for ready).
    Starting,
    /// It was already up or on its way: nothing changed.
    AlreadyUp,
    Restarting,
    /// Stop signal sent (the client then waits until the tree is gone).
    Stopping,
    /// It was not running: now stopped.
    Stopped,
    AlreadyStopped,
    /// A signal was delivered to its main process.
    Signalled,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub service: String,
    pub outcome: OutcomeKind,
    /// The state the service was in when the verb found it.
    pub was: StateName,
    pub detail: Option<String>,
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
            format!(
                r#"{{"version":{PROTOCOL_VERSION},"request":{{"verb":"start","services":["a"]}}}}"#
            )
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
