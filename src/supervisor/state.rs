//! Per-service state: data lives in the variant that needs it (a run only while a process
//! exists, a retry time only in backoff), and run-scoped data (health, probe error, status
//! text, the latest sample) lives in the [`Run`], so it cannot survive into the next run.
//! Every state write goes through [`Svc::set`], checked against [`allowed`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{EnvVar, RestartPolicy, ServiceSpec};
use crate::control::proto::{ExitInfo, Health, RestartReason, StateName, TreeKind};
use crate::resources::Sample;

/// One spawned process of a service and everything that is only true while it lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub id: u64,
    pub pid: i32,
    /// The process's start time in clock ticks (`/proc/PID/stat` field 22): signals go
    /// through a pidfd checked against it, so a recycled pid is never hit.
    pub start_ticks: u64,
    pub started: Instant,
    /// How the tree of this run is found (a failed cgroup join falls back to markers).
    pub tree: TreeKind,
    pub health: Health,
    pub health_fails: u32,
    pub probe_error: Option<String>,
    pub status_text: Option<String>,
    pub sample: Option<Sample>,
}

impl Run {
    pub fn new(id: u64, pid: i32, start_ticks: u64, started: Instant, tree: TreeKind) -> Run {
        Run {
            id,
            pid,
            start_ticks,
            started,
            tree,
            health: Health::Unknown,
            health_fails: 0,
            probe_error: None,
            status_text: None,
            sample: None,
        }
    }
}

/// Why a run is being ended on purpose or ended on its own: what happens once its tree is
/// gone. Several intents may meet on one stop; [`merge_after_stop`] decides which stands.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterStop {
    /// Stay stopped (a person asked, or the daemon shuts down).
    Idle,
    /// Start again (a user restart, or a start asked for while stopping).
    Start,
    /// Forget the service (removed by a reload).
    Remove,
    /// The run ended and the restart policy says no: `exited`.
    Exited,
    /// The run ended on its own or was ended for a reason: restart per policy and backoff.
    Recover {
        reason: String,
        why: RestartReason,
        failed_start: bool,
        uptime: Duration,
    },
}

/// What a stop already under way ends in, when something else asks for another ending.
/// The one rule: a removal stands; an automatic recovery (crash, probe, memory, watchdog)
/// never overrides what a person asked for (stop or restart); otherwise the latest wins.
pub fn merge_after_stop(current: AfterStop, new: AfterStop) -> AfterStop {
    match (&current, &new) {
        (AfterStop::Remove, _) => current,
        (AfterStop::Idle | AfterStop::Start, AfterStop::Recover { .. } | AfterStop::Exited) => {
            current
        }
        _ => new,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Stopped,
    /// Start asked for; waiting for dependencies (shown as `starting`).
    Waiting,
    /// The spawn of run `run` is being carried out (shown as `starting`).
    Spawning {
        run: u64,
    },
    /// Spawned; waiting for its ready signal or probe, or for its start grace to pass.
    Starting(Run),
    /// Up, with no readiness configured, past its start grace.
    Running(Run),
    Ready(Run),
    /// Failing its health probe, and its policy does not restart it.
    Unhealthy(Run),
    /// Stop signal sent (`run` Some), or the main process is gone and leftovers of its tree
    /// are being reaped (`run` None).
    Stopping {
        run: Option<Run>,
        then: AfterStop,
        since: Instant,
        /// SIGKILL was needed.
        sigkill: bool,
    },
    Backoff {
        until: Instant,
    },
    Failed,
    Exited,
}

/// The variants of [`State`] without their data: what the transition table speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Stopped,
    Waiting,
    Spawning,
    Starting,
    Running,
    Ready,
    Unhealthy,
    Stopping,
    Backoff,
    Failed,
    Exited,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Stopped,
        Kind::Waiting,
        Kind::Spawning,
        Kind::Starting,
        Kind::Running,
        Kind::Ready,
        Kind::Unhealthy,
        Kind::Stopping,
        Kind::Backoff,
        Kind::Failed,
        Kind::Exited,
    ];
}

/// The transition table. Everything not listed is a bug in the machine.
pub fn allowed(from: Kind, to: Kind) -> bool {
    use Kind::*;
    match from {
        Stopped | Failed | Exited => matches!(to, Waiting | Stopped | Stopping),
        Waiting => matches!(to, Spawning | Stopped | Stopping),
        Spawning => matches!(to, Starting | Running | Backoff | Failed | Stopped),
        Starting => matches!(to, Running | Ready | Stopping),
        Running => matches!(to, Stopping | Unhealthy | Running),
        Ready => matches!(to, Unhealthy | Stopping | Ready),
        Unhealthy => matches!(to, Ready | Stopping),
        // Stopping → Stopping: the main process died, leftovers are being reaped.
        Stopping => matches!(to, Stopping | Stopped | Exited | Waiting | Backoff | Failed),
        Backoff => matches!(to, Waiting | Stopped | Stopping),
    }
}

