//! Applying a new config: start added services, stop removed ones, restart changed ones.
//! The config was loaded and validated off the actor; a config that failed never gets here.

use super::action::{Action, SystemdNote};
use super::event::EventKind;
use super::machine::Machine;
use super::state::{AfterStop, State, Svc};
use crate::config::Config;
use crate::control::proto::{ReloadDiff, Response};

impl Machine<'_> {
    pub(super) fn reload(&mut self, new: Config) {
        if self.s.shutting_down {
            self.daemon_event(EventKind::ReloadIgnored);
            self.out.push(Action::Reply(Response::error(
                crate::control::proto::ErrorCode::ShuttingDown,
                "the daemon is shutting down; nothing was reloaded",
            )));
            return;
        }
        self.out.push(Action::Systemd(SystemdNote::Reloading));
        let diff = self.apply(new);
        self.s.ready_sent = false;
        self.out.push(Action::Reply(Response::Reload { diff }));
    }

    fn apply(&mut self, mut new: Config) -> ReloadDiff {
        let mut diff = ReloadDiff::default();
        // A command that cannot run does not stop a reload, but the operator hears of it.
        diff.warnings.extend(
            new.warnings
                .iter()
                .map(|w| format!("{w} (its start will fail)")),
        );
        if new.supervisor != self.s.config.supervisor {
            diff.warnings.push(
                "[supervisor] settings changed; they take effect when the daemon restarts".into(),
            );
        }
        if new.logs != self.s.config.logs {
            diff.warnings
                .push("[logs] settings changed; they take effect when the daemon restarts".into());
        }
        for name in self.s.svcs.keys() {
            if !new.services.contains_key(name) {
                diff.removed.push(name.clone());
            }
        }
        for (name, spec) in &new.services {
            match self.s.svcs.get(name) {
                None => diff.added.push(name.clone()),
                Some(s) if s.spec.process_differs(spec) => diff.changed.push(name.clone()),
                Some(_) => diff.unchanged.push(name.clone()),
            }
        }
        // A service removed by an earlier reload and still stopping is back: keep it.
        for (name, spec) in &new.services {
            if let Some(then) = self.s.svcs.get_mut(name).and_then(Svc::stopping_then) {
                if *then == AfterStop::Remove {
                    *then = if spec.autostart {
                        AfterStop::Start
                    } else {
                        AfterStop::Idle
                    };
                }
            }
        }
        // The specs move into their `Svc`s below; the kept config holds none (see `Services`).
        let mut specs = std::mem::take(&mut new.services);
        let supervisor = self.s.config.supervisor.clone();
        let logs = self.s.config.logs.clone();
        self.s.config = Config {
            supervisor,
            logs,
            ..new
        };
        // Keep removed services in the order until they are gone, so shutdown still sees them.
        for name in &diff.removed {
            self.s.config.start_order.insert(0, name.clone());
            self.event(name, EventKind::RemovedStopping);
            let Some(s) = self.svc(name) else { continue };
            if s.state().run().is_some() {
                self.stop_run(name, AfterStop::Remove);
            } else if s.stopping_then().is_none() {
                let now = self.now;
                if let Some(s) = self.svc(name) {
                    s.set(State::Stopping {
                        run: None,
                        then: AfterStop::Remove,
                        since: now,
                        sigkill: false,
                    });
                }
                self.cancel_timer(name);
                self.finish_stop(name);
            } else if let Some(then) = s.stopping_then() {
                *then = super::state::merge_after_stop(then.clone(), AfterStop::Remove);
            }
        }
        for name in &diff.unchanged {
            if let (Some(spec), Some(s)) = (specs.remove(name), self.s.svcs.get_mut(name)) {
                s.spec = spec;
            }
        }
        for name in &diff.changed {
            let Some(spec) = specs.remove(name) else {
                continue;
            };
            let Some(s) = self.svc(name) else { continue };
            s.spec = spec;
            s.restarts = 0;
            s.streak = 0;
            if s.state().run().is_some() {
                self.event(name, EventKind::ReloadRestart);
                self.stop_run(name, AfterStop::Start);
            } else if matches!(s.state(), State::Failed | State::Backoff { .. }) {
                self.start(name, true);
            }
        }
        for name in &diff.added {
            let Some(spec) = specs.remove(name) else {
                continue;
            };
            let autostart = spec.autostart;
            self.s.svcs.insert(name.clone(), Svc::new(spec));
            self.event(name, EventKind::Added);
            if autostart {
                self.start(name, true);
            }
        }
        self.daemon_event(EventKind::Reload {
            file: self.s.config.file.display().to_string(),
            added: diff.added.clone(),
            removed: diff.removed.clone(),
            changed: diff.changed.clone(),
            unchanged: diff.unchanged.clone(),
        });
        diff
    }
}
