//! `lmctl logs [SVC...]` (merged in time order, `--grep`, `--json`, the files themselves when
//! no daemon runs) and `lmctl flush [SVC...]`.

use std::cmp::Ordering;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{log_dir, print_error, Ctx, LogsArgs, Outcome};
use crate::config::units::human_bytes;
use crate::control::client::{self, ClientError};
use crate::control::proto::{LogsRequest, Request, Response, StreamFilter};
use crate::logs::tail::{self, MAX_TAIL};

/// How many lines back a multi-service follow looks to join its first tail without a gap.
const CATCH_UP: usize = 5_000;

/// One log line, split: `TIME SERVICE|STREAM TEXT`. Lines of another shape (the daemon's
/// "lines skipped" notes) keep only `raw`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub raw: String,
    pub time: Option<String>,
    pub service: Option<String>,
    pub stream: Option<String>,
    pub text: String,
}

impl Line {
    pub fn parse(raw: String) -> Line {
        let split = (|| {
            let bar = raw.find('|')?;
            let space = raw[..bar].rfind(' ')?;
            let time = raw[..space].to_string();
            let service = raw[space + 1..bar].to_string();
            let rest = &raw[bar + 1..];
            let (kind, text) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((time, service, kind.trim_end_matches('+').to_string(), text))
        })();
        match split {
            Some((time, service, stream, text)) => Line {
                text: text.to_string(),
                time: Some(time),
                service: Some(service),
                stream: Some(stream),
                raw,
            },
            None => Line {
                text: raw.clone(),
                time: None,
                service: None,
                stream: None,
                raw,
            },
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "time": self.time,
            "service": self.service,
            "stream": self.stream,
            "line": self.text,
        })
    }
}

/// Orders lines by their timestamps, parsed with the config's format (falling back to the
/// text, which sorts right for the default ISO format).
pub(crate) struct Clock {
    format: String,
}

impl Clock {
    fn new(ctx: &Ctx) -> Clock {
        Clock {
            format: ctx
                .loaded()
                .map(|c| c.logs.timestamp)
                .unwrap_or_else(|| crate::config::DEFAULT_TIMESTAMP.to_string()),
        }
    }

    fn millis(&self, time: &str) -> Option<i64> {
        if let Ok(t) = chrono::DateTime::parse_from_str(time, &self.format) {
            return Some(t.timestamp_millis());
        }
        use chrono::TimeZone;
        let naive = chrono::NaiveDateTime::parse_from_str(time, &self.format).ok()?;
        chrono::Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.timestamp_millis())
    }

    fn cmp(&self, a: &Line, b: &Line) -> Ordering {
        let (Some(ta), Some(tb)) = (&a.time, &b.time) else {
            return Ordering::Equal;
        };
        match (self.millis(ta), self.millis(tb)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => ta.cmp(tb),
        }
    }
}

/// Prints lines as text or JSON; false once stdout is closed (`| head`).
struct Printer {
    json: bool,
}

impl Printer {
    fn print(&self, line: &Line) -> bool {
        let mut out = std::io::stdout().lock();
        let ok = if self.json {
            writeln!(out, "{}", line.json())
        } else {
            writeln!(out, "{}", line.raw)
        };
        ok.is_ok() && out.flush().is_ok()
    }
}

/// Where the lines come from.
enum Source {
    Daemon(PathBuf),
    Files {
        dir: PathBuf,
        format: String,
        keep: u32,
    },
}

impl Source {
    /// Last lines of one request; `Err` carries the daemon's refusal.
    fn tail(&self, req: LogsRequest) -> anyhow::Result<Result<Vec<String>, Response>> {
        match self {
            Source::Daemon(socket) => {
                let mut lines = Vec::new();
                let mut refusal = None;
                client::stream(socket, Request::Logs(req), |r| match r {
                    Response::LogLine { line } => {
                        lines.push(line);
                        true
                    }
                    other => {
                        refusal = Some(other);
                        false
                    }
                })?;
                Ok(refusal.map_or(Ok(lines), Err))
            }
            Source::Files { dir, format, keep } => {
                Ok(Ok(tail::read_tail(dir, &req, format, *keep)))
            }
        }
    }
}

