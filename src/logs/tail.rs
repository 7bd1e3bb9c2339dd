//! Last lines of a log for `lmctl logs`, across rotated files, with filters.

use std::path::{Path, PathBuf};

use super::sink::rotated;
use crate::control::proto::{LogsRequest, StreamFilter};

/// Splits `TS SERVICE|KIND TEXT` into (service, kind); None for foreign lines.
pub fn parse_line(line: &str) -> Option<(&str, &str)> {
    let bar = line.find('|')?;
    let head = &line[..bar];
    let service = head.rsplit(' ').next()?;
    let rest = &line[bar + 1..];
    let kind = rest.split(' ').next()?;
    Some((service, kind.trim_end_matches('+')))
}

/// Does `line` pass the request's service and stream filters?
pub fn matches(req: &LogsRequest, service: &str, kind: &str) -> bool {
    if let Some(s) = &req.service {
        if s != service {
            return false;
        }
    }
    match req.stream {
        StreamFilter::Both => true,
        StreamFilter::Out => kind == "out",
        StreamFilter::Err => kind == "err",
    }
}

fn too_old(line: &str, since_ms: Option<u64>, fmt: &str) -> bool {
    let Some(ms) = since_ms else { return false };
    // The timestamp is everything before the service field.
    let Some(bar) = line.find('|') else {
        return false;
    };
    let Some(space) = line[..bar].rfind(' ') else {
        return false;
    };
    let ts = &line[..space];
    // With an offset in the format, parse it; without one, the time is local.
    let t = match chrono::DateTime::parse_from_str(ts, fmt) {
        Ok(t) => t.with_timezone(&chrono::Local),
        Err(_) => {
            use chrono::TimeZone;
            let Ok(naive) = chrono::NaiveDateTime::parse_from_str(ts, fmt) else {
                return false;
            };
            let Some(t) = chrono::Local.from_local_datetime(&naive).earliest() else {
                return false;
            };
            t
        }
    };
    let age = chrono::Local::now().signed_duration_since(t);
    age.num_milliseconds() > ms as i64
}

/// Which file holds the lines asked for: a service's own stream file when one stream of one
/// service is asked, else the merged log (filtered).
fn source(dir: &Path, req: &LogsRequest) -> PathBuf {
    match (&req.service, req.stream) {
        (Some(s), StreamFilter::Out) => dir.join(format!("{s}.out.log")),
        (Some(s), StreamFilter::Err) => dir.join(format!("{s}.err.log")),
        _ => dir.join("supervisor.log"),
    }
}

/// The most lines one `lmctl logs` may ask for: the tail is read on the writer thread.
pub const MAX_TAIL: usize = 100_000;

pub fn read_tail(dir: &Path, req: &LogsRequest, fmt: &str, keep: u32) -> Vec<String> {
    let want = req.lines.min(MAX_TAIL);
    let path = source(dir, req);
    let mut found: Vec<String> = Vec::new();
    // Newest file first; older rotations only while lines are missing.
    for i in 0..=keep {
        let p = if i == 0 {
            path.clone()
        } else {
            rotated(&path, i)
        };
        let Ok(bytes) = std::fs::read(&p) else {
            if i == 0 {
                continue;
            }
            break;
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut chunk: Vec<String> = text
            .lines()
            .filter(|l| parse_line(l).is_some_and(|(s, k)| matches(req, s, k)))
            .filter(|l| !too_old(l, req.since_ms, fmt))
            .map(str::to_string)
            .collect();
        chunk.append(&mut found);
        found = chunk;
        if found.len() >= want {
            break;
        }
    }
    let skip = found.len().saturating_sub(want);
    found.split_off(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(
            parse_line("2026-01-01T00:00:00.000+00:00 hub|out hello | world"),
            Some(("hub", "out"))
        );
        assert_eq!(parse_line("2026 x y hub|err+ rest"), Some(("hub", "err")));
        assert_eq!(parse_line("no bar here"), None);
    }
}
