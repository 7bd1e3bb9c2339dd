//! The alert engine: one task that reads the typed events and the periodic status snapshots
//! the actor sends it (bounded queue, `try_send`: the actor never waits on it), decides per
//! rule and service whether an incident is open, and hands messages to one delivery worker
//! per destination (`deliver.rs`: bounded queue, timeouts, retries with backoff). What it
//! decides and every failed delivery come back to the actor as events (`alert_fired`,
//! `alert_resolved`, `alert_sent`, `alert_failed`).
//!
//! Per (rule, service) the engine keeps whether the condition holds now and what was last
//! sent; a message goes out when the two differ and the last message for that key is at
//! least `min_interval` old. So an incident gives one `firing` and one `resolved`, and a
//! flapping condition inside `min_interval` gives at most one message per interval.

pub mod deliver;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::alerts::{redact, AlertsConfig, Condition, Destination, Rule};
use crate::control::proto::{
    self, AlertDelivery, AlertFiring, AlertRuleState, ErrorCode, Response, ServiceStatus, StateName,
};
use crate::metrics::AlertStats;
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::Msg;

/// How many inputs may wait for the engine before the actor drops (and counts) one.
pub const INBOX: usize = 1024;
/// A log_dropped incident is over after this long without new drops.
pub const LOG_DROPPED_QUIET: Duration = Duration::from_secs(60);
/// Lines of the service's stderr in a message.
pub const STDERR_TAIL: usize = 10;

pub enum Input {
    Event(Event),
    Status(Vec<ServiceStatus>),
    Request(Request),
    /// A reload: the new `[alerts]` (None: removed). Rules that kept their name and
    /// condition keep their open incidents.
    Reconfigure(Box<Option<AlertsConfig>>),
}

/// `lmctl alerts` or `alerts test`, with where to answer.
pub struct Request {
    pub req: proto::Request,
    pub reply: oneshot::Sender<Response>,
}

impl Request {
    pub fn fail(self, msg: &str) {
        let _ = self
            .reply
            .send(Response::error(ErrorCode::BadRequest, msg.to_string()));
    }
}

/// The message a destination receives (DESIGN: the payload is fixed).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payload {
    pub rule: String,
    pub service: Option<String>,
    pub severity: String,
    /// "firing" | "resolved" (| "test" for `lmctl alerts test`).
    pub status: String,
    pub summary: String,
    pub text: String,
    pub state: Option<String>,
    pub host: String,
    pub time: String,
    pub stderr_tail: Vec<String>,
}

#[derive(Debug, Default)]
struct Incident {
    /// Whether the condition holds now, and since when.
    firing_since: Option<chrono::DateTime<chrono::Utc>>,
    /// What the destinations were last told: true = firing.
    told_firing: bool,
    last_msg: Option<Instant>,
    summary: String,
    /// Condition bookkeeping.
    restarts: VecDeque<Instant>,
    over_since: Option<Instant>,
    last_drop: Option<Instant>,
}

#[derive(Debug, Default)]
struct RuleState {
    last_sent: Option<String>,
    last_error: Option<String>,
}

/// Delivery results flowing back from the workers.
pub(crate) enum Outcome {
    Sent { rule: String },
    Failed { rule: String, error: String },
}

pub struct Engine {
    cfg: AlertsConfig,
    host: String,
    log_dir: PathBuf,
    actor: mpsc::UnboundedSender<Msg>,
    /// (rule index, service or None for the daemon).
    incidents: BTreeMap<(usize, Option<String>), Incident>,
    rules: Vec<RuleState>,
    status: BTreeMap<String, ServiceStatus>,
    workers: BTreeMap<String, deliver::Worker>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    stats: Arc<AlertStats>,
}

