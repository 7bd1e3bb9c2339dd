//! The actor: the only place that mutates service state. Everything else (child waiters,
//! probes, the notify sockets, the sampler, the control server, signal handlers) sends it a
//! [`Msg`]; it answers on oneshots. Side effects that may block (killing leftovers) run on
//! blocking tasks that report back.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::state::{next_restart, wants_restart, AfterStop, Run, State};
use super::{Msg, ProbeKind};
use crate::config::{self, Config, DepCondition, EnvVar, ServiceSpec};
use crate::control::proto::{
    EnvEntry, ExitInfo, ReloadDiff, Request, Response, ServiceDetail, ServiceStatus,
};
use crate::logs::{pump, LogHandle, Stream};
use crate::probe;
use crate::resources::{self, cgroup, Sample, Target};
use crate::spawn::{self, kill, reaper, tree};
use crate::systemd::Systemd;

const HISTORY: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// Everything the actor knows about one service.
struct Svc {
    spec: ServiceSpec,
    state: State,
    /// Id of the latest run; events of other runs are stale.
    runs: u64,
    /// Token of the one pending timer; a timer firing with another token is stale.
    timer: u64,
    /// Automatic restarts since the last start a user asked for.
    restarts: u32,
    /// Failed runs in a row (reset by a run that lasted `min_uptime`).
    streak: u32,
    last_exit: Option<ExitInfo>,
    last_error: Option<String>,
    health: Health,
    health_fails: u32,
    status_text: Option<String>,
    /// The environment the latest run really got.
    spawned_env: BTreeMap<String, EnvVar>,
    /// Sessions of recent runs: leftovers keep them after the leader died.
    sessions: Vec<i32>,
    cgroup: Option<PathBuf>,
    notify_path: Option<PathBuf>,
    sample: Option<Sample>,
    log_dropped: u64,
    tasks: Vec<JoinHandle<()>>,
    notify_task: Option<JoinHandle<()>>,
    exits: VecDeque<String>,
    probes: VecDeque<String>,
    events: VecDeque<String>,
    last_probe_error: Option<String>,
}

impl Svc {
    fn new(spec: ServiceSpec) -> Svc {
        Svc {
            spec,
            state: State::Stopped,
            runs: 0,
            timer: 0,
            restarts: 0,
            streak: 0,
            last_exit: None,
            last_error: None,
            health: Health::Unknown,
            health_fails: 0,
            status_text: None,
            spawned_env: BTreeMap::new(),
            sessions: Vec::new(),
            cgroup: None,
            notify_path: None,
            sample: None,
            log_dropped: 0,
            tasks: Vec::new(),
            notify_task: None,
            exits: VecDeque::new(),
            probes: VecDeque::new(),
            events: VecDeque::new(),
            last_probe_error: None,
        }
    }

    fn abort_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Gives back what the service holds beyond a run: tasks, its notify socket, its
    /// (empty) cgroup. For a service that is forgotten or a daemon that exits.
    fn release(&mut self) {
        self.abort_tasks();
        if let Some(t) = self.notify_task.take() {
            t.abort();
        }
        if let Some(p) = &self.notify_path {
            let _ = std::fs::remove_file(p);
        }
        if let Some(cg) = &self.cgroup {
            cgroup::remove(cg);
        }
    }
}

fn push(q: &mut VecDeque<String>, line: String) {
    if q.len() >= HISTORY {
        q.pop_front();
    }
    q.push_back(line);
}

fn human(d: Duration) -> String {
    config::units::human_duration(d)
}

