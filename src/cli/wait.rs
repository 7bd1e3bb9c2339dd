//! `start`, `restart` and `stop` wait for the end result and say what it was: lmctl never
//! reports success for a failure. The daemon answers each verb at once with one outcome per
//! service; the waiting is polling `status` until every named service has settled.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Outcome;
use crate::config::units::human_duration;
use crate::control::client;
use crate::control::proto::{
    LogsRequest, Outcome as SvcOutcome, OutcomeKind, Request, Response, ServiceStatus, StateName,
    StreamFilter,
};

/// How many stderr lines a failed start prints.
const STDERR_TAIL: usize = 10;

pub fn print_outcomes(outcomes: &[SvcOutcome], warnings: &[String]) {
    for o in outcomes {
        let what = match o.outcome {
            OutcomeKind::Starting => "starting".to_string(),
            OutcomeKind::AlreadyUp => format!("already {}", o.was),
            OutcomeKind::Restarting => "restarting".to_string(),
            OutcomeKind::Stopping => "stopping".to_string(),
            OutcomeKind::Stopped => "stopped".to_string(),
            OutcomeKind::AlreadyStopped => "already stopped".to_string(),
            OutcomeKind::Signalled => o.detail.clone().unwrap_or_else(|| "signalled".into()),
        };
        println!("{}: {what}", o.service);
    }
    for w in warnings {
        println!("{w}");
    }
}

fn status(socket: &Path) -> anyhow::Result<Vec<ServiceStatus>> {
    match client::request(socket, Request::Status)? {
        Response::Status { services } => Ok(services),
        other => anyhow::bail!("unexpected answer to status: {other:?}"),
    }
}

/// A service waiting for a dependency that is down will not start by itself.
fn blocked(s: &ServiceStatus) -> bool {
    s.waiting_for.iter().any(|w| {
        ["(it is failed)", "(it is exited)", "(it is stopped)"]
            .iter()
            .any(|t| w.ends_with(t))
    })
}

/// Polls status until every named service is started (ready, or running past its start
/// grace), or one has failed. Backoff means "still trying": keep waiting until it gives up
/// or the deadline passes. `seen_run`: pids the services had before a restart, so the old
/// process is not mistaken for the new one.
pub fn until_started(
    socket: &Path,
    names: &[String],
    timeout: Duration,
    old_pids: &[(String, Option<i32>)],
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut last: Vec<(String, StateName)> = Vec::new();
    loop {
        let services = status(socket)?;
        let ours: Vec<&ServiceStatus> = services
            .iter()
            .filter(|s| names.contains(&s.name))
            .collect();
        let now: Vec<(String, StateName)> =
            ours.iter().map(|s| (s.name.clone(), s.state)).collect();
        if now != last {
            for s in &ours {
                if !last.iter().any(|(n, st)| *n == s.name && *st == s.state) {
                    let extra = if s.waiting_for.is_empty() {
                        String::new()
                    } else {
                        format!(" (waiting for {})", s.waiting_for.join(", "))
                    };
                    println!("  {:<20} {}{extra}", s.name, s.state);
                }
            }
            last = now;
        }
        let failed: Vec<&&ServiceStatus> = ours
            .iter()
            .filter(|s| s.state.is_down() || blocked(s))
            .collect();
        if !failed.is_empty() {
            for s in failed {
                report_failure(socket, s);
            }
            return Ok(Outcome::Failed);
        }
        let is_old = |s: &ServiceStatus| {
            old_pids
                .iter()
                .any(|(n, p)| *n == s.name && p.is_some() && *p == s.pid)
        };
        if ours
            .iter()
            .all(|s| matches!(s.state, StateName::Ready | StateName::Running) && !is_old(s))
        {
            return Ok(Outcome::Ok);
        }
        if Instant::now() > deadline {
            for s in ours
                .iter()
                .filter(|s| !matches!(s.state, StateName::Ready | StateName::Running))
            {
                eprintln!(
                    "lmctl: {} is still {} after {}{}",
                    s.name,
                    s.state,
                    human_duration(timeout),
                    s.last_error
                        .as_deref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                );
            }
            eprintln!("lmctl: see `lmctl status` and `lmctl logs`");
            return Ok(Outcome::Failed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Says why a service did not start: its state, last exit, the error the daemon recorded
/// and the last lines of its stderr, so the operator needs no second command.
fn report_failure(socket: &Path, s: &ServiceStatus) {
    let why = s
        .last_error
        .clone()
        .or_else(|| blocked(s).then(|| format!("waiting for {}", s.waiting_for.join(", "))))
        .unwrap_or_else(|| "no error recorded".into());
    let exit = s
        .last_exit
        .map(|e| format!("; last exit: {e}"))
        .unwrap_or_default();
    eprintln!(
        "lmctl: {} failed to start: it is {}{exit}: {why}",
        s.name, s.state
    );
    let req = Request::Logs(LogsRequest {
        service: Some(s.name.clone()),
        lines: STDERR_TAIL,
        follow: false,
        stream: StreamFilter::Err,
        since_ms: None,
    });
    let mut lines = Vec::new();
    let _ = client::stream_with(socket, req, Some(client::DEFAULT_DEADLINE), |r| {
        if let Response::LogLine { line } = r {
            lines.push(line);
        }
        true
    });
    if lines.is_empty() {
        eprintln!("  (nothing on its stderr)");
    } else {
        eprintln!("  last lines of its stderr:");
        for l in lines {
            eprintln!("  {l}");
        }
    }
}

/// Polls status until every named service is down (its whole tree gone: `stopping` lasts
/// until the leftovers are reaped), then says how long it took and whether SIGKILL was
/// needed.
pub fn until_stopped(
    socket: &Path,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut pending: Vec<String> = names.to_vec();
    loop {
        let services = status(socket)?;
        let mut still = Vec::new();
        for name in &pending {
            match services.iter().find(|s| s.name == *name) {
                // Removed from the config and forgotten: gone.
                None => println!("{name}: stopped"),
                Some(s) if s.state == StateName::Stopping => still.push(name.clone()),
                Some(s) if s.pid.is_some() => still.push(name.clone()),
                Some(s) => {
                    let how = match s.last_stop {
                        Some(r) if r.sigkill => format!(
                            " in {} (SIGKILL was needed: it ignored its stop signal)",
                            human_duration(Duration::from_millis(r.took_ms))
                        ),
                        Some(r) => {
                            format!(" in {}", human_duration(Duration::from_millis(r.took_ms)))
                        }
                        None => String::new(),
                    };
                    println!("{name}: {}{how}", s.state);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(Outcome::Ok);
        }
        if Instant::now() > deadline {
            eprintln!(
                "lmctl: {} still stopping after {}; see `lmctl status`",
                pending.join(", "),
                human_duration(timeout)
            );
            return Ok(Outcome::Failed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
