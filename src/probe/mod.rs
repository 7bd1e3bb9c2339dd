//! Readiness and health: `http`/`tcp` probes, and our own `NOTIFY_SOCKET` for services that
//! speak the systemd notify protocol. Probe tasks only report results; the actor decides.

pub mod notify;

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Probe;

/// One probe attempt, bounded by `timeout`. Ok on http 2xx or a tcp connect.
pub async fn check(probe: &Probe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(probe)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{} did not answer within {}",
            describe(probe),
            humantime::format_duration(timeout)
        )),
    }
}

pub fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Http(u) => format!("GET {u}"),
        Probe::Tcp(a) => format!("tcp {a}"),
    }
}

async fn attempt(probe: &Probe) -> Result<(), String> {
    match probe {
        Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("tcp {addr}: {e}")),
        Probe::Http(url) => {
            let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let resp = client.get(uri).await.map_err(|e| {
                let mut msg = format!("GET {url}: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                msg
            })?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("GET {url}: status {status}"))
            }
        }
    }
}