pub(crate) fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<Outcome> {
    let grep = match a.grep.as_deref().map(regex::Regex::new).transpose() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("lmctl: --grep: not a valid regular expression: {e}");
            return Ok(Outcome::Usage);
        }
    };
    let stream = if a.err {
        StreamFilter::Err
    } else if a.out {
        StreamFilter::Out
    } else {
        StreamFilter::Both
    };
    let printer = Printer { json: a.json };
    let clock = Clock::new(ctx);
    let request = |service: Option<String>, lines: usize, follow: bool| LogsRequest {
        service,
        lines,
        follow,
        stream,
        since_ms: a.since.map(|d| d.as_millis() as u64),
    };
    let socket = ctx.socket()?;
    // The native single stream is exact: tail and follow join in one turn of the writer.
    if a.follow && a.services.len() <= 1 && grep.is_none() {
        let req = request(a.services.first().cloned(), a.lines, true);
        let mut failed = false;
        let res = client::stream(&socket, Request::Logs(req), |resp| match resp {
            Response::LogLine { line } => printer.print(&Line::parse(line)),
            other => {
                failed |= print_error(&other);
                false
            }
        });
        return match res {
            Ok(()) => Ok(if failed { Outcome::Failed } else { Outcome::Ok }),
            Err(ClientError::NotRunning { .. }) => {
                let source = files_source(ctx, &socket)?;
                let (outcome, _) =
                    print_tail(ctx, &source, &a, &request, grep.as_ref(), &clock, false)?;
                eprintln!("lmctl: no daemon is running, so there is nothing to follow");
                Ok(outcome)
            }
            Err(e) => Err(e.into()),
        };
    }
    let source = match client::connect(&socket) {
        Ok(_) => Source::Daemon(socket.clone()),
        Err(ClientError::NotRunning { .. }) => files_source(ctx, &socket)?,
        Err(e) => return Err(e.into()),
    };
    let following = a.follow && matches!(source, Source::Daemon(_));
    if following && !a.services.is_empty() {
        // The tail below is one read of the merged log, which names no service: check them.
        if let Err(refusal) = super::status::fetch(ctx, &a.services)? {
            print_error(&refusal);
            return Ok(Outcome::Failed);
        }
    }
    let (outcome, printed) =
        print_tail(ctx, &source, &a, &request, grep.as_ref(), &clock, following)?;
    if !matches!(outcome, Outcome::Ok) || !a.follow {
        return Ok(outcome);
    }
    if !following {
        eprintln!("lmctl: no daemon is running, so there is nothing to follow");
        return Ok(outcome);
    }
    // Several services (or a pattern): follow the merged log and filter here. Its first
    // lines repeat the end of the same file the tail was read from: skip up to the last
    // printed line; should it be gone (rotated, flushed), skip what is older than it.
    let last = printed.last().cloned();
    let printed: std::collections::HashSet<String> = printed.into_iter().map(|l| l.raw).collect();
    let mut catching_up = last;
    let wanted = |l: &Line| {
        (a.services.is_empty() || l.service.as_ref().is_some_and(|s| a.services.contains(s)))
            && grep.as_ref().is_none_or(|g| g.is_match(&l.raw))
    };
    let mut failed = false;
    client::stream(
        &socket,
        Request::Logs(request(None, CATCH_UP, true)),
        |resp| match resp {
            Response::LogLine { line } => {
                let l = Line::parse(line);
                if !wanted(&l) {
                    return true;
                }
                if let Some(last) = &catching_up {
                    if l.raw == last.raw {
                        catching_up = None;
                        return true;
                    }
                    match clock.cmp(&l, last) {
                        Ordering::Less => return true,
                        Ordering::Equal if printed.contains(&l.raw) => return true,
                        _ => {}
                    }
                    catching_up = None;
                }
                printer.print(&l)
            }
            other => {
                failed |= print_error(&other);
                false
            }
        },
    )?;
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}

