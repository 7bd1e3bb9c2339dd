//! The machine without processes: table tests for each transition, and a property test
//! that drives random events and user requests through `step` and checks invariants.
//! A small simulated world plays the executor: it answers spawns with pids, keeps timers
//! and pending reaps, and delivers them when a test says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::action::Action;
use super::event::EventKind;
use super::machine::{condition_met, step, Input, Services};
use super::requests::UserRequest;
use super::state::{allowed, Kind, State};
use super::ProbeKind;
use crate::config::{self, Config};
use crate::control::proto::{ExitInfo, Health, MemorySource, OutcomeKind, Response, TreeKind};
use crate::resources::Sample;

fn cfg(text: &str) -> Config {
    let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
    config::parse(Path::new("/nonexistent/supervisor.toml"), text, &env)
        .unwrap_or_else(|e| panic!("test config: {e:?}"))
}

const CRASH: ExitInfo = ExitInfo {
    code: Some(1),
    signal: None,
};
const CLEAN: ExitInfo = ExitInfo {
    code: Some(0),
    signal: None,
};

/// The executor's stand-in. Spawns succeed with fresh pids (or fail when told), timers
/// and reaps wait until the test delivers them.
struct World {
    s: Services,
    now: Instant,
    next_pid: i32,
    fail_spawns: BTreeSet<String>,
    /// (service, token, when)
    timers: Vec<(String, u64, Instant)>,
    /// (service, run) whose leftovers are being reaped.
    reaps: Vec<(String, u64)>,
    /// Processes spawned and not yet exited, by service: (run, pid, spawned at).
    procs: BTreeMap<String, (u64, i32, Instant)>,
    events: Vec<EventKind>,
    /// Every action, for tests that look at order.
    actions: Vec<Action>,
    replies: Vec<Response>,
}

impl World {
    fn new(text: &str) -> World {
        World::with(cfg(text))
    }

    fn with(c: Config) -> World {
        World {
            s: Services::new(c),
            now: Instant::now(),
            next_pid: 100,
            fail_spawns: BTreeSet::new(),
            timers: Vec::new(),
            reaps: Vec::new(),
            procs: BTreeMap::new(),
            events: Vec::new(),
            actions: Vec::new(),
            replies: Vec::new(),
        }
    }

    fn boot(text: &str) -> World {
        let mut w = World::new(text);
        w.feed(Input::Boot);
        w
    }

    fn boot_config(c: Config) -> World {
        let mut w = World::with(c);
        w.feed(Input::Boot);
        w
    }

    /// Feeds an input, carries out the actions like the actor does (a spawn answers at
    /// once), and checks the invariants that hold after every step.
    fn feed(&mut self, input: Input) {
        let mut queue = vec![input];
        while let Some(i) = queue.pop() {
            let acts = step(&mut self.s, i, self.now);
            for a in acts {
                self.actions.push(a.clone());
                match a {
                    Action::Spawn { service, run } => {
                        assert!(
                            !self.procs.contains_key(&service),
                            "{service}: spawned while its previous process still runs"
                        );
                        assert!(
                            !self.reaps.iter().any(|(n, _)| *n == service),
                            "{service}: spawned while its previous tree is still being reaped"
                        );
                        if self.fail_spawns.contains(&service) {
                            queue.push(Input::SpawnFailed {
                                service,
                                run,
                                error: "cannot execute".into(),
                            });
                        } else {
                            self.next_pid += 1;
                            let pid = self.next_pid;
                            self.procs.insert(service.clone(), (run, pid, self.now));
                            queue.push(Input::Spawned {
                                service,
                                run,
                                pid,
                                start_ticks: 1,
                                tree: TreeKind::Cgroup,
                                env: BTreeMap::new(),
                                cgroup_error: None,
                            });
                        }
                    }
                    Action::ArmTimer {
                        service,
                        token,
                        after,
                    } => self.timers.push((service, token, self.now + after)),
                    Action::ReapLeftovers { service, run, .. } => self.reaps.push((service, run)),
                    Action::Event(e) => self.events.push(e.kind),
                    Action::Reply(r) => self.replies.push(r),
                    _ => {}
                }
            }
        }
        for (name, s) in &self.s.svcs {
            assert_eq!(s.refused, 0, "{name}: a transition outside the table");
            assert!(
                !matches!(s.state(), State::Spawning { .. }),
                "{name}: left in spawning"
            );
            // A pid exists only in a state that has a run, and matches the live process.
            if let Some(r) = s.state().run() {
                let p = self.procs.get(name);
                assert_eq!(
                    p.map(|p| p.1),
                    Some(r.pid),
                    "{name}: run without its process"
                );
            }
        }
    }

