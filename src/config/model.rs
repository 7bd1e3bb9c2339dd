//! The validated ecosystem: what the rest of the supervisor works from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Diagnostic;

/// A whole validated `supervisor.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub supervisor: SupervisorSettings,
    pub logs: LogSettings,
    pub services: BTreeMap<String, ServiceSpec>,
    /// Service names in dependency order: every service after everything it depends on.
    pub start_order: Vec<String>,
    /// Problems `lmctl check` reports that do not stop the daemon: a `command` that cannot be
    /// executed (the service fails at spawn, the others run).
    pub warnings: Vec<Diagnostic>,
    /// `[alerts]`, when present.
    pub alerts: Option<super::alerts::AlertsConfig>,
    pub metrics: super::alerts::MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisorSettings {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    #[serde(with = "dur")]
    pub resource_interval: Duration,
    pub reap_orphans: bool,
    pub cgroups: CgroupMode,
    pub secret_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    Auto,
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogSettings {
    pub timestamp: String,
    pub max_size: u64,
    pub keep: u32,
    pub max_line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepCondition {
    /// The dependency's process was spawned.
    Started,
    /// The dependency passed its ready probe (or is running, when it has none).
    Ready,
    /// The dependency passed a health probe since it became ready.
    Healthy,
}

/// Where a variable of a child's environment came from, for `lmctl env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvSource {
    /// `env = { ... }` in the config; `interpolated` when it used `${...}`.
    Declared {
        interpolated: bool,
    },
    EnvFile {
        file: PathBuf,
        line: usize,
    },
    /// Copied from the daemon's own environment through `inherit_env`.
    Inherited,
    /// Added by the supervisor (`LM_SERVICE`, `NOTIFY_SOCKET`, ...).
    Supervisor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub value: String,
    pub source: EnvSource,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http(String),
    Tcp(String),
}

/// As `{"http": URL}` / `{"tcp": ADDR}`, with a URL's password masked: `show` prints it.
impl Serialize for Probe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (k, v) = match self {
            Probe::Http(u) => ("http", u),
            Probe::Tcp(a) => ("tcp", a),
        };
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(k, &super::secrets::mask_url_passwords(v))?;
        m.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadySpec {
    pub notify: bool,
    /// What is probed; never shown (see `shown_probe`).
    #[serde(skip_serializing)]
    pub probe: Option<Probe>,
    /// `probe` with interpolated secrets masked: what `show` prints.
    #[serde(rename = "probe")]
    pub shown_probe: Option<Probe>,
    #[serde(with = "dur")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthSpec {
    /// What is probed; never shown (see `shown_probe`).
    #[serde(skip_serializing)]
    pub probe: Probe,
    /// `probe` with interpolated secrets masked: what `show` prints.
    #[serde(rename = "probe")]
    pub shown_probe: Probe,
    #[serde(with = "dur")]
    pub interval: Duration,
    #[serde(with = "dur")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "dur")]
    pub start_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackoffSpec {
    #[serde(with = "dur")]
    pub initial: Duration,
    #[serde(with = "dur")]
    pub max: Duration,
    pub factor: f64,
}

impl BackoffSpec {
    /// Delay before the `n`th restart in a row (1-based): `initial * factor^(n-1)`, capped.
    pub fn delay(&self, n: u32) -> Duration {
        // Multiplied out rather than `powi`, which LLVM turns into libm's `pow`: the only
        // symbol the daemon took from libm, whose pages were ~0.3 MB of its RSS.
        let mut secs = self.initial.as_secs_f64();
        for _ in 1..n.min(65) {
            secs *= self.factor;
            if !secs.is_finite() || secs >= self.max.as_secs_f64() {
                break;
            }
        }
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    /// As written, or resolved against the config folder when it contains a `/`.
    pub command: String,
    /// What the child gets; never shown (see `shown_args`).
    #[serde(skip_serializing)]
    pub args: Vec<String>,
    /// `args` as they may be shown (`show`, the spawn event, logs, stderr): interpolated
    /// secret variables and URL passwords masked.
    #[serde(rename = "args")]
    pub shown_args: Vec<String>,
    pub cwd: PathBuf,
    /// The declared environment after `inherit_env`, `env_file` and `env`, interpolated.
    /// The supervisor's own markers are added at spawn. Serialized as its keys only: values
    /// have their own verb, `lmctl env`, which masks secrets.
    #[serde(serialize_with = "env_keys")]
    pub env: BTreeMap<String, EnvVar>,
    /// How variables that use a secret through `${...}` are shown (`URL = "x?t=${TOKEN}"`):
    /// only those whose shown form differs from the value.
    #[serde(skip)]
    pub shown_env: BTreeMap<String, String>,
    pub required_env: Vec<String>,
    pub autostart: bool,
    pub depends_on: BTreeMap<String, DepCondition>,
    pub ready: Option<ReadySpec>,
    pub health: Option<HealthSpec>,
    #[serde(with = "opt_dur")]
    pub watchdog: Option<Duration>,
    pub restart: RestartPolicy,
    pub stop_exit_codes: Vec<i32>,
    pub backoff: BackoffSpec,
    #[serde(with = "dur")]
    pub min_uptime: Duration,
    /// Without a readiness check, how long a new process must stay up to count as started.
    #[serde(with = "dur")]
    pub start_grace: Duration,
    pub max_restarts: u32,
    pub max_memory: Option<u64>,
    pub stop_signal: String,
    #[serde(with = "dur")]
    pub stop_timeout: Duration,
}

/// A secret shorter than this is not searched for in free text: masking every "1" of a
/// process list would hide everything and protect nothing.
const MIN_REDACTED: usize = 4;

fn env_keys<S: serde::Serializer>(env: &BTreeMap<String, EnvVar>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(env.keys())
}

impl ServiceSpec {
    /// `text` (a command line read from `/proc`, say) with this service's secrets masked:
    /// each argument that is shown masked, the values of its secret variables, and URL
    /// passwords.
    pub fn redact(&self, text: &str, extra: &[String]) -> String {
        use super::secrets::{is_secret_name, mask_url_passwords, MASK};
        let mut pairs: Vec<(&str, &str)> = self
            .args
            .iter()
            .zip(&self.shown_args)
            .filter(|(a, s)| a != s && a.len() >= MIN_REDACTED)
            .map(|(a, s)| (a.as_str(), s.as_str()))
            .collect();
        for (k, v) in &self.env {
            if v.value.len() >= MIN_REDACTED && is_secret_name(k, extra) {
                pairs.push((v.value.as_str(), MASK));
            }
        }
        // Longest first, so a secret inside a longer argument is replaced as a whole.
        pairs.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        let (body, cut) = match text.strip_suffix('…') {
            Some(b) => (b, true),
            None => (text, false),
        };
        let mut out = body.to_string();
        for (a, s) in &pairs {
            if out.contains(a) {
                out = out.replace(a, s);
            }
        }
        // A line cut short (`…`) may end inside a secret: mask that partial tail too.
        if cut {
            let partial = pairs
                .iter()
                .filter_map(|(a, _)| {
                    (1..a.len().min(out.len()) + 1)
                        .rev()
                        .find(|&n| a.is_char_boundary(n) && out.ends_with(&a[..n]))
                })
                .max();
            if let Some(n) = partial {
                out.truncate(out.len() - n);
                out.push_str(MASK);
            }
            out.push('…');
        }
        mask_url_passwords(&out).into_owned()
    }

    /// The process list of `lmctl show`, command lines redacted.
    pub fn redact_procs(
        &self,
        procs: &[crate::control::proto::ProcInfo],
    ) -> Vec<crate::control::proto::ProcInfo> {
        procs
            .iter()
            .map(|p| crate::control::proto::ProcInfo {
                command: self.redact(&p.command, &[]),
                ..p.clone()
            })
            .collect()
    }

    /// How `lmctl env` shows variable `key` with `value` (the spawned one may differ from the
    /// spec's after a reload): (text, whether something was masked).
    pub fn shown_env_value(&self, key: &str, value: &str, extra: &[String]) -> (String, bool) {
        if let (Some(shown), Some(v)) = (self.shown_env.get(key), self.env.get(key)) {
            if v.value == value && !super::secrets::is_secret_name(key, extra) {
                return (super::secrets::mask_url_passwords(shown).into_owned(), true);
            }
        }
        super::secrets::shown_value(key, value, extra)
    }

    /// True when `other` would run a different process: what `reload` restarts for.
    /// `autostart` and `depends_on` only steer the supervisor, so they do not count.
    pub fn process_differs(&self, other: &ServiceSpec) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.autostart = false;
        b.autostart = false;
        a.depends_on.clear();
        b.depends_on.clear();
        a != b
    }

    pub fn stop_signal(&self) -> nix::sys::signal::Signal {
        super::units::parse_signal(&self.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM)
    }
}

/// Durations serialized as humantime text ("1s 500ms") so `show --json` stays readable.
mod dur {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod opt_dur {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = BackoffSpec {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(3),
            factor: 2.0,
        };
        let got: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, vec![500, 1000, 2000, 3000, 3000]);
        let zero = BackoffSpec {
            initial: Duration::ZERO,
            max: Duration::from_secs(3),
            factor: 2.0,
        };
        assert_eq!(zero.delay(7), Duration::ZERO);
    }
}
