//! Delivery: one worker task per destination, fed through a bounded queue, sending one
//! message at a time (so `resolved` never overtakes its `firing`), each attempt under the
//! destination's timeout, retried with exponential backoff. Failures come back to the actor
//! as `alert_failed` events, with secrets masked.
//!
//! Webhooks: `http://` URLs are posted with hyper; `https://` ones through `curl`, fed its
//! whole configuration (URL included) on stdin so the URL never shows in a command line.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Outcome, Payload};
use crate::config::alerts::{redact, Destination};
use crate::metrics::AlertStats;
use crate::supervisor::event::{Event, EventKind};
use crate::supervisor::Msg;

/// Messages waiting per destination; past that new ones are refused (and reported).
pub const QUEUE: usize = 64;
/// Attempts per message before giving up.
pub const ATTEMPTS: u32 = 8;
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct Worker {
    tx: mpsc::Sender<Arc<Payload>>,
}

impl Worker {
    pub(crate) fn start(
        name: String,
        dest: Destination,
        secrets: Arc<Vec<String>>,
        actor: mpsc::UnboundedSender<Msg>,
        stats: Arc<AlertStats>,
        outcomes: mpsc::UnboundedSender<Outcome>,
    ) -> Worker {
        let (tx, mut rx) = mpsc::channel::<Arc<Payload>>(QUEUE);
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let mut delay = BACKOFF_FIRST;
                for attempt in 1..=ATTEMPTS {
                    match self::attempt(&dest, &p).await {
                        Ok(()) => {
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                            let _ = outcomes.send(Outcome::Sent {
                                rule: p.rule.clone(),
                            });
                            let _ = actor.send(Msg::External(Event {
                                service: p.service.clone(),
                                kind: EventKind::AlertSent {
                                    rule: p.rule.clone(),
                                    destination: name.clone(),
                                    status: p.status.clone(),
                                    attempt,
                                },
                            }));
                            break;
                        }
                        Err(e) => {
                            let error = redact(&e, &secrets);
                            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                            let last = attempt == ATTEMPTS;
                            if last {
                                stats.given_up.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = outcomes.send(Outcome::Failed {
                                rule: p.rule.clone(),
                                error: format!("{name}: {error}"),
                            });
                            let _ = actor.send(Msg::External(Event {
                                service: p.service.clone(),
                                kind: EventKind::AlertFailed {
                                    rule: p.rule.clone(),
                                    destination: name.clone(),
                                    attempt,
                                    error,
                                    retry_in_ms: (!last)
                                        .then(|| crate::supervisor::event::millis(delay)),
                                },
                            }));
                            if last {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(BACKOFF_MAX);
                        }
                    }
                }
            }
        });
        Worker { tx }
    }

    /// Queues a message; never waits. The error says why it was refused.
    pub fn try_send(&self, p: Arc<Payload>) -> Result<(), String> {
        self.tx.try_send(p).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => format!(
                "{QUEUE} messages already wait for this destination (it has been failing); this one was dropped"
            ),
            mpsc::error::TrySendError::Closed(_) => "the delivery worker has stopped".into(),
        })
    }
}

/// One delivery attempt, bounded by the destination's timeout.
pub async fn attempt(dest: &Destination, p: &Payload) -> Result<(), String> {
    let body = serde_json::to_string(p).map_err(|e| format!("cannot encode the alert: {e}"))?;
    match dest {
        Destination::Webhook { url, timeout, .. } => {
            let fut = async {
                if url.starts_with("https://") {
                    post_curl(url, body, *timeout).await
                } else {
                    post_http(url, body).await
                }
            };
            match tokio::time::timeout(*timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer within {}",
                    crate::config::units::human_duration(*timeout)
                )),
            }
        }
        Destination::Command {
            command,
            args,
            timeout,
        } => run_command(command, args, p, body, *timeout).await,
    }
}

async fn post_http(url: &str, body: String) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("invalid webhook url: {e}"))?;
    let host = uri.host().ok_or("the webhook url has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {host}:{port} failed: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("leadmaster-supervisord/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("POST to {host}:{port} failed: {e}"));
    let result = match resp {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status();
            // A little of the body says why (Slack answers "invalid_token" and the like).
            let body = tokio::time::timeout(Duration::from_secs(2), r.into_body().collect())
                .await
                .ok()
                .and_then(|b| b.ok())
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            Err(format!("{host}:{port} answered {status}: {text}"))
        }
        Err(e) => Err(e),
    };
    conn.abort();
    result
}

/// `curl` config syntax: a double-quoted string with `\\`, `\"`, `\n`, `\r`, `\t`.
fn curl_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

async fn post_curl(url: &str, body: String, timeout: Duration) -> Result<(), String> {
    let config = format!(
        "url = {}\nrequest = \"POST\"\nheader = \"Content-Type: application/json\"\ndata-binary = {}\nmax-time = {}\nsilent\nshow-error\nfail-with-body\noutput = \"/dev/null\"\n",
        curl_quote(url),
        curl_quote(&body),
        timeout.as_secs().max(1)
    );
    let mut child = tokio::process::Command::new("curl")
        .args(["--config", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run curl for an https webhook ({e}); install curl or use an http:// relay"
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.as_bytes())
            .await
            .map_err(|e| format!("cannot feed curl: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("curl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "curl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

async fn run_command(
    command: &str,
    args: &[String],
    p: &Payload,
    body: String,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(args)
        .env("LM_ALERT_RULE", &p.rule)
        .env("LM_ALERT_SERVICE", p.service.as_deref().unwrap_or(""))
        .env("LM_ALERT_SEVERITY", &p.severity)
        .env("LM_ALERT_STATUS", &p.status)
        .env("LM_ALERT_SUMMARY", &p.summary)
        .env("LM_ALERT_TEXT", &p.text)
        .env("LM_ALERT_STATE", p.state.as_deref().unwrap_or(""))
        .env("LM_ALERT_HOST", &p.host)
        .env("LM_ALERT_TIME", &p.time)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {command}: {e}"))?;
    let pid = child.id();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its stdin is fine.
            let _ = stdin.write_all(body.as_bytes()).await;
        }
        child.wait_with_output().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").trim();
            Err(format!("{command} exited with {}: {last}", out.status))
        }
        Ok(Err(e)) => Err(format!("{command}: {e}")),
        Err(_) => {
            // Its own process group: take its children down with it.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!(
                "{command} did not finish within {}",
                crate::config::units::human_duration(timeout)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_strings_are_quoted() {
        assert_eq!(curl_quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}