impl Engine {
    pub fn new(
        cfg: AlertsConfig,
        log_dir: PathBuf,
        actor: mpsc::UnboundedSender<Msg>,
        stats: Arc<AlertStats>,
    ) -> Engine {
        let (otx, orx) = mpsc::unbounded_channel();
        let rules = cfg.rules.iter().map(|_| RuleState::default()).collect();
        let mut e = Engine {
            cfg,
            host: hostname(),
            log_dir,
            actor,
            incidents: BTreeMap::new(),
            rules,
            status: BTreeMap::new(),
            workers: BTreeMap::new(),
            outcomes: orx,
            outcomes_tx: otx,
            stats,
        };
        e.start_workers();
        e
    }

    /// One worker per destination. Replaced workers finish what they hold, then end.
    fn start_workers(&mut self) {
        let secrets = Arc::new(self.cfg.secrets.clone());
        self.workers = self
            .cfg
            .destinations
            .iter()
            .map(|(name, d)| {
                (
                    name.clone(),
                    deliver::Worker::start(
                        name.clone(),
                        d.clone(),
                        secrets.clone(),
                        self.actor.clone(),
                        self.stats.clone(),
                        self.outcomes_tx.clone(),
                    ),
                )
            })
            .collect();
    }

    fn reconfigure(&mut self, new: Option<AlertsConfig>) {
        let new = new.unwrap_or_else(AlertsConfig::empty);
        let same = |old: &Rule| {
            new.rules
                .iter()
                .position(|r| r.name == old.name && r.condition == old.condition)
        };
        let mut incidents = BTreeMap::new();
        for ((i, svc), inc) in std::mem::take(&mut self.incidents) {
            if let Some(j) = self.cfg.rules.get(i).and_then(same) {
                incidents.insert((j, svc), inc);
            }
        }
        let mut rules: Vec<RuleState> = new.rules.iter().map(|_| RuleState::default()).collect();
        for (i, st) in std::mem::take(&mut self.rules).into_iter().enumerate() {
            if let Some(j) = self.cfg.rules.get(i).and_then(same) {
                rules[j] = st;
            }
        }
        self.incidents = incidents;
        self.rules = rules;
        self.cfg = new;
        self.start_workers();
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Event(e)) => self.on_event(&e, Instant::now()),
                    Some(Input::Status(s)) => self.on_status(s, Instant::now()),
                    Some(Input::Request(r)) => self.on_request(r).await,
                    Some(Input::Reconfigure(c)) => self.reconfigure(*c),
                    None => return,
                },
                Some(o) = self.outcomes.recv() => self.on_outcome(o),
                // Rules with durations (unhealthy for, memory for) fire between samples;
                // without rules there is nothing to evaluate.
                _ = tick.tick(), if !self.cfg.rules.is_empty() => self.evaluate(Instant::now()),
            }
        }
    }

    fn on_outcome(&mut self, o: Outcome) {
        let (rule, res) = match o {
            Outcome::Sent { rule } => (rule, Ok(())),
            Outcome::Failed { rule, error } => (rule, Err(error)),
        };
        let Some(i) = self.cfg.rules.iter().position(|r| r.name == rule) else {
            return;
        };
        match res {
            Ok(()) => self.rules[i].last_sent = Some(now_text()),
            Err(e) => self.rules[i].last_error = Some(format!("{} {e}", now_text())),
        }
    }

    fn incident(&mut self, rule: usize, service: Option<&str>) -> &mut Incident {
        self.incidents
            .entry((rule, service.map(str::to_string)))
            .or_default()
    }

    fn on_event(&mut self, e: &Event, now: Instant) {
        for i in 0..self.cfg.rules.len() {
            let rule = &self.cfg.rules[i];
            let cond = rule.condition.clone();
            match (&cond, &e.service, &e.kind) {
                (Condition::Restarts { within, .. }, Some(s), EventKind::Restart { .. })
                    if rule.covers(s) =>
                {
                    let within = *within;
                    let inc = self.incident(i, Some(s));
                    inc.restarts.push_back(now);
                    while inc
                        .restarts
                        .front()
                        .is_some_and(|t| now.saturating_duration_since(*t) > within)
                    {
                        inc.restarts.pop_front();
                    }
                }
                (Condition::Failed, Some(s), EventKind::Failed { .. }) if rule.covers(s) => {
                    // Open at once; the status snapshot closes it.
                    self.status
                        .entry(s.clone())
                        .and_modify(|st| st.state = StateName::Failed);
                }
                (Condition::LogDropped, Some(s), EventKind::LogDropped { .. })
                    if rule.covers(s) =>
                {
                    self.incident(i, Some(s)).last_drop = Some(now);
                }
                (
                    Condition::DaemonRecovered,
                    svc,
                    EventKind::OrphansReaped {
                        earlier_daemon: true,
                        processes,
                    },
                ) => {
                    let summary = format!(
                        "the daemon started after a crash of an earlier one and reaped {} leftover process(es) of {}: {}",
                        processes.len(),
                        svc.as_deref().unwrap_or("its services"),
                        processes.join(", ")
                    );
                    self.one_shot(i, summary, now);
                }
                (Condition::DaemonRecovered, svc, EventKind::CgroupReaped { cgroup, pids }) => {
                    let summary = format!(
                        "the daemon started after a crash of an earlier one and killed the cgroup {cgroup} of {} ({} process(es))",
                        svc.as_deref().unwrap_or("a service"),
                        pids.len()
                    );
                    self.one_shot(i, summary, now);
                }
                _ => {}
            }
        }
        self.evaluate(now);
    }

    /// A condition that is an instant, not a span: a `firing` message and nothing to resolve.
    fn one_shot(&mut self, rule: usize, summary: String, now: Instant) {
        let min = self.cfg.min_interval;
        let inc = self.incident(rule, None);
        if inc
            .last_msg
            .is_some_and(|t| now.saturating_duration_since(t) < min)
        {
            return;
        }
        inc.last_msg = Some(now);
        inc.summary = summary.clone();
        self.emit(rule, None, true, summary);
    }

    fn on_status(&mut self, status: Vec<ServiceStatus>, now: Instant) {
        self.status = status.into_iter().map(|s| (s.name.clone(), s)).collect();
        // A service removed by a reload takes its incidents with it.
        let known = &self.status;
        self.incidents
            .retain(|(_, s), _| s.as_ref().is_none_or(|s| known.contains_key(s)));
        self.evaluate(now);
    }

    /// Recomputes every incident from the latest status and the event bookkeeping, and
    /// sends what changed (subject to `min_interval`).
    fn evaluate(&mut self, now: Instant) {
        let names: Vec<String> = self.status.keys().cloned().collect();
        for i in 0..self.cfg.rules.len() {
            let rule = self.cfg.rules[i].clone();
            if matches!(rule.condition, Condition::DaemonRecovered) {
                continue;
            }
            for name in names.iter().filter(|n| rule.covers(n)) {
                let st = self.status.get(name).cloned();
                let holds = {
                    let inc = self.incident(i, Some(name));
                    condition_holds(&rule, inc, st.as_ref(), now)
                };
                let min = self.cfg.min_interval;
                let inc = self.incident(i, Some(name));
                if let Some(summary) = &holds {
                    inc.summary = summary.clone();
                    if inc.firing_since.is_none() {
                        inc.firing_since = Some(chrono::Utc::now());
                    }
                } else {
                    inc.firing_since = None;
                }
                let firing = holds.is_some();
                let allowed = inc
                    .last_msg
                    .is_none_or(|t| now.saturating_duration_since(t) >= min);
                if firing != inc.told_firing && allowed {
                    inc.told_firing = firing;
                    inc.last_msg = Some(now);
                    let summary = if firing {
                        inc.summary.clone()
                    } else {
                        resolved_summary(&rule, name, st.as_ref())
                    };
                    self.emit(i, Some(name.clone()), firing, summary);
                }
            }
        }
    }

    fn emit(&mut self, rule: usize, service: Option<String>, firing: bool, summary: String) {
        let r = &self.cfg.rules[rule];
        let kind = if firing {
            EventKind::AlertFired {
                rule: r.name.clone(),
                severity: r.severity.as_str().to_string(),
                summary: summary.clone(),
            }
        } else {
            EventKind::AlertResolved {
                rule: r.name.clone(),
                summary: summary.clone(),
            }
        };
        let _ = self.actor.send(Msg::External(Event {
            service: service.clone(),
            kind,
        }));
        let status = if firing { "firing" } else { "resolved" };
        let payload = self.payload(r, service, status, summary);
        self.send(rule, payload);
    }

    fn payload(&self, r: &Rule, service: Option<String>, status: &str, summary: String) -> Payload {
        let state = service
            .as_ref()
            .and_then(|s| self.status.get(s))
            .map(|s| s.state.as_str().to_string());
        let stderr_tail = service
            .as_deref()
            .map(|s| stderr_tail(&self.log_dir, s, STDERR_TAIL))
            .unwrap_or_default();
        let who = service.as_deref().unwrap_or("supervisor");
        let mark = match status {
            "firing" => "FIRING",
            "resolved" => "RESOLVED",
            _ => "TEST",
        };
        let text = format!(
            "[{}] {mark} {} on {}: {who}: {summary}",
            r.severity.as_str(),
            r.name,
            self.host
        );
        Payload {
            rule: r.name.clone(),
            service,
            severity: r.severity.as_str().to_string(),
            status: status.to_string(),
            summary: redact(&summary, &self.cfg.secrets),
            // One line, so a chat shows it as is.
            text: redact(&text, &self.cfg.secrets).replace(['\n', '\r'], " "),
            state,
            host: self.host.clone(),
            time: now_text(),
            stderr_tail,
        }
    }

    fn send(&mut self, rule: usize, payload: Payload) {
        let payload = Arc::new(payload);
        for to in self.cfg.rules[rule].to.clone() {
            if let Some(w) = self.workers.get(&to) {
                if let Err(e) = w.try_send(payload.clone()) {
                    let _ = self.actor.send(Msg::External(Event {
                        service: payload.service.clone(),
                        kind: EventKind::AlertFailed {
                            rule: payload.rule.clone(),
                            destination: to.clone(),
                            attempt: 0,
                            error: e,
                            retry_in_ms: None,
                        },
                    }));
                }
            }
        }
    }

    async fn on_request(&mut self, r: Request) {
        let req = r.req.clone();
        let resp = match &req {
            proto::Request::Alerts => Response::Alerts { rules: self.list() },
            proto::Request::AlertTest { rule } => {
                let Some(i) = self.cfg.rules.iter().position(|x| &x.name == rule) else {
                    let known: Vec<&str> = self.cfg.rules.iter().map(|x| x.name.as_str()).collect();
                    r.fail(&format!(
                        "no alert rule named `{rule}`; rules: {}",
                        known.join(", ")
                    ));
                    return;
                };
                let rr = self.cfg.rules[i].clone();
                let service = rr.services.as_ref().and_then(|s| s.first().cloned());
                let payload = self.payload(
                    &rr,
                    service,
                    "test",
                    format!(
                        "test message for rule `{}` ({}) sent with `lmctl alerts test`",
                        rr.name, rr.condition
                    ),
                );
                // One attempt per destination, off this task, so the engine keeps going.
                let mut waits = Vec::new();
                for to in &rr.to {
                    if let Some(d) = self.cfg.destinations.get(to) {
                        let (d, p, s, to) = (
                            d.clone(),
                            payload.clone(),
                            self.cfg.secrets.clone(),
                            to.clone(),
                        );
                        waits.push(tokio::spawn(async move {
                            let res = deliver::attempt(&d, &p).await;
                            AlertDelivery {
                                destination: to,
                                ok: res.is_ok(),
                                detail: match res {
                                    Ok(()) => "delivered".into(),
                                    Err(e) => redact(&e, &s),
                                },
                            }
                        }));
                    }
                }
                let rule = rule.clone();
                let reply = r.reply;
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    for w in waits {
                        if let Ok(d) = w.await {
                            results.push(d);
                        }
                    }
                    let _ = reply.send(Response::AlertTest { rule, results });
                });
                return;
            }
            _ => Response::error(ErrorCode::BadRequest, "not an alerts request"),
        };
        let _ = r.reply.send(resp);
    }

    fn list(&self) -> Vec<AlertRuleState> {
        self.cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| AlertRuleState {
                name: r.name.clone(),
                severity: r.severity.as_str().to_string(),
                condition: r.condition.to_string(),
                to: r
                    .to
                    .iter()
                    .map(|t| match self.cfg.destinations.get(t) {
                        Some(Destination::Webhook { shown, .. }) => {
                            format!("{t} (webhook {shown})")
                        }
                        Some(Destination::Command { command, .. }) => {
                            format!("{t} (command {command})")
                        }
                        None => t.clone(),
                    })
                    .collect(),
                firing: self
                    .incidents
                    .iter()
                    .filter(|((ri, _), inc)| *ri == i && inc.firing_since.is_some())
                    .map(|((_, s), inc)| AlertFiring {
                        service: s.clone(),
                        since: inc
                            .firing_since
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_default(),
                    })
                    .collect(),
                last_sent: self.rules[i].last_sent.clone(),
                last_error: self.rules[i]
                    .last_error
                    .as_ref()
                    .map(|e| redact(e, &self.cfg.secrets)),
            })
            .collect()
    }
}

