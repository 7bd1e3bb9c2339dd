//! The actor: owns the machine's state and is the only place that changes it. It turns
//! each message into a machine [`Input`], calls [`step`], and carries out the returned
//! [`Action`]s (the executor half). Work that may block (finding and killing leftovers,
//! loading a config) runs on blocking tasks that report back by message.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::action::Action;
use super::event::{Event, EventKind};
use super::machine::{step, Input, Services};
use super::view::History;
use super::Msg;
use crate::config::Config;
use crate::control::proto::{ErrorCode, Response, TreeKind};
use crate::logs::LogHandle;
use crate::resources::{cgroup, Target};
use crate::spawn::reaper;
use crate::systemd::Systemd;

const HISTORY: usize = 30;
/// How long after someone looked at the samples every service is sampled every tick:
/// monit and `status --watch` ask every second or two and stay inside it.
const VIEW_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// Unwatched services without a memory limit are sampled every this many ticks.
const SLOW_SAMPLE: u64 = 10;

/// What the executor holds for a service beyond the machine's state.
#[derive(Default)]
pub(super) struct Exec {
    pub(super) cgroup: Option<PathBuf>,
    /// How the current run is tracked (a failed cgroup join falls back to markers).
    pub(super) tree: Option<TreeKind>,
    pub(super) notify_path: Option<PathBuf>,
    pub(super) notify_task: Option<JoinHandle<()>>,
    pub(super) probes: Vec<JoinHandle<()>>,
    /// Sessions of recent runs: leftovers keep them after the leader died.
    pub(super) sessions: Vec<i32>,
    pub(super) history: History,
    /// A `cgroup.kill` went to its cgroup since it was made (see `cgroup::renew`).
    pub(super) cgroup_killed: Arc<AtomicBool>,
}

impl Exec {
    pub(super) fn stop_probes(&mut self) {
        for t in self.probes.drain(..) {
            t.abort();
        }
    }

    /// The cgroup to trust for this service's current tree.
    pub(super) fn tree_cgroup(&self) -> Option<PathBuf> {
        match self.tree {
            Some(TreeKind::GroupMarkers) => None,
            _ => self.cgroup.clone(),
        }
    }

    pub(super) fn release(&mut self) {
        self.stop_probes();
        if let Some(t) = self.notify_task.take() {
            t.abort();
        }
        if let Some(p) = self.notify_path.take() {
            let _ = std::fs::remove_file(p);
        }
        if let Some(cg) = &self.cgroup {
            cgroup::remove(cg);
        }
    }
}

pub(super) fn push(q: &mut Vec<String>, line: String) {
    if q.len() >= HISTORY {
        q.remove(0);
    }
    q.push(line);
}

pub struct Actor {
    pub(super) services: Services,
    pub(super) exec: BTreeMap<String, Exec>,
    /// Our marker value, and the part of it shared by every daemon of this state dir.
    pub(super) instance: String,
    pub(super) prefix: String,
    pub(super) logs: LogHandle,
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) cgroup_root: Option<PathBuf>,
    pub(super) systemd: Systemd,
    /// Until leftovers of an earlier daemon are gone (`Services::booted`) nothing starts;
    /// verbs that would start something wait here.
    pub(super) deferred: VecDeque<Msg>,
    pub(super) shutdown_replies: Vec<oneshot::Sender<Response>>,
    /// Reloads asked for so far (see `Msg::ReloadLoaded`).
    pub(super) reloads: u64,
    /// Counters for `/metrics` that only events can tell (restarts by reason, CPU time).
    pub(super) counters: crate::metrics::Counters,
    /// Resource ticks so far, and when someone last looked at the samples (status, show,
    /// monit, a scrape): what the sampler reads each tick depends on both.
    sample_tick: u64,
    pub(super) last_view: Option<Instant>,
    /// Alert rules on memory: the services they cover are sampled every tick.
    memory_rules: Vec<crate::config::alerts::Rule>,
    /// Are there alert rules at all? Without, the engine needs no status snapshots.
    alert_rules: bool,
    /// The alert engine's inbox, when alerts are configured: bounded, never waited on.
    pub(super) alerts: Option<mpsc::Sender<crate::alerts::Input>>,
}