pub struct Actor {
    config: Config,
    services: BTreeMap<String, Svc>,
    /// Our marker value, and the part of it shared by every daemon of this state dir.
    instance: String,
    prefix: String,
    logs: LogHandle,
    tx: mpsc::UnboundedSender<Msg>,
    cgroup_root: Option<PathBuf>,
    systemd: Systemd,
    ready_sent: bool,
    shutting_down: bool,
    shutdown_replies: Vec<oneshot::Sender<Response>>,
    next_token: u64,
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
        let services = config
            .services
            .iter()
            .map(|(n, s)| (n.clone(), Svc::new(s.clone())))
            .collect();
        Actor {
            config,
            services,
            instance,
            prefix,
            logs,
            tx,
            cgroup_root,
            systemd,
            ready_sent: false,
            shutting_down: false,
            shutdown_replies: Vec::new(),
            next_token: 0,
        }
    }

    /// Runs until a shutdown has stopped every service.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        self.reap_stale_instances();
        for name in self.config.start_order.clone() {
            self.open_notify_socket(&name);
            if self.services[&name].spec.autostart {
                self.start(&name, true);
            }
        }
        self.advance();
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
            self.advance();
            if self.shutting_down && self.services.values().all(|s| s.state.is_down()) {
                break;
            }
        }
        for s in self.services.values_mut() {
            s.release();
        }
        self.event(None, "all services stopped; daemon exiting".to_string());
        self.logs.flush().await;
        for r in self.shutdown_replies.drain(..) {
            let _ = r.send(Response::Done {
                lines: vec!["all services stopped; daemon exited".into()],
            });
        }
    }

    fn event(&mut self, service: Option<&str>, text: String) {
        // Events reach supervisor.log, `lmctl logs`, `show` and stderr: no secrets in them
        // (a probe error quotes its URL, a spawn its arguments).
        let text = match service.and_then(|n| self.services.get(n)) {
            Some(s) => s.spec.redact(&text, &self.config.supervisor.secret_keys),
            None => config::secrets::mask_url_passwords(&text).into_owned(),
        };
        tracing::info!(service = service.unwrap_or("-"), "{text}");
        if let Some(s) = service.and_then(|n| self.services.get_mut(n)) {
            let stamp = chrono::Local::now().format("%H:%M:%S%.3f");
            push(&mut s.events, format!("{stamp} {text}"));
        }
        self.logs.event(service, text);
    }

    fn arm_timer(&mut self, name: &str, after: Duration) {
        self.next_token += 1;
        let token = self.next_token;
        if let Some(s) = self.services.get_mut(name) {
            s.timer = token;
        }
        let tx = self.tx.clone();
        let service = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Msg::Timer { service, token });
        });
    }

    fn cancel_timer(&mut self, name: &str) {
        self.next_token += 1;
        if let Some(s) = self.services.get_mut(name) {
            s.timer = self.next_token;
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Request { req, reply } => {
                if matches!(req, Request::Shutdown) {
                    self.begin_shutdown("lmctl shutdown");
                    self.shutdown_replies.push(reply);
                } else {
                    let resp = self.request(req);
                    let _ = reply.send(resp);
                }
            }
            Msg::Exited { service, run, exit } => self.on_exit(&service, run, exit),
            Msg::Timer { service, token } => self.on_timer(&service, token),
            Msg::Probe {
                service,
                run,
                kind,
                result,
            } => self.on_probe(&service, run, kind, result),
            Msg::Notify { service, msg } => self.on_notify(&service, msg),
            Msg::TreeClean {
                service,
                run,
                killed,
            } => {
                if !killed.is_empty() {
                    let list: Vec<String> =
                        killed.iter().map(|(p, c)| format!("{p} ({c})")).collect();
                    self.event(
                        Some(&service),
                        format!(
                            "reaped {} leftover process(es) of its tree: {}",
                            killed.len(),
                            list.join(", ")
                        ),
                    );
                }
                if self.services.get(&service).is_some_and(|s| s.runs == run) {
                    self.finish_stop(&service);
                }
            }
            Msg::SampleTargets(reply) => {
                let targets = self
                    .services
                    .values()
                    .filter(|s| s.state.run().is_some() || !s.sessions.is_empty())
                    .map(|s| Target {
                        run: s.state.run().map(|r| r.id),
                        service: s.spec.name.clone(),
                        main_pid: s.state.run().map(|r| r.pid),
                        sessions: s.state.run().map(|r| vec![r.pid]).unwrap_or_default(),
                        cgroup: s.cgroup.clone(),
                    })
                    .collect();
                let _ = reply.send(targets);
            }
            Msg::Samples(samples) => self.on_samples(samples),
            Msg::LogDropped { service, count } => {
                if let Some(s) = self.services.get_mut(&service) {
                    s.log_dropped += count;
                }
            }
            Msg::ChildSignal => {
                let owned: HashSet<i32> = self
                    .services
                    .values()
                    .filter_map(|s| s.state.run().map(|r| r.pid))
                    .collect();
                for (pid, comm) in reaper::reap_adopted(&owned) {
                    tracing::debug!("reaped adopted orphan {pid} ({comm})");
                }
            }
            Msg::Terminate if self.shutting_down => {
                // A second SIGTERM/SIGINT: the operator will not wait for stop timeouts.
                self.event(
                    None,
                    "second stop signal: SIGKILL to every remaining process tree".into(),
                );
                let names: Vec<String> = self.services.keys().cloned().collect();
                for name in names {
                    self.kill_tree(&name);
                }
            }
            Msg::Terminate => self.begin_shutdown("signal"),
            Msg::Reload if self.shutting_down => {
                self.event(None, "SIGHUP ignored: the daemon is shutting down".into());
            }
            Msg::ReloadWith { config, reply } => {
                let resp = if self.shutting_down {
                    Response::error("SHUTTING_DOWN", "the daemon is shutting down")
                } else {
                    self.reload(Some(*config))
                };
                let _ = reply.send(resp);
            }
            Msg::Reload => {
                let resp = self.reload(None);
                if let Response::ConfigErrors { errors } = resp {
                    for e in errors {
                        self.event(None, format!("reload refused: {e}"));
                    }
                }
            }
            Msg::Alive(reply) => {
                let _ = reply.send(());
            }
            Msg::HasService(name, reply) => {
                let _ = reply.send(self.services.contains_key(&name));
            }
        }
    }

    // ---- starting -------------------------------------------------------------------

    /// Asks for `name` to run (and its dependencies). `user`: a person asked, so the
    /// restart count and give-up state start afresh.
    fn start(&mut self, name: &str, user: bool) {
        let deps: Vec<String> = match self.services.get(name) {
            Some(s) => s.spec.depends_on.keys().cloned().collect(),
            None => return,
        };
        for d in deps {
            if self
                .services
                .get(&d)
                .is_some_and(|s| s.state.is_down() || matches!(s.state, State::Backoff { .. }))
            {
                self.start(&d, user);
            }
        }
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        if user {
            s.restarts = 0;
            s.streak = 0;
        }
        match &mut s.state {
            State::Stopped | State::Failed | State::Exited | State::Backoff { .. } => {
                s.state = State::Waiting;
                self.cancel_timer(name);
            }
            State::Stopping { then, .. } if *then != AfterStop::Remove => *then = AfterStop::Start,
            _ => {}
        }
    }

    /// A waiting service whose dependency is down (failed, exited or stopped) with nothing
    /// bringing it back: it stays waiting, but that is settled, not "still starting".
    fn blocked(&self, name: &str) -> bool {
        self.services.get(name).is_some_and(|s| {
            s.spec
                .depends_on
                .keys()
                .any(|d| self.services.get(d).is_some_and(|d| d.state.is_down()))
        })
    }

    /// What a waiting service still waits for; empty when it may spawn.
    fn unmet(&self, name: &str) -> Vec<String> {
        let Some(s) = self.services.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (dep, cond) in &s.spec.depends_on {
            let Some(d) = self.services.get(dep) else {
                continue;
            };
            let ok = match cond {
                DepCondition::Started => {
                    d.state.run().is_some() && !matches!(d.state, State::Stopping { .. })
                }
                DepCondition::Ready => d.state.is_ready(),
                DepCondition::Healthy => {
                    d.state.is_ready() && (d.spec.health.is_none() || d.health == Health::Healthy)
                }
            };
            if !ok {
                let cond = format!("{cond:?}").to_lowercase();
                out.push(format!("{dep} to be {cond} (it is {})", d.state.name()));
            }
        }
        out
    }

    /// Moves every service that can move: spawns waiting services whose dependencies are
    /// met; during shutdown, stops services nothing running depends on.
    fn advance(&mut self) {
        if self.shutting_down {
            // Nothing starts during a shutdown, whatever asked for it.
            for svc in self.services.values_mut() {
                if svc.state == State::Waiting {
                    svc.state = State::Stopped;
                }
            }
            let names: Vec<String> = self.config.start_order.iter().rev().cloned().collect();
            for name in names {
                let Some(s) = self.services.get(&name) else {
                    continue;
                };
                if s.state.run().is_none() || matches!(s.state, State::Stopping { .. }) {
                    continue;
                }
                let needed = self.services.values().any(|o| {
                    o.spec.depends_on.contains_key(&name)
                        && !o.state.is_down()
                        && !matches!(o.state, State::Backoff { .. } | State::Waiting)
                });
                if !needed {
                    self.stop_run(&name, AfterStop::Idle);
                }
            }
        } else {
            let mut progress = true;
            while progress {
                progress = false;
                for name in self.config.start_order.clone() {
                    if self
                        .services
                        .get(&name)
                        .is_some_and(|s| s.state == State::Waiting)
                        && self.unmet(&name).is_empty()
                    {
                        self.spawn_run(&name);
                        progress = true;
                    }
                }
            }
        }
        self.report_systemd();
    }

    fn open_notify_socket(&mut self, name: &str) {
        let Some(s) = self.services.get(name) else {
            return;
        };
        if !s.spec.ready.as_ref().is_some_and(|r| r.notify) || s.notify_task.is_some() {
            return;
        }
        let dir = self.config.supervisor.state_dir.join("notify");
        let path = dir.join(format!("{name}.sock"));
        let bound = std::fs::create_dir_all(&dir).and_then(|_| probe::notify::bind(&path));
        match bound {
            Ok(sock) => {
                let tx = self.tx.clone();
                let service = name.to_string();
                let task = tokio::spawn(async move {
                    while let Ok(msg) = probe::notify::recv(&sock).await {
                        if tx
                            .send(Msg::Notify {
                                service: service.clone(),
                                msg,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                });
                if let Some(s) = self.services.get_mut(name) {
                    s.notify_path = Some(path);
                    s.notify_task = Some(task);
                }
            }
            Err(e) => self.event(
                Some(name),
                format!("cannot open its notify socket {}: {e}", path.display()),
            ),
        }
    }

    fn spawn_run(&mut self, name: &str) {
        self.open_notify_socket(name);
        if let Some(root) = self.cgroup_root.clone() {
            if let Some(s) = self.services.get_mut(name) {
                if s.cgroup.is_none() {
                    s.cgroup = cgroup::service_dir(&root, name);
                }
            }
        }
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        s.runs += 1;
        let run_id = s.runs;
        s.health = Health::Unknown;
        s.health_fails = 0;
        s.status_text = None;
        s.last_probe_error = None;
        let notify = s.spec.ready.as_ref().is_some_and(|r| r.notify);
        let extras = spawn::SpawnExtras {
            instance: &self.instance,
            notify_socket: if notify {
                s.notify_path.as_deref()
            } else {
                None
            },
            watchdog: s.spec.watchdog,
            cgroup: s.cgroup.as_deref(),
        };
        match spawn::spawn(&s.spec, &extras) {
            Err(e) => {
                s.last_error = Some(e.clone());
                s.state = State::Stopping {
                    run: None,
                    then: AfterStop::Idle,
                };
                self.event(Some(name), format!("failed to start: {e}"));
                self.end_run(
                    name,
                    AfterStop::Recover {
                        reason: e,
                        failed_start: true,
                        uptime: Duration::ZERO,
                    },
                );
            }
            Ok(sp) => {
                let run = Run {
                    id: run_id,
                    pid: sp.pid,
                    started: Instant::now(),
                };
                s.spawned_env = sp.env;
                s.sessions.retain(|p| *p != sp.pid);
                s.sessions.push(sp.pid);
                if s.sessions.len() > 4 {
                    s.sessions.remove(0);
                }
                let mut child = sp.child;
                let svc_name: Arc<str> = name.into();
                for (stream, reader) in
                    [
                        (
                            Stream::Out,
                            child.stdout.take().map(|r| {
                                Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>
                            }),
                        ),
                        (
                            Stream::Err,
                            child.stderr.take().map(|r| {
                                Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>
                            }),
                        ),
                    ]
                {
                    if let Some(reader) = reader {
                        let tx = self.tx.clone();
                        let service = name.to_string();
                        let on_drop: pump::DropReport = Box::new(move |count| {
                            let _ = tx.send(Msg::LogDropped {
                                service: service.clone(),
                                count,
                            });
                        });
                        tokio::spawn(pump::pump(
                            reader,
                            svc_name.clone(),
                            stream,
                            self.logs.clone(),
                            on_drop,
                        ));
                    }
                }
                let tx = self.tx.clone();
                let service = name.to_string();
                tokio::spawn(async move {
                    let exit = match child.wait().await {
                        Ok(st) => {
                            use std::os::unix::process::ExitStatusExt;
                            ExitInfo {
                                code: st.code(),
                                signal: st.signal(),
                            }
                        }
                        Err(_) => ExitInfo {
                            code: None,
                            signal: None,
                        },
                    };
                    let _ = tx.send(Msg::Exited {
                        service,
                        run: run_id,
                        exit,
                    });
                });
                let ready = s.spec.ready.clone();
                let cmdline = std::iter::once(s.spec.command.as_str())
                    .chain(s.spec.shown_args.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" ");
                match ready {
                    Some(r) => {
                        s.state = State::Starting(run);
                        if let Some(p) = r.probe.clone() {
                            let tx = self.tx.clone();
                            let service = name.to_string();
                            s.tasks
                                .push(tokio::spawn(ready_probe_loop(tx, service, run_id, p)));
                        }
                        self.event(
                            Some(name),
                            format!(
                                "spawned pid {} ({cmdline}); waiting up to {} for it to be ready",
                                run.pid,
                                human(r.timeout)
                            ),
                        );
                        self.arm_timer(name, r.timeout);
                        if !self.ready_sent {
                            // Keep systemd's start timeout from firing while this service is
                            // still inside its own ready timeout.
                            let extend = (r.timeout + Duration::from_secs(5)).as_micros();
                            self.systemd
                                .extend_timeout(extend.min(u128::from(u32::MAX)) as u32);
                        }
                    }
                    None => {
                        s.state = State::Running(run);
                        self.event(Some(name), format!("spawned pid {} ({cmdline})", run.pid));
                        self.start_health(name, run_id);
                    }
                }
            }
        }
    }

    fn start_health(&mut self, name: &str, run: u64) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        if let Some(h) = s.spec.health.clone() {
            let tx = self.tx.clone();
            let service = name.to_string();
            s.tasks.push(tokio::spawn(async move {
                tokio::time::sleep(h.start_period).await;
                let mut tick = tokio::time::interval(h.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let result = probe::check(&h.probe, h.timeout).await;
                    if tx
                        .send(Msg::Probe {
                            service: service.clone(),
                            run,
                            kind: ProbeKind::Health,
                            result,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            }));
        }
    }

    fn become_ready(&mut self, name: &str, how: &str) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        let State::Starting(run) = s.state else {
            return;
        };
        s.state = State::Ready(run);
        s.abort_tasks();
        let took = run.started.elapsed();
        let watchdog = s.spec.watchdog;
        self.event(Some(name), format!("ready after {} ({how})", human(took)));
        self.cancel_timer(name);
        if let Some(w) = watchdog {
            self.arm_timer(name, w);
        }
        self.start_health(name, run.id);
    }

    // ---- stopping and exits ---------------------------------------------------------

    /// Sends the stop signal to the run's process group and arms the stop timeout.
    fn stop_run(&mut self, name: &str, then: AfterStop) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = s.state.run() else {
            return;
        };
        if let State::Stopping { then: t, .. } = &mut s.state {
            *t = merge_after_stop(t.clone(), then);
            return;
        }
        s.abort_tasks();
        let sig = s.spec.stop_signal();
        let timeout = s.spec.stop_timeout;
        s.state = State::Stopping {
            run: Some(run),
            then,
        };
        kill::signal_group(run.pid, sig);
        self.event(
            Some(name),
            format!(
                "sent {} to process group {}; SIGKILL in {}",
                sig.as_str(),
                run.pid,
                human(timeout)
            ),
        );
        self.arm_timer(name, timeout);
    }

    /// SIGKILL to everything of the tree: the group, the cgroup and every member found.
    fn kill_tree(&mut self, name: &str) {
        let Some(s) = self.services.get(name) else {
            return;
        };
        if let Some(run) = s.state.run() {
            kill::signal_group(run.pid, Signal::SIGKILL);
        }
        if let Some(cg) = &s.cgroup {
            cgroup::kill(cg);
        }
        let snap = tree::Snapshot::take();
        for p in resources::leftovers(&snap, name, &self.prefix, &s.sessions, s.cgroup.as_deref()) {
            kill::signal_checked(p.pid, p.start_time, Signal::SIGKILL);
        }
    }

    fn on_exit(&mut self, name: &str, run_id: u64, exit: ExitInfo) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = s.state.run().filter(|r| r.id == run_id) else {
            return;
        };
        s.abort_tasks();
        let uptime = run.started.elapsed();
        s.last_exit = Some(exit);
        let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        push(
            &mut s.exits,
            format!("{stamp} pid {} {exit} after {}", run.pid, human(uptime)),
        );
        let was_starting = matches!(s.state, State::Starting(_));
        let then = match &s.state {
            State::Stopping { then, .. } => then.clone(),
            _ => {
                let failed_start = was_starting;
                if failed_start {
                    s.last_error = Some(format!("exited with {exit} before it was ready"));
                } else if exit.code != Some(0) {
                    s.last_error = Some(format!("exited with {exit} after {}", human(uptime)));
                }
                if wants_restart(s.spec.restart, &s.spec.stop_exit_codes, Some(exit)) {
                    AfterStop::Recover {
                        reason: format!("exited with {exit}"),
                        failed_start,
                        uptime,
                    }
                } else {
                    AfterStop::Exited
                }
            }
        };
        self.event(
            Some(name),
            format!("pid {} exited with {exit} after {}", run.pid, human(uptime)),
        );
        self.end_run(name, then);
    }

    /// The main process is gone: reap what is left of its tree, then `finish_stop`.
    fn end_run(&mut self, name: &str, then: AfterStop) {
        self.cancel_timer(name);
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        s.state = State::Stopping { run: None, then };
        let run = s.runs;
        let left = resources::leftovers_now(name, &self.prefix, &s.sessions, s.cgroup.as_deref());
        if left.is_empty() {
            s.sessions.clear();
            self.finish_stop(name);
            return;
        }
        let sig = s.spec.stop_signal();
        let grace = s.spec.stop_timeout.min(Duration::from_secs(2));
        let cg = s.cgroup.clone();
        let tx = self.tx.clone();
        let service = name.to_string();
        s.sessions.clear();
        tokio::task::spawn_blocking(move || {
            let killed = resources::kill_leftovers(left, sig, grace);
            if let Some(cg) = cg {
                if cgroup::populated(&cg) {
                    cgroup::kill(&cg);
                }
            }
            let _ = tx.send(Msg::TreeClean {
                service,
                run,
                killed,
            });
        });
    }

    fn finish_stop(&mut self, name: &str) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        let State::Stopping { run: None, then } = s.state.clone() else {
            return;
        };
        match then {
            AfterStop::Idle => {
                s.state = State::Stopped;
                self.event(Some(name), "stopped".into());
            }
            AfterStop::Exited => {
                s.state = State::Exited;
            }
            AfterStop::Start => {
                s.state = State::Waiting;
            }
            AfterStop::Remove => {
                s.release();
                self.services.remove(name);
                self.event(
                    Some(name),
                    "removed from the config: stopped and forgotten".into(),
                );
            }
            AfterStop::Recover {
                reason,
                failed_start,
                uptime,
            } => {
                if self.shutting_down {
                    s.state = State::Stopped;
                    return;
                }
                let (min_uptime, max_restarts, backoff) = (
                    s.spec.min_uptime,
                    s.spec.max_restarts,
                    s.spec.backoff.clone(),
                );
                match next_restart(
                    &mut s.streak,
                    failed_start,
                    uptime,
                    min_uptime,
                    max_restarts,
                    &backoff,
                ) {
                    Ok(delay) => {
                        s.restarts += 1;
                        s.state = State::Backoff {
                            until: Instant::now() + delay,
                        };
                        let streak = s.streak;
                        self.event(
                            Some(name),
                            format!(
                                "restarting in {} ({reason}; failed runs in a row: {streak})",
                                human(delay)
                            ),
                        );
                        if delay.is_zero() && !uptime.is_zero() {
                            // No timer round trip: `advance` spawns it in this same turn.
                            if let Some(s) = self.services.get_mut(name) {
                                s.state = State::Waiting;
                            }
                        } else {
                            // A start that failed at once (exec error) waits at least a
                            // moment, so a zero backoff cannot spin the actor.
                            self.arm_timer(name, delay.max(Duration::from_millis(100)));
                        }
                    }
                    Err(n) => {
                        let err = format!(
                            "gave up after {n} failed runs in a row (max_restarts = {max_restarts}); last: {reason}. Fix the cause, then run `lmctl restart {name}`"
                        );
                        s.last_error = Some(err.clone());
                        s.state = State::Failed;
                        self.event(Some(name), format!("failed: {err}"));
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, name: &str, token: u64) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        if s.timer != token {
            return;
        }
        match s.state.clone() {
            State::Backoff { .. } => {
                s.state = State::Waiting;
            }
            State::Starting(_) => {
                let timeout = s.spec.ready.as_ref().map(|r| r.timeout).unwrap_or_default();
                let how = match s.spec.ready.as_ref() {
                    Some(r) if r.notify => "no READY=1 on its NOTIFY_SOCKET".to_string(),
                    Some(r) => match (&r.probe, &s.last_probe_error) {
                        (_, Some(e)) => format!("last probe: {e}"),
                        (Some(p), None) => format!("{} never succeeded", probe::describe(p)),
                        _ => String::new(),
                    },
                    None => String::new(),
                };
                let reason = format!("not ready within {} ({how})", human(timeout));
                s.last_error = Some(reason.clone());
                self.event(Some(name), format!("{reason}: stopping it"));
                self.stop_run(
                    name,
                    AfterStop::Recover {
                        reason,
                        failed_start: true,
                        uptime: Duration::ZERO,
                    },
                );
            }
            State::Stopping { run: Some(run), .. } => {
                let timeout = s.spec.stop_timeout;
                self.event(
                    Some(name),
                    format!(
                        "pid {} did not stop within {}: sending SIGKILL to its whole tree",
                        run.pid,
                        human(timeout)
                    ),
                );
                self.kill_tree(name);
            }
            State::Ready(run) | State::Running(run) => {
                let w = s.spec.watchdog.unwrap_or_default();
                let reason = format!("watchdog: no WATCHDOG=1 within {}", human(w));
                s.last_error = Some(reason.clone());
                self.event(Some(name), format!("{reason}: restarting it"));
                let uptime = run.started.elapsed();
                self.stop_run(
                    name,
                    AfterStop::Recover {
                        reason,
                        failed_start: false,
                        uptime,
                    },
                );
            }
            _ => {}
        }
    }

    fn on_probe(&mut self, name: &str, run_id: u64, kind: ProbeKind, result: Result<(), String>) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        let Some(run) = s.state.run().filter(|r| r.id == run_id) else {
            return;
        };
        if matches!(s.state, State::Stopping { .. }) {
            // The run is ending anyway; a late probe result must not change how.
            return;
        }
        let stamp = chrono::Local::now().format("%H:%M:%S%.3f");
        match (kind, result) {
            (ProbeKind::Ready, Ok(())) => {
                push(&mut s.probes, format!("{stamp} ready probe ok"));
                self.become_ready(name, "probe passed");
            }
            (ProbeKind::Ready, Err(e)) => {
                push(&mut s.probes, format!("{stamp} ready probe: {e}"));
                s.last_probe_error = Some(e);
            }
            (ProbeKind::Health, Ok(())) => {
                if s.health != Health::Healthy {
                    push(&mut s.probes, format!("{stamp} health ok"));
                }
                s.health = Health::Healthy;
                s.health_fails = 0;
                if let State::Unhealthy(r) = s.state {
                    s.state = State::Ready(r);
                }
            }
            (ProbeKind::Health, Err(e)) => {
                s.health_fails += 1;
                push(
                    &mut s.probes,
                    format!(
                        "{stamp} health failed ({}/{}): {e}",
                        s.health_fails,
                        s.spec.health.as_ref().map(|h| h.retries).unwrap_or(0)
                    ),
                );
                let retries = s.spec.health.as_ref().map(|h| h.retries).unwrap_or(1);
                let fails = s.health_fails;
                self.event(
                    Some(name),
                    format!("health probe failed ({fails}/{retries}): {e}"),
                );
                let Some(s) = self.services.get_mut(name) else {
                    return;
                };
                if fails >= retries && s.health != Health::Unhealthy {
                    s.health = Health::Unhealthy;
                    let reason =
                        format!("unhealthy: {retries} health probes failed in a row, last: {e}");
                    s.last_error = Some(reason.clone());
                    if s.spec.restart == crate::config::RestartPolicy::Never {
                        s.state = State::Unhealthy(run);
                        self.event(Some(name), reason);
                    } else {
                        self.event(Some(name), format!("{reason}: restarting it"));
                        self.stop_run(
                            name,
                            AfterStop::Recover {
                                reason,
                                failed_start: false,
                                uptime: run.started.elapsed(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Is `pid` the service's main process or inside its tree (descendant or session)?
    fn pid_belongs(&self, name: &str, pid: i32) -> bool {
        let Some(run) = self.services.get(name).and_then(|s| s.state.run()) else {
            return false;
        };
        if pid == run.pid {
            return true;
        }
        let mut cur = pid;
        for _ in 0..64 {
            match tree::read_proc(cur) {
                Some(p) if p.sid == run.pid || p.ppid == run.pid => return true,
                Some(p) if p.ppid > 1 => cur = p.ppid,
                _ => return false,
            }
        }
        false
    }

    fn on_notify(&mut self, name: &str, msg: crate::probe::notify::NotifyMessage) {
        let Some(pid) = msg.pid else { return };
        if !self.pid_belongs(name, pid) {
            self.event(
                Some(name),
                format!(
                    "ignored a notify message from pid {pid}, which is not part of the service"
                ),
            );
            return;
        }
        for (k, v) in msg.fields {
            match k.as_str() {
                "READY" if v == "1" => {
                    let notify = self
                        .services
                        .get(name)
                        .and_then(|s| s.spec.ready.as_ref())
                        .is_some_and(|r| r.notify);
                    if notify {
                        self.become_ready(name, "READY=1");
                    }
                }
                "STATUS" => {
                    if let Some(s) = self.services.get_mut(name) {
                        s.status_text = Some(v);
                    }
                }
                "STOPPING" if v == "1" => {
                    self.event(Some(name), "says it is stopping (STOPPING=1)".into())
                }
                "WATCHDOG" if v == "1" => {
                    let w = self
                        .services
                        .get(name)
                        .filter(|s| matches!(s.state, State::Ready(_)))
                        .and_then(|s| s.spec.watchdog);
                    if let Some(w) = w {
                        self.arm_timer(name, w);
                    }
                }
                "WATCHDOG" if v == "trigger" => {
                    if let Some(run) = self.services.get(name).and_then(|s| s.state.run()) {
                        let reason = "asked for a watchdog restart (WATCHDOG=trigger)".to_string();
                        self.event(Some(name), reason.clone());
                        self.stop_run(
                            name,
                            AfterStop::Recover {
                                reason,
                                failed_start: false,
                                uptime: run.started.elapsed(),
                            },
                        );
                    }
                }
                "MAINPID" => self.event(
                    Some(name),
                    format!(
                        "sent MAINPID={v}; the supervisor keeps tracking the process it spawned"
                    ),
                ),
                _ => {}
            }
        }
    }

    fn on_samples(&mut self, samples: Vec<Sample>) {
        for sample in samples {
            let name = sample.service.clone();
            let Some(s) = self.services.get_mut(&name) else {
                continue;
            };
            if sample.run != s.state.run().map(|r| r.id) {
                // Measured for a run that has ended since: not this run's memory.
                continue;
            }
            let over = s.spec.max_memory.filter(|max| sample.memory_bytes > *max);
            let run = s.state.run();
            let live = matches!(
                s.state,
                State::Starting(_) | State::Running(_) | State::Ready(_) | State::Unhealthy(_)
            );
            let used = sample.memory_bytes;
            let source = sample.memory_source;
            let count = sample.procs.len();
            // Only a memory restart needs the biggest processes: sort then, not every tick.
            let top = (over.is_some() && live).then(|| {
                let mut top = sample.procs.clone();
                top.sort_by_key(|p| std::cmp::Reverse(p.pss_bytes.unwrap_or(p.rss_bytes)));
                top
            });
            s.sample = Some(sample);
            if let (Some(max), Some(run), Some(top)) = (over, run, top) {
                let biggest: Vec<String> = top
                    .iter()
                    .take(3)
                    .map(|p| {
                        format!(
                            "{} {} {}",
                            p.pid,
                            p.command.split(' ').next().unwrap_or(""),
                            config::units::human_bytes(p.pss_bytes.unwrap_or(p.rss_bytes))
                        )
                    })
                    .collect();
                let reason = format!(
                    "memory {} ({source}, {} processes) over max_memory {}; biggest: {}",
                    config::units::human_bytes(used),
                    count,
                    config::units::human_bytes(max),
                    biggest.join(", ")
                );
                s.last_error = Some(reason.clone());
                self.event(Some(&name), format!("{reason}: restarting it"));
                self.stop_run(
                    &name,
                    AfterStop::Recover {
                        reason,
                        failed_start: false,
                        uptime: run.started.elapsed(),
                    },
                );
            }
        }
    }

    // ---- daemon-wide --------------------------------------------------------------

    fn begin_shutdown(&mut self, why: &str) {
        if !self.shutting_down {
            self.systemd.stopping();
            self.event(
                None,
                format!(
                    "shutting down ({why}): stopping every service in reverse dependency order"
                ),
            );
        }
        self.shutting_down = true;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let timer = if let Some(s) = self.services.get_mut(&name) {
                match s.state {
                    State::Waiting | State::Backoff { .. } => {
                        s.state = State::Stopped;
                        true
                    }
                    State::Stopping { ref mut then, .. } => {
                        *then = AfterStop::Idle;
                        false
                    }
                    _ => false,
                }
            } else {
                false
            };
            if timer {
                self.cancel_timer(&name);
            }
        }
    }

    /// Leftovers of earlier daemons on this state dir (a crashed or SIGKILLed daemon):
    /// reaped before anything starts, so nothing runs twice.
    fn reap_stale_instances(&mut self) {
        if !self.config.supervisor.reap_orphans {
            return;
        }
        let snap = tree::Snapshot::take();
        let stale = resources::stale_instances(&snap, &self.prefix, &self.instance);
        let mut stale_cgroups = Vec::new();
        if let Some(root) = &self.cgroup_root {
            for name in self.services.keys() {
                let dir = root.join(name);
                if cgroup::populated(&dir) {
                    stale_cgroups.push((name.clone(), dir));
                }
            }
        }
        for (svc, procs) in stale {
            let killed = resources::kill_leftovers(procs, Signal::SIGTERM, Duration::from_secs(2));
            let list: Vec<String> = killed.iter().map(|(p, c)| format!("{p} ({c})")).collect();
            self.event(
                Some(&svc),
                format!(
                    "reaped {} process(es) left by an earlier daemon: {}",
                    killed.len(),
                    list.join(", ")
                ),
            );
        }
        for (svc, dir) in stale_cgroups {
            if cgroup::populated(&dir) {
                let pids = cgroup::procs(&dir);
                cgroup::kill(&dir);
                self.event(
                    Some(&svc),
                    format!(
                        "killed cgroup {} left by an earlier daemon (pids {pids:?})",
                        dir.display()
                    ),
                );
            }
        }
    }

    fn report_systemd(&mut self) {
        let total = self.services.len();
        let up = self
            .services
            .values()
            .filter(|s| s.state.is_ready())
            .count();
        let failed = self
            .services
            .values()
            .filter(|s| matches!(s.state, State::Failed))
            .count();
        let status = format!("{up}/{total} services ready, {failed} failed");
        if !self.ready_sent && !self.shutting_down {
            let settled = self
                .services
                .values()
                .filter(|s| s.spec.autostart)
                .all(|s| {
                    s.state.is_ready()
                        || matches!(s.state, State::Failed | State::Exited | State::Stopped)
                        || (s.state == State::Waiting && self.blocked(&s.spec.name))
                });
            if settled {
                self.ready_sent = true;
                self.systemd.ready(&status);
                self.event(
                    None,
                    format!("every autostart service has settled: {status}"),
                );
                return;
            }
        }
        self.systemd.status(&status);
    }

    // ---- control requests ---------------------------------------------------------

    fn names_or_all(
        &self,
        names: &[String],
        autostart_only: bool,
    ) -> Result<Vec<String>, Response> {
        if names.is_empty() {
            return Ok(self
                .config
                .start_order
                .iter()
                .filter(|n| {
                    self.services
                        .get(*n)
                        .is_some_and(|s| !autostart_only || s.spec.autostart)
                })
                .cloned()
                .collect());
        }
        for n in names {
            if !self.services.contains_key(n) {
                return Err(self.unknown(n));
            }
        }
        Ok(names.to_vec())
    }

    fn unknown(&self, name: &str) -> Response {
        let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
        Response::error(
            "UNKNOWN_SERVICE",
            format!("no service named `{name}`; services: {}", known.join(", ")),
        )
    }

    fn request(&mut self, req: Request) -> Response {
        if self.shutting_down
            && !matches!(
                req,
                Request::Status | Request::Ping | Request::Show { .. } | Request::Env { .. }
            )
        {
            return Response::error(
                "SHUTTING_DOWN",
                "the daemon is shutting down; start it again once it has exited",
            );
        }
        match req {
            Request::Ping => Response::Pong {
                pid: std::process::id(),
                instance: self.instance.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                config: self.config.file.display().to_string(),
                state_dir: self.config.supervisor.state_dir.display().to_string(),
            },
            Request::Status => Response::Status {
                services: self
                    .config
                    .start_order
                    .iter()
                    .filter_map(|n| self.status_of(n))
                    .collect(),
            },
            Request::Start { services } => match self.names_or_all(&services, true) {
                Err(e) => e,
                Ok(names) => {
                    let mut lines = Vec::new();
                    for n in names {
                        let was = self.services[&n].state.name();
                        self.start(&n, true);
                        lines.push(format!(
                            "{n}: {}",
                            if was == "stopped"
                                || was == "failed"
                                || was == "exited"
                                || was == "backoff"
                            {
                                "starting".to_string()
                            } else {
                                format!("already {was}")
                            }
                        ));
                    }
                    Response::Done { lines }
                }
            },
            Request::Stop { services } => match self.names_or_all(&services, false) {
                Err(e) => e,
                Ok(names) => {
                    let mut lines = Vec::new();
                    for n in names.iter().rev() {
                        lines.push(self.user_stop(n));
                    }
                    Response::Done { lines }
                }
            },
            Request::Restart { services } => match self.names_or_all(&services, false) {
                Err(e) => e,
                Ok(names) => {
                    let mut lines = Vec::new();
                    for n in names {
                        if let Some(s) = self.services.get_mut(&n) {
                            s.restarts = 0;
                            s.streak = 0;
                        }
                        if self.services[&n].state.run().is_some() {
                            self.stop_run(&n, AfterStop::Start);
                            lines.push(format!("{n}: restarting"));
                        } else {
                            self.start(&n, true);
                            lines.push(format!("{n}: starting"));
                        }
                    }
                    lines.extend(self.stale_config_warnings());
                    Response::Done { lines }
                }
            },
            Request::Reload => self.reload(None),
            Request::Env { service, reveal } => match self.services.get(&service) {
                None => self.unknown(&service),
                Some(s) => {
                    let env = if s.spawned_env.is_empty() {
                        &s.spec.env
                    } else {
                        &s.spawned_env
                    };
                    let extra = &self.config.supervisor.secret_keys;
                    let vars = env
                        .iter()
                        .map(|(k, v)| {
                            let (value, masked) = if reveal {
                                (v.value.clone(), false)
                            } else {
                                s.spec.shown_env_value(k, &v.value, extra)
                            };
                            EnvEntry {
                                key: k.clone(),
                                value,
                                source: v.source.clone(),
                                masked,
                            }
                        })
                        .collect();
                    Response::Env { service, vars }
                }
            },
            Request::Show { service } => match self.detail(&service) {
                Some(d) => Response::Show {
                    service: Box::new(d),
                },
                None => self.unknown(&service),
            },
            Request::Signal { service, signal } => {
                let Some(s) = self.services.get(&service) else {
                    return self.unknown(&service);
                };
                let sig = match config::units::parse_signal(&signal) {
                    Ok(s) => s,
                    Err(e) => return Response::error("BAD_SIGNAL", e),
                };
                match s.state.run() {
                    None => Response::error(
                        "NOT_RUNNING",
                        format!(
                            "`{service}` has no running process (it is {})",
                            s.state.name()
                        ),
                    ),
                    Some(run) => {
                        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.pid), sig) {
                            Ok(()) => {
                                self.event(
                                    Some(&service),
                                    format!(
                                        "sent {} to pid {} (lmctl signal)",
                                        sig.as_str(),
                                        run.pid
                                    ),
                                );
                                Response::Done {
                                    lines: vec![format!(
                                        "{service}: sent {} to pid {}",
                                        sig.as_str(),
                                        run.pid
                                    )],
                                }
                            }
                            Err(e) => Response::error(
                                "SIGNAL_FAILED",
                                format!("cannot signal pid {}: {e}", run.pid),
                            ),
                        }
                    }
                }
            }
            Request::Logs(_) => Response::error("BAD_REQUEST", "logs are served by the log writer"),
            Request::Shutdown => {
                Response::error("BAD_REQUEST", "shutdown is handled by the actor loop")
            }
        }
    }

    /// `restart` keeps the running config (seed 004 §5.3: `pm2 restart` silently kept the old
    /// env). Say so when the file on disk (or an env file) now says something else.
    fn stale_config_warnings(&self) -> Vec<String> {
        let Ok(disk) = config::load(&self.config.file) else {
            return vec![format!(
                "warning: {} no longer validates; the running config was used (see `lmctl check`)",
                self.config.file.display()
            )];
        };
        let changed: Vec<&str> = self
            .services
            .iter()
            .filter(|(n, s)| {
                disk.services
                    .get(*n)
                    .is_none_or(|d| d.process_differs(&s.spec))
            })
            .map(|(n, _)| n.as_str())
            .chain(
                disk.services
                    .keys()
                    .filter(|n| !self.services.contains_key(*n))
                    .map(String::as_str),
            )
            .collect();
        if changed.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "warning: the config on disk differs from the running one for {}; restart keeps the running config: run `lmctl reload` to apply the change",
            changed.join(", ")
        )]
    }

    fn user_stop(&mut self, name: &str) -> String {
        let Some(s) = self.services.get_mut(name) else {
            return format!("{name}: unknown");
        };
        match s.state {
            State::Waiting | State::Backoff { .. } | State::Failed | State::Exited => {
                s.state = State::Stopped;
                self.cancel_timer(name);
                format!("{name}: stopped")
            }
            State::Stopped => format!("{name}: already stopped"),
            State::Stopping { ref mut then, .. } => {
                if *then != AfterStop::Remove {
                    *then = AfterStop::Idle;
                }
                format!("{name}: stopping")
            }
            _ => {
                self.stop_run(name, AfterStop::Idle);
                format!("{name}: stopping")
            }
        }
    }

    fn status_of(&self, name: &str) -> Option<ServiceStatus> {
        let s = self.services.get(name)?;
        let run = s.state.run();
        let sample = s.sample.as_ref().filter(|_| run.is_some());
        Some(ServiceStatus {
            name: name.to_string(),
            state: s.state.name().to_string(),
            pid: run.map(|r| r.pid),
            uptime_ms: run
                .map(|r| r.started.elapsed().as_millis() as u64)
                .unwrap_or(0),
            restarts: s.restarts,
            last_exit: s.last_exit,
            cpu_percent: sample
                .map(|x| (x.cpu_percent * 10.0).round() / 10.0)
                .unwrap_or(0.0),
            memory_bytes: sample.map(|x| x.memory_bytes).unwrap_or(0),
            processes: sample.map(|x| x.procs.len() as u32).unwrap_or(0),
            health: if s.spec.health.is_some() {
                s.health.name()
            } else {
                "unknown"
            }
            .to_string(),
            last_error: s.last_error.clone(),
            log_dropped: s.log_dropped,
            waiting_for: if s.state == State::Waiting {
                self.unmet(name)
            } else {
                Vec::new()
            },
            status_text: s.status_text.clone(),
            tree: if s.cgroup.is_some() {
                "cgroup"
            } else {
                "group+markers"
            }
            .to_string(),
            memory_source: sample
                .map(|x| x.memory_source)
                .unwrap_or(if s.cgroup.is_some() { "cgroup" } else { "pss" })
                .to_string(),
            backoff_ms: match s.state {
                State::Backoff { until } => {
                    Some(until.saturating_duration_since(Instant::now()).as_millis() as u64)
                }
                _ => None,
            },
        })
    }

    fn detail(&self, name: &str) -> Option<ServiceDetail> {
        let s = self.services.get(name)?;
        let extra = &self.config.supervisor.secret_keys;
        let status = self.status_of(name)?;
        let mut cfg = serde_json::to_value(&s.spec).unwrap_or(serde_json::Value::Null);
        // The env has its own verb with secret masking; keep `show` free of values.
        if let Some(obj) = cfg.as_object_mut() {
            let keys: Vec<serde_json::Value> = s
                .spec
                .env
                .keys()
                .map(|k| serde_json::Value::String(k.clone()))
                .collect();
            obj.insert("env".into(), serde_json::Value::Array(keys));
        }
        let sample = s.sample.as_ref().filter(|_| s.state.run().is_some());
        let mut memory = BTreeMap::new();
        if let Some(x) = sample {
            memory.insert("rss_sum".to_string(), x.rss_bytes);
            memory.insert("pss_sum".to_string(), x.pss_bytes);
            if let Some(c) = x.cgroup_bytes {
                memory.insert("cgroup".to_string(), c);
            }
        }
        Some(ServiceDetail {
            status,
            config: cfg,
            tree: sample
                .map(|x| s.spec.redact_procs(&x.procs))
                .unwrap_or_default(),
            memory,
            exits: s.exits.iter().map(|e| s.spec.redact(e, extra)).collect(),
            probes: s.probes.iter().map(|p| s.spec.redact(p, extra)).collect(),
            events: s.events.iter().cloned().collect(),
        })
    }

    /// `loaded`: the config read and validated off the actor; None reads it here.
    fn reload(&mut self, loaded: Option<Config>) -> Response {
        self.systemd.reloading();
        let resp = self.apply_reload(loaded);
        self.ready_sent = false;
        resp
    }

    fn apply_reload(&mut self, loaded: Option<Config>) -> Response {
        let new = match loaded.map_or_else(|| config::load(&self.config.file), Ok) {
            Ok(c) => c,
            Err(errors) => return Response::ConfigErrors { errors },
        };
        let mut diff = ReloadDiff::default();
        if new.supervisor != self.config.supervisor {
            diff.warnings.push(
                "[supervisor] settings changed; they take effect when the daemon restarts".into(),
            );
        }
        if new.logs != self.config.logs {
            diff.warnings
                .push("[logs] settings changed; they take effect when the daemon restarts".into());
        }
        let old_names: Vec<String> = self.services.keys().cloned().collect();
        for name in &old_names {
            if !new.services.contains_key(name) {
                diff.removed.push(name.clone());
            }
        }
        for (name, spec) in &new.services {
            match self.services.get(name) {
                None => diff.added.push(name.clone()),
                Some(s) if s.spec.process_differs(spec) => diff.changed.push(name.clone()),
                Some(_) => diff.unchanged.push(name.clone()),
            }
        }
        // A service removed by an earlier reload and still stopping is back: keep it.
        for (name, spec) in &new.services {
            if let Some(s) = self.services.get_mut(name) {
                if let State::Stopping { then, .. } = &mut s.state {
                    if *then == AfterStop::Remove {
                        *then = if spec.autostart {
                            AfterStop::Start
                        } else {
                            AfterStop::Idle
                        };
                    }
                }
            }
        }
        let supervisor = self.config.supervisor.clone();
        let logs = self.config.logs.clone();
        self.config = Config {
            supervisor,
            logs,
            ..new.clone()
        };
        // Keep removed services in the order until they are gone, so shutdown still sees them.
        for name in &diff.removed {
            self.config.start_order.insert(0, name.clone());
            self.event(
                Some(name),
                "reload: removed from the config; stopping it".into(),
            );
            if self.services[name].state.run().is_some() {
                self.stop_run(name, AfterStop::Remove);
            } else {
                if let Some(s) = self.services.get_mut(name) {
                    s.state = State::Stopping {
                        run: None,
                        then: AfterStop::Remove,
                    };
                }
                self.finish_stop(name);
            }
        }
        for name in &diff.unchanged {
            if let Some(s) = self.services.get_mut(name) {
                s.spec = new.services[name].clone();
            }
        }
        for name in &diff.changed {
            let spec = new.services[name].clone();
            let Some(s) = self.services.get_mut(name) else {
                continue;
            };
            let notify_changed =
                s.spec.ready.as_ref().map(|r| r.notify) != spec.ready.as_ref().map(|r| r.notify);
            s.spec = spec;
            if notify_changed {
                if let Some(t) = s.notify_task.take() {
                    t.abort();
                }
            }
            self.open_notify_socket(name);
            let Some(s) = self.services.get_mut(name) else {
                continue;
            };
            s.restarts = 0;
            s.streak = 0;
            if s.state.run().is_some() {
                self.event(
                    Some(name),
                    "reload: config changed; restarting it with the new config".into(),
                );
                self.stop_run(name, AfterStop::Start);
            } else if matches!(s.state, State::Failed | State::Backoff { .. }) {
                self.start(name, true);
            }
        }
        for name in &diff.added {
            let spec = new.services[name].clone();
            let autostart = spec.autostart;
            self.services.insert(name.clone(), Svc::new(spec));
            self.open_notify_socket(name);
            self.event(Some(name), "reload: added".into());
            if autostart {
                self.start(name, true);
            }
        }
        self.event(
            None,
            format!(
                "reloaded {}: added {:?}, removed {:?}, changed {:?}, unchanged {:?}",
                self.config.file.display(),
                diff.added,
                diff.removed,
                diff.changed,
                diff.unchanged
            ),
        );
        Response::Reload { diff }
    }
}

/// What a stop already under way ends in, when something else asks for another ending.
/// A removal stands; an automatic recovery (crash, probe, memory, watchdog) never overrides
/// what a person asked for (stop or restart); otherwise the latest request wins.
fn merge_after_stop(current: AfterStop, new: AfterStop) -> AfterStop {
    match (&current, &new) {
        (AfterStop::Remove, _) => current,
        (AfterStop::Idle | AfterStop::Start, AfterStop::Recover { .. } | AfterStop::Exited) => {
            current
        }
        _ => new,
    }
}

/// Retries a ready probe until it passes; reports each new error once. The actor's ready
/// timeout ends it (by aborting this task), never the probe itself.
async fn ready_probe_loop(
    tx: mpsc::UnboundedSender<Msg>,
    service: String,
    run: u64,
    p: crate::config::Probe,
) {
    let mut last_err: Option<String> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        match probe::check(&p, Duration::from_secs(2)).await {
            Ok(()) => {
                let _ = tx.send(Msg::Probe {
                    service,
                    run,
                    kind: ProbeKind::Ready,
                    result: Ok(()),
                });
                return;
            }
            Err(e) => {
                if last_err.as_deref() != Some(e.as_str()) {
                    last_err = Some(e.clone());
                    if tx
                        .send(Msg::Probe {
                            service: service.clone(),
                            run,
                            kind: ProbeKind::Ready,
                            result: Err(e),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}