/// Some(summary) while the rule's condition holds for this service.
fn condition_holds(
    rule: &Rule,
    inc: &mut Incident,
    st: Option<&ServiceStatus>,
    now: Instant,
) -> Option<String> {
    let name = st.map(|s| s.name.as_str()).unwrap_or("?");
    let state = st.map(|s| s.state);
    let up = matches!(
        state,
        Some(StateName::Running | StateName::Ready | StateName::Unhealthy)
    );
    match &rule.condition {
        Condition::Restarts { more_than, within } => {
            while inc
                .restarts
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > *within)
            {
                inc.restarts.pop_front();
            }
            let n = inc.restarts.len();
            let over = n > *more_than as usize;
            // Once open, an incident closes only when the storm is over *and* it runs.
            if over || (inc.firing_since.is_some() && (n > 0 || !up)) {
                Some(format!(
                    "{name} restarted {n} time(s) within {} (more than {more_than}); now {}",
                    crate::config::units::human_duration(*within),
                    state.map(|s| s.as_str()).unwrap_or("unknown")
                ))
            } else {
                None
            }
        }
        Condition::Failed => (state == Some(StateName::Failed)).then(|| {
            let why = st
                .and_then(|s| s.last_error.clone())
                .unwrap_or_else(|| "gave up restarting it".into());
            format!("{name} failed: {why}")
        }),
        Condition::UnhealthyFor(d) => {
            let bad = state == Some(StateName::Unhealthy)
                || st.is_some_and(|s| {
                    s.has_health && s.health == crate::control::proto::Health::Unhealthy
                });
            if !bad {
                inc.over_since = None;
                return None;
            }
            let since = *inc.over_since.get_or_insert(now);
            let held = now.saturating_duration_since(since);
            (held >= *d).then(|| {
                format!(
                    "{name} unhealthy for {}",
                    crate::config::units::human_duration(held)
                )
            })
        }
        Condition::Memory { above, for_ } => {
            let mem = st.map(|s| s.memory_bytes).unwrap_or(0);
            if mem <= *above || !up {
                inc.over_since = None;
                return None;
            }
            let since = *inc.over_since.get_or_insert(now);
            let held = now.saturating_duration_since(since);
            (held >= *for_).then(|| {
                format!(
                    "{name} uses {} (tree, {}), above {} for {}",
                    crate::config::units::human_bytes(mem),
                    st.map(|s| s.memory_source.as_str()).unwrap_or("?"),
                    crate::config::units::human_bytes(*above),
                    crate::config::units::human_duration(held)
                )
            })
        }
        Condition::LogDropped => inc
            .last_drop
            .filter(|t| now.saturating_duration_since(*t) < LOG_DROPPED_QUIET)
            .map(|_| {
                format!(
                    "{name} dropped log lines (total {}): the disk is too slow for its output",
                    st.map(|s| s.log_dropped).unwrap_or(0)
                )
            }),
        Condition::DaemonRecovered => None,
    }
}

