//! Serde mirror of `supervisor.toml`, spans kept for messages. Unknown keys are errors, but
//! found by `keys::unknown_keys` (every one of them) rather than by serde's
//! `deny_unknown_fields` (which stops at the first). Numbers are read as `i64` so a value out
//! of range gets the range of its key (`schema`) rather than serde's "expected u32".

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
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
pub struct RawLogs {
    pub timestamp: Option<Spanned<String>>,
    pub max_size: Option<Spanned<String>>,
    pub keep: Option<Spanned<i64>>,
    pub max_line: Option<Spanned<String>>,
}

/// A scalar env value: TOML users write `PORT = 3001` as often as `PORT = "3001"`.
/// Deserialized by hand: serde's untagged enums answer anything else with "data did not
/// match any variant of untagged enum RawScalar".
#[derive(Debug, Clone)]
pub enum RawScalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawScalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a number or a boolean (an environment variable's value)")
            }
            fn visit_str<E>(self, s: &str) -> Result<RawScalar, E> {
                Ok(RawScalar::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<RawScalar, E> {
                Ok(RawScalar::Str(s))
            }
            fn visit_i64<E>(self, i: i64) -> Result<RawScalar, E> {
                Ok(RawScalar::Int(i))
            }
            fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<RawScalar, E> {
                i64::try_from(u)
                    .map(RawScalar::Int)
                    .map_err(|_| E::custom("number too large; quote it as a string"))
            }
            fn visit_f64<E>(self, f: f64) -> Result<RawScalar, E> {
                Ok(RawScalar::Float(f))
            }
            fn visit_bool<E>(self, b: bool) -> Result<RawScalar, E> {
                Ok(RawScalar::Bool(b))
            }
        }
        d.deserialize_any(V)
    }
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
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file name or a list of file names")
            }
            fn visit_str<E>(self, s: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(OneOrMany::Many(v))
            }
        }
        d.deserialize_any(V)
    }
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
    pub stop_exit_codes: Option<Vec<Spanned<i64>>>,
    pub backoff: Option<RawBackoff>,
    pub min_uptime: Option<Spanned<String>>,
    pub start_grace: Option<Spanned<String>>,
    pub max_restarts: Option<Spanned<i64>>,
    pub max_memory: Option<Spanned<String>>,
    pub stop_signal: Option<Spanned<String>>,
    pub stop_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawReady {
    pub notify: Option<bool>,
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawHealth {
    pub http: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub start_period: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawBackoff {
    pub initial: Option<Spanned<String>>,
    pub max: Option<Spanned<String>>,
    pub factor: Option<Spanned<f64>>,
}
