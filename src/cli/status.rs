//! `lmctl status [SVC...] [--watch [INTERVAL]]` and `lmctl show SVC...`.

use std::io::Write;
use std::time::Duration;

use super::{ask, print_error, render, Ctx, Outcome, StatusArgs};
use crate::control::proto::{Request, Response, ServiceStatus};

/// Every service of a status answer, or an error naming the ones that do not exist.
pub(crate) fn fetch(
    ctx: &Ctx,
    names: &[String],
) -> anyhow::Result<Result<Vec<ServiceStatus>, Response>> {
    let resp = ask(ctx, Request::Status)?;
    let Response::Status { services } = resp else {
        return Ok(Err(resp));
    };
    if names.is_empty() {
        return Ok(Ok(services));
    }
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| !services.iter().any(|s| &s.name == *n))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        return Ok(Err(Response::error(
            crate::control::proto::ErrorCode::UnknownService,
            format!(
                "no service named {}; the daemon runs: {}",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                known.join(", ")
            ),
        )));
    }
    // In the order asked for.
    Ok(Ok(names
        .iter()
        .filter_map(|n| services.iter().find(|s| &s.name == n).cloned())
        .collect()))
}

/// `status --json` for every service: the daemon's JSON array printed as it came (laid out
/// as `to_string_pretty` would), reading only each service's state for the exit code.
fn status_json_as_sent(ctx: &Ctx) -> anyhow::Result<Outcome> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "type")]
        kind: String,
        #[serde(borrow)]
        services: &'a serde_json::value::RawValue,
    }
    #[derive(serde::Deserialize)]
    struct StateOnly {
        state: crate::control::proto::StateName,
    }
    let line = crate::control::client::request_line(&ctx.socket()?, Request::Status)?;
    let answer = serde_json::from_str::<Answer>(&line)
        .ok()
        .filter(|a| a.kind == "status");
    let Some(answer) = answer else {
        // An error (or an answer this lmctl does not know): the usual path explains it.
        let resp: Response = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("the daemon's answer is not understood: {e}"))?;
        print_error(&resp);
        return Ok(Outcome::Failed);
    };
    let states: Vec<StateOnly> = serde_json::from_str(answer.services.get())
        .map_err(|e| anyhow::anyhow!("the daemon's status answer is not understood: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(super::pretty::pretty(answer.services.get()).as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    let failed = states
        .iter()
        .any(|s| s.state == crate::control::proto::StateName::Failed);
    Ok(if failed {
        Outcome::ServiceFailed
    } else {
        Outcome::Ok
    })
}

pub(crate) fn status(ctx: &Ctx, a: StatusArgs) -> anyhow::Result<Outcome> {
    let color = render::color_wanted();
    let Some(interval) = a.watch else {
        if a.json && a.services.is_empty() {
            return status_json_as_sent(ctx);
        }
        let services = match fetch(ctx, &a.services)? {
            Ok(s) => s,
            Err(resp) => {
                print_error(&resp);
                return Ok(Outcome::Failed);
            }
        };
        if a.json {
            println!("{}", serde_json::to_string_pretty(&services)?);
        } else {
            print!("{}", render::status_table(&services, color));
        }
        // Exit 3 when a service is `failed`, as supervisorctl does: scripts can tell.
        let failed = services
            .iter()
            .any(|s| s.state == crate::control::proto::StateName::Failed);
        return Ok(if failed {
            Outcome::ServiceFailed
        } else {
            Outcome::Ok
        });
    };
    // --watch: the plain table again every interval; on a terminal the screen is cleared
    // first, when piped each table follows a time line. Ends on Ctrl-C or a closed stdout.
    let interval = interval.max(Duration::from_millis(100));
    loop {
        let text = match fetch(ctx, &a.services)? {
            Ok(s) => render::status_table(&s, color),
            Err(resp) => {
                print_error(&resp);
                return Ok(Outcome::Failed);
            }
        };
        let mut out = std::io::stdout().lock();
        let head = if color { "\x1b[H\x1b[2J" } else { "" };
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        let every = crate::config::units::human_duration(interval);
        if write!(out, "{head}{now} (every {every}; Ctrl-C to stop)\n{text}\n").is_err()
            || out.flush().is_err()
        {
            return Ok(Outcome::Ok);
        }
        drop(out);
        std::thread::sleep(interval);
    }
}

pub(crate) fn show(ctx: &Ctx, names: &[String], json: bool) -> anyhow::Result<Outcome> {
    let color = render::color_wanted();
    let mut details = Vec::new();
    let mut failed = false;
    for name in names {
        match ask(
            ctx,
            Request::Show {
                service: name.clone(),
            },
        )? {
            Response::Show { service } => details.push(service),
            other => {
                if !print_error(&other) {
                    anyhow::bail!("the daemon sent an unexpected answer to show {name}");
                }
                failed = true;
            }
        }
    }
    if json {
        let text = match details.as_slice() {
            [one] if names.len() == 1 => serde_json::to_string_pretty(one)?,
            _ => serde_json::to_string_pretty(&details)?,
        };
        println!("{text}");
    } else {
        let texts: Vec<String> = details.iter().map(|d| render::detail(d, color)).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
}