impl Actor {
    pub fn new(
        config: Config,
        instance: String,
        prefix: String,
        logs: LogHandle,
        tx: mpsc::UnboundedSender<Msg>,
        cgroup_root: Option<PathBuf>,
        systemd: Systemd,
    ) -> Actor {
        Actor {
            services: Services::new(config),
            exec: BTreeMap::new(),
            instance,
            prefix,
            logs,
            tx,
            cgroup_root,
            systemd,
            deferred: VecDeque::new(),
            shutdown_replies: Vec::new(),
            reloads: 0,
            counters: crate::metrics::Counters::default(),
            sample_tick: 0,
            last_view: None,
            memory_rules: Vec::new(),
            alert_rules: false,
            alerts: None,
        }
    }

    /// Sends every event (and status snapshots) to the alert engine from now on.
    pub fn with_alerts(
        mut self,
        tx: mpsc::Sender<crate::alerts::Input>,
        config: Option<&crate::config::alerts::AlertsConfig>,
    ) -> Actor {
        self.alerts = Some(tx);
        self.memory_rules = memory_rules(config);
        self.alert_rules = config.is_some_and(|c| !c.rules.is_empty());
        self
    }

    /// Runs until a shutdown has stopped every service.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.reap_stale_instances();
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            if self.services.shutting_down && self.services.all_down() {
                break;
            }
        }
        for e in self.exec.values_mut() {
            e.release();
        }
        self.write_event(Event::daemon(EventKind::DaemonExit));
        self.logs.flush().await;
        for r in self.shutdown_replies.drain(..) {
            let _ = r.send(Response::ShutDown);
        }
    }

    /// Feeds an input and everything it leads to (a spawn's result) through the machine.
    /// Returns the reply to a request, if the machine gave one.
    pub(super) fn feed(&mut self, input: Input) -> Option<Response> {
        let mut queue = VecDeque::from([input]);
        let mut reply = None;
        while let Some(i) = queue.pop_front() {
            let mut actions = step(&mut self.services, i, Instant::now())
                .into_iter()
                .peekable();
            while let Some(a) = actions.next() {
                // Spawns next to each other (a boot, a reload) go as one batch.
                if let Action::Spawn { service, run } = a {
                    let mut batch = vec![(service, run)];
                    while let Some(Action::Spawn { .. }) = actions.peek() {
                        if let Some(Action::Spawn { service, run }) = actions.next() {
                            batch.push((service, run));
                        }
                    }
                    queue.extend(self.spawn_batch(batch));
                    continue;
                }
                if let Some(next) = self.execute(a, &mut reply) {
                    queue.push_back(next);
                }
            }
        }
        reply
    }

    pub(super) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Request { req, reply, uid } => self.request(req, reply, uid),
            Msg::Exited { service, run, exit } => {
                self.feed(Input::Exited { service, run, exit });
            }
            Msg::Timer { service, token } => {
                self.feed(Input::Timer { service, token });
            }
            Msg::Probe {
                service,
                run,
                kind,
                result,
                took,
            } => {
                self.counters.on_probe(&service, kind, took);
                self.feed(Input::Probe {
                    service,
                    run,
                    kind,
                    result,
                });
            }
            Msg::Notify { service, msg } => {
                let Some(pid) = msg.pid else { return };
                if !self.pid_belongs(&service, pid) {
                    self.write_event(Event::of(&service, EventKind::NotifyIgnored { pid }));
                    return;
                }
                self.feed(Input::Notify {
                    service,
                    fields: msg.fields,
                });
            }
            Msg::TreeClean {
                service,
                run,
                killed,
            } => {
                self.feed(Input::TreeClean {
                    service,
                    run,
                    killed,
                });
            }
            Msg::SampleTargets(reply) => {
                let now = Instant::now();
                self.sample_tick += 1;
                // Someone looks (status, show, monit, a scrape): everything every tick.
                // Otherwise memory where a limit or an alert rule needs it, and the rest
                // every SLOW_SAMPLE ticks.
                let watched = self
                    .last_view
                    .is_some_and(|t| now.saturating_duration_since(t) < VIEW_WINDOW);
                let tick = self.sample_tick;
                let targets = self
                    .services
                    .svcs
                    .iter()
                    .filter_map(|(name, s)| {
                        let run = s.state().run();
                        let e = self.exec.get(name);
                        if run.is_none() && e.is_none_or(|e| e.sessions.is_empty()) {
                            return None;
                        }
                        let unsampled = run.is_some_and(|r| r.sample.is_none());
                        let limited = s.spec.max_memory.is_some()
                            || self.memory_rules.iter().any(|r| r.covers(name));
                        let cpu = sampling(tick, watched, unsampled, limited)?;
                        Some(Target {
                            run: run.map(|r| r.id),
                            service: name.clone(),
                            main_pid: run.map(|r| r.pid),
                            sessions: run.map(|r| vec![r.pid]).unwrap_or_default(),
                            cgroup: e.and_then(Exec::tree_cgroup),
                            max_memory: s.spec.max_memory,
                            cpu,
                            looked: watched,
                        })
                    })
                    .collect();
                let _ = reply.send(targets);
            }
            Msg::Samples(samples) => {
                self.counters.on_samples(&samples, Instant::now());
                self.feed(Input::Samples(samples));
                if let Some(tx) = self.alerts.as_ref().filter(|_| self.alert_rules) {
                    let status = super::view::status(&self.services, Instant::now());
                    let _ = tx.try_send(crate::alerts::Input::Status(status));
                }
            }
            Msg::External(e) => self.write_event(e),
            Msg::Metrics(reply) => {
                self.last_view = Some(Instant::now());
                let status = super::view::status(&self.services, Instant::now());
                let _ = reply.send(self.counters.snapshot(status));
            }
            Msg::Alerts(req) => {
                // Answered by the alert engine; the actor only forwards.
                match &self.alerts {
                    Some(tx) => {
                        if let Err(e) = tx.try_send(crate::alerts::Input::Request(req)) {
                            if let crate::alerts::Input::Request(r) = e.into_inner() {
                                r.fail("the alert engine is busy; try again in a moment");
                            }
                        }
                    }
                    None => req.fail("no [alerts] in the config the daemon runs with"),
                }
            }
            Msg::LogDropped { service, count } => {
                self.feed(Input::LogDropped { service, count });
            }
            Msg::ChildSignal => {
                let owned: HashSet<i32> = self
                    .services
                    .svcs
                    .values()
                    .filter_map(|s| s.state().run().map(|r| r.pid))
                    .collect();
                for (pid, comm) in reaper::reap_adopted(&owned) {
                    tracing::debug!("reaped adopted orphan {pid} ({comm})");
                }
            }
            Msg::Terminate => {
                self.feed(Input::ForceKill);
            }
            Msg::Reload => self.begin_reload(None),
            Msg::ReloadLoaded { seq, reply, .. } if seq != self.reloads => {
                // A later reload is under way: an older file must not be applied last.
                if let Some(r) = reply {
                    let _ = r.send(Response::error(
                        ErrorCode::Busy,
                        "a later reload superseded this one; see `lmctl status` for the result",
                    ));
                }
            }
            Msg::ReloadLoaded { result, reply, .. } => match result {
                Ok(config) => {
                    self.memory_rules = memory_rules(config.alerts.as_ref());
                    self.alert_rules = config.alerts.as_ref().is_some_and(|c| !c.rules.is_empty());
                    if let Some(tx) = &self.alerts {
                        let _ = tx.try_send(crate::alerts::Input::Reconfigure(Box::new(
                            config.alerts.clone(),
                        )));
                    }
                    let resp = self.feed(Input::Reload(config));
                    if let (Some(r), Some(resp)) = (reply, resp) {
                        let _ = r.send(resp);
                    }
                }
                Err(errors) => {
                    for e in &errors {
                        self.write_event(Event::daemon(EventKind::ReloadRefused {
                            error: e.to_string(),
                        }));
                    }
                    if let Some(r) = reply {
                        let _ = r.send(Response::ConfigErrors { errors });
                    }
                }
            },
            Msg::StaleReaped { events } => {
                for e in events {
                    self.write_event(e);
                }
                self.make_cgroups_ahead();
                self.feed(Input::Boot);
                while let Some(m) = self.deferred.pop_front() {
                    self.handle(m);
                }
            }
            Msg::Alive(reply) => {
                let _ = reply.send(());
            }
            Msg::HasService(name, reply) => {
                let _ = reply.send(self.services.svcs.contains_key(&name));
            }
        }
    }

    // ---- the executor ---------------------------------------------------------------

    pub(super) fn write_event(&mut self, e: Event) {
        // Events reach supervisor.log, `lmctl logs`, `show` and stderr: no secrets in them
        // (a probe error quotes its URL, a spawn its arguments).
        let text = e.kind.to_string();
        let extra = &self.services.config.supervisor.secret_keys;
        let text = match e.service.as_deref().and_then(|n| self.services.svcs.get(n)) {
            Some(s) => s.spec.redact(&text, extra),
            None => crate::config::secrets::mask_url_passwords(&text).into_owned(),
        };
        self.counters
            .on_event(&e, &self.services.config.start_order);
        // The typed fields may quote what the text masks (a probe URL with a token).
        let line = history_line(&e, &text);
        let line = match e.service.as_deref().and_then(|n| self.services.svcs.get(n)) {
            Some(s) => s.spec.redact(&line, extra),
            None => crate::config::secrets::mask_url_passwords(&line).into_owned(),
        };
        self.logs.record(line);
        let own = matches!(
            e.kind,
            EventKind::AlertFired { .. }
                | EventKind::AlertResolved { .. }
                | EventKind::AlertSent { .. }
                | EventKind::AlertFailed { .. }
        );
        if let (Some(tx), false) = (&self.alerts, own) {
            if tx.try_send(crate::alerts::Input::Event(e.clone())).is_err() {
                self.counters.alert_inputs_dropped += 1;
            }
        }
        tracing::info!(service = e.service.as_deref().unwrap_or("-"), "{text}");
        if let Some(name) = &e.service {
            let stamp = chrono::Local::now().format("%H:%M:%S%.3f");
            if self.services.svcs.contains_key(name) {
                let h = &mut self.exec.entry(name.clone()).or_default().history;
                push(&mut h.events, format!("{stamp} {text}"));
            }
        }
        self.logs.event(e.service.as_deref(), text);
    }
}