    fn state(&self, name: &str) -> Kind {
        self.s.svcs[name].state().kind()
    }

    fn pid(&self, name: &str) -> i32 {
        self.s.svcs[name].state().run().map(|r| r.pid).unwrap_or(0)
    }

    fn run_id(&self, name: &str) -> u64 {
        self.s.svcs[name].runs
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Fires the service's pending timer (the latest one armed), moving time to it.
    fn fire(&mut self, name: &str) {
        let i = self
            .timers
            .iter()
            .rposition(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name}: no timer armed"));
        let (service, token, at) = self.timers.remove(i);
        if at > self.now {
            self.now = at;
        }
        self.feed(Input::Timer { service, token });
    }

    fn exit(&mut self, name: &str, exit: ExitInfo) {
        let (run, _, _) = self.procs.remove(name).expect("a live process");
        self.feed(Input::Exited {
            service: name.into(),
            run,
            exit,
        });
    }

    fn clean(&mut self, name: &str) {
        let i = self
            .reaps
            .iter()
            .position(|(n, _)| n == name)
            .expect("a pending reap");
        let (service, run) = self.reaps.remove(i);
        self.feed(Input::TreeClean {
            service,
            run,
            killed: Vec::new(),
        });
    }

    /// The process exits and its tree is gone.
    fn crash(&mut self, name: &str) {
        self.exit(name, CRASH);
        self.clean(name);
    }

    fn user(&mut self, req: UserRequest) -> Response {
        self.feed(Input::Request(req));
        self.replies.pop().expect("a reply")
    }

    fn notify(&mut self, name: &str, k: &str, v: &str) {
        self.feed(Input::Notify {
            service: name.into(),
            fields: vec![(k.into(), v.into())],
        });
    }

    fn probe(&mut self, name: &str, kind: ProbeKind, ok: bool) {
        let run = self.run_id(name);
        self.feed(Input::Probe {
            service: name.into(),
            run,
            kind,
            result: if ok { Ok(()) } else { Err("refused".into()) },
        });
    }

    fn sample(&mut self, name: &str, run: u64, bytes: u64) {
        self.feed(Input::Samples(vec![Sample {
            run: Some(run),
            service: name.into(),
            memory_bytes: bytes,
            memory_source: MemorySource::Pss,
            ..Sample::default()
        }]));
    }

    fn spawns_of(&self, name: &str) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Spawn { service, .. } if service == name))
            .count()
    }
}

fn start(names: &[&str]) -> UserRequest {
    UserRequest::Start {
        services: names.iter().map(|s| s.to_string()).collect(),
        uid: Some(0),
    }
}

fn stop(names: &[&str]) -> UserRequest {
    UserRequest::Stop {
        services: names.iter().map(|s| s.to_string()).collect(),
        uid: Some(0),
    }
}

fn restart(names: &[&str]) -> UserRequest {
    UserRequest::Restart {
        services: names.iter().map(|s| s.to_string()).collect(),
        uid: Some(0),
    }
}

const ONE: &str = r#"
[services.a]
command = "/bin/sh"
backoff = { initial = "100ms", max = "1s", factor = 2.0 }
max_restarts = 3
"#;

// ---- table tests ----------------------------------------------------------------------

#[test]
fn transition_table_is_what_the_docs_say() {
    use Kind::*;
    let expect: &[(Kind, &[Kind])] = &[
        (Stopped, &[Waiting, Stopped, Stopping]),
        (Waiting, &[Spawning, Stopped, Stopping]),
        (Spawning, &[Starting, Running, Backoff, Failed, Stopped]),
        (Starting, &[Running, Ready, Stopping]),
        (Running, &[Stopping, Unhealthy, Running]),
        (Ready, &[Unhealthy, Stopping, Ready]),
        (Unhealthy, &[Ready, Stopping]),
        (
            Stopping,
            &[Stopping, Stopped, Exited, Waiting, Backoff, Failed],
        ),
        (Backoff, &[Waiting, Stopped, Stopping]),
        (Failed, &[Waiting, Stopped, Stopping]),
        (Exited, &[Waiting, Stopped, Stopping]),
    ];
    for (from, tos) in expect {
        for to in Kind::ALL {
            assert_eq!(allowed(*from, to), tos.contains(&to), "{from:?} -> {to:?}");
        }
    }
}

