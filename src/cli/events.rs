//! `lmctl events` (the history in `<state_dir>/events.jsonl`, read from the files, so it
//! works with no daemon running) and `lmctl alerts` / `alerts test RULE` (asked of the
//! daemon's alert engine).

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{ask, parse_dur, print_error, Ctx, Outcome};
use crate::control::proto::{AlertRuleState, Request, Response};
use crate::logs::{sink::rotated, EVENTS_FILE};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this service's events (daemon events are those without a service).
    pub service: Option<String>,
    /// Only events at most this old, like "1h".
    #[arg(long, value_parser = parse_dur)]
    pub since: Option<Duration>,
    /// Keep printing new events as they come.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// One JSON object per line, as stored.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub cmd: Option<AlertsCmd>,
    /// One JSON object per rule instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCmd {
    /// Send a test message to the rule's destinations and say how each went.
    Test {
        /// The rule's `name` in `[[alerts.rule]]`.
        rule: String,
    },
}

/// `[supervisor] state_dir` read leniently (a config with unrelated mistakes still works).
fn state_dir(config: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(config).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); pass the config with --config",
            config.display()
        )
    })?;
    let table: toml::Table = toml::from_str(&text).unwrap_or_default();
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(table
        .get("supervisor")
        .and_then(|v| v.as_table())
        .and_then(|t| t.get("state_dir"))
        .and_then(|v| v.as_str())
        .map(|s| dir.join(s))
        .unwrap_or_else(|| dir.join("var")))
}

/// The history files, oldest first: `events.jsonl.N` … `.1`, then `events.jsonl`.
fn files(state_dir: &Path) -> Vec<PathBuf> {
    let base = state_dir.join(EVENTS_FILE);
    let mut rotated_files: Vec<PathBuf> = (1..=1000)
        .map(|i| rotated(&base, i))
        .take_while(|p| p.exists())
        .collect();
    rotated_files.reverse();
    rotated_files.push(base);
    rotated_files
}

struct Filter {
    service: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
}

impl Filter {
    /// The line to print for a stored line, or None when filtered out.
    fn show(&self, line: &str) -> Option<String> {
        let v: Value = serde_json::from_str(line).ok()?;
        if let Some(s) = &self.service {
            if v.get("service").and_then(Value::as_str) != Some(s.as_str()) {
                return None;
            }
        }
        let time = v.get("time").and_then(Value::as_str).unwrap_or("");
        if let Some(since) = self.since {
            let t = chrono::DateTime::parse_from_rfc3339(time).ok()?;
            if t < since {
                return None;
            }
        }
        if self.json {
            return Some(line.to_string());
        }
        let local = chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S%.3f")
                    .to_string()
            })
            .unwrap_or_else(|_| time.to_string());
        let service = v
            .get("service")
            .and_then(Value::as_str)
            .unwrap_or(crate::logs::DAEMON);
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("?");
        let text = v.get("text").and_then(Value::as_str).unwrap_or("");
        Some(format!("{local} {service:<16} {kind:<16} {text}"))
    }
}

pub(super) fn events(ctx: &Ctx, a: EventsArgs) -> anyhow::Result<Outcome> {
    let dir = state_dir(&ctx.config()?)?;
    let filter = Filter {
        service: a.service,
        since: a
            .since
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| chrono::Utc::now() - d),
        json: a.json,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let list = files(&dir);
    let current = list
        .last()
        .cloned()
        .unwrap_or_else(|| dir.join(EVENTS_FILE));
    for f in &list {
        let Ok(file) = std::fs::File::open(f) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            if let Some(s) = filter.show(&line) {
                if writeln!(out, "{s}").is_err() {
                    return Ok(Outcome::Ok);
                }
            }
        }
    }
    if !current.exists() && !a.follow {
        eprintln!(
            "lmctl: no event history yet in {} (the daemon writes it as things happen)",
            current.display()
        );
        return Ok(Outcome::Ok);
    }
    let _ = out.flush();
    if !a.follow {
        return Ok(Outcome::Ok);
    }
    drop(out);
    follow(&current, &filter)
}

/// Prints lines appended to `path`, across rotations (a new inode or a shorter file
/// starts over at its beginning). Runs until interrupted or stdout closes.
fn follow(path: &Path, filter: &Filter) -> anyhow::Result<Outcome> {
    let mut pos = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut ino = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
    let mut partial = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        if meta.ino() != ino || meta.len() < pos {
            ino = meta.ino();
            pos = 0;
            partial.clear();
        }
        if meta.len() == pos {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(path) else {
            continue;
        };
        if f.seek(SeekFrom::Start(pos)).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf).unwrap_or(0);
        pos += n as u64;
        partial.push_str(&String::from_utf8_lossy(&buf));
        let mut out = std::io::stdout().lock();
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            if let Some(s) = filter.show(line.trim_end()) {
                if writeln!(out, "{s}").is_err() {
                    return Ok(Outcome::Ok);
                }
            }
        }
        if out.flush().is_err() {
            return Ok(Outcome::Ok);
        }
    }
}

pub(super) fn alerts(ctx: &Ctx, a: AlertsArgs) -> anyhow::Result<Outcome> {
    match a.cmd {
        None => {
            let resp = ask(ctx, Request::Alerts)?;
            if print_error(&resp) {
                return Ok(Outcome::Failed);
            }
            let Response::Alerts { rules } = resp else {
                anyhow::bail!("the daemon sent an unexpected answer");
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else {
                print!("{}", render_rules(&rules));
            }
            Ok(Outcome::Ok)
        }
        Some(AlertsCmd::Test { rule }) => {
            let resp = ask(ctx, Request::AlertTest { rule })?;
            if print_error(&resp) {
                return Ok(Outcome::Failed);
            }
            let Response::AlertTest { rule, results } = resp else {
                anyhow::bail!("the daemon sent an unexpected answer");
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&results)?);
            } else {
                for r in &results {
                    let mark = if r.ok { "sent" } else { "FAILED" };
                    println!("{rule} -> {}: {mark}: {}", r.destination, r.detail);
                }
            }
            Ok(if results.iter().all(|r| r.ok) {
                Outcome::Ok
            } else {
                Outcome::Failed
            })
        }
    }
}

fn render_rules(rules: &[AlertRuleState]) -> String {
    if rules.is_empty() {
        return "no alert rules\n".into();
    }
    let mut o = String::new();
    for r in rules {
        let state = if r.firing.is_empty() {
            "ok".to_string()
        } else {
            let list: Vec<String> = r
                .firing
                .iter()
                .map(|f| {
                    format!(
                        "{} since {}",
                        f.service.as_deref().unwrap_or("daemon"),
                        f.since
                    )
                })
                .collect();
            format!("FIRING: {}", list.join(", "))
        };
        o.push_str(&format!(
            "{} [{}] {}\n  state: {state}\n  to: {}\n  last sent: {}\n  last error: {}\n",
            r.name,
            r.severity,
            r.condition,
            r.to.join(", "),
            r.last_sent.as_deref().unwrap_or("-"),
            r.last_error.as_deref().unwrap_or("-"),
        ));
    }
    o
}
