//! What probes, notify messages and the resource sampler report about a run, and the
//! restarts they lead to (health, watchdog, memory). Part of the pure machine: no I/O.

use super::action::HistoryList;
use super::event::EventKind;
use super::machine::{Machine, NotifyFields};
use super::state::{AfterStop, State};
use super::ProbeKind;
use crate::control::proto::{Health, RestartReason};
use crate::resources::Sample;

impl Machine<'_> {
    pub(super) fn on_probe(
        &mut self,
        name: &str,
        run_id: u64,
        kind: ProbeKind,
        result: Result<(), String>,
    ) {
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        // A stopping run's fate is decided; a late probe result must not change it.
        let Some(run) = s.state().live().filter(|r| r.id == run_id).cloned() else {
            return;
        };
        let retries = s.spec.health.as_ref().map(|h| h.retries).unwrap_or(1);
        let policy = s.spec.restart;
        if kind == ProbeKind::Health
            && (s.spec.health.is_none() || matches!(s.state(), State::Starting(_)))
        {
            // Health is probed only once a run is up, and only when configured.
            return;
        }
        match (kind, result) {
            (ProbeKind::Ready, Ok(())) => {
                self.history(name, HistoryList::Probes, "ready probe ok".into());
                self.become_ready(name, "probe passed");
            }
            (ProbeKind::Ready, Err(e)) => {
                if let Some(r) = s.run_mut() {
                    r.probe_error = Some(e.clone());
                }
                self.history(name, HistoryList::Probes, format!("ready probe: {e}"));
            }
            (ProbeKind::Health, Ok(())) => {
                let Some(r) = s.run_mut() else { return };
                let was = r.health;
                r.health = Health::Healthy;
                r.health_fails = 0;
                if let State::Unhealthy(r) = s.state().clone() {
                    s.set(State::Ready(r));
                }
                if was != Health::Healthy {
                    self.history(name, HistoryList::Probes, "health ok".into());
                }
            }
            (ProbeKind::Health, Err(e)) => {
                let Some(r) = s.run_mut() else { return };
                r.health_fails += 1;
                let fails = r.health_fails;
                let already = r.health == Health::Unhealthy;
                self.history(
                    name,
                    HistoryList::Probes,
                    format!("health failed ({fails}/{retries}): {e}"),
                );
                self.event(
                    name,
                    EventKind::ProbeFailed {
                        probe: ProbeKind::Health,
                        fails,
                        retries,
                        error: e.clone(),
                    },
                );
                if fails < retries || already {
                    return;
                }
                let reason =
                    format!("unhealthy: {retries} health probes failed in a row, last: {e}");
                let Some(s) = self.svc(name) else { return };
                s.last_error = Some(reason.clone());
                if let Some(r) = s.run_mut() {
                    r.health = Health::Unhealthy;
                }
                let restart = policy != crate::config::RestartPolicy::Never;
                self.event(
                    name,
                    EventKind::Unhealthy {
                        detail: reason.clone(),
                        restart,
                    },
                );
                if restart {
                    self.stop_run(
                        name,
                        AfterStop::Recover {
                            reason,
                            why: RestartReason::Health,
                            failed_start: false,
                            uptime: now.saturating_duration_since(run.started),
                        },
                    );
                } else if let Some(s) = self.svc(name) {
                    if let State::Ready(mut r) | State::Running(mut r) = s.state().clone() {
                        r.health = Health::Unhealthy;
                        s.set(State::Unhealthy(r));
                    }
                }
            }
        }
    }

    pub(super) fn on_notify(&mut self, name: &str, fields: NotifyFields) {
        let now = self.now;
        for (k, v) in fields {
            let Some(s) = self.s.svcs.get_mut(name) else {
                return;
            };
            match k.as_str() {
                "READY" if v == "1" && s.spec.ready.as_ref().is_some_and(|r| r.notify) => {
                    self.become_ready(name, "READY=1");
                }
                "STATUS" => {
                    if let Some(r) = s.run_mut() {
                        r.status_text = Some(v);
                    }
                }
                "STOPPING" if v == "1" => self.event(name, EventKind::NotifyStopping),
                "WATCHDOG" if v == "1" => {
                    let w = s
                        .spec
                        .watchdog
                        .filter(|_| matches!(s.state(), State::Ready(_)));
                    if let Some(w) = w {
                        self.arm_timer(name, w);
                    }
                }
                "WATCHDOG" if v == "trigger" => {
                    if let Some(run) = s.state().live().cloned() {
                        let failed_start = matches!(s.state(), State::Starting(_));
                        let reason = "asked for a watchdog restart (WATCHDOG=trigger)".to_string();
                        self.event(name, EventKind::NotifyWatchdogTrigger);
                        self.stop_run(
                            name,
                            AfterStop::Recover {
                                reason,
                                why: RestartReason::Watchdog,
                                failed_start,
                                uptime: now.saturating_duration_since(run.started),
                            },
                        );
                    }
                }
                "MAINPID" => self.event(name, EventKind::NotifyMainPid { value: v }),
                _ => {}
            }
        }
    }

    pub(super) fn on_samples(&mut self, samples: Vec<Sample>) {
        let now = self.now;
        for sample in samples {
            let name = sample.service.clone();
            let Some(s) = self.svc(&name) else { continue };
            let max_memory = s.spec.max_memory;
            let Some(run) = s.run_mut() else { continue };
            if sample.run != Some(run.id) {
                // Measured for a run that has ended since: not this run's memory.
                continue;
            }
            let over = max_memory.filter(|max| sample.memory_bytes > *max);
            let started = run.started;
            let live = s.state().live().is_some();
            // Ended before it was ready (or past its grace): a failed start.
            let failed_start = matches!(s.state(), State::Starting(_));
            let top = (over.is_some() && live).then(|| {
                // Only a memory restart needs the biggest processes: sort then.
                let mut top = sample.procs.clone();
                top.sort_by_key(|p| std::cmp::Reverse(p.pss_bytes.unwrap_or(p.rss_bytes)));
                top
            });
            let (used, source, count) = (
                sample.memory_bytes,
                sample.memory_source,
                sample.procs.len(),
            );
            if let Some(r) = s.run_mut() {
                r.sample = Some(sample);
            }
            let (Some(max), Some(top)) = (over, top) else {
                continue;
            };
            let biggest: Vec<String> = top
                .iter()
                .take(3)
                .map(|p| {
                    format!(
                        "{} {} {}",
                        p.pid,
                        p.command.split(' ').next().unwrap_or(""),
                        crate::config::units::human_bytes(p.pss_bytes.unwrap_or(p.rss_bytes))
                    )
                })
                .collect();
            let reason = format!(
                "memory {} ({source}, {count} processes) over max_memory {}; biggest: {}",
                crate::config::units::human_bytes(used),
                crate::config::units::human_bytes(max),
                biggest.join(", ")
            );
            s.last_error = Some(reason.clone());
            self.event(
                &name,
                EventKind::MemoryRestart {
                    memory_bytes: used,
                    source,
                    limit_bytes: max,
                    processes: count,
                    biggest,
                },
            );
            self.stop_run(
                &name,
                AfterStop::Recover {
                    reason,
                    why: RestartReason::Memory,
                    failed_start,
                    uptime: now.saturating_duration_since(started),
                },
            );
        }
    }
}
