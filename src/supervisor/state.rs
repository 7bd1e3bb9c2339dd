//! Per-service state: data lives in the variant that needs it (a pid only while a process
//! runs, a retry time only in backoff). Pure decisions live here too, tested without
//! processes.

use std::time::{Duration, Instant};

use crate::config::RestartPolicy;
use crate::control::proto::ExitInfo;

/// One spawned process of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub id: u64,
    pub pid: i32,
    pub started: Instant,
}

/// What to do once a stop (requested or not) has finished and the tree is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterStop {
    /// Stay stopped.
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
        failed_start: bool,
        uptime: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Stopped,
    /// Start asked for; waiting for dependencies (shown as `starting`).
    Waiting,
    /// Spawned; waiting for its ready signal or probe.
    Starting(Run),
    /// Up, with no readiness configured.
    Running(Run),
    Ready(Run),
    /// Failing its health probe, and its policy does not restart it.
    Unhealthy(Run),
    /// Stop signal sent (`run` Some), or the main process is gone and leftovers of its tree
    /// are being reaped (`run` None).
    Stopping {
        run: Option<Run>,
        then: AfterStop,
    },
    Backoff {
        until: Instant,
    },
    Failed,
    Exited,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Waiting | State::Starting(_) => "starting",
            State::Running(_) => "running",
            State::Ready(_) => "ready",
            State::Unhealthy(_) => "unhealthy",
            State::Stopping { .. } => "stopping",
            State::Backoff { .. } => "backoff",
            State::Failed => "failed",
            State::Exited => "exited",
        }
    }

    /// The live process, if any.
    pub fn run(&self) -> Option<Run> {
        match self {
            State::Starting(r) | State::Running(r) | State::Ready(r) | State::Unhealthy(r) => {
                Some(*r)
            }
            State::Stopping { run, .. } => *run,
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
        // A long run resets the count.
        let mut streak = 2;
        assert_eq!(
            next_restart(&mut streak, false, min, min, 3, &b),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(streak, 0);
        // A failed start always counts, however long it took.
        assert_eq!(
            next_restart(&mut streak, true, min * 2, min, 3, &b),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(streak, 1);
    }
}
