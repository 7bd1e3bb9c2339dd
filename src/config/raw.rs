//! Serde mirror of `supervisor.toml`: unknown keys are errors, spans kept for messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub supervisor: RawSupervisor,
    #[serde(default)]
    pub logs: RawLogs,
    #[serde(default)]
    pub services: BTreeMap<Spanned<String>, Spanned<RawService>>,
    pub alerts: Option<super::alerts::RawAlerts>,
    #[serde(default)]
    pub metrics: super::alerts::RawMetrics,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSupervisor {
    pub state_dir: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub resource_interval: Option<Spanned<String>>,
    pub reap_orphans: Option<bool>,
    pub cgroups: Option<Spanned<String>>,
    /// Extra key patterns (besides SECRET, PASSWORD, TOKEN, KEY) masked by `lmctl env`.
    pub secret_keys: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    pub timestamp: Option<Spanned<String>>,
    pub max_size: Option<Spanned<String>>,
    pub keep: Option<u32>,
    pub max_line: Option<Spanned<String>>,
}

/// A scalar env value: TOML users write `PORT = 3001` as often as `PORT = "3001"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawScalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl RawScalar {
    pub fn into_string(self) -> String {
        match self {
            RawScalar::Str(s) => s,
            RawScalar::Int(i) => i.to_string(),
            RawScalar::Float(f) => f.to_string(),
            RawScalar::Bool(b) => b.to_string(),
        }
    }
}

/// `env_file = ".env"` or `env_file = [".env", "-optional.env"]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub command: Spanned<String>,
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    pub cwd: Option<Spanned<String>>,
    /// Spanned as a whole: serde's untagged enums cannot carry inner spans.
    pub env_file: Option<Spanned<OneOrMany>>,
    pub inherit_env: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<RawScalar>>,
    #[serde(default)]
    pub required_env: Vec<Spanned<String>>,
    pub autostart: Option<bool>,
    #[serde(default)]
    pub depends_on: BTreeMap<Spanned<String>, Spanned<String>>,
    pub ready: Option<Spanned<RawReady>>,
    pub health: Option<Spanned<RawHealth>>,
    pub watchdog: Option<Spanned<String>>,
    pub restart: Option<Spanned<String>>,
    pub stop_exit_codes: Option<Vec<i32>>,
    pub backoff: Option<RawBackoff>,
    pub min_uptime: Option<Spanned<String>>,
    pub start_grace: Option<Spanned<String>>,
    pub max_restarts: Option<u32>,
    pub max_memory: Option<Spanned<String>>,
    pub stop_signal: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReady {
    pub notify: Option<bool>,
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<u32>,
    pub start_period: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub initial: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
    pub factor: Option<Spanned<f64>>,
}