#[test]
fn without_readiness_started_only_after_the_grace() {
    let mut w = World::boot(ONE);
    assert_eq!(w.state("a"), Kind::Starting);
    w.advance(Duration::from_millis(400));
    assert_eq!(w.state("a"), Kind::Starting, "not started before its grace");
    w.fire("a");
    assert_eq!(w.state("a"), Kind::Running);
    assert!(w
        .events
        .iter()
        .any(|e| matches!(e, EventKind::Started { .. })));
}

#[test]
fn exit_within_the_grace_is_a_failed_start() {
    let mut w = World::boot(ONE);
    w.exit(
        "a",
        ExitInfo {
            code: Some(3),
            signal: None,
        },
    );
    assert_eq!(w.state("a"), Kind::Stopping);
    w.clean("a");
    assert_eq!(w.state("a"), Kind::Backoff);
    let err = w.s.svcs["a"].last_error.clone().unwrap_or_default();
    assert!(
        err.contains("exit code 3") && err.contains("before it was started"),
        "{err}"
    );
}

#[test]
fn zero_grace_is_running_at_once() {
    let w = World::boot("[services.a]\ncommand = \"/bin/sh\"\nstart_grace = \"0s\"\n");
    assert_eq!(w.state("a"), Kind::Running);
}

#[test]
fn notify_ready_and_ready_timeout() {
    let text = "[services.a]\ncommand = \"/bin/sh\"\nready = { notify = true, timeout = \"2s\" }\n";
    let mut w = World::boot(text);
    w.notify("a", "READY", "1");
    assert_eq!(w.state("a"), Kind::Ready);

    let mut w = World::boot(text);
    w.fire("a");
    assert_eq!(w.state("a"), Kind::Stopping, "not ready in time: stopped");
    assert!(w
        .events
        .iter()
        .any(|e| matches!(e, EventKind::NotReady { detail } if detail.contains("no READY=1"))));
    w.crash("a");
    assert_eq!(
        w.state("a"),
        Kind::Backoff,
        "a failed start restarts per policy"
    );
}

