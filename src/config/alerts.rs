//! `[alerts]` and `[metrics]`: the raw TOML mirror, the validated model, and the checks
//! (`lmctl check`: unknown services, bad durations and sizes, rules without a destination
//! or with other than exactly one condition). Kept apart from the service config: nothing
//! here changes how a service runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::OneOrMany;
use super::{envfile, units, Validator};

// ---- raw ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub env_file: Option<Spanned<OneOrMany>>,
    pub min_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub webhook: BTreeMap<Spanned<String>, RawWebhook>,
    #[serde(default)]
    pub command: BTreeMap<Spanned<String>, RawCommand>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub command: Spanned<String>,
    #[serde(default)]
    pub args: Vec<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Spanned<String>,
    pub services: Option<Vec<Spanned<String>>>,
    pub severity: Option<Spanned<String>>,
    #[serde(default)]
    pub to: Vec<Spanned<String>>,
    pub restarts: Option<Spanned<RawRestarts>>,
    pub state: Option<Spanned<String>>,
    pub unhealthy_for: Option<Spanned<String>>,
    pub memory: Option<Spanned<RawMemory>>,
    pub log_dropped: Option<Spanned<bool>>,
    pub daemon_recovered: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestarts {
    pub more_than: u32,
    pub within: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    pub above: Spanned<String>,
    #[serde(rename = "for")]
    pub for_: Option<Spanned<String>>,
}

// ---- model ----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MetricsConfig {
    /// `host:port` of the `/metrics` listener; None = off.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertsConfig {
    #[serde(with = "humantime_serde_like")]
    pub min_interval: Duration,
    pub destinations: BTreeMap<String, Destination>,
    pub rules: Vec<Rule>,
    /// Values that came from `${...}` (env_file or the daemon's env): masked wherever a
    /// destination or an error is shown.
    #[serde(skip)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Destination {
    Webhook {
        /// Resolved; never shown (see `shown`).
        #[serde(skip)]
        url: String,
        /// What `lmctl alerts` shows: the URL as written when it used `${...}`, else its
        /// scheme and host only.
        shown: String,
        #[serde(with = "humantime_serde_like")]
        timeout: Duration,
    },
    Command {
        command: String,
        args: Vec<String>,
        #[serde(with = "humantime_serde_like")]
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    /// None: every service.
    pub services: Option<Vec<String>>,
    pub severity: Severity,
    pub to: Vec<String>,
    pub condition: Condition,
}

impl Rule {
    pub fn covers(&self, service: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.iter().any(|x| x == service))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Restarts {
        more_than: u32,
        #[serde(with = "humantime_serde_like")]
        within: Duration,
    },
    Failed,
    UnhealthyFor(#[serde(with = "humantime_serde_like")] Duration),
    Memory {
        above: u64,
        #[serde(with = "humantime_serde_like")]
        for_: Duration,
    },
    LogDropped,
    DaemonRecovered,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |d: &Duration| units::human_duration(*d);
        match self {
            Condition::Restarts { more_than, within } => {
                write!(f, "restarts > {more_than} within {}", d(within))
            }
            Condition::Failed => write!(f, "state = failed"),
            Condition::UnhealthyFor(x) => write!(f, "unhealthy for {}", d(x)),
            Condition::Memory { above, for_ } => {
                write!(f, "memory > {} for {}", units::human_bytes(*above), d(for_))
            }
            Condition::LogDropped => write!(f, "log lines dropped"),
            Condition::DaemonRecovered => write!(f, "daemon recovered from a crash"),
        }
    }
}

