//! Human output: tables a person reads at a glance.

use std::fmt::Write;
use std::time::Duration;

use crate::config::units::{human_bytes, human_duration};
use crate::config::EnvSource;
use crate::control::proto::{EnvEntry, ReloadDiff, ServiceDetail, ServiceStatus, StateName};

/// Colours on stdout: only on a terminal, and never with `NO_COLOR` set (no-color.org) or
/// `TERM=dumb`.
pub fn color_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// ANSI colour of a state: green ready/running, yellow on the way, red failed.
fn state_color(state: &str) -> Option<&'static str> {
    match state {
        "ready" | "running" => Some("32"),
        "starting" | "backoff" | "stopping" | "unhealthy" => Some("33"),
        "failed" => Some("31"),
        _ => None,
    }
}

/// `text` padded to `width` (padding outside the colour, so columns stay aligned).
fn paint(text: &str, width: usize, color: Option<&str>) -> String {
    let pad = " ".repeat(width.saturating_sub(text.chars().count()));
    match color {
        Some(c) => format!("\x1b[{c}m{text}\x1b[0m{pad}"),
        None => format!("{text}{pad}"),
    }
}

/// Lines with their trailing spaces removed (padding of the last column).
fn trim_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

/// The status table; HEALTH is `-` for services without a health probe (`has_health`).
pub fn status_table(services: &[ServiceStatus], color: bool) -> String {
    let name_w = services
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, 40);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<name_w$} {:<10} {:>8} {:>8} {:>8} {:>6} {:>10} {:>5} HEALTH",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU%", "MEMORY", "PROCS"
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
        let health = if !s.has_health {
            "-"
        } else {
            s.health.as_str()
        };
        let state = paint(
            s.state.as_str(),
            10,
            state_color(s.state.as_str()).filter(|_| color),
        );
        let _ = writeln!(
            out,
            "{:<name_w$} {state} {:>8} {:>8} {:>8} {:>6.1} {:>10} {:>5} {}",
            s.name, pid, uptime, s.restarts, s.cpu_percent, mem, s.processes, health
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
        if let (Some(r), true) = (s.last_restart_reason, s.restarts > 0) {
            let _ = writeln!(out, "  last restart: {}", r.as_str());
        }
    }
    trim_lines(&out)
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

pub fn detail(d: &ServiceDetail, color: bool) -> String {
    let mut out = status_table(std::slice::from_ref(&d.status), color);
    let _ = writeln!(
        out,
        "\ntree ({}; memory by {}):",
        d.status.tree, d.status.memory_source
    );
    if !d.tree.is_empty() {
        let _ = writeln!(
            out,
            "  {:>7} {:>7} {:>10} {:>10}  COMMAND",
            "PID", "PPID", "RSS", "PSS"
        );
    }
    for p in &d.tree {
        let pss = p.pss_bytes.map(human_bytes).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  {:>7} {:>7} {:>10} {:>10}  {}",
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
    trim_lines(&out)
}