impl State {
    pub fn kind(&self) -> Kind {
        match self {
            State::Stopped => Kind::Stopped,
            State::Waiting => Kind::Waiting,
            State::Spawning { .. } => Kind::Spawning,
            State::Starting(_) => Kind::Starting,
            State::Running(_) => Kind::Running,
            State::Ready(_) => Kind::Ready,
            State::Unhealthy(_) => Kind::Unhealthy,
            State::Stopping { .. } => Kind::Stopping,
            State::Backoff { .. } => Kind::Backoff,
            State::Failed => Kind::Failed,
            State::Exited => Kind::Exited,
        }
    }

    pub fn name(&self) -> StateName {
        match self {
            State::Stopped => StateName::Stopped,
            State::Waiting | State::Spawning { .. } | State::Starting(_) => StateName::Starting,
            State::Running(_) => StateName::Running,
            State::Ready(_) => StateName::Ready,
            State::Unhealthy(_) => StateName::Unhealthy,
            State::Stopping { .. } => StateName::Stopping,
            State::Backoff { .. } => StateName::Backoff,
            State::Failed => StateName::Failed,
            State::Exited => StateName::Exited,
        }
    }

    /// The live process, if any.
    pub fn run(&self) -> Option<&Run> {
        match self {
            State::Starting(r) | State::Running(r) | State::Ready(r) | State::Unhealthy(r) => {
                Some(r)
            }
            State::Stopping { run, .. } => run.as_ref(),
            _ => None,
        }
    }

    pub fn run_mut(&mut self) -> Option<&mut Run> {
        match self {
            State::Starting(r) | State::Running(r) | State::Ready(r) | State::Unhealthy(r) => {
                Some(r)
            }
            State::Stopping { run, .. } => run.as_mut(),
            _ => None,
        }
    }

    /// A live run that is not being stopped.
    pub fn live(&self) -> Option<&Run> {
        match self {
            State::Starting(r) | State::Running(r) | State::Ready(r) | State::Unhealthy(r) => {
                Some(r)
            }
            _ => None,
        }
    }

    /// Not running and not about to: nothing to wait for.
    pub fn is_down(&self) -> bool {
        matches!(self, State::Stopped | State::Failed | State::Exited)
    }

    /// Up in the sense of `depends_on = "ready"`: ready, or running without readiness.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Ready(_) | State::Running(_))
    }
}

/// Everything the machine knows about one service. Pure data: no tasks, no handles.
#[derive(Debug, Clone)]
pub struct Svc {
    pub spec: ServiceSpec,
    state: State,
    /// Id of the latest run; events of other runs are stale.
    pub runs: u64,
    /// Token of the one pending timer; a timer firing with another token is stale.
    pub timer: u64,
    /// Automatic restarts since the last start a user asked for.
    pub restarts: u32,
    /// Failed runs in a row (reset by a run that lasted `min_uptime`).
    pub streak: u32,
    pub last_exit: Option<ExitInfo>,
    pub last_error: Option<String>,
    pub last_restart: Option<RestartReason>,
    /// How the latest finished stop went: milliseconds and whether SIGKILL was needed.
    pub last_stop: Option<(u64, bool)>,
    pub log_dropped: u64,
    /// The environment the latest run really got.
    pub spawned_env: BTreeMap<String, EnvVar>,
    /// Transitions the table refused (a bug if ever non-zero; tests assert on it).
    pub refused: u32,
}