mod humantime_serde_like {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl AlertsConfig {
    /// No rules: what a daemon runs with when `[alerts]` is absent (a reload may add some).
    pub fn empty() -> AlertsConfig {
        AlertsConfig {
            min_interval: Duration::from_secs(15 * 60),
            destinations: BTreeMap::new(),
            rules: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

/// Replaces every secret value in `text` by `***` (for logs, events and `lmctl alerts`).
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// `scheme://host[:port]/…`: enough to recognise a destination, nothing of its token.
pub fn url_outline(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // user:password@host → host
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    format!("{scheme}://{host}/…")
}

// ---- validation -----------------------------------------------------------------------

impl Validator<'_> {
    pub(super) fn metrics(&mut self, raw: RawMetrics) -> MetricsConfig {
        let listen = raw.listen.and_then(|l| {
            let s = l.get_ref().trim().to_string();
            if s.parse::<std::net::SocketAddr>().is_err() {
                self.err(
                    l.span(),
                    format!("invalid metrics listen address {s:?}: expected IP:PORT, like \"127.0.0.1:9860\""),
                );
                return None;
            }
            Some(s)
        });
        MetricsConfig { listen }
    }

    pub(super) fn alerts(
        &mut self,
        raw: Option<RawAlerts>,
        services: &BTreeSet<String>,
        daemon_env: &BTreeMap<String, String>,
    ) -> Option<AlertsConfig> {
        let raw = raw?;
        // Variables for `${...}`: the env files, then the daemon's environment.
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        if let Some(f) = &raw.env_file {
            for file in f.get_ref().clone().into_vec() {
                let (optional, file) = match file.strip_prefix('-') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, file),
                };
                let path: PathBuf = self.resolve_path(&file);
                match std::fs::read_to_string(&path) {
                    Ok(text) => match envfile::parse(&path, &text) {
                        Ok(entries) => {
                            for e in entries {
                                vars.insert(e.key, e.value);
                            }
                        }
                        Err(errs) => self.diags.extend(errs),
                    },
                    Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => self.err(
                        f.span(),
                        format!(
                            "cannot read the alerts env_file {} ({e}); create it, or prefix the name with '-' to make it optional",
                            path.display()
                        ),
                    ),
                }
            }
        }
        let mut secrets = Vec::new();
        let min_interval = self.duration(&raw.min_interval, &super::schema::ALERTS_MIN_INTERVAL);

        let mut destinations = BTreeMap::new();
        for (name, w) in raw.webhook {
            let template = w.url.get_ref().clone();
            let url = match substitute(&template, &vars, daemon_env, &mut secrets) {
                Ok(u) => u,
                Err(e) => {
                    self.err(w.url.span(), format!("webhook `{}`: {e}", name.get_ref()));
                    continue;
                }
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                self.err(
                    w.url.span(),
                    format!(
                        "webhook `{}`: the url must start with http:// or https://",
                        name.get_ref()
                    ),
                );
            }
            let shown = if template.contains("${") {
                template.clone()
            } else {
                url_outline(&url)
            };
            let timeout = self.duration(&w.timeout, &super::schema::WEBHOOK_TIMEOUT);
            destinations.insert(
                name.get_ref().clone(),
                Destination::Webhook {
                    url,
                    shown,
                    timeout,
                },
            );
        }
        for (name, c) in raw.command {
            if destinations.contains_key(name.get_ref()) {
                self.err(
                    name.span(),
                    format!(
                        "destination `{}` is defined both as a webhook and as a command",
                        name.get_ref()
                    ),
                );
                continue;
            }
            let mut args = Vec::new();
            for a in &c.args {
                match substitute(a.get_ref(), &vars, daemon_env, &mut secrets) {
                    Ok(v) => args.push(v),
                    Err(e) => self.err(a.span(), format!("command `{}`: {e}", name.get_ref())),
                }
            }
            let cmd = c.command.get_ref();
            if cmd.trim().is_empty() {
                self.err(c.command.span(), "command is empty");
            }
            let command = if cmd.contains('/') {
                self.resolve_path(cmd).to_string_lossy().into_owned()
            } else {
                cmd.clone()
            };
            let timeout = self.duration(&c.timeout, &super::schema::COMMAND_TIMEOUT);
            destinations.insert(
                name.get_ref().clone(),
                Destination::Command {
                    command,
                    args,
                    timeout,
                },
            );
        }

        let mut rules = Vec::new();
        let mut names = BTreeSet::new();
        for r in raw.rule {
            let span = r.span();
            let r = r.into_inner();
            let name = r.name.get_ref().clone();
            if !names.insert(name.clone()) {
                self.err(
                    r.name.span(),
                    format!("two alert rules are named `{name}`: names must be unique"),
                );
            }
            let services = r.services.as_ref().map(|list| {
                for s in list {
                    if !services.contains(s.get_ref()) {
                        let known: Vec<&str> = services.iter().map(String::as_str).collect();
                        self.err(
                            s.span(),
                            format!(
                                "alert rule `{name}` names service `{}`, which is not defined (services: {})",
                                s.get_ref(),
                                known.join(", ")
                            ),
                        );
                    }
                }
                list.iter().map(|s| s.get_ref().clone()).collect::<Vec<_>>()
            });
            let severity = match r
                .severity
                .as_ref()
                .map(|s| (s.get_ref().as_str(), s.span()))
            {
                None => Severity::Warning,
                Some(("info", _)) => Severity::Info,
                Some(("warning", _)) => Severity::Warning,
                Some(("critical", _)) => Severity::Critical,
                Some((other, sp)) => {
                    self.err(
                        sp,
                        format!("invalid severity {other:?}: expected info, warning or critical"),
                    );
                    Severity::Warning
                }
            };
            if r.to.is_empty() {
                self.err(
                    r.name.span(),
                    format!("alert rule `{name}` has no destination: add to = [\"NAME\"] naming an [alerts.webhook.NAME] or [alerts.command.NAME]"),
                );
            }
            for t in &r.to {
                if !destinations.contains_key(t.get_ref()) {
                    let known: Vec<&str> = destinations.keys().map(String::as_str).collect();
                    self.err(
                        t.span(),
                        format!(
                            "alert rule `{name}` sends to `{}`, which is not defined (destinations: {})",
                            t.get_ref(),
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        ),
                    );
                }
            }
            let mut conds = Vec::new();
            if let Some(x) = &r.restarts {
                let within = self.duration(
                    &Some(x.get_ref().within.clone()),
                    &super::schema::RULE_WINDOW,
                );
                if within.is_zero() {
                    self.err(
                        x.get_ref().within.span(),
                        "restarts.within must be more than 0s",
                    );
                }
                conds.push(Condition::Restarts {
                    more_than: x.get_ref().more_than,
                    within,
                });
            }
            if let Some(s) = &r.state {
                if s.get_ref() == "failed" {
                    conds.push(Condition::Failed);
                } else {
                    self.err(
                        s.span(),
                        format!("alert on state {:?} is not supported: the only state condition is \"failed\" (use unhealthy_for for unhealthy)", s.get_ref()),
                    );
                }
            }
            if let Some(d) = &r.unhealthy_for {
                conds.push(Condition::UnhealthyFor(
                    self.duration(&Some(d.clone()), &super::schema::RULE_WINDOW),
                ));
            }
            if let Some(m) = &r.memory {
                let above = match units::parse_size(m.get_ref().above.get_ref()) {
                    Ok(v) => v,
                    Err(e) => {
                        self.err(m.get_ref().above.span(), e);
                        0
                    }
                };
                let for_ = self.duration(&m.get_ref().for_, &super::schema::RULE_WINDOW);
                conds.push(Condition::Memory { above, for_ });
            }
            for (flag, cond, key) in [
                (&r.log_dropped, Condition::LogDropped, "log_dropped"),
                (
                    &r.daemon_recovered,
                    Condition::DaemonRecovered,
                    "daemon_recovered",
                ),
            ] {
                if let Some(f) = flag {
                    if *f.get_ref() {
                        conds.push(cond);
                    } else {
                        self.err(
                            f.span(),
                            format!(
                                "{key} = false means nothing: remove the key, or remove the rule"
                            ),
                        );
                    }
                }
            }
            if conds.len() != 1 {
                self.err(
                    span.clone(),
                    format!(
                        "alert rule `{name}` must have exactly one condition (restarts, state, unhealthy_for, memory, log_dropped or daemon_recovered); it has {}",
                        conds.len()
                    ),
                );
                continue;
            }
            let Some(condition) = conds.pop() else {
                continue;
            };
            rules.push(Rule {
                name,
                services,
                severity,
                to: r.to.iter().map(|t| t.get_ref().clone()).collect(),
                condition,
            });
        }
        secrets.sort();
        secrets.dedup();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Some(AlertsConfig {
            min_interval,
            destinations,
            rules,
            secrets,
        })
    }
}

/// `${NAME}` from the alerts env files, then the daemon's environment; each value used is
/// recorded as a secret.
fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    daemon_env: &BTreeMap<String, String>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated ${{ in {text:?}"));
        };
        let name = &after[..end];
        let value = vars.get(name).or_else(|| daemon_env.get(name)).ok_or_else(|| {
            format!("${{{name}}} is not set: define it in the [alerts] env_file or the daemon's environment")
        })?;
        if !value.is_empty() {
            secrets.push(value.clone());
        }
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outline_hides_path_and_credentials() {
        assert_eq!(
            url_outline("https://user:pw@hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/…"
        );
    }

    #[test]
    fn redact_masks_every_secret() {
        let s = vec!["hunter22".to_string()];
        assert_eq!(
            redact("POST https://x/hunter22 failed", &s),
            "POST https://x/*** failed"
        );
    }
}