/// One line of `events.jsonl`: `time`, `service`, `kind`, the kind's fields, and `text` (the
/// line the merged log shows).
pub fn history_line(e: &Event, text: &str) -> String {
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
        m.insert("text".into(), text.into());
        if !m.contains_key("service") {
            m.insert("service".into(), serde_json::Value::Null);
        }
    }
    v.to_string()
}

pub(super) fn no_reply() -> Response {
    Response::error(ErrorCode::Internal, "the supervisor gave no answer")
}

/// Is a service sampled this tick, and is its CPU measured too? Someone looking (`watched`)
/// or a service never sampled in this run: everything. Otherwise memory every tick where a
/// limit or an alert rule needs it, and everything every `SLOW_SAMPLE` ticks.
fn sampling(tick: u64, watched: bool, unsampled: bool, limited: bool) -> Option<bool> {
    let everything = watched || unsampled || tick.is_multiple_of(SLOW_SAMPLE);
    (everything || limited).then_some(everything)
}

/// The alert rules that read memory samples.
fn memory_rules(
    config: Option<&crate::config::alerts::AlertsConfig>,
) -> Vec<crate::config::alerts::Rule> {
    config
        .map(|c| {
            c.rules
                .iter()
                .filter(|r| matches!(r.condition, crate::config::alerts::Condition::Memory { .. }))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_viewer_the_limits_and_the_slow_period() {
        // Nobody looking, no limit: every SLOW_SAMPLE-th tick only.
        let due: Vec<u64> = (1..=30)
            .filter(|t| sampling(*t, false, false, false).is_some())
            .collect();
        assert_eq!(due, vec![10, 20, 30]);
        // A limit: memory every tick, CPU on the slow period.
        assert_eq!(sampling(3, false, false, true), Some(false));
        assert_eq!(sampling(10, false, false, true), Some(true));
        // Someone looking, or a new run: everything now.
        assert_eq!(sampling(3, true, false, false), Some(true));
        assert_eq!(sampling(3, false, true, false), Some(true));
    }
}