impl Svc {
    pub fn new(spec: ServiceSpec) -> Svc {
        Svc {
            spec,
            state: State::Stopped,
            runs: 0,
            timer: 0,
            restarts: 0,
            streak: 0,
            last_exit: None,
            last_error: None,
            last_restart: None,
            last_stop: None,
            log_dropped: 0,
            spawned_env: BTreeMap::new(),
            refused: 0,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The one door to a state change: checked against [`allowed`]. A refused transition
    /// is a bug: it asserts in debug builds and is logged (and counted) in release.
    pub fn set(&mut self, to: State) -> bool {
        let (from, kind) = (self.state.kind(), to.kind());
        if !allowed(from, kind) {
            self.refused += 1;
            tracing::error!(
                service = %self.spec.name,
                "bug: transition {from:?} -> {kind:?} is not in the table; ignored"
            );
            debug_assert!(false, "transition {from:?} -> {kind:?} not allowed");
            return false;
        }
        self.state = to;
        true
    }

    pub fn run_mut(&mut self) -> Option<&mut Run> {
        self.state.run_mut()
    }

    /// A reload removed it and its stop is under way.
    pub fn removing(&self) -> bool {
        matches!(
            &self.state,
            State::Stopping {
                then: AfterStop::Remove,
                ..
            }
        )
    }

    /// Marks a stop under way as one that needed SIGKILL.
    pub fn mark_sigkill(&mut self) {
        if let State::Stopping { sigkill, .. } = &mut self.state {
            *sigkill = true;
        }
    }

    /// Mutable access to the end of a stop under way (merging intents).
    pub fn stopping_then(&mut self) -> Option<&mut AfterStop> {
        match &mut self.state {
            State::Stopping { then, .. } => Some(then),
            _ => None,
        }
    }
}

/// Does the restart policy restart after this exit?
pub fn wants_restart(
    policy: RestartPolicy,
    stop_exit_codes: &[i32],
    exit: Option<ExitInfo>,
) -> bool {
    let deliberate = exit
        .and_then(|e| e.code)
        .is_some_and(|c| stop_exit_codes.contains(&c));
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => !deliberate,
        RestartPolicy::OnFailure => {
            let clean = exit.is_some_and(|e| e.code == Some(0));
            !clean && !deliberate
        }
    }
}

/// The restart decision after a run ended: `Ok(delay)` to restart after `delay`, or
/// `Err(streak)` to give up. `streak` is the count of failed runs in a row so far.
pub fn next_restart(
    streak: &mut u32,
    failed_start: bool,
    uptime: Duration,
    min_uptime: Duration,
    max_restarts: u32,
    backoff: &crate::config::BackoffSpec,
) -> Result<Duration, u32> {
    if failed_start || uptime < min_uptime {
        *streak += 1;
    } else {
        // A run that lasted min_uptime proves the service can run: start counting afresh.
        *streak = 0;
    }
    if *streak > max_restarts {
        return Err(*streak);
    }
    Ok(backoff.delay((*streak).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffSpec;

    const CRASH: Option<ExitInfo> = Some(ExitInfo {
        code: Some(1),
        signal: None,
    });
    const CLEAN: Option<ExitInfo> = Some(ExitInfo {
        code: Some(0),
        signal: None,
    });
    const KILLED: Option<ExitInfo> = Some(ExitInfo {
        code: None,
        signal: Some(9),
    });

    #[test]
    fn policies() {
        use RestartPolicy::*;
        assert!(wants_restart(Always, &[], CLEAN));
        assert!(!wants_restart(Always, &[0], CLEAN));
        assert!(wants_restart(OnFailure, &[], CRASH));
        assert!(wants_restart(OnFailure, &[], KILLED));
        assert!(!wants_restart(OnFailure, &[], CLEAN));
        assert!(!wants_restart(OnFailure, &[1], CRASH));
        assert!(!wants_restart(Never, &[], CRASH));
    }

    #[test]
    fn backoff_then_give_up_after_max_restarts() {
        let b = BackoffSpec {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
        };
        let min = Duration::from_secs(10);
        let quick = Duration::from_millis(5);
        let mut streak = 0;
        let delays: Vec<_> = (0..3)
            .map(|_| {
                next_restart(&mut streak, false, quick, min, 3, &b)
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400]);
        assert_eq!(next_restart(&mut streak, false, quick, min, 3, &b), Err(4));
        let mut streak = 2;
        assert_eq!(
            next_restart(&mut streak, false, min, min, 3, &b),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(streak, 0);
        assert_eq!(
            next_restart(&mut streak, true, min * 2, min, 3, &b),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(streak, 1);
    }

    #[test]
    fn merge_rule() {
        let recover = AfterStop::Recover {
            reason: "x".into(),
            why: RestartReason::Crash,
            failed_start: false,
            uptime: Duration::ZERO,
        };
        assert_eq!(
            merge_after_stop(AfterStop::Remove, AfterStop::Start),
            AfterStop::Remove
        );
        assert_eq!(
            merge_after_stop(AfterStop::Idle, recover.clone()),
            AfterStop::Idle
        );
        assert_eq!(
            merge_after_stop(AfterStop::Start, AfterStop::Exited),
            AfterStop::Start
        );
        assert_eq!(
            merge_after_stop(recover.clone(), AfterStop::Idle),
            AfterStop::Idle
        );
        assert_eq!(
            merge_after_stop(AfterStop::Idle, AfterStop::Start),
            AfterStop::Start
        );
    }

    #[test]
    fn table_has_no_dead_ends() {
        // Every state can be left, and every state can be reached from somewhere.
        for k in Kind::ALL {
            assert!(Kind::ALL.iter().any(|t| *t != k && allowed(k, *t)), "{k:?}");
            assert!(Kind::ALL.iter().any(|f| *f != k && allowed(*f, k)), "{k:?}");
        }
    }
}
