//! What the machine asks the world to do. The actor carries each one out; some report
//! back as a new [`Input`](super::machine::Input) (a spawn's pid, a timer firing, the
//! leftovers of a tree being gone).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::event::Event;
use super::ProbeKind;
use crate::control::proto::Response;

#[derive(Debug, Clone)]
pub enum Action {
    /// Spawn run `run` of the service; the actor answers with `Spawned` or `SpawnFailed`.
    Spawn {
        service: String,
        run: u64,
    },
    /// The stop signal to the run's process group.
    SignalGroup {
        service: String,
        pid: i32,
        signal: Signal,
    },
    /// SIGKILL to everything of the service's tree (group, cgroup, every member found).
    KillTree {
        service: String,
    },
    /// Find what is left of the tree of run `run` (off the actor), signal it, wait
    /// `grace`, SIGKILL; then answer `TreeClean`.
    ReapLeftovers {
        service: String,
        run: u64,
        signal: Signal,
        grace: Duration,
    },
    /// Fire `Timer { service, token }` after `after`.
    ArmTimer {
        service: String,
        token: u64,
        after: Duration,
    },
    /// Start probing run `run` (ready: until it passes; health: every interval).
    StartProbe {
        service: String,
        run: u64,
        kind: ProbeKind,
    },
    /// Stop every probe of the service.
    StopProbes {
        service: String,
    },
    /// Write an event to the merged log and the service's history.
    Event(Event),
    /// A line for `show`'s histories only (exits, probe results).
    History {
        service: String,
        list: HistoryList,
        text: String,
    },
    Systemd(SystemdNote),
    /// The service is forgotten: give back its socket, tasks and cgroup.
    Release {
        service: String,
    },
    /// The answer to the request being handled.
    Reply(Response),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryList {
    Exits,
    Probes,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SystemdNote {
    Ready(String),
    Status(String),
    Reloading,
    Stopping,
    /// EXTEND_TIMEOUT_USEC while a service is inside its own ready timeout.
    ExtendTimeout(Duration),
}
