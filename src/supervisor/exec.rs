//! The executor's hands: spawning a run, its log pumps and exit waiter, probes, notify
//! sockets, killing and reaping trees, loading configs. All of it on behalf of the actor;
//! anything that may block runs on a blocking task and reports back by message.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use super::action::{Action, HistoryList, SystemdNote};
use super::actor::{push, Actor};
use super::event::{Event, EventKind};
use super::machine::{Input, LEFTOVER_GRACE};
use super::{Msg, ProbeKind};
use crate::config::{self, Config, ServiceSpec};
use crate::control::proto::{ErrorCode, Response, TreeKind};
use crate::logs::{pump, Stream};
use crate::probe;
use crate::resources::{self, cgroup};
use crate::spawn::{self, kill, tree};

/// How long an exit waits for the process's pipes to end (a descendant may hold them).
const PUMP_DRAIN: std::time::Duration = std::time::Duration::from_millis(20);
/// ... and for the log writer to have written what the pumps queued.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// How long a config may take to load (a FIFO or a hung network mount as `env_file`).
const CONFIG_LOAD_TIMEOUT: Duration = Duration::from_secs(30);

fn spawn_failed(name: &str, run: u64, error: String) -> Input {
    Input::SpawnFailed {
        service: name.to_string(),
        run,
        error,
    }
}

