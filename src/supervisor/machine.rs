//! The pure core: `step(services, input, now) -> actions`. Every decision of the supervisor
//! is made here, with no I/O, no clock reads and no spawning, so it is tested with plain
//! values (`machine_tests.rs`). The actor feeds it inputs and carries out its actions.
//!
//! Lifecycle decisions live in this file; user verbs in `requests.rs`, reload in
//! `reload.rs`, read-only views in `view.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::action::{Action, HistoryList, SystemdNote};
use super::event::{millis, Event, EventKind};
use super::state::{merge_after_stop, AfterStop, Run, State, Svc};
use super::ProbeKind;
use crate::config::{Config, DepCondition, EnvVar};
use crate::control::proto::{ExitInfo, Health, RestartReason, TreeKind};
use crate::resources::Sample;

/// A failed start (exec error, exit before ready) waits at least this long, so a zero
/// backoff cannot spin.
pub const MIN_FAILED_START_DELAY: Duration = Duration::from_millis(100);
/// Leftovers of an exited run get at most this long after the stop signal before SIGKILL.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// All service state: the one value the actor owns.
pub struct Services {
    /// The config without its services (`services` is empty): each spec lives in its `Svc`
    /// alone, so the daemon holds one copy of every spec, environment included.
    pub config: Config,
    pub svcs: BTreeMap<String, Svc>,
    pub shutting_down: bool,
    /// READY=1 went to our own manager (reset by a reload).
    pub ready_sent: bool,
    /// `Boot` happened: before it (while an earlier daemon's leftovers are reaped)
    /// nothing has been asked to start, so nothing has settled either.
    pub booted: bool,
    /// The last STATUS= sent to systemd.
    last_status: String,
    next_token: u64,
}

impl Services {
    pub fn new(mut config: Config) -> Services {
        let svcs = std::mem::take(&mut config.services)
            .into_iter()
            .map(|(n, s)| (n, Svc::new(s)))
            .collect();
        Services {
            config,
            svcs,
            shutting_down: false,
            ready_sent: false,
            booted: false,
            last_status: String::new(),
            next_token: 0,
        }
    }

    /// Shutdown has finished: every service is down.
    pub fn all_down(&self) -> bool {
        self.svcs.values().all(|s| s.state().is_down())
    }
}

/// A notify datagram whose sender the actor has already checked belongs to the service.
pub type NotifyFields = Vec<(String, String)>;

#[derive(Debug, Clone)]
pub enum Input {
    /// The daemon started: start every autostart service.
    Boot,
    Request(super::requests::UserRequest),
    Spawned {
        service: String,
        run: u64,
        pid: i32,
        start_ticks: u64,
        tree: TreeKind,
        env: BTreeMap<String, EnvVar>,
        /// The child could not join its cgroup (it runs, tracked by markers).
        cgroup_error: Option<String>,
    },
    SpawnFailed {
        service: String,
        run: u64,
        error: String,
    },
    Exited {
        service: String,
        run: u64,
        exit: ExitInfo,
    },
    /// What was left of run `run`'s tree is gone; `killed` lists what had to be killed.
    TreeClean {
        service: String,
        run: u64,
        killed: Vec<String>,
    },
    Timer {
        service: String,
        token: u64,
    },
    Probe {
        service: String,
        run: u64,
        kind: ProbeKind,
        result: Result<(), String>,
    },
    Notify {
        service: String,
        fields: NotifyFields,
    },
    Samples(Vec<Sample>),
    LogDropped {
        service: String,
        count: u64,
    },
    /// A new config, already loaded and validated off the actor.
    Reload(Box<Config>),
    Shutdown {
        why: String,
    },
    /// A second SIGTERM during shutdown: SIGKILL every tree.
    ForceKill,
}

/// Feeds one input to the machine; returns what must be done, in order.
pub fn step(services: &mut Services, input: Input, now: Instant) -> Vec<Action> {
    let mut m = Machine {
        s: services,
        now,
        out: Vec::new(),
    };
    m.handle(input);
    m.advance();
    m.out
}

pub(super) struct Machine<'a> {
    pub(super) s: &'a mut Services,
    pub(super) now: Instant,
    pub(super) out: Vec<Action>,
}

