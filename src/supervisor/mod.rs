//! The supervisor core. `machine` (with `requests`, `reload`) is pure: every decision,
//! no I/O. `state` holds the per-service state and the transition table; `action` and
//! `event` what the machine asks for and reports; `view` the read-only answers. `actor` is
//! the one task that owns the state, feeds the machine and carries out its actions.

pub mod action;
pub mod actor;
mod dispatch;
pub mod event;
pub mod exec;
pub mod machine;
pub mod observe;
pub mod reload;
pub mod requests;
pub mod state;
pub mod stopping;
pub mod view;

#[cfg(test)]
mod machine_tests;

use tokio::sync::oneshot;

use crate::control::proto::{ExitInfo, Request, Response};
use crate::probe::notify::NotifyMessage;
use crate::resources::{Sample, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Ready,
    Health,
}

/// Everything that can happen to the actor. Events about a run carry its id, so a late
/// event of an old run is recognised and ignored.
pub enum Msg {
    Request {
        req: Request,
        reply: oneshot::Sender<Response>,
        /// The requesting peer's uid, for the event history.
        uid: Option<u32>,
    },
    Exited {
        service: String,
        run: u64,
        exit: ExitInfo,
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
        /// How long the check took (for the probe duration histogram).
        took: std::time::Duration,
    },
    Notify {
        service: String,
        msg: NotifyMessage,
    },
    /// Leftovers of a run were killed (or there were none).
    TreeClean {
        service: String,
        run: u64,
        killed: Vec<String>,
    },
    SampleTargets(oneshot::Sender<Vec<Target>>),
    Samples(Vec<Sample>),
    LogDropped {
        service: String,
        count: u64,
    },
    /// SIGCHLD: reap adopted orphans.
    ChildSignal,
    /// SIGTERM / SIGINT to the daemon.
    Terminate,
    /// SIGHUP to the daemon.
    Reload,
    /// A config loaded off the actor for a reload (`reply` when lmctl asked).
    ReloadLoaded {
        /// Loads run concurrently; only the latest asked for is applied.
        seq: u64,
        result: Result<Box<crate::config::Config>, Vec<crate::config::Diagnostic>>,
        reply: Option<oneshot::Sender<Response>>,
    },
    /// Leftovers of an earlier daemon are gone: services may start.
    StaleReaped {
        events: Vec<event::Event>,
    },
    /// The systemd watchdog task checks the actor is alive.
    Alive(oneshot::Sender<()>),
    /// Does this service exist (for `logs`)?
    HasService(String, oneshot::Sender<bool>),
    /// A `/metrics` scrape: everything the actor knows, in one answer.
    Metrics(oneshot::Sender<crate::metrics::Snapshot>),
    /// An event from outside the machine (the alert engine): written like any other.
    External(event::Event),
    /// `lmctl alerts` / `alerts test`: forwarded to the alert engine.
    Alerts(crate::alerts::Request),
}
