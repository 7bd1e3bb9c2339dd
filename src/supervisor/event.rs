//! What happened, typed: the machine emits these, the actor writes them to the merged log
//! (through `Display`, one line each) and to each service's history. Alerts, metrics and
//! the event history read the same values, never the text.

use std::time::Duration;

use serde::Serialize;

use crate::config::units::{human_bytes, human_duration};
use crate::control::proto::{ExitInfo, MemorySource, RestartReason};
use crate::supervisor::ProbeKind;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// None for the daemon itself.
    pub service: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    pub fn daemon(kind: EventKind) -> Event {
        Event {
            service: None,
            kind,
        }
    }

    pub fn of(service: &str, kind: EventKind) -> Event {
        Event {
            service: Some(service.to_string()),
            kind,
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Spawn {
        pid: i32,
        command: String,
        /// Set when the service has a readiness check.
        ready_timeout_ms: Option<u64>,
        /// Set when the service has no readiness check: how long it must stay up.
        grace_ms: Option<u64>,
    },
    SpawnFailed {
        error: String,
    },
    /// The child could not join its cgroup: this run is tracked by group and markers.
    CgroupFallback {
        error: String,
    },
    Ready {
        after_ms: u64,
        how: String,
    },
    /// No readiness check, and the process stayed up for its start grace.
    Started {
        after_ms: u64,
    },
    Exit {
        pid: i32,
        exit_code: Option<i32>,
        signal: Option<i32>,
        uptime_ms: u64,
    },
    Restart {
        reason: RestartReason,
        detail: String,
        delay_ms: u64,
        streak: u32,
    },
    /// Gave up after `max_restarts`.
    Failed {
        detail: String,
    },
    NotReady {
        detail: String,
    },
    MemoryRestart {
        memory_bytes: u64,
        source: MemorySource,
        limit_bytes: u64,
        processes: usize,
        biggest: Vec<String>,
    },
    ProbeFailed {
        probe: ProbeKind,
        fails: u32,
        retries: u32,
        error: String,
    },
    /// Health failed `retries` times; `restart`: whether it is restarted for it.
    Unhealthy {
        detail: String,
        restart: bool,
    },
    Watchdog {
        detail: String,
    },
    StopSignal {
        pid: i32,
        signal: String,
        timeout_ms: u64,
    },
    StopTimeout {
        pid: i32,
        timeout_ms: u64,
    },
    Stop {
        took_ms: u64,
        sigkill: bool,
    },
    OrphansReaped {
        processes: Vec<String>,
        earlier_daemon: bool,
    },
    CgroupReaped {
        cgroup: String,
        pids: Vec<i32>,
    },
    Signal {
        pid: i32,
        signal: String,
    },
    UserRequest {
        verb: String,
        uid: Option<u32>,
    },
    NotifyIgnored {
        pid: i32,
    },
    NotifyStopping,
    NotifyMainPid {
        value: String,
    },
    NotifyWatchdogTrigger,
    NotifySocketFailed {
        path: String,
        error: String,
    },
    Added,
    RemovedStopping,
    Removed,
    ReloadRestart,
    Reload {
        file: String,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
        unchanged: Vec<String>,
    },
    ReloadRefused {
        error: String,
    },
    ReloadIgnored,
    Settled {
        status: String,
    },
    ShuttingDown {
        why: String,
    },
    ForceKill,
    DaemonExit,
    LogDropped {
        count: u64,
    },
    /// The daemon started (written before the actor runs).
    DaemonStart {
        pid: u32,
        version: String,
        config: String,
        tracking: String,
    },
    /// An alert rule's condition holds (written when the engine decides, before delivery).
    AlertFired {
        rule: String,
        severity: String,
        summary: String,
    },
    /// The condition cleared.
    AlertResolved {
        rule: String,
        summary: String,
    },
    /// A message reached a destination.
    AlertSent {
        rule: String,
        destination: String,
        status: String,
        attempt: u32,
    },
    /// A delivery attempt failed; `retry_in_ms` None: given up.
    AlertFailed {
        rule: String,
        destination: String,
        attempt: u32,
        error: String,
        retry_in_ms: Option<u64>,
    },
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use EventKind::*;
        let d = |m: u64| human_duration(Duration::from_millis(m));
        match self {
            Spawn {
                pid,
                command,
                ready_timeout_ms: Some(t),
                ..
            } => write!(
                f,
                "spawned pid {pid} ({command}); waiting up to {} for it to be ready",
                d(*t)
            ),
            Spawn {
                pid,
                command,
                grace_ms: Some(g),
                ..
            } if *g > 0 => write!(
                f,
                "spawned pid {pid} ({command}); started once it stays up {}",
                d(*g)
            ),
            Spawn { pid, command, .. } => write!(f, "spawned pid {pid} ({command})"),
            SpawnFailed { error } => write!(f, "failed to start: {error}"),
            CgroupFallback { error } => write!(
                f,
                "could not join its cgroup ({error}): this run is tracked by process group and markers"
            ),
            Ready { after_ms, how } => write!(f, "ready after {} ({how})", d(*after_ms)),
            Started { after_ms } => write!(f, "started: up for {}", d(*after_ms)),
            Exit {
                pid,
                exit_code,
                signal,
                uptime_ms,
            } => {
                let exit = ExitInfo {
                    code: *exit_code,
                    signal: *signal,
                };
                write!(f, "pid {pid} exited with {exit} after {}", d(*uptime_ms))
            }
            Restart {
                detail,
                delay_ms,
                streak,
                ..
            } => write!(
                f,
                "restarting in {} ({detail}; failed runs in a row: {streak})",
                d(*delay_ms)
            ),
            Failed { detail } => write!(f, "failed: {detail}"),
            NotReady { detail } => write!(f, "{detail}: stopping it"),
            MemoryRestart {
                memory_bytes,
                source,
                limit_bytes,
                processes,
                biggest,
            } => write!(
                f,
                "memory {} ({source}, {processes} processes) over max_memory {}; biggest: {}: restarting it",
                human_bytes(*memory_bytes),
                human_bytes(*limit_bytes),
                biggest.join(", ")
            ),
            ProbeFailed {
                probe,
                fails,
                retries,
                error,
            } => match probe {
                ProbeKind::Health => {
                    write!(f, "health probe failed ({fails}/{retries}): {error}")
                }
                ProbeKind::Ready => write!(f, "ready probe: {error}"),
            },
            Unhealthy { detail, restart } => {
                if *restart {
                    write!(f, "{detail}: restarting it")
                } else {
                    write!(f, "{detail}")
                }
            }
            Watchdog { detail } => write!(f, "{detail}: restarting it"),
            StopSignal {
                pid,
                signal,
                timeout_ms,
            } => write!(
                f,
                "sent {signal} to process group {pid}; SIGKILL in {}",
                d(*timeout_ms)
            ),
            StopTimeout { pid, timeout_ms } => write!(
                f,
                "pid {pid} did not stop within {}: sending SIGKILL to its whole tree",
                d(*timeout_ms)
            ),
            Stop { took_ms, sigkill } => {
                if *sigkill {
                    write!(f, "stopped in {} (SIGKILL was needed)", d(*took_ms))
                } else {
                    write!(f, "stopped in {}", d(*took_ms))
                }
            }
            OrphansReaped {
                processes,
                earlier_daemon,
            } => {
                if *earlier_daemon {
                    write!(
                        f,
                        "reaped {} process(es) left by an earlier daemon: {}",
                        processes.len(),
                        processes.join(", ")
                    )
                } else {
                    write!(
                        f,
                        "reaped {} leftover process(es) of its tree: {}",
                        processes.len(),
                        processes.join(", ")
                    )
                }
            }
            CgroupReaped { cgroup, pids } => write!(
                f,
                "killed cgroup {cgroup} left by an earlier daemon (pids {pids:?})"
            ),
            Signal { pid, signal } => write!(f, "sent {signal} to pid {pid} (lmctl signal)"),
            UserRequest { verb, uid } => match uid {
                Some(u) => write!(f, "lmctl {verb} (uid {u})"),
                None => write!(f, "lmctl {verb}"),
            },
            NotifyIgnored { pid } => write!(
                f,
                "ignored a notify message from pid {pid}, which is not part of the service"
            ),
            NotifyStopping => write!(f, "says it is stopping (STOPPING=1)"),
            NotifyMainPid { value } => write!(
                f,
                "sent MAINPID={value}; the supervisor keeps tracking the process it spawned"
            ),
            NotifyWatchdogTrigger => {
                write!(f, "asked for a watchdog restart (WATCHDOG=trigger)")
            }
            NotifySocketFailed { path, error } => {
                write!(f, "cannot open its notify socket {path}: {error}")
            }
            Added => write!(f, "reload: added"),
            RemovedStopping => write!(f, "reload: removed from the config; stopping it"),
            Removed => write!(f, "removed from the config: stopped and forgotten"),
            ReloadRestart => write!(
                f,
                "reload: config changed; restarting it with the new config"
            ),
            Reload {
                file,
                added,
                removed,
                changed,
                unchanged,
            } => write!(
                f,
                "reloaded {file}: added {added:?}, removed {removed:?}, changed {changed:?}, unchanged {unchanged:?}"
            ),
            ReloadRefused { error } => write!(f, "reload refused: {error}"),
            ReloadIgnored => write!(f, "SIGHUP ignored: the daemon is shutting down"),
            Settled { status } => write!(f, "every autostart service has settled: {status}"),
            ShuttingDown { why } => write!(
                f,
                "shutting down ({why}): stopping every service in reverse dependency order"
            ),
            ForceKill => write!(
                f,
                "second stop signal: SIGKILL to every remaining process tree"
            ),
            DaemonExit => write!(f, "all services stopped; daemon exiting"),
            LogDropped { count } => write!(f, "{count} log line(s) dropped under back-pressure"),
            DaemonStart {
                pid,
                version,
                config,
                tracking,
            } => write!(
                f,
                "leadmaster-supervisord {version} (pid {pid}) starting with {config}; process trees tracked by {tracking}"
            ),
            AlertFired {
                rule,
                severity,
                summary,
            } => write!(f, "alert `{rule}` firing ({severity}): {summary}"),
            AlertResolved { rule, summary } => write!(f, "alert `{rule}` resolved: {summary}"),
            AlertSent {
                rule,
                destination,
                status,
                attempt,
            } => write!(
                f,
                "alert `{rule}` ({status}) delivered to `{destination}` (attempt {attempt})"
            ),
            AlertFailed {
                rule,
                destination,
                attempt,
                error,
                retry_in_ms,
            } => match retry_in_ms {
                Some(r) => write!(
                    f,
                    "alert `{rule}`: delivery to `{destination}` failed (attempt {attempt}: {error}); retrying in {}",
                    d(*r)
                ),
                None => write!(
                    f,
                    "alert `{rule}`: delivery to `{destination}` failed (attempt {attempt}: {error}); giving up: check the destination, then `lmctl alerts test {rule}`"
                ),
            },
        }
    }
}

impl EventKind {
    pub fn restart(reason: RestartReason, detail: String, delay: Duration, streak: u32) -> Self {
        EventKind::Restart {
            reason,
            detail,
            delay_ms: ms(delay),
            streak,
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    ms(d)
}
