//! The verbs that change state, one function each. Each answers with one outcome per
//! service (`Response::Outcomes`); the client waits for the end result itself.

use super::action::Action;
use super::event::EventKind;
use super::machine::Machine;
use super::state::{AfterStop, State};
use crate::control::proto::{ErrorCode, Outcome, OutcomeKind, Response, StateName};

#[derive(Debug, Clone)]
pub enum UserRequest {
    /// Empty `services`: every autostart service.
    Start {
        services: Vec<String>,
        uid: Option<u32>,
    },
    /// Empty `services`: all.
    Stop {
        services: Vec<String>,
        uid: Option<u32>,
    },
    Restart {
        services: Vec<String>,
        uid: Option<u32>,
    },
}

fn outcome(service: &str, outcome: OutcomeKind, was: StateName, detail: Option<String>) -> Outcome {
    Outcome {
        service: service.to_string(),
        outcome,
        was,
        detail,
    }
}

impl Machine<'_> {
    pub(super) fn request(&mut self, req: UserRequest) {
        let (verb, services, uid) = match &req {
            UserRequest::Start { services, uid } => ("start", services, *uid),
            UserRequest::Stop { services, uid } => ("stop", services, *uid),
            UserRequest::Restart { services, uid } => ("restart", services, *uid),
        };
        if self.s.shutting_down {
            self.reply(Response::error(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down; start it again once it has exited",
            ));
            return;
        }
        let names = match self.names_or_all(services, verb == "start") {
            Ok(n) => n,
            Err(e) => {
                self.reply(e);
                return;
            }
        };
        let verb_line = if services.is_empty() {
            verb.to_string()
        } else {
            format!("{verb} {}", services.join(" "))
        };
        self.daemon_event(EventKind::UserRequest {
            verb: verb_line,
            uid,
        });
        let outcomes = match req {
            UserRequest::Start { .. } => names.iter().map(|n| self.start_one(n)).collect(),
            UserRequest::Stop { .. } => names.iter().rev().map(|n| self.stop_one(n)).collect(),
            UserRequest::Restart { .. } => names.iter().map(|n| self.restart_one(n)).collect(),
        };
        self.reply(Response::Outcomes {
            outcomes,
            warnings: Vec::new(),
        });
    }

    fn reply(&mut self, r: Response) {
        self.out.push(Action::Reply(r));
    }

    fn names_or_all(
        &self,
        names: &[String],
        autostart_only: bool,
    ) -> Result<Vec<String>, Response> {
        if names.is_empty() {
            return Ok(self
                .s
                .config
                .start_order
                .iter()
                .filter(|n| {
                    self.s
                        .svcs
                        .get(*n)
                        .is_some_and(|s| !autostart_only || s.spec.autostart)
                })
                .cloned()
                .collect());
        }
        let mut out: Vec<String> = Vec::new();
        for n in names {
            if !self.s.svcs.contains_key(n) {
                let known: Vec<&str> = self.s.svcs.keys().map(String::as_str).collect();
                return Err(Response::error(
                    ErrorCode::UnknownService,
                    format!("no service named `{n}`; services: {}", known.join(", ")),
                ));
            }
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
        Ok(out)
    }

    fn start_one(&mut self, n: &str) -> Outcome {
        let was = self.s.svcs[n].state().name();
        let down = was.is_down() || was == StateName::Backoff;
        self.start(n, true);
        if down {
            outcome(n, OutcomeKind::Starting, was, None)
        } else {
            outcome(
                n,
                OutcomeKind::AlreadyUp,
                was,
                Some(format!("already {was}")),
            )
        }
    }

    fn stop_one(&mut self, n: &str) -> Outcome {
        let Some(s) = self.svc(n) else {
            return outcome(n, OutcomeKind::AlreadyStopped, StateName::Stopped, None);
        };
        let was = s.state().name();
        match s.state() {
            State::Waiting | State::Backoff { .. } | State::Failed | State::Exited => {
                s.set(State::Stopped);
                self.cancel_timer(n);
                outcome(n, OutcomeKind::Stopped, was, None)
            }
            State::Stopped => outcome(n, OutcomeKind::AlreadyStopped, was, None),
            _ => {
                // A person's stop: merged with any stop under way by the one rule.
                self.stop_run(n, AfterStop::Idle);
                outcome(n, OutcomeKind::Stopping, was, None)
            }
        }
    }

    fn restart_one(&mut self, n: &str) -> Outcome {
        let Some(s) = self.svc(n) else {
            return outcome(n, OutcomeKind::Starting, StateName::Stopped, None);
        };
        s.restarts = 0;
        s.streak = 0;
        let was = s.state().name();
        if s.state().run().is_some() {
            self.stop_run(n, AfterStop::Start);
            outcome(n, OutcomeKind::Restarting, was, None)
        } else {
            self.start(n, true);
            outcome(n, OutcomeKind::Starting, was, None)
        }
    }
}
