//! Shared by the observability tests: a tiny HTTP receiver for webhooks, a raw `GET`, and
//! reading `events.jsonl`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// Accepts POSTs on 127.0.0.1 and keeps their JSON bodies, until dropped.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        Receiver::on(l)
    }

    /// On a given port (for a receiver that "comes up" later).
    pub fn start_on(port: u16) -> Receiver {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver port");
        Receiver::on(l)
    }

    fn on(l: TcpListener) -> Receiver {
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((stream, _)) => {
                        if let Some(v) = read_post(stream) {
                            g.lock().expect("lock").push(v);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            port,
            got,
            stop,
            thread: Some(thread),
        }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.got.lock().expect("lock").clone()
    }

    pub fn count(&self, rule: &str, status: &str) -> usize {
        self.bodies()
            .iter()
            .filter(|b| b["rule"] == rule && b["status"] == status)
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_post(stream: TcpStream) -> Option<Value> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    let mut w = stream;
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    serde_json::from_slice(&body).ok()
}

/// `GET path` on 127.0.0.1:port; (status line, body).
pub fn http_get(port: u16, path: &str) -> (String, String) {
    try_http_get(port, path).expect("GET on the metrics port")
}

pub fn try_http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.lines().next().unwrap_or("").to_string();
    Some((status, body.to_string()))
}

/// Every record of `<state_dir>/events.jsonl` (current file only).
pub fn history(state_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(state_dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The value of a metric line `name{labels} value` (labels exactly as rendered).
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