impl Actor {
    /// Carries out one action of the machine; a spawn answers with its result at once.
    pub(super) fn execute(
        &mut self,
        action: Action,
        reply: &mut Option<Response>,
    ) -> Option<Input> {
        match action {
            Action::Spawn { service, run } => return Some(self.spawn(&service, run)),
            Action::SignalGroup { pid, signal, .. } => kill::signal_group(pid, signal),
            Action::KillTree { service } => self.kill_tree(&service),
            Action::ReapLeftovers {
                service,
                run,
                signal,
                grace,
            } => self.reap_leftovers(service, run, signal, grace),
            Action::ArmTimer {
                service,
                token,
                after,
            } => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = tx.send(Msg::Timer { service, token });
                });
            }
            Action::StartProbe { service, run, kind } => self.start_probe(&service, run, kind),
            Action::StopProbes { service } => {
                if let Some(e) = self.exec.get_mut(&service) {
                    e.stop_probes();
                }
            }
            Action::Event(e) => self.write_event(e),
            Action::History {
                service,
                list,
                text,
            } => {
                let stamp = chrono::Local::now().format(match list {
                    HistoryList::Exits => "%Y-%m-%d %H:%M:%S",
                    HistoryList::Probes => "%H:%M:%S%.3f",
                });
                let h = &mut self.exec.entry(service).or_default().history;
                let q = match list {
                    HistoryList::Exits => &mut h.exits,
                    HistoryList::Probes => &mut h.probes,
                };
                push(q, format!("{stamp} {text}"));
            }
            Action::Systemd(note) => match note {
                SystemdNote::Ready(s) => self.systemd.ready(&s),
                SystemdNote::Status(s) => self.systemd.status(&s),
                SystemdNote::Reloading => self.systemd.reloading(),
                SystemdNote::Stopping => self.systemd.stopping(),
                SystemdNote::ExtendTimeout(d) => self
                    .systemd
                    .extend_timeout(d.as_micros().min(u128::from(u32::MAX)) as u32),
            },
            Action::Release { service } => {
                if let Some(mut e) = self.exec.remove(&service) {
                    e.release();
                }
            }
            Action::Reply(r) => *reply = Some(r),
        }
        None
    }

    /// Opens (or closes) the service's notify socket as its spec now asks.
    pub(super) fn sync_notify_socket(&mut self, name: &str, want: bool) {
        let dir = self.services.config.supervisor.state_dir.join("notify");
        let e = self.exec.entry(name.to_string()).or_default();
        if !want {
            if let Some(t) = e.notify_task.take() {
                t.abort();
            }
            if let Some(p) = e.notify_path.take() {
                let _ = std::fs::remove_file(p);
            }
            return;
        }
        if e.notify_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let path = dir.join(format!("{name}.sock"));
        match std::fs::create_dir_all(&dir).and_then(|_| probe::notify::bind(&path)) {
            Ok(sock) => {
                let tx = self.tx.clone();
                let service = name.to_string();
                e.notify_task = Some(tokio::spawn(async move {
                    while let Ok(msg) = probe::notify::recv(&sock).await {
                        let m = Msg::Notify {
                            service: service.clone(),
                            msg,
                        };
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                }));
                e.notify_path = Some(path);
            }
            Err(err) => self.write_event(Event::of(
                name,
                EventKind::NotifySocketFailed {
                    path: path.display().to_string(),
                    error: err.to_string(),
                },
            )),
        }
    }

    pub(super) fn spawn(&mut self, name: &str, run: u64) -> Input {
        let result = self.prepare_spawn(name).and_then(|notify| {
            let (spec, extras) = self.spawn_args(name, notify)?;
            spawn::spawn(spec, &extras)
        });
        match result {
            Ok(sp) => self.finish_spawn(name, run, sp),
            Err(error) => spawn_failed(name, run, error),
        }
    }

    /// Several spawns of one step (a boot, a reload): the actor gets each ready, the forks
    /// run on two threads at once (each waits for its child's `execve`, the vfork, which is
    /// most of a spawn), then the actor takes each child over, in order. Where the fork
    /// path is not available, one after the other.
    pub(super) fn spawn_batch(&mut self, batch: Vec<(String, u64)>) -> Vec<Input> {
        if batch.len() < 2 || !spawn::fork::supported() {
            return batch.iter().map(|(n, r)| self.spawn(n, *r)).collect();
        }
        let notify: Vec<Result<bool, String>> =
            batch.iter().map(|(n, _)| self.prepare_spawn(n)).collect();
        let forked: Vec<Option<Result<spawn::Forked, String>>> = {
            let args: Vec<Result<_, String>> = batch
                .iter()
                .zip(&notify)
                .map(|((name, _), notify)| {
                    notify
                        .clone()
                        .and_then(|notify| self.spawn_args(name, notify))
                })
                .collect();
            let fork = |i: usize| match &args[i] {
                Ok((spec, extras)) => spawn::fork_service(spec, extras),
                Err(e) => Some(Err(e.clone())),
            };
            let n = args.len();
            // Odd ones on a helper thread, even ones here: both halves end together and
            // the children start roughly in start order.
            let half = |from: usize| {
                (from..n)
                    .step_by(2)
                    .map(|i| (i, fork(i)))
                    .collect::<Vec<_>>()
            };
            let mut all = std::thread::scope(|scope| {
                let odd = scope.spawn(|| half(1));
                let mut all = half(0);
                match odd.join() {
                    Ok(odd) => all.extend(odd),
                    Err(_) => all.extend(
                        (1..n)
                            .step_by(2)
                            .map(|i| (i, Some(Err("the spawning thread panicked".to_string())))),
                    ),
                }
                all
            });
            all.sort_unstable_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, forked)| forked).collect()
        };
        batch
            .into_iter()
            .zip(forked)
            .map(|((name, run), forked)| match forked {
                Some(Ok(f)) => self.finish_spawn(&name, run, f.into_spawned()),
                Some(Err(error)) => spawn_failed(&name, run, error),
                // The fork path went away under us (clone3 refused): the portable one.
                None => self.spawn(&name, run),
            })
            .collect()
    }

    /// The actor's part before a fork: the notify socket and the cgroup. Whether the
    /// service wants `NOTIFY_SOCKET`.
    fn prepare_spawn(&mut self, name: &str) -> Result<bool, String> {
        let Some(notify) = self
            .services
            .svcs
            .get(name)
            .map(|s| s.spec.ready.as_ref().is_some_and(|r| r.notify))
        else {
            return Err("the service is gone".into());
        };
        self.sync_notify_socket(name, notify);
        let root = self.cgroup_root.clone();
        let e = self.exec.entry(name.to_string()).or_default();
        if let Some(root) = root {
            // Re-created when missing: someone may have removed an empty cgroup.
            e.cgroup = cgroup::service_dir(&root, name);
            if e.cgroup_killed.swap(false, Ordering::Relaxed) {
                if let Some(dir) = &e.cgroup {
                    cgroup::renew(dir);
                }
            }
        }
        Ok(notify)
    }

    /// The spec (borrowed, not cloned: a spec, its environment above all, is most of a
    /// spawn's allocations, and the spawn copies what the child needs anyway) and what we
    /// add to it.
    fn spawn_args(
        &self,
        name: &str,
        notify: bool,
    ) -> Result<(&ServiceSpec, spawn::SpawnExtras<'_>), String> {
        let gone = || "the service is gone".to_string();
        let spec = self
            .services
            .svcs
            .get(name)
            .map(|s| &s.spec)
            .ok_or_else(gone)?;
        let e = self.exec.get(name).ok_or_else(gone)?;
        let extras = spawn::SpawnExtras {
            instance: &self.instance,
            notify_socket: if notify {
                e.notify_path.as_deref()
            } else {
                None
            },
            watchdog: spec.watchdog,
            cgroup: e.cgroup.as_deref(),
        };
        Ok((spec, extras))
    }

    /// The actor's part after a fork: how the tree is tracked, the log pumps, the exit
    /// waiter.
    fn finish_spawn(&mut self, name: &str, run: u64, sp: spawn::Spawned) -> Input {
        let e = self.exec.entry(name.to_string()).or_default();
        // A child that could not join its cgroup runs outside it: trusting the empty
        // cgroup would blind memory limits and leftover reaping, so this run is tracked
        // by group and markers instead, and an event says so.
        let (tree, cgroup_error) = match &e.cgroup {
            None => (TreeKind::GroupMarkers, None),
            Some(_) if sp.placed => (TreeKind::Cgroup, None),
            Some(cg) if cgroup::procs(cg).contains(&sp.pid) => (TreeKind::Cgroup, None),
            Some(cg) => (
                TreeKind::GroupMarkers,
                Some(format!(
                    "pid {} is not in {}/cgroup.procs{}",
                    sp.pid,
                    cg.display(),
                    sp.cgroup_error
                        .as_deref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                )),
            ),
        };
        e.tree = Some(tree);
        e.sessions.retain(|p| *p != sp.pid);
        e.sessions.push(sp.pid);
        if e.sessions.len() > 4 {
            e.sessions.remove(0);
        }
        let start_ticks = tree::read_proc(sp.pid).map(|p| p.start_time).unwrap_or(0);
        let svc_name: Arc<str> = name.into();
        let mut pumps = Vec::new();
        for (stream, reader) in [(Stream::Out, sp.stdout), (Stream::Err, sp.stderr)] {
            let Some(reader) = reader else { continue };
            let tx = self.tx.clone();
            let service = name.to_string();
            let on_drop: pump::DropReport = Box::new(move |count| {
                let _ = tx.send(Msg::LogDropped {
                    service: service.clone(),
                    count,
                });
            });
            pumps.push(tokio::spawn(pump::pump(
                reader,
                svc_name.clone(),
                stream,
                self.logs.clone(),
                on_drop,
            )));
        }
        let tx = self.tx.clone();
        let service = name.to_string();
        let exit = sp.exit;
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let exit = exit.await;
            // The last words first: what the process wrote before it died is in its logs
            // (and in an alert's stderr tail) before its exit is handled. Its pipes end at
            // once unless a descendant holds them, hence the short bound; the flush then
            // writes whatever the pumps queued.
            let _ = tokio::time::timeout(PUMP_DRAIN, async {
                for p in pumps {
                    let _ = p.await;
                }
            })
            .await;
            let _ = tokio::time::timeout(FLUSH_WAIT, logs.flush()).await;
            let _ = tx.send(Msg::Exited { service, run, exit });
        });
        Input::Spawned {
            service: name.to_string(),
            run,
            pid: sp.pid,
            start_ticks,
            tree,
            env: sp.env,
            cgroup_error,
        }
    }

    pub(super) fn start_probe(&mut self, name: &str, run: u64, kind: ProbeKind) {
        let Some(spec) = self.services.svcs.get(name).map(|s| &s.spec) else {
            return;
        };
        let tx = self.tx.clone();
        let service = name.to_string();
        let task = match kind {
            ProbeKind::Ready => {
                let Some(p) = spec.ready.as_ref().and_then(|r| r.probe.clone()) else {
                    return;
                };
                tokio::spawn(ready_probe_loop(tx, service, run, p))
            }
            ProbeKind::Health => {
                let Some(h) = spec.health.clone() else { return };
                tokio::spawn(async move {
                    tokio::time::sleep(h.start_period).await;
                    let mut tick = tokio::time::interval(h.interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let t0 = std::time::Instant::now();
                        let result = probe::check(&h.probe, h.timeout).await;
                        let m = Msg::Probe {
                            service: service.clone(),
                            run,
                            kind: ProbeKind::Health,
                            result,
                            took: t0.elapsed(),
                        };
                        if tx.send(m).is_err() {
                            break;
                        }
                    }
                })
            }
        };
        self.exec
            .entry(name.to_string())
            .or_default()
            .probes
            .push(task);
    }

    /// SIGKILL to the group and the cgroup at once; the members found by a `/proc` scan
    /// (escaped descendants) off the actor.
    pub(super) fn kill_tree(&mut self, name: &str) {
        let pid = self
            .services
            .svcs
            .get(name)
            .and_then(|s| s.state().run().map(|r| r.pid));
        if let Some(pid) = pid {
            kill::signal_group(pid, Signal::SIGKILL);
        }
        let Some(e) = self.exec.get(name) else { return };
        let cg = e.tree_cgroup();
        if let Some(cg) = &cg {
            cgroup::kill(cg);
            e.cgroup_killed.store(true, Ordering::Relaxed);
        }
        let (service, prefix, sessions) =
            (name.to_string(), self.prefix.clone(), e.sessions.clone());
        // The scan runs later, off the actor: by then a new run may have started in the
        // same cgroup and session list. Only what existed now is this tree.
        let born_before = tree::ticks_since_boot();
        tokio::task::spawn_blocking(move || {
            let snap = tree::Snapshot::take();
            for p in resources::leftovers(&snap, &service, &prefix, &sessions, cg.as_deref()) {
                if born_before.is_some_and(|t| p.start_time <= t) {
                    kill::signal_checked(p.pid, p.start_time, Signal::SIGKILL);
                }
            }
        });
    }

    /// Finds and kills what is left of a run's tree off the actor, then says so.
    pub(super) fn reap_leftovers(
        &mut self,
        service: String,
        run: u64,
        signal: Signal,
        grace: Duration,
    ) {
        let e = self.exec.entry(service.clone()).or_default();
        let cg = e.tree_cgroup();
        let sessions = std::mem::take(&mut e.sessions);
        let prefix = self.prefix.clone();
        let tx = self.tx.clone();
        let killed_flag = e.cgroup_killed.clone();
        tokio::task::spawn_blocking(move || {
            let left = resources::leftovers_now(&service, &prefix, &sessions, cg.as_deref());
            let killed = if left.is_empty() {
                Vec::new()
            } else {
                resources::kill_leftovers(left, signal, grace)
            };
            if let Some(cg) = cg {
                if cgroup::populated(&cg) {
                    cgroup::kill_and_wait(&cg, Duration::from_secs(2));
                    killed_flag.store(true, Ordering::Relaxed);
                }
            }
            let killed = killed.iter().map(|(p, c)| format!("{p} ({c})")).collect();
            let _ = tx.send(Msg::TreeClean {
                service,
                run,
                killed,
            });
        });
    }

    /// Is `pid` the service's main process or inside its tree (descendant or session)?
    pub(super) fn pid_belongs(&self, name: &str, pid: i32) -> bool {
        let Some(run) = self.services.svcs.get(name).and_then(|s| s.state().run()) else {
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

    pub(super) fn begin_reload(&mut self, reply: Option<oneshot::Sender<Response>>) {
        if self.services.shutting_down {
            self.write_event(Event::daemon(EventKind::ReloadIgnored));
            if let Some(r) = reply {
                let _ = r.send(Response::error(
                    ErrorCode::ShuttingDown,
                    "the daemon is shutting down; nothing was reloaded",
                ));
            }
            return;
        }
        let file = self.services.config.file.clone();
        let tx = self.tx.clone();
        self.reloads += 1;
        let seq = self.reloads;
        tokio::spawn(async move {
            let result = load_off_actor(file.clone()).await.map(Box::new);
            let _ = tx.send(Msg::ReloadLoaded { seq, result, reply });
        });
    }

    /// `restart` keeps the running config (seed 004 §5.3: `pm2 restart` silently kept the
    /// old env). Say so when the file on disk now says something else. The file is read
    /// off the actor; the restart itself already happened.
    pub(super) fn reply_with_stale_warnings(
        &self,
        resp: Response,
        reply: oneshot::Sender<Response>,
    ) {
        let Response::Outcomes { outcomes, warnings } = resp else {
            let _ = reply.send(resp);
            return;
        };
        let file = self.services.config.file.clone();
        let running: BTreeMap<String, ServiceSpec> = self
            .services
            .svcs
            .iter()
            .map(|(n, s)| (n.clone(), s.spec.clone()))
            .collect();
        tokio::spawn(async move {
            let mut warnings = warnings;
            warnings.extend(match load_off_actor(file.clone()).await {
                Err(_) => vec![format!(
                    "warning: {} no longer validates; the running config was used (see `lmctl check`)",
                    file.display()
                )],
                Ok(disk) => stale_warning(&running, &disk).into_iter().collect(),
            });
            let _ = reply.send(Response::Outcomes { outcomes, warnings });
        });
    }

    /// The autostart services' cgroups, made on another thread while the first ones
    /// spawn: a cgroup mkdir costs about a tenth of a spawn, and this way the actor finds
    /// them there (each spawn still makes its own when it gets there first).
    pub(super) fn make_cgroups_ahead(&self) {
        let Some(root) = self.cgroup_root.clone() else {
            return;
        };
        let names: Vec<String> = self
            .services
            .config
            .start_order
            .iter()
            .filter(|n| self.services.svcs.get(*n).is_some_and(|s| s.spec.autostart))
            .cloned()
            .collect();
        if names.len() < 2 {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for name in names {
                let _ = cgroup::service_dir(&root, &name);
            }
        });
    }

    /// Leftovers of earlier daemons on this state dir (a crashed or SIGKILLed daemon) are
    /// reaped before anything starts, so nothing runs twice; off the actor, so `status`
    /// answers meanwhile. `Boot` follows when it is done.
    pub(super) fn reap_stale_instances(&mut self) {
        let tx = self.tx.clone();
        if !self.services.config.supervisor.reap_orphans {
            let _ = tx.send(Msg::StaleReaped { events: Vec::new() });
            return;
        }
        let (prefix, instance) = (self.prefix.clone(), self.instance.clone());
        let cgroups: Vec<(String, PathBuf)> = match &self.cgroup_root {
            Some(root) => self
                .services
                .svcs
                .keys()
                .map(|n| (n.clone(), root.join(n)))
                .collect(),
            None => Vec::new(),
        };
        tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            let snap = tree::Snapshot::take();
            let stale = resources::stale_instances(&snap, &prefix, &instance);
            let stale_cgroups: Vec<(String, PathBuf)> = cgroups
                .into_iter()
                .filter(|(_, dir)| cgroup::populated(dir))
                .collect();
            // Every leftover gets its SIGTERM at once; the grace is shared, not per service.
            let handles: Vec<_> = stale
                .into_iter()
                .map(|(svc, procs)| {
                    std::thread::spawn(move || {
                        let killed =
                            resources::kill_leftovers(procs, Signal::SIGTERM, LEFTOVER_GRACE);
                        (svc, killed)
                    })
                })
                .collect();
            for h in handles {
                if let Ok((svc, killed)) = h.join() {
                    events.push(Event::of(
                        &svc,
                        EventKind::OrphansReaped {
                            processes: killed.iter().map(|(p, c)| format!("{p} ({c})")).collect(),
                            earlier_daemon: true,
                        },
                    ));
                }
            }
            for (svc, dir) in stale_cgroups {
                if cgroup::populated(&dir) {
                    let pids = cgroup::procs(&dir);
                    cgroup::kill_and_wait(&dir, Duration::from_secs(2));
                    cgroup::renew(&dir);
                    events.push(Event::of(
                        &svc,
                        EventKind::CgroupReaped {
                            cgroup: dir.display().to_string(),
                            pids,
                        },
                    ));
                }
            }
            let _ = tx.send(Msg::StaleReaped { events });
        });
    }
}