fn resolved_summary(rule: &Rule, name: &str, st: Option<&ServiceStatus>) -> String {
    let state = st.map(|s| s.state.as_str()).unwrap_or("unknown");
    match &rule.condition {
        Condition::Restarts { within, .. } => format!(
            "{name} is {state} with no restart in the last {}",
            crate::config::units::human_duration(*within)
        ),
        Condition::Memory { above, .. } => format!(
            "{name} uses {} now, at or below {}",
            crate::config::units::human_bytes(st.map(|s| s.memory_bytes).unwrap_or(0)),
            crate::config::units::human_bytes(*above)
        ),
        _ => format!("{name} is {state}: `{}` no longer holds", rule.condition),
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The last `n` lines of the service's current `.err.log`, without their prefix. Reads at
/// most the last 16 KiB.
pub fn stderr_tail(log_dir: &std::path::Path, service: &str, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log_dir.join(format!("{service}.err.log"))) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(16 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // probably cut
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..]
        .iter()
        .map(|l| match l.split_once("|err") {
            Some((_, rest)) => rest
                .strip_prefix("+ ")
                .or_else(|| rest.strip_prefix(' '))
                .unwrap_or(rest)
                .to_string(),
            None => l.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::Severity;
    use crate::control::proto::{Health, MemorySource, RestartReason, TreeKind};

    fn st(name: &str, state: StateName, memory: u64) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            pid: Some(1),
            uptime_ms: 0,
            restarts: 0,
            last_exit: None,
            cpu_percent: 0.0,
            memory_bytes: memory,
            processes: 1,
            health: Health::Unknown,
            last_error: None,
            log_dropped: 0,
            waiting_for: vec![],
            status_text: None,
            tree: TreeKind::Cgroup,
            memory_source: MemorySource::Cgroup,
            backoff_ms: None,
            last_restart_reason: None,
            last_stop: None,
            has_health: true,
        }
    }

    fn engine(condition: Condition, min: Duration) -> (Engine, mpsc::UnboundedReceiver<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut cfg = AlertsConfig::empty();
        cfg.min_interval = min;
        cfg.rules.push(Rule {
            name: "r".into(),
            services: None,
            severity: Severity::Warning,
            to: vec![],
            condition,
        });
        let e = Engine::new(
            cfg,
            PathBuf::from("/nonexistent"),
            tx,
            Arc::new(AlertStats::default()),
        );
        (e, rx)
    }

    /// "fired" / "resolved" for each decision so far.
    fn decisions(rx: &mut mpsc::UnboundedReceiver<Msg>) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Msg::External(e) = m {
                match e.kind {
                    EventKind::AlertFired { .. } => out.push("fired"),
                    EventKind::AlertResolved { .. } => out.push("resolved"),
                    _ => {}
                }
            }
        }
        out
    }

    fn restart() -> Event {
        Event::of(
            "a",
            EventKind::restart(RestartReason::Crash, "x".into(), Duration::ZERO, 1),
        )
    }

    #[tokio::test]
    async fn restarts_fire_once_per_storm_and_resolve_when_quiet_and_running() {
        let (mut e, mut rx) = engine(
            Condition::Restarts {
                more_than: 2,
                within: Duration::from_secs(10),
            },
            Duration::ZERO,
        );
        let t0 = Instant::now();
        e.on_status(vec![st("a", StateName::Backoff, 0)], t0);
        for i in 0..6 {
            e.on_event(&restart(), t0 + Duration::from_secs(i));
        }
        assert_eq!(decisions(&mut rx), vec!["fired"]);
        // Quiet but still down: stays open.
        e.on_status(
            vec![st("a", StateName::Failed, 0)],
            t0 + Duration::from_secs(30),
        );
        assert!(decisions(&mut rx).is_empty());
        e.on_status(
            vec![st("a", StateName::Running, 0)],
            t0 + Duration::from_secs(31),
        );
        assert_eq!(decisions(&mut rx), vec!["resolved"]);
    }

    #[tokio::test]
    async fn memory_needs_its_duration_and_min_interval_holds_back_the_resolve() {
        let (mut e, mut rx) = engine(
            Condition::Memory {
                above: 100,
                for_: Duration::from_secs(5),
            },
            Duration::from_secs(60),
        );
        let t0 = Instant::now();
        let s = |m| vec![st("a", StateName::Running, m)];
        e.on_status(s(200), t0);
        e.on_status(s(200), t0 + Duration::from_secs(4));
        assert!(decisions(&mut rx).is_empty(), "not for 5s yet");
        e.on_status(s(200), t0 + Duration::from_secs(5));
        assert_eq!(decisions(&mut rx), vec!["fired"]);
        // Clears at once, but the resolve waits for min_interval...
        e.on_status(s(50), t0 + Duration::from_secs(6));
        assert!(decisions(&mut rx).is_empty());
        // ...and a flap inside it sends nothing at all.
        e.on_status(s(200), t0 + Duration::from_secs(7));
        e.on_status(s(200), t0 + Duration::from_secs(20));
        e.on_status(s(50), t0 + Duration::from_secs(30));
        assert!(decisions(&mut rx).is_empty());
        e.on_status(s(50), t0 + Duration::from_secs(66));
        assert_eq!(decisions(&mut rx), vec!["resolved"]);
    }

    #[tokio::test]
    async fn unhealthy_for_and_log_dropped() {
        let (mut e, mut rx) = engine(
            Condition::UnhealthyFor(Duration::from_secs(3)),
            Duration::ZERO,
        );
        let t0 = Instant::now();
        e.on_status(vec![st("a", StateName::Unhealthy, 0)], t0);
        e.on_status(
            vec![st("a", StateName::Unhealthy, 0)],
            t0 + Duration::from_secs(3),
        );
        e.on_status(
            vec![st("a", StateName::Ready, 0)],
            t0 + Duration::from_secs(4),
        );
        assert_eq!(decisions(&mut rx), vec!["fired", "resolved"]);

        let (mut e, mut rx) = engine(Condition::LogDropped, Duration::ZERO);
        e.on_status(vec![st("a", StateName::Running, 0)], t0);
        e.on_event(&Event::of("a", EventKind::LogDropped { count: 5 }), t0);
        e.evaluate(t0 + Duration::from_secs(30));
        e.evaluate(t0 + LOG_DROPPED_QUIET + Duration::from_secs(1));
        assert_eq!(decisions(&mut rx), vec!["fired", "resolved"]);
    }

    #[test]
    fn stderr_tail_strips_prefixes() {
        let d = tempfile::tempdir().expect("tempdir");
        let lines: String = (0..20)
            .map(|i| format!("2026-01-01T00:00:00.000+00:00 svc|err line {i}\n"))
            .collect();
        std::fs::write(d.path().join("svc.err.log"), lines).expect("write");
        let t = stderr_tail(d.path(), "svc", 3);
        assert_eq!(t, vec!["line 17", "line 18", "line 19"]);
    }
}
