//! Ending runs: stop signals and timeouts, exits, reaping what is left, and what comes
//! next (stopped, exited, restarted with backoff, failed, forgotten). Part of the pure
//! machine: no I/O.

use std::time::Duration;

use super::action::{Action, HistoryList, SystemdNote};
use super::event::{millis, EventKind};
use super::machine::{Machine, LEFTOVER_GRACE, MIN_FAILED_START_DELAY};
use super::state::{merge_after_stop, next_restart, wants_restart, AfterStop, State};
use crate::config::units::human_duration as human;
use crate::control::proto::{ExitInfo, RestartReason};

impl Machine<'_> {
    /// Sends the stop signal to the run's process group and arms the stop timeout. A stop
    /// already under way only merges its ending (see [`merge_after_stop`]).
    pub(super) fn stop_run(&mut self, name: &str, then: AfterStop) {
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        if let Some(t) = s.stopping_then() {
            *t = merge_after_stop(t.clone(), then);
            return;
        }
        let Some(run) = s.state().live().cloned() else {
            return;
        };
        let sig = s.spec.stop_signal();
        let timeout = s.spec.stop_timeout;
        let pid = run.pid;
        s.set(State::Stopping {
            run: Some(run),
            then,
            since: now,
            sigkill: false,
        });
        self.out.push(Action::StopProbes {
            service: name.to_string(),
        });
        self.out.push(Action::SignalGroup {
            service: name.to_string(),
            pid,
            signal: sig,
        });
        self.event(
            name,
            EventKind::StopSignal {
                pid,
                signal: sig.as_str().to_string(),
                timeout_ms: millis(timeout),
            },
        );
        self.arm_timer(name, timeout);
    }

    /// SIGKILL to everything of the tree.
    pub(super) fn kill_tree(&mut self, name: &str) {
        let Some(s) = self.svc(name) else { return };
        s.mark_sigkill();
        self.out.push(Action::KillTree {
            service: name.to_string(),
        });
    }

    pub(super) fn on_exit(&mut self, name: &str, run_id: u64, exit: ExitInfo) {
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        let Some(run) = s.state().run().filter(|r| r.id == run_id).cloned() else {
            return;
        };
        let uptime = now.saturating_duration_since(run.started);
        s.last_exit = Some(exit);
        let then = match s.state() {
            State::Stopping { then, .. } => then.clone(),
            state => {
                let failed_start = matches!(state, State::Starting(_));
                if failed_start {
                    s.last_error = Some(format!("exited with {exit} before it was started"));
                    if s.spec.ready.is_some() {
                        s.last_error = Some(format!("exited with {exit} before it was ready"));
                    }
                } else if exit.code != Some(0) {
                    s.last_error = Some(format!("exited with {exit} after {}", human(uptime)));
                }
                if wants_restart(s.spec.restart, &s.spec.stop_exit_codes, Some(exit)) {
                    AfterStop::Recover {
                        reason: format!("exited with {exit}"),
                        why: RestartReason::Crash,
                        failed_start,
                        uptime,
                    }
                } else {
                    AfterStop::Exited
                }
            }
        };
        self.out.push(Action::StopProbes {
            service: name.to_string(),
        });
        self.history(
            name,
            HistoryList::Exits,
            format!("pid {} {exit} after {}", run.pid, human(uptime)),
        );
        self.event(
            name,
            EventKind::Exit {
                pid: run.pid,
                exit_code: exit.code,
                signal: exit.signal,
                uptime_ms: millis(uptime),
            },
        );
        self.end_run(name, then);
    }

    /// The main process is gone: what is left of its tree is reaped off the actor, which
    /// answers `TreeClean`, and then `finish_stop` decides what comes next.
    pub(super) fn end_run(&mut self, name: &str, then: AfterStop) {
        self.cancel_timer(name);
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        let (since, sigkill) = match s.state() {
            State::Stopping { since, sigkill, .. } => (*since, *sigkill),
            _ => (now, false),
        };
        let run = s.runs;
        let signal = s.spec.stop_signal();
        let grace = s.spec.stop_timeout.min(LEFTOVER_GRACE);
        s.set(State::Stopping {
            run: None,
            then,
            since,
            sigkill,
        });
        self.out.push(Action::ReapLeftovers {
            service: name.to_string(),
            run,
            signal,
            grace,
        });
    }

    pub(super) fn finish_stop(&mut self, name: &str) {
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        let State::Stopping {
            run: None,
            then,
            since,
            sigkill,
        } = s.state().clone()
        else {
            return;
        };
        let took = millis(now.saturating_duration_since(since));
        match then {
            AfterStop::Idle => {
                s.last_stop = Some((took, sigkill));
                s.set(State::Stopped);
                self.event(
                    name,
                    EventKind::Stop {
                        took_ms: took,
                        sigkill,
                    },
                );
            }
            AfterStop::Exited => {
                s.set(State::Exited);
            }
            AfterStop::Start => {
                s.last_stop = Some((took, sigkill));
                s.set(State::Waiting);
            }
            AfterStop::Remove => {
                self.s.svcs.remove(name);
                self.out.push(Action::Release {
                    service: name.to_string(),
                });
                self.event(name, EventKind::Removed);
            }
            AfterStop::Recover {
                reason,
                why,
                failed_start,
                uptime,
            } => self.recover(name, reason, why, failed_start, uptime),
        }
    }

    /// After a run ended for a reason: restart with backoff, or give up.
    pub(super) fn recover(
        &mut self,
        name: &str,
        reason: String,
        why: RestartReason,
        failed_start: bool,
        uptime: Duration,
    ) {
        let now = self.now;
        if self.s.shutting_down {
            self.set(name, State::Stopped);
            return;
        }
        let Some(s) = self.svc(name) else { return };
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
                s.last_restart = Some(why);
                let streak = s.streak;
                if delay.is_zero() && !uptime.is_zero() {
                    // No timer round trip: `advance` spawns it in this same step.
                    s.set(State::Waiting);
                    self.event(name, EventKind::restart(why, reason, delay, streak));
                } else {
                    // A start that failed at once waits at least a moment.
                    let delay = if failed_start && uptime.is_zero() {
                        delay.max(MIN_FAILED_START_DELAY)
                    } else {
                        delay.max(Duration::from_millis(1))
                    };
                    s.set(State::Backoff { until: now + delay });
                    self.event(name, EventKind::restart(why, reason, delay, streak));
                    self.arm_timer(name, delay);
                }
            }
            Err(n) => {
                let err = format!(
                    "gave up after {n} failed runs in a row (max_restarts = {max_restarts}); last: {reason}. Fix the cause, then run `lmctl restart {name}`"
                );
                s.last_error = Some(err.clone());
                s.set(State::Failed);
                self.event(name, EventKind::Failed { detail: err });
            }
        }
    }

    pub(super) fn on_timer(&mut self, name: &str, token: u64) {
        let now = self.now;
        let Some(s) = self.svc(name) else { return };
        if s.timer != token {
            return;
        }
        match s.state().clone() {
            State::Backoff { .. } => {
                s.set(State::Waiting);
            }
            State::Starting(run) if s.spec.ready.is_none() => {
                // Stayed up through its start grace: started.
                let took = now.saturating_duration_since(run.started);
                let id = run.id;
                s.set(State::Running(run));
                self.event(
                    name,
                    EventKind::Started {
                        after_ms: millis(took),
                    },
                );
                self.start_health(name, id);
            }
            State::Starting(run) => {
                let timeout = s.spec.ready.as_ref().map(|r| r.timeout).unwrap_or_default();
                let how = match s.spec.ready.as_ref() {
                    Some(r) if r.notify => "no READY=1 on its NOTIFY_SOCKET".to_string(),
                    Some(r) => match (&r.probe, &run.probe_error) {
                        (_, Some(e)) => format!("last probe: {e}"),
                        (Some(p), None) => format!("{} never succeeded", crate::probe::describe(p)),
                        _ => String::new(),
                    },
                    None => String::new(),
                };
                let reason = format!("not ready within {} ({how})", human(timeout));
                s.last_error = Some(reason.clone());
                self.event(
                    name,
                    EventKind::NotReady {
                        detail: reason.clone(),
                    },
                );
                self.stop_run(
                    name,
                    AfterStop::Recover {
                        reason,
                        why: RestartReason::Crash,
                        failed_start: true,
                        uptime: Duration::ZERO,
                    },
                );
            }
            State::Stopping { run: Some(run), .. } => {
                let timeout = s.spec.stop_timeout;
                self.event(
                    name,
                    EventKind::StopTimeout {
                        pid: run.pid,
                        timeout_ms: millis(timeout),
                    },
                );
                self.kill_tree(name);
            }
            State::Ready(run) | State::Running(run) => {
                let w = s.spec.watchdog.unwrap_or_default();
                let reason = format!("watchdog: no WATCHDOG=1 within {}", human(w));
                s.last_error = Some(reason.clone());
                self.event(
                    name,
                    EventKind::Watchdog {
                        detail: reason.clone(),
                    },
                );
                self.stop_run(
                    name,
                    AfterStop::Recover {
                        reason,
                        why: RestartReason::Watchdog,
                        failed_start: false,
                        uptime: now.saturating_duration_since(run.started),
                    },
                );
            }
            _ => {}
        }
    }

    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if !self.s.shutting_down {
            self.out.push(Action::Systemd(SystemdNote::Stopping));
            self.daemon_event(EventKind::ShuttingDown {
                why: why.to_string(),
            });
        }
        self.s.shutting_down = true;
        let names: Vec<String> = self.s.svcs.keys().cloned().collect();
        for name in names {
            let Some(s) = self.svc(&name) else { continue };
            match s.state() {
                State::Waiting | State::Backoff { .. } => {
                    s.set(State::Stopped);
                    self.cancel_timer(&name);
                }
                State::Stopping { .. } => {
                    if let Some(then) = s.stopping_then() {
                        *then = merge_after_stop(then.clone(), AfterStop::Idle);
                    }
                }
                _ => {}
            }
        }
    }
}