/// Reading the files of a stopped daemon: where they are, told on stderr.
fn files_source(ctx: &Ctx, socket: &Path) -> anyhow::Result<Source> {
    let dir = log_dir(ctx)?;
    let loaded = ctx.loaded();
    eprintln!(
        "lmctl: no daemon is running on {}; reading the log files in {}",
        socket.display(),
        dir.display()
    );
    Ok(Source::Files {
        dir,
        format: loaded
            .as_ref()
            .map(|c| c.logs.timestamp.clone())
            .unwrap_or_else(|| crate::config::DEFAULT_TIMESTAMP.to_string()),
        // Without a valid config, look back through as many rotations as exist.
        keep: loaded.map(|c| c.logs.keep).unwrap_or(100),
    })
}

/// Prints the last `-n` lines (of the services, merged in time order, matching the
/// pattern) and returns them. `one_read`: take them from a single read of the merged log
/// (filtered here), so a follow of that same log can continue exactly after them; else
/// one read per service, merged by timestamp.
fn print_tail(
    ctx: &Ctx,
    source: &Source,
    a: &LogsArgs,
    request: &dyn Fn(Option<String>, usize, bool) -> LogsRequest,
    grep: Option<&regex::Regex>,
    clock: &Clock,
    one_read: bool,
) -> anyhow::Result<(Outcome, Vec<Line>)> {
    if let Source::Files { .. } = source {
        if let Some(cfg) = ctx.loaded() {
            let unknown: Vec<&String> = a
                .services
                .iter()
                .filter(|s| !cfg.services.contains_key(*s))
                .collect();
            if let Some(s) = unknown.first() {
                eprintln!(
                    "lmctl: no service named `{s}` in {}; it has: {}",
                    cfg.file.display(),
                    cfg.services.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                return Ok((Outcome::Failed, Vec::new()));
            }
        }
    }
    // With a pattern (or filtering here), read far back so `-n` counts matching lines.
    let per_request = if grep.is_some() || one_read && !a.services.is_empty() {
        MAX_TAIL
    } else {
        a.lines
    };
    let targets: Vec<Option<String>> = if a.services.is_empty() || one_read {
        vec![None]
    } else {
        a.services.iter().cloned().map(Some).collect()
    };
    let mut lines: Vec<Line> = Vec::new();
    for t in targets {
        match source.tail(request(t, per_request, false))? {
            Ok(got) => lines.extend(got.into_iter().map(Line::parse)),
            Err(refusal) => {
                print_error(&refusal);
                return Ok((Outcome::Failed, Vec::new()));
            }
        }
    }
    if one_read && !a.services.is_empty() {
        lines.retain(|l| l.service.as_ref().is_some_and(|s| a.services.contains(s)));
    }
    if let Some(g) = grep {
        lines.retain(|l| g.is_match(&l.raw));
    }
    if a.services.len() > 1 && !one_read {
        // Each service's lines are in order already; a stable sort keeps ties in order.
        lines.sort_by(|x, y| clock.cmp(x, y));
    }
    let skip = lines.len().saturating_sub(a.lines);
    let lines = lines.split_off(skip);
    let printer = Printer { json: a.json };
    for l in &lines {
        if !printer.print(l) {
            return Ok((Outcome::Ok, Vec::new()));
        }
    }
    Ok((Outcome::Ok, lines))
}

/// `lmctl flush [SVC...]`: truncate the log files in place and delete rotated ones. The
/// daemon's writer opened each file with O_APPEND, so its next write lands at the new end
/// (offset 0) and nothing written after the truncation is lost; lines it still had
/// buffered are written after it.
pub(crate) fn flush(ctx: &Ctx, services: &[String]) -> anyhow::Result<Outcome> {
    let dir = log_dir(ctx)?;
    if !services.is_empty() {
        // Names the daemon knows, else those of the config.
        let known: Option<Vec<String>> = match client::request(&ctx.socket()?, Request::Status) {
            Ok(Response::Status { services }) => {
                Some(services.into_iter().map(|s| s.name).collect())
            }
            _ => ctx.loaded().map(|c| c.services.into_keys().collect()),
        };
        if let Some(known) = known {
            if let Some(s) = services.iter().find(|s| !known.contains(s)) {
                eprintln!("lmctl: no service named `{s}`; known: {}", known.join(", "));
                return Ok(Outcome::Failed);
            }
        }
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("nothing to flush: {} does not exist", dir.display());
            return Ok(Outcome::Ok);
        }
        Err(e) => anyhow::bail!("cannot list {} ({e})", dir.display()),
    };
    let stems: Vec<String> = if services.is_empty() {
        Vec::new()
    } else {
        services
            .iter()
            .flat_map(|s| [format!("{s}.out.log"), format!("{s}.err.log")])
            .collect()
    };
    let mut emptied = 0usize;
    let mut removed = 0usize;
    let mut bytes = 0u64;
    let mut problems = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((base, rotation)) = split_rotation(&name) else {
            continue;
        };
        let ours = if stems.is_empty() {
            base.ends_with(".log") || base == "daemon.out"
        } else {
            stems.iter().any(|s| s == base)
        };
        if !ours || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = e.path();
        bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        let res = if rotation {
            std::fs::remove_file(&path).map(|()| removed += 1)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0))
                .map(|()| emptied += 1)
        };
        if let Err(err) = res {
            problems.push(format!("{}: {err}", path.display()));
        }
    }
    println!(
        "flushed {} in {}: emptied {emptied} file(s), removed {removed} rotated file(s)",
        human_bytes(bytes),
        dir.display()
    );
    if !services.is_empty() {
        println!(
            "the merged log (supervisor.log) keeps their lines; `lmctl flush` with no service empties it too"
        );
    }
    for p in &problems {
        eprintln!("lmctl: cannot flush {p}");
    }
    Ok(if problems.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// `x.log` → (`x.log`, false); `x.log.3` → (`x.log`, true); others → None.
fn split_rotation(name: &str) -> Option<(&str, bool)> {
    if name.ends_with(".log") || name == "daemon.out" {
        return Some((name, false));
    }
    let (base, n) = name.rsplit_once('.')?;
    (n.parse::<u32>().is_ok() && (base.ends_with(".log") || base == "daemon.out"))
        .then_some((base, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_fields() {
        let l = Line::parse("2026-01-01T00:00:00.000+00:00 web|err+ a | b".into());
        assert_eq!(l.time.as_deref(), Some("2026-01-01T00:00:00.000+00:00"));
        assert_eq!(l.service.as_deref(), Some("web"));
        assert_eq!(l.stream.as_deref(), Some("err"));
        assert_eq!(l.text, "a | b");
        let odd = Line::parse("[lmctl] 3 lines skipped".into());
        assert_eq!(odd.service, None);
        assert_eq!(odd.json()["line"], "[lmctl] 3 lines skipped");
    }

    #[test]
    fn clock_orders_across_offsets() {
        let c = Clock {
            format: crate::config::DEFAULT_TIMESTAMP.to_string(),
        };
        let a = Line::parse("2026-01-01T01:00:00.000+01:00 a|out x".into());
        let b = Line::parse("2026-01-01T00:30:00.000+00:00 b|out y".into());
        assert_eq!(c.cmp(&a, &b), Ordering::Less);
    }

    #[test]
    fn rotations_are_recognised() {
        assert_eq!(split_rotation("web.out.log"), Some(("web.out.log", false)));
        assert_eq!(split_rotation("web.out.log.2"), Some(("web.out.log", true)));
        assert_eq!(split_rotation("daemon.out.1"), Some(("daemon.out", true)));
        assert_eq!(split_rotation("notes.txt"), None);
    }
}