/// Loads and validates the config on a blocking thread, with a deadline.
pub async fn load_off_actor(file: PathBuf) -> Result<Config, Vec<crate::config::Diagnostic>> {
    let f = file.clone();
    match tokio::time::timeout(
        CONFIG_LOAD_TIMEOUT,
        tokio::task::spawn_blocking(move || config::load(&f)),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(vec![crate::config::Diagnostic::whole_file(
            &file,
            format!("loading the config failed: {e}"),
        )]),
        Err(_) => Err(vec![crate::config::Diagnostic::whole_file(
            &file,
            format!(
                "reading the config (or one of its env_file) took over {}s: is it a FIFO or on a hung mount? Nothing was changed",
                CONFIG_LOAD_TIMEOUT.as_secs()
            ),
        )]),
    }
}

fn stale_warning(running: &BTreeMap<String, ServiceSpec>, disk: &Config) -> Option<String> {
    let changed: Vec<&str> = running
        .iter()
        .filter(|(n, s)| disk.services.get(*n).is_none_or(|d| d.process_differs(s)))
        .map(|(n, _)| n.as_str())
        .chain(
            disk.services
                .keys()
                .filter(|n| !running.contains_key(*n))
                .map(String::as_str),
        )
        .collect();
    (!changed.is_empty()).then(|| format!(
        "warning: the config on disk differs from the running one for {}; restart keeps the running config: run `lmctl reload` to apply the change",
        changed.join(", ")
    ))
}

/// Retries a ready probe until it passes; reports each new error once. The machine's ready
/// timeout ends it (by stopping probes), never the probe itself.
async fn ready_probe_loop(
    tx: mpsc::UnboundedSender<Msg>,
    service: String,
    run: u64,
    p: crate::config::Probe,
) {
    let mut last_err: Option<String> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        let t0 = std::time::Instant::now();
        match probe::check(&p, Duration::from_secs(2)).await {
            Ok(()) => {
                let _ = tx.send(Msg::Probe {
                    service,
                    run,
                    kind: ProbeKind::Ready,
                    result: Ok(()),
                    took: t0.elapsed(),
                });
                return;
            }
            Err(e) => {
                if last_err.as_deref() != Some(e.as_str()) {
                    last_err = Some(e.clone());
                    let m = Msg::Probe {
                        service: service.clone(),
                        run,
                        kind: ProbeKind::Ready,
                        result: Err(e),
                        took: t0.elapsed(),
                    };
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}