#[test]
fn crash_backoff_then_failed_after_exactly_max_restarts() {
    let mut w = World::boot(ONE);
    w.fire("a");
    let mut delays = Vec::new();
    for _ in 0..3 {
        w.crash("a");
        assert_eq!(w.state("a"), Kind::Backoff);
        delays.push(w.s.svcs["a"].restarts);
        w.fire("a");
        assert_eq!(w.state("a"), Kind::Starting);
    }
    w.crash("a");
    assert_eq!(w.state("a"), Kind::Failed);
    let got: Vec<u64> = w
        .events
        .iter()
        .filter_map(|e| match e {
            EventKind::Restart { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![100, 200, 400]);
    assert_eq!(w.spawns_of("a"), 4, "one start plus max_restarts restarts");
}

#[test]
fn a_long_run_resets_the_count() {
    let mut w = World::boot(ONE);
    w.fire("a");
    w.crash("a");
    w.fire("a");
    w.fire("a");
    w.advance(Duration::from_secs(60));
    w.crash("a");
    assert_eq!(w.s.svcs["a"].streak, 0);
}

#[test]
fn clean_exit_with_on_failure_is_exited() {
    let mut w = World::boot("[services.a]\ncommand = \"/bin/sh\"\nrestart = \"on-failure\"\n");
    w.fire("a");
    w.exit("a", CLEAN);
    w.clean("a");
    assert_eq!(w.state("a"), Kind::Exited);
}

#[test]
fn spawn_failure_waits_at_least_the_floor() {
    let mut w = World::new("[services.a]\ncommand = \"/bin/sh\"\nbackoff = { initial = \"0s\" }\n");
    w.fail_spawns.insert("a".into());
    w.feed(Input::Boot);
    assert_eq!(w.state("a"), Kind::Backoff);
    let (_, _, at) = w.timers.last().cloned().expect("a timer");
    assert!(at.duration_since(w.now) >= Duration::from_millis(100));
}

#[test]
fn user_stop_escalates_to_sigkill_and_says_so() {
    let mut w = World::boot("[services.a]\ncommand = \"/bin/sh\"\nstop_timeout = \"3s\"\n");
    w.fire("a");
    let r = w.user(stop(&["a"]));
    assert!(
        matches!(&r, Response::Outcomes { outcomes, .. } if outcomes[0].outcome == OutcomeKind::Stopping)
    );
    assert_eq!(w.state("a"), Kind::Stopping);
    w.fire("a");
    assert!(w
        .actions
        .iter()
        .any(|a| matches!(a, Action::KillTree { .. })));
    w.exit(
        "a",
        ExitInfo {
            code: None,
            signal: Some(9),
        },
    );
    assert_eq!(
        w.state("a"),
        Kind::Stopping,
        "stopping until the tree is gone"
    );
    w.clean("a");
    assert_eq!(w.state("a"), Kind::Stopped);
    assert_eq!(w.s.svcs["a"].last_stop, Some((3000, true)));
}

#[test]
fn a_crash_during_a_user_stop_does_not_restart() {
    let mut w = World::boot(ONE);
    w.fire("a");
    w.user(stop(&["a"]));
    w.crash("a");
    assert_eq!(w.state("a"), Kind::Stopped);
}

#[test]
fn stop_during_backoff_cancels_the_timer() {
    let mut w = World::boot(ONE);
    w.fire("a");
    w.crash("a");
    w.user(stop(&["a"]));
    assert_eq!(w.state("a"), Kind::Stopped);
    w.fire("a");
    assert_eq!(w.state("a"), Kind::Stopped, "a stale timer starts nothing");
}

#[test]
fn restart_waits_for_the_old_tree_then_spawns() {
    let mut w = World::boot(ONE);
    w.fire("a");
    let old = w.pid("a");
    let r = w.user(restart(&["a"]));
    assert!(
        matches!(&r, Response::Outcomes { outcomes, .. } if outcomes[0].outcome == OutcomeKind::Restarting)
    );
    w.exit("a", CLEAN);
    assert_eq!(w.spawns_of("a"), 1);
    w.clean("a");
    assert_eq!(w.state("a"), Kind::Starting);
    assert_ne!(w.pid("a"), old);
}

#[test]
fn memory_over_the_limit_restarts_but_a_sample_of_an_old_run_does_not() {
    let text =
        "[services.a]\ncommand = \"/bin/sh\"\nmax_memory = \"100MiB\"\nstart_grace = \"0s\"\n";
    let mut w = World::boot(text);
    let first = w.run_id("a");
    w.crash("a");
    w.fire("a");
    w.sample("a", first, 500 << 20);
    assert_eq!(
        w.state("a"),
        Kind::Running,
        "an old run's sample is not this run's"
    );
    let now = w.run_id("a");
    w.sample("a", now, 50 << 20);
    assert_eq!(w.state("a"), Kind::Running);
    w.sample("a", now, 500 << 20);
    assert_eq!(w.state("a"), Kind::Stopping);
    assert!(w.events.iter().any(
        |e| matches!(e, EventKind::MemoryRestart { memory_bytes, .. } if *memory_bytes == 500 << 20)
    ));
    w.crash("a");
    assert_eq!(
        w.s.svcs["a"].last_restart,
        Some(crate::control::proto::RestartReason::Memory)
    );
}

#[test]
fn health_failures_restart_or_mark_unhealthy() {
    let base = "[services.a]\ncommand = \"/bin/sh\"\nstart_grace = \"0s\"\nhealth = { tcp = \"127.0.0.1:1\", retries = 2 }\n";
    let mut w = World::boot(base);
    w.probe("a", ProbeKind::Health, false);
    assert_eq!(w.state("a"), Kind::Running);
    w.probe("a", ProbeKind::Health, false);
    assert_eq!(w.state("a"), Kind::Stopping);

    let mut w = World::boot(&format!("{base}restart = \"never\"\n"));
    w.probe("a", ProbeKind::Health, false);
    w.probe("a", ProbeKind::Health, false);
    assert_eq!(w.state("a"), Kind::Unhealthy);
    w.probe("a", ProbeKind::Health, true);
    assert_eq!(w.state("a"), Kind::Ready);
    assert_eq!(
        w.s.svcs["a"].state().run().map(|r| r.health),
        Some(Health::Healthy)
    );
}

#[test]
fn health_of_a_run_does_not_survive_into_the_next() {
    let text = "[services.a]\ncommand = \"/bin/sh\"\nstart_grace = \"0s\"\nhealth = { tcp = \"127.0.0.1:1\", retries = 5 }\n";
    let mut w = World::boot(text);
    w.probe("a", ProbeKind::Health, true);
    w.notify("a", "STATUS", "busy");
    w.crash("a");
    w.fire("a");
    let run = w.s.svcs["a"].state().run().cloned().expect("a new run");
    assert_eq!(run.health, Health::Unknown);
    assert_eq!(run.status_text, None);
}

#[test]
fn a_late_probe_result_does_not_change_a_stop() {
    let text = "[services.a]\ncommand = \"/bin/sh\"\nready = { http = \"http://127.0.0.1:1/\", timeout = \"1s\" }\n";
    let mut w = World::boot(text);
    w.user(stop(&["a"]));
    w.probe("a", ProbeKind::Ready, true);
    assert_eq!(w.state("a"), Kind::Stopping);
    w.crash("a");
    assert_eq!(w.state("a"), Kind::Stopped);
}

#[test]
fn watchdog_silence_restarts() {
    let text =
        "[services.a]\ncommand = \"/bin/sh\"\nready = { notify = true }\nwatchdog = \"1s\"\n";
    let mut w = World::boot(text);
    w.notify("a", "READY", "1");
    w.notify("a", "WATCHDOG", "1");
    w.fire("a");
    assert_eq!(w.state("a"), Kind::Stopping);
    w.crash("a");
    assert_eq!(
        w.s.svcs["a"].last_restart,
        Some(crate::control::proto::RestartReason::Watchdog)
    );
}

const CHAIN: &str = r#"
[services.db]
command = "/bin/sh"
ready = { notify = true }
[services.web]
command = "/bin/sh"
depends_on = { db = "ready" }
"#;

#[test]
fn a_dependant_waits_for_its_dependency_to_be_ready() {
    let mut w = World::boot(CHAIN);
    assert_eq!(w.state("web"), Kind::Waiting);
    assert_eq!(w.spawns_of("web"), 0);
    w.notify("db", "READY", "1");
    assert_eq!(w.state("web"), Kind::Starting);
}

#[test]
fn nothing_is_settled_before_boot() {
    // While an earlier daemon's leftovers are reaped, a sample or a log drop may arrive:
    // every service is still `stopped`, which must not read as "settled".
    let mut w = World::new(CHAIN);
    w.feed(Input::LogDropped {
        service: "db".into(),
        count: 1,
    });
    assert!(!w.s.ready_sent, "READY=1 before anything was started");
    w.feed(Input::Boot);
    assert!(!w.s.ready_sent);
    w.notify("db", "READY", "1");
    w.fire("web");
    assert!(w.s.ready_sent);
}

#[test]
fn a_dependant_of_a_dependency_that_gave_up_is_settled() {
    let mut w = World::boot(&CHAIN.replace(
        "ready = { notify = true }",
        "ready = { notify = true }\nmax_restarts = 0",
    ));
    w.fire("db");
    w.crash("db");
    assert_eq!(w.state("db"), Kind::Failed);
    assert!(
        w.s.ready_sent,
        "READY=1 to systemd although web waits on a failed db"
    );
}

#[test]
fn shutdown_stops_in_reverse_order_and_starts_nothing() {
    let mut w = World::boot(CHAIN);
    w.notify("db", "READY", "1");
    w.fire("web");
    w.feed(Input::Shutdown { why: "test".into() });
    assert_eq!(w.state("web"), Kind::Stopping);
    assert_eq!(w.state("db"), Kind::Ready, "db stays until web is gone");
    w.crash("web");
    assert_eq!(w.state("db"), Kind::Stopping);
    w.crash("db");
    assert!(w.s.all_down());
    let r = w.user(start(&["web"]));
    assert!(matches!(r, Response::Error { .. }));
}

#[test]
fn removal_by_reload_stands_over_a_restart() {
    let mut w = World::boot(ONE);
    w.fire("a");
    w.feed(Input::Reload(Box::new(cfg(
        "[services.b]\ncommand = \"/bin/sh\"\n",
    ))));
    assert_eq!(w.state("a"), Kind::Stopping);
    w.user(restart(&["a"]));
    w.crash("a");
    assert!(!w.s.svcs.contains_key("a"), "the removal stands");
    assert_eq!(w.spawns_of("a"), 1);
}

#[test]
fn a_service_readded_while_its_removal_runs_is_kept() {
    let mut w = World::boot(ONE);
    w.fire("a");
    w.feed(Input::Reload(Box::new(cfg(
        "[services.b]\ncommand = \"/bin/sh\"\n",
    ))));
    w.feed(Input::Reload(Box::new(cfg(ONE))));
    w.crash("a");
    assert_eq!(w.state("a"), Kind::Starting);
}

#[test]
fn unknown_services_are_refused_with_a_code() {
    let mut w = World::boot(ONE);
    let r = w.user(start(&["nope"]));
    assert!(matches!(
        r,
        Response::Error {
            code: crate::control::proto::ErrorCode::UnknownService,
            ..
        }
    ));
}

// ---- the property test ----------------------------------------------------------------

const MAX_RESTARTS: u32 = 3;

fn prop_config() -> String {
    // Three services: a chain (c needs b ready, b needs a started) with every kind of
    // readiness, health, memory limit and watchdog in play.
    format!(
        r#"
[services.a]
command = "/bin/sh"
backoff = {{ initial = "100ms", max = "1s", factor = 2.0 }}
max_restarts = {MAX_RESTARTS}
min_uptime = "5s"
max_memory = "100MiB"
[services.b]
command = "/bin/sh"
depends_on = {{ a = "started" }}
ready = {{ notify = true, timeout = "3s" }}
watchdog = "2s"
backoff = {{ initial = "100ms", max = "1s", factor = 2.0 }}
max_restarts = {MAX_RESTARTS}
min_uptime = "5s"
[services.c]
command = "/bin/sh"
depends_on = {{ b = "ready" }}
health = {{ tcp = "127.0.0.1:1", retries = 2 }}
backoff = {{ initial = "100ms", max = "1s", factor = 2.0 }}
max_restarts = {MAX_RESTARTS}
min_uptime = "5s"
restart = "on-failure"
"#
    )
}

const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Start(usize),
    Stop(usize),
    Restart(usize),
    StartAll,
    StopAll,
    Exit(usize, bool),
    Clean(usize),
    Timer(usize),
    Ready(usize),
    Health(usize, bool),
    Memory(usize, bool),
    SpawnFails(usize, bool),
    Wait(u64),
    Reload(bool),
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..NAMES.len();
    prop_oneof![
        2 => i.clone().prop_map(Op::Start),
        2 => i.clone().prop_map(Op::Stop),
        2 => i.clone().prop_map(Op::Restart),
        1 => Just(Op::StartAll),
        1 => Just(Op::StopAll),
        6 => (i.clone(), any::<bool>()).prop_map(|(i, c)| Op::Exit(i, c)),
        6 => i.clone().prop_map(Op::Clean),
        8 => i.clone().prop_map(Op::Timer),
        4 => i.clone().prop_map(Op::Ready),
        3 => (i.clone(), any::<bool>()).prop_map(|(i, ok)| Op::Health(i, ok)),
        2 => (i.clone(), any::<bool>()).prop_map(|(i, big)| Op::Memory(i, big)),
        1 => (i.clone(), any::<bool>()).prop_map(|(i, f)| Op::SpawnFails(i, f)),
        3 => (0u64..8000).prop_map(Op::Wait),
        1 => any::<bool>().prop_map(Op::Reload),
        1 => Just(Op::Shutdown),
    ]
}

/// What the model expects of the restart count: failed runs in a row.
#[derive(Default)]
struct Model {
    /// Services a person stopped (or a reload removed): nothing may start them but a person.
    held: BTreeSet<String>,
    streak: HashMap<String, u32>,
    /// Per run id: it reached ready/running; its uptime when its end was decided.
    reached: BTreeSet<(String, u64)>,
    ended_at: HashMap<(String, u64), Duration>,
}

fn expected_delay(n: u32) -> u64 {
    let d = 100.0 * 2f64.powi(n.saturating_sub(1) as i32);
    d.min(1000.0) as u64
}

/// The property test's configs, parsed once: with and without service c.
fn prop_configs() -> &'static (Config, Config) {
    static CONFIGS: std::sync::OnceLock<(Config, Config)> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| {
        let text = prop_config();
        let without_c = text.split("[services.c]").next().unwrap_or("").to_string();
        (cfg(&text), cfg(&without_c))
    })
}

