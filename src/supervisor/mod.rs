//! The one task that owns all service state (`actor`), its per-service state machine
//! (`state`), and the messages everything else sends it.

pub mod actor;
pub mod state;

use tokio::sync::oneshot;

use crate::control::proto::{ExitInfo, Request, Response};
use crate::probe::notify::NotifyMessage;
use crate::resources::{Sample, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    },
    Notify {
        service: String,
        msg: NotifyMessage,
    },
    /// Leftovers of a run were killed (or there were none).
    TreeClean {
        service: String,
        run: u64,
        killed: Vec<(i32, String)>,
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
    /// `lmctl reload` with the config already read and validated off the actor (by the
    /// control server), so a slow or big file never stalls the actor.
    ReloadWith {
        config: Box<crate::config::Config>,
        reply: oneshot::Sender<Response>,
    },
    /// The systemd watchdog task checks the actor is alive.
    Alive(oneshot::Sender<()>),
    /// Does this service exist (for `logs`)?
    HasService(String, oneshot::Sender<bool>),
}