impl Machine<'_> {
    pub(super) fn event(&mut self, service: &str, kind: EventKind) {
        self.out.push(Action::Event(Event::of(service, kind)));
    }

    pub(super) fn daemon_event(&mut self, kind: EventKind) {
        self.out.push(Action::Event(Event::daemon(kind)));
    }

    pub(super) fn history(&mut self, service: &str, list: HistoryList, text: String) {
        self.out.push(Action::History {
            service: service.to_string(),
            list,
            text,
        });
    }

    pub(super) fn svc(&mut self, name: &str) -> Option<&mut Svc> {
        self.s.svcs.get_mut(name)
    }

    pub(super) fn set(&mut self, name: &str, to: State) -> bool {
        self.s.svcs.get_mut(name).is_some_and(|s| s.set(to))
    }

    pub(super) fn arm_timer(&mut self, name: &str, after: Duration) {
        self.s.next_token += 1;
        let token = self.s.next_token;
        if let Some(s) = self.s.svcs.get_mut(name) {
            s.timer = token;
            self.out.push(Action::ArmTimer {
                service: name.to_string(),
                token,
                after,
            });
        }
    }

    pub(super) fn cancel_timer(&mut self, name: &str) {
        self.s.next_token += 1;
        let token = self.s.next_token;
        if let Some(s) = self.s.svcs.get_mut(name) {
            s.timer = token;
        }
    }

    pub(super) fn handle(&mut self, input: Input) {
        match input {
            Input::Boot => {
                self.s.booted = true;
                for name in self.s.config.start_order.clone() {
                    if self.s.svcs.get(&name).is_some_and(|s| s.spec.autostart) {
                        self.start(&name, true);
                    }
                }
            }
            Input::Request(req) => self.request(req),
            Input::Spawned {
                service,
                run,
                pid,
                start_ticks,
                tree,
                env,
                cgroup_error,
            } => self.on_spawned(&service, run, pid, start_ticks, tree, env, cgroup_error),
            Input::SpawnFailed {
                service,
                run,
                error,
            } => self.on_spawn_failed(&service, run, error),
            Input::Exited { service, run, exit } => self.on_exit(&service, run, exit),
            Input::TreeClean {
                service,
                run,
                killed,
            } => {
                if !killed.is_empty() {
                    self.event(
                        &service,
                        EventKind::OrphansReaped {
                            processes: killed,
                            earlier_daemon: false,
                        },
                    );
                }
                if self.s.svcs.get(&service).is_some_and(|s| s.runs == run) {
                    self.finish_stop(&service);
                }
            }
            Input::Timer { service, token } => self.on_timer(&service, token),
            Input::Probe {
                service,
                run,
                kind,
                result,
            } => self.on_probe(&service, run, kind, result),
            Input::Notify { service, fields } => self.on_notify(&service, fields),
            Input::Samples(samples) => self.on_samples(samples),
            Input::LogDropped { service, count } => {
                if let Some(s) = self.svc(&service) {
                    s.log_dropped += count;
                }
            }
            Input::Reload(config) => self.reload(*config),
            Input::Shutdown { why } => self.begin_shutdown(&why),
            Input::ForceKill => {
                if self.s.shutting_down {
                    self.daemon_event(EventKind::ForceKill);
                    let names: Vec<String> = self.s.svcs.keys().cloned().collect();
                    for name in names {
                        self.kill_tree(&name);
                    }
                } else {
                    self.begin_shutdown("signal");
                }
            }
        }
    }

    // ---- starting -------------------------------------------------------------------

    /// Asks for `name` to run (and its dependencies). `user`: a person asked, so the
    /// restart count and give-up state start afresh.
    pub(super) fn start(&mut self, name: &str, user: bool) {
        let deps: Vec<String> = match self.s.svcs.get(name) {
            Some(s) => s.spec.depends_on.keys().cloned().collect(),
            None => return,
        };
        for d in deps {
            if self
                .s
                .svcs
                .get(&d)
                .is_some_and(|s| s.state().is_down() || matches!(s.state(), State::Backoff { .. }))
            {
                self.start(&d, user);
            }
        }
        let Some(s) = self.svc(name) else { return };
        if user {
            s.restarts = 0;
            s.streak = 0;
        }
        match s.state() {
            State::Stopped | State::Failed | State::Exited | State::Backoff { .. } => {
                s.set(State::Waiting);
                self.cancel_timer(name);
            }
            State::Stopping { .. } => {
                if let Some(then) = s.stopping_then() {
                    *then = merge_after_stop(then.clone(), AfterStop::Start);
                }
            }
            _ => {}
        }
    }

    /// A waiting service whose dependency is down (failed, exited or stopped) with nothing
    /// bringing it back: it stays waiting, but that is settled, not "still starting".
    pub(super) fn blocked(s: &Services, name: &str) -> bool {
        s.svcs.get(name).is_some_and(|svc| {
            svc.spec
                .depends_on
                .keys()
                .any(|d| s.svcs.get(d).is_some_and(|d| d.state().is_down()))
        })
    }

    /// What a waiting service still waits for; empty when it may spawn.
    pub(super) fn unmet(s: &Services, name: &str) -> Vec<String> {
        let Some(svc) = s.svcs.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (dep, cond) in &svc.spec.depends_on {
            let Some(d) = s.svcs.get(dep) else { continue };
            if !condition_met(d, *cond) {
                let cond = format!("{cond:?}").to_lowercase();
                out.push(format!("{dep} to be {cond} (it is {})", d.state().name()));
            }
        }
        out
    }

    /// Moves every service that can move: spawns waiting services whose dependencies are
    /// met; during shutdown, stops services nothing running depends on.
    pub(super) fn advance(&mut self) {
        if self.s.shutting_down {
            // Nothing starts during a shutdown, whatever asked for it.
            let waiting: Vec<String> = self
                .s
                .svcs
                .iter()
                .filter(|(_, s)| *s.state() == State::Waiting)
                .map(|(n, _)| n.clone())
                .collect();
            for n in waiting {
                self.set(&n, State::Stopped);
            }
            // What some service still up depends on waits for it. One set per step, not a
            // walk over every service per live one (a 1000-service shutdown was cubic).
            // `stop_run` only turns live services into stopping ones, which still count as
            // up, so the set holds for the whole loop.
            let needed: std::collections::HashSet<String> = self
                .s
                .svcs
                .values()
                .filter(|o| {
                    !o.state().is_down()
                        && !matches!(o.state(), State::Backoff { .. } | State::Waiting)
                })
                .flat_map(|o| o.spec.depends_on.keys().cloned())
                .collect();
            let stop: Vec<String> = self
                .s
                .config
                .start_order
                .iter()
                .rev()
                .filter(|n| !needed.contains(*n))
                .filter(|n| {
                    self.s
                        .svcs
                        .get(*n)
                        .is_some_and(|s| s.state().live().is_some())
                })
                .cloned()
                .collect();
            for name in stop {
                self.stop_run(&name, AfterStop::Idle);
            }
        } else {
            // Every step ends here (each sample, each spawn): find the few that may start
            // without copying the start order. Starting one does not make another's
            // dependencies met (a spawning service is not ready), so one pass decides.
            let s: &Services = self.s;
            // Most steps find nobody waiting: one walk over the states, no name lookups (a
            // lookup per name per step made a 1000-service start quadratic).
            if !s.svcs.values().any(|s| *s.state() == State::Waiting) {
                self.report_systemd();
                return;
            }
            let ready: Vec<String> = s
                .config
                .start_order
                .iter()
                .filter(|name| {
                    s.svcs
                        .get(*name)
                        .is_some_and(|s| *s.state() == State::Waiting)
                        && Self::unmet(s, name).is_empty()
                })
                .cloned()
                .collect();
            for name in ready {
                self.begin_spawn(&name);
            }
        }
        self.report_systemd();
    }

    pub(super) fn begin_spawn(&mut self, name: &str) {
        let Some(s) = self.svc(name) else { return };
        s.runs += 1;
        let run = s.runs;
        if s.set(State::Spawning { run }) {
            self.out.push(Action::Spawn {
                service: name.to_string(),
                run,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_spawned(
        &mut self,
        name: &str,
        run_id: u64,
        pid: i32,
        start_ticks: u64,
        tree: TreeKind,
        env: BTreeMap<String, EnvVar>,
        cgroup_error: Option<String>,
    ) {
        let now = self.now;
        let ready_sent = self.s.ready_sent;
        let Some(s) = self.svc(name) else { return };
        if *s.state() != (State::Spawning { run: run_id }) {
            return;
        }
        s.spawned_env = env;
        let run = Run::new(run_id, pid, start_ticks, now, tree);
        let command = std::iter::once(s.spec.command.as_str())
            .chain(s.spec.shown_args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let ready = s.spec.ready.clone();
        let grace = s.spec.start_grace;
        if let Some(error) = cgroup_error {
            self.event(name, EventKind::CgroupFallback { error });
        }
        match ready {
            Some(r) => {
                self.set(name, State::Starting(run));
                if r.probe.is_some() {
                    self.out.push(Action::StartProbe {
                        service: name.to_string(),
                        run: run_id,
                        kind: ProbeKind::Ready,
                    });
                }
                self.event(
                    name,
                    EventKind::Spawn {
                        pid,
                        command,
                        ready_timeout_ms: Some(millis(r.timeout)),
                        grace_ms: None,
                    },
                );
                self.arm_timer(name, r.timeout);
                if !ready_sent {
                    // Keep systemd's start timeout from firing while this service is
                    // still inside its own ready timeout.
                    self.out.push(Action::Systemd(SystemdNote::ExtendTimeout(
                        r.timeout + Duration::from_secs(5),
                    )));
                }
            }
            None if grace.is_zero() => {
                self.set(name, State::Running(run));
                self.event(
                    name,
                    EventKind::Spawn {
                        pid,
                        command,
                        ready_timeout_ms: None,
                        grace_ms: Some(0),
                    },
                );
                self.start_health(name, run_id);
            }
            None => {
                self.set(name, State::Starting(run));
                self.event(
                    name,
                    EventKind::Spawn {
                        pid,
                        command,
                        ready_timeout_ms: None,
                        grace_ms: Some(millis(grace)),
                    },
                );
                self.arm_timer(name, grace);
            }
        }
    }

    pub(super) fn on_spawn_failed(&mut self, name: &str, run: u64, error: String) {
        let Some(s) = self.svc(name) else { return };
        if *s.state() != (State::Spawning { run }) {
            return;
        }
        s.last_error = Some(error.clone());
        self.event(
            name,
            EventKind::SpawnFailed {
                error: error.clone(),
            },
        );
        self.recover(name, error, RestartReason::Crash, true, Duration::ZERO);
    }

    pub(super) fn start_health(&mut self, name: &str, run: u64) {
        if self
            .s
            .svcs
            .get(name)
            .is_some_and(|s| s.spec.health.is_some())
        {
            self.out.push(Action::StartProbe {
                service: name.to_string(),
                run,
                kind: ProbeKind::Health,
            });
        }
    }

    pub(super) fn become_ready(&mut self, name: &str, how: &str) {
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        let State::Starting(run) = s.state().clone() else {
            return;
        };
        let (id, took) = (run.id, now.saturating_duration_since(run.started));
        let watchdog = s.spec.watchdog;
        s.set(State::Ready(run));
        self.out.push(Action::StopProbes {
            service: name.to_string(),
        });
        self.event(
            name,
            EventKind::Ready {
                after_ms: millis(took),
                how: how.to_string(),
            },
        );
        self.cancel_timer(name);
        if let Some(w) = watchdog {
            self.arm_timer(name, w);
        }
        self.start_health(name, id);
    }

    // ---- stopping and exits ---------------------------------------------------------

    // ---- daemon-wide --------------------------------------------------------------

    pub(super) fn report_systemd(&mut self) {
        let total = self.s.svcs.len();
        let up = self
            .s
            .svcs
            .values()
            .filter(|s| s.state().is_ready())
            .count();
        let failed = self
            .s
            .svcs
            .values()
            .filter(|s| matches!(s.state(), State::Failed))
            .count();
        let status = format!("{up}/{total} services ready, {failed} failed");
        if !self.s.ready_sent && !self.s.shutting_down && self.s.booted {
            let settled = self.s.svcs.values().filter(|s| s.spec.autostart).all(|s| {
                s.state().is_ready()
                    || matches!(s.state(), State::Failed | State::Exited | State::Stopped)
                    || (*s.state() == State::Waiting && Self::blocked(self.s, &s.spec.name))
            });
            if settled {
                self.s.ready_sent = true;
                self.s.last_status = status.clone();
                self.out
                    .push(Action::Systemd(SystemdNote::Ready(status.clone())));
                self.daemon_event(EventKind::Settled { status });
                return;
            }
        }
        // Every step ends here (each sample, each log drop): tell systemd only a change.
        if status != self.s.last_status {
            self.s.last_status = status.clone();
            self.out.push(Action::Systemd(SystemdNote::Status(status)));
        }
    }
}

/// Has dependency `d` reached `cond`?
pub fn condition_met(d: &Svc, cond: DepCondition) -> bool {
    match cond {
        DepCondition::Started => d.state().live().is_some(),
        DepCondition::Ready => d.state().is_ready(),
        DepCondition::Healthy => {
            d.state().is_ready()
                && (d.spec.health.is_none()
                    || d.state().run().is_some_and(|r| r.health == Health::Healthy))
        }
    }
}