fn run_ops(ops: &[Op]) -> Result<(), TestCaseError> {
    let (full, without_c) = prop_configs();
    let mut w = World::boot_config(full.clone());
    let mut m = Model::default();
    let held_start = |m: &mut Model, s: &Services, name: &str| {
        // A person's start also starts the dependencies that are down or in backoff.
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            m.held.remove(&n);
            m.streak.insert(n.clone(), 0);
            if let Some(spec) = full.services.get(&n) {
                for d in spec.depends_on.keys() {
                    let down = s.svcs.get(d).is_some_and(|d| {
                        d.state().is_down() || matches!(d.state(), State::Backoff { .. })
                    });
                    if down {
                        todo.push(d.clone());
                    }
                }
            }
        }
    };
    for op in ops {
        let before_actions = w.actions.len();
        match op.clone() {
            Op::Start(i) => {
                if !w.s.shutting_down && w.s.svcs.contains_key(NAMES[i]) {
                    held_start(&mut m, &w.s, NAMES[i]);
                }
                w.feed(Input::Request(start(&[NAMES[i]])));
            }
            Op::StartAll => {
                if !w.s.shutting_down {
                    for n in NAMES {
                        if w.s.svcs.contains_key(n) {
                            held_start(&mut m, &w.s, n);
                        }
                    }
                }
                w.feed(Input::Request(start(&[])));
            }
            Op::Restart(i) => {
                if !w.s.shutting_down {
                    if let Some(s) = w.s.svcs.get(NAMES[i]) {
                        if s.state().run().is_some() {
                            // A restart of a running service starts no dependency.
                            m.held.remove(NAMES[i]);
                            m.streak.insert(NAMES[i].into(), 0);
                        } else {
                            held_start(&mut m, &w.s, NAMES[i]);
                        }
                    }
                }
                w.feed(Input::Request(restart(&[NAMES[i]])));
            }
            Op::Stop(i) => {
                if !w.s.shutting_down && w.s.svcs.contains_key(NAMES[i]) {
                    m.held.insert(NAMES[i].into());
                }
                w.feed(Input::Request(stop(&[NAMES[i]])));
            }
            Op::StopAll => {
                if !w.s.shutting_down {
                    for n in NAMES {
                        m.held.insert(n.into());
                    }
                }
                w.feed(Input::Request(stop(&[])));
            }
            Op::Exit(i, crash) => {
                let n = NAMES[i];
                if let Some(&(run, _, at)) = w.procs.get(n) {
                    let live = w.s.svcs[n].state().live().is_some();
                    if live {
                        m.ended_at.entry((n.into(), run)).or_insert(w.now - at);
                    }
                    w.exit(n, if crash { CRASH } else { CLEAN });
                }
            }
            Op::Clean(i) => {
                if w.reaps.iter().any(|(n, _)| n == NAMES[i]) {
                    w.clean(NAMES[i]);
                }
            }
            Op::Timer(i) => {
                if w.timers.iter().any(|(n, _, _)| n == NAMES[i]) {
                    w.fire(NAMES[i]);
                }
            }
            Op::Ready(i) => w.notify(NAMES[i], "READY", "1"),
            Op::Health(i, ok) => {
                if w.s.svcs.contains_key(NAMES[i]) {
                    w.probe(NAMES[i], ProbeKind::Health, ok);
                }
            }
            Op::Memory(i, big) => {
                if let Some(s) = w.s.svcs.get(NAMES[i]) {
                    let run = s.runs;
                    w.sample(NAMES[i], run, if big { 200 << 20 } else { 10 << 20 });
                }
            }
            Op::SpawnFails(i, f) => {
                if f {
                    w.fail_spawns.insert(NAMES[i].into());
                } else {
                    w.fail_spawns.remove(NAMES[i]);
                }
            }
            Op::Wait(ms) => w.advance(Duration::from_millis(ms)),
            Op::Reload(drop_c) => {
                let next = if drop_c { without_c } else { full };
                if !w.s.shutting_down {
                    if drop_c {
                        m.held.insert("c".into());
                    } else if !w.s.svcs.contains_key("c") {
                        held_start(&mut m, &w.s, "c");
                    } else if w.s.svcs["c"].removing() {
                        // Re-added while its removal runs: kept, and started (autostart).
                        m.held.remove("c");
                    }
                }
                w.feed(Input::Reload(Box::new(next.clone())));
            }
            Op::Shutdown => {
                for n in NAMES {
                    m.held.insert(n.into());
                }
                w.feed(Input::Shutdown { why: "test".into() });
            }
        }
        // Observe runs: which reached ready/running, and when a live run's end was decided.
        for (name, s) in &w.s.svcs {
            match s.state() {
                State::Ready(r) | State::Running(r) | State::Unhealthy(r) => {
                    m.reached.insert((name.clone(), r.id));
                }
                State::Stopping { run: Some(r), .. } => {
                    m.ended_at
                        .entry((name.clone(), r.id))
                        .or_insert(w.now - r.started);
                }
                _ => {}
            }
        }
        // No automatic start of a held service; dependencies met at every spawn.
        for a in &w.actions[before_actions..] {
            if let Action::Spawn { service, .. } = a {
                prop_assert!(
                    !m.held.contains(service),
                    "{service} was started automatically after a person stopped it: {ops:?}"
                );
                prop_assert!(!w.s.shutting_down, "{service} spawned during shutdown");
                let spec = &w.s.svcs[service].spec;
                for (dep, cond) in &spec.depends_on {
                    let d = &w.s.svcs[dep];
                    prop_assert!(
                        condition_met(d, *cond),
                        "{service} spawned before {dep} was {cond:?}: {ops:?}"
                    );
                }
            }
        }
        // Backoff delays and giving up follow the model's own count of failed runs in a
        // row: a run failed when it never reached ready/running or ended before min_uptime.
        let ended: Vec<(String, EventKind)> = w.actions[before_actions..]
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some((e.service.clone()?, e.kind.clone())),
                _ => None,
            })
            .filter(|(_, k)| matches!(k, EventKind::Restart { .. } | EventKind::Failed { .. }))
            .collect();
        for (name, kind) in ended {
            let run = w.s.svcs.get(&name).map(|s| s.runs).unwrap_or(0);
            let key = (name.clone(), run);
            let failed = !m.reached.contains(&key)
                || m.ended_at
                    .get(&key)
                    .is_none_or(|u| *u < Duration::from_secs(5));
            let streak = m.streak.entry(name.clone()).or_default();
            *streak = if failed { *streak + 1 } else { 0 };
            match kind {
                EventKind::Restart {
                    streak: got,
                    delay_ms,
                    ..
                } => {
                    prop_assert_eq!(got, *streak, "{}: failed runs in a row ({:?})", name, ops);
                    prop_assert!(got <= MAX_RESTARTS);
                    prop_assert_eq!(delay_ms, expected_delay(got.max(1)), "{}: delay", name);
                }
                EventKind::Failed { detail } => {
                    prop_assert_eq!(
                        *streak,
                        MAX_RESTARTS + 1,
                        "{}: gave up early or late: {}",
                        name,
                        detail
                    );
                }
                _ => {}
            }
        }
    }
    // Every stopping ends in a state without a pid: let every process exit and every
    // tree be reaped, and nothing may stay stopping.
    w.feed(Input::Shutdown { why: "end".into() });
    for _ in 0..20 {
        let names: Vec<String> = w.procs.keys().cloned().collect();
        for n in names {
            let stopping =
                w.s.svcs
                    .get(&n)
                    .is_some_and(|s| s.state().kind() == Kind::Stopping);
            if stopping {
                w.exit(&n, CRASH);
            } else {
                // Not stopping yet: its stop comes once dependants are gone.
            }
        }
        let reaps: Vec<String> = w.reaps.iter().map(|(n, _)| n.clone()).collect();
        for n in reaps {
            w.clean(&n);
        }
    }
    for (name, s) in &w.s.svcs {
        prop_assert!(
            s.state().run().is_none() && s.state().kind() != Kind::Stopping,
            "{name} still {:?} after every process exited: {ops:?}",
            s.state().kind()
        );
    }
    prop_assert!(w.s.all_down());
    Ok(())
}

fn cases() -> u32 {
    std::env::var("LM_MACHINE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

proptest! {
    // XorShift: ChaCha in an unoptimised test build took most of the run time.
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_events_and_requests_keep_every_invariant(ops in prop::collection::vec(op(), 1..80)) {
        run_ops(&ops)?;
    }
}
