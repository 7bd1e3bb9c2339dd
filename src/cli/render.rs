//! Human output: tables a person reads at a glance.

use std::fmt::Write;
use std::time::Duration;

use crate::config::units::{human_bytes, human_duration};
use crate::config::EnvSource;
use crate::control::proto::{EnvEntry, ReloadDiff, ServiceDetail, ServiceStatus, StateName};

pub fn status_table(services: &[ServiceStatus]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:>8} {:>8} {:>8} {:>6} {:>10} {:>5} {:<9}",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU%", "MEMORY", "PROCS", "HEALTH"
    );
    for s in services {
        let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let uptime = if s.pid.is_some() {
            human_duration(Duration::from_millis(s.uptime_ms))
        } else {
            "-".into()
        };
        let mem = if s.pid.is_some() {
            human_bytes(s.memory_bytes)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>8} {:>8} {:>8} {:>6.1} {:>10} {:>5} {:<9}",
            s.name, s.state, pid, uptime, s.restarts, s.cpu_percent, mem, s.processes, s.health
        );
        if !s.waiting_for.is_empty() {
            let _ = writeln!(out, "  waiting for {}", s.waiting_for.join(", "));
        }
        if let Some(ms) = s.backoff_ms {
            let _ = writeln!(
                out,
                "  next start in {}",
                human_duration(Duration::from_millis(ms))
            );
        }
        if let Some(e) = &s.last_error {
            if !matches!(s.state, StateName::Ready | StateName::Running) || s.restarts > 0 {
                let _ = writeln!(out, "  last error: {e}");
            }
        }
    }
    out
}

pub fn env_table(vars: &[EnvEntry]) -> String {
    let mut out = String::new();
    for v in vars {
        let source = match &v.source {
            EnvSource::Declared { interpolated: true } => "env (interpolated)".to_string(),
            EnvSource::Declared {
                interpolated: false,
            } => "env".to_string(),
            EnvSource::EnvFile { file, line } => format!("{}:{line}", file.display()),
            EnvSource::Inherited => "inherited".to_string(),
            EnvSource::Supervisor => "supervisor".to_string(),
        };
        let _ = writeln!(out, "{}={}\t# {source}", v.key, v.value);
    }
    out
}

pub fn diff(d: &ReloadDiff) -> String {
    let mut out = String::new();
    for (label, list) in [
        ("added (started)", &d.added),
        ("removed (stopped)", &d.removed),
        ("changed (restarted)", &d.changed),
        ("unchanged", &d.unchanged),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "{label}: {}", list.join(", "));
        }
    }
    for w in &d.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

pub fn detail(d: &ServiceDetail) -> String {
    let mut out = status_table(std::slice::from_ref(&d.status));
    let _ = writeln!(
        out,
        "\ntree ({}; memory by {}):",
        d.status.tree, d.status.memory_source
    );
    for p in &d.tree {
        let pss = p.pss_bytes.map(human_bytes).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  {:>7} {:>7} rss {:>10} pss {:>10}  {}",
            p.pid,
            p.ppid,
            human_bytes(p.rss_bytes),
            pss,
            p.command
        );
    }
    if !d.memory.is_empty() {
        let m: Vec<String> = d
            .memory
            .iter()
            .map(|(k, v)| format!("{k} {}", human_bytes(*v)))
            .collect();
        let _ = writeln!(out, "  memory: {}", m.join(", "));
    }
    for (title, list) in [
        ("exits", &d.exits),
        ("probes", &d.probes),
        ("events", &d.events),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "\n{title}:");
            for l in list.iter().rev().take(15).rev() {
                let _ = writeln!(out, "  {l}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nconfig:\n{}",
        serde_json::to_string_pretty(&d.config).unwrap_or_default()
    );
    out
}
