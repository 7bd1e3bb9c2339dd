//! The actor's side of the control socket: each request is answered from the state
//! (`status`, `show`, `env`, `ping`), fed to the machine (`start`, `stop`, `restart`,
//! `shutdown`), loaded off the actor first (`reload`), or carried out with a checked
//! kill (`signal`).

use std::time::Instant;

use tokio::sync::oneshot;

use super::actor::{no_reply, Actor};
use super::event::{Event, EventKind};
use super::machine::{Input, Services};
use super::requests::UserRequest;
use super::view;
use super::Msg;
use crate::config;
use crate::control::proto::{ErrorCode, Request, Response, TreeKind};
use crate::spawn::kill;

impl Actor {
    pub(super) fn request(
        &mut self,
        req: Request,
        reply: oneshot::Sender<Response>,
        uid: Option<u32>,
    ) {
        let now = Instant::now();
        let default_tree = if self.cgroup_root.is_some() {
            TreeKind::Cgroup
        } else {
            TreeKind::GroupMarkers
        };
        let unknown = |s: &Services, name: &str| {
            let known: Vec<&str> = s.svcs.keys().map(String::as_str).collect();
            Response::error(
                ErrorCode::UnknownService,
                format!("no service named `{name}`; services: {}", known.join(", ")),
            )
        };
        let resp = match req {
            Request::Ping => Response::Pong {
                pid: std::process::id(),
                instance: self.instance.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                config: self.services.config.file.display().to_string(),
                state_dir: self
                    .services
                    .config
                    .supervisor
                    .state_dir
                    .display()
                    .to_string(),
            },
            Request::Status => {
                self.last_view = Some(now);
                let mut services = view::status(&self.services, now);
                for s in &mut services {
                    if s.pid.is_none() {
                        s.tree = default_tree;
                    }
                }
                Response::Status { services }
            }
            Request::Show { service } => {
                self.last_view = Some(now);
                match view::detail(
                    &self.services,
                    &service,
                    now,
                    default_tree,
                    self.exec.get(&service).map(|e| &e.history),
                ) {
                    Some(d) => Response::Show {
                        service: Box::new(d),
                    },
                    None => unknown(&self.services, &service),
                }
            }
            Request::Env { service, reveal } => match view::env(&self.services, &service, reveal) {
                Some(vars) => Response::Env { service, vars },
                None => unknown(&self.services, &service),
            },
            Request::Signal { service, signal } => self.signal(&service, &signal, uid),
            Request::Start { .. } | Request::Stop { .. } | Request::Restart { .. }
                if !self.services.booted =>
            {
                self.deferred.push_back(Msg::Request { req, reply, uid });
                return;
            }
            Request::Start { services } => self
                .feed(Input::Request(UserRequest::Start { services, uid }))
                .unwrap_or_else(no_reply),
            Request::Stop { services } => self
                .feed(Input::Request(UserRequest::Stop { services, uid }))
                .unwrap_or_else(no_reply),
            Request::Restart { services } => {
                let resp = self
                    .feed(Input::Request(UserRequest::Restart { services, uid }))
                    .unwrap_or_else(no_reply);
                self.reply_with_stale_warnings(resp, reply);
                return;
            }
            Request::Reload => {
                if self.services.shutting_down {
                    Response::error(
                        ErrorCode::ShuttingDown,
                        "the daemon is shutting down; nothing was reloaded",
                    )
                } else {
                    self.begin_reload(Some(reply));
                    return;
                }
            }
            Request::Shutdown => {
                self.feed(Input::Shutdown {
                    why: "lmctl shutdown".into(),
                });
                self.shutdown_replies.push(reply);
                return;
            }
            Request::Alerts | Request::AlertTest { .. } => {
                self.handle(Msg::Alerts(crate::alerts::Request { req, reply }));
                return;
            }
            Request::Logs(_) => {
                Response::error(ErrorCode::BadRequest, "logs are served by the log writer")
            }
        };
        let _ = reply.send(resp);
    }

    /// `lmctl signal`: to the main process only, through the same pidfd + start-time check
    /// as every other kill.
    pub(super) fn signal(&mut self, service: &str, signal: &str, uid: Option<u32>) -> Response {
        let Some(s) = self.services.svcs.get(service) else {
            let known: Vec<&str> = self.services.svcs.keys().map(String::as_str).collect();
            return Response::error(
                ErrorCode::UnknownService,
                format!(
                    "no service named `{service}`; services: {}",
                    known.join(", ")
                ),
            );
        };
        let sig = match config::units::parse_signal(signal) {
            Ok(s) => s,
            Err(e) => return Response::error(ErrorCode::BadSignal, e),
        };
        let Some(run) = s.state().run() else {
            return Response::error(
                ErrorCode::NotRunning,
                format!(
                    "`{service}` has no running process (it is {})",
                    s.state().name()
                ),
            );
        };
        let (pid, was) = (run.pid, s.state().name());
        if !kill::signal_checked(pid, run.start_ticks, sig) {
            return Response::error(
                ErrorCode::SignalFailed,
                format!("pid {pid} of `{service}` is gone (or is no longer its process); nothing was signalled"),
            );
        }
        self.write_event(Event::daemon(EventKind::UserRequest {
            verb: format!("signal {} {service}", sig.as_str()),
            uid,
        }));
        self.write_event(Event::of(
            service,
            EventKind::Signal {
                pid,
                signal: sig.as_str().to_string(),
            },
        ));
        Response::Outcomes {
            outcomes: vec![crate::control::proto::Outcome {
                service: service.to_string(),
                outcome: crate::control::proto::OutcomeKind::Signalled,
                was,
                detail: Some(format!("sent {} to pid {pid}", sig.as_str())),
            }],
            warnings: Vec::new(),
        }
    }
}
