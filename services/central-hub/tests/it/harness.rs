//! Shared test machinery: free ports, process guards, the hub under test,
//! a fake session-manager, a private MariaDB, tokens and an HTTP helper.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{encode, EncodingKey, Header};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// Exactly 32 bytes, the shortest `JWT_SECRET` the hub accepts.
pub const SECRET: &str = "test-secret-for-central-hub-0032";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls `cond` every 50 ms until it holds or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills (SIGKILL) and reaps the child when dropped, unless it already exited.
pub struct ChildGuard {
    pub child: Option<Child>,
}

impl ChildGuard {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Sends `sig` and waits (bounded) for the exit.
    pub fn signal_and_wait(&mut self, sig: Signal, within: Duration) -> ExitStatus {
        kill(self.pid(), sig).unwrap();
        self.wait_for_exit(within)
            .expect("process did not exit in time")
    }

    pub fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Options for one hub process.
pub struct HubOpts {
    pub session_manager: String,
    pub database_url: Option<String>,
    pub extra_env: Vec<(String, String)>,
    /// Run the hub with this soft and hard `RLIMIT_NOFILE` (set by `sh -c 'ulimit -n'`
    /// before `exec`, so the hub keeps the shell's PID and the guard still owns it).
    pub nofile: Option<u64>,
}

impl HubOpts {
    pub fn new(session_manager: &str) -> Self {
        Self {
            session_manager: session_manager.to_owned(),
            database_url: None,
            extra_env: vec![],
            nofile: None,
        }
    }
}

/// The real `central-hub` binary on a free port, cwd in `dir` (so the default
/// `sqlite://var/hub.db` lands there), stdout/stderr in `dir/hub.log`.
pub struct Hub {
    pub guard: ChildGuard,
    pub port: u16,
    pub dir: PathBuf,
}

pub fn hub_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_central-hub"));
    // Exactly the env we declare: nothing leaks in from the test runner.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir);
    cmd
}

impl Hub {
    pub async fn start(dir: &Path, opts: &HubOpts) -> Hub {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hub.log"))
            .unwrap();
        let mut cmd = match opts.nofile {
            None => hub_command(dir),
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .current_dir(dir)
                    .arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\""))
                    .arg(env!("CARGO_BIN_EXE_central-hub"));
                cmd
            }
        };
        cmd.env("PORT", port.to_string())
            .env("SESSION_MANAGER_BASE_URL", &opts.session_manager)
            .env("JWT_SECRET", SECRET)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(url) = &opts.database_url {
            cmd.env("DATABASE_URL", url);
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let mut hub = Hub {
            guard: ChildGuard {
                child: Some(cmd.spawn().unwrap()),
            },
            port,
            dir: dir.to_owned(),
        };
        let url = hub.url("/health");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((200, _)) = try_call(Method::GET, &url, None, None).await {
                return hub;
            }
            if let Some(st) = hub.guard.wait_for_exit(Duration::ZERO) {
                panic!("hub exited early with {st}; log:\n{}", hub.log());
            }
            assert!(
                Instant::now() < deadline,
                "hub not healthy within 10s; log:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        call(method, &self.url(path), token, body).await
    }
}

/// One HTTP request; the body parsed as JSON (or `Value::Null` when empty).
pub async fn try_call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("Content-Type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Ok((status, v))
}

pub async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    try_call(method, url, token, body)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Signs claims with `secret`; `exp` one hour ahead is added.
pub fn token_with(secret: &str, mut claims: Value) -> String {
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 3600);
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn admin_token() -> String {
    token_with(SECRET, json!({"sub": "admin-ana", "role": "admin"}))
}

pub fn customer_token(cliente_id: i64) -> String {
    token_with(
        SECRET,
        json!({"sub": format!("user-{cliente_id}"), "role": "cliente", "cliente_id": cliente_id}),
    )
}

/// What the fake session-manager saw: (method, path, X-Cliente-Id).
pub type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// How the fake session-manager behaves.
pub struct FakeOpts {
    /// `/init`, `/status` and `/logout` wait this long before answering.
    pub delay: Duration,
    /// `/health` waits this long before answering.
    pub health_delay: Duration,
    /// The `/health` body.
    pub health: Value,
}

impl Default for FakeOpts {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            health_delay: Duration::ZERO,
            health: json!({"status": "ok", "service": "session-manager", "sessions": 0}),
        }
    }
}

/// A tiny session-manager stand-in on loopback. `/init`, `/status` and `/logout` are
/// recorded and wait `delay` first; `/health` answers `FakeOpts::health`.
pub struct FakeSessionManager {
    pub url: String,
    pub seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSessionManager {
    pub async fn start(delay: Duration) -> Self {
        Self::start_with(FakeOpts {
            delay,
            ..FakeOpts::default()
        })
        .await
    }

    pub async fn start_with(opts: FakeOpts) -> Self {
        let FakeOpts {
            delay,
            health_delay,
            health,
        } = opts;
        let seen: Seen = Arc::default();
        let record = |seen: Seen, method: &'static str, path: &'static str| {
            move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let id = headers
                        .get("x-cliente-id")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.lock()
                        .unwrap()
                        .push((method.into(), path.into(), id.clone()));
                    tokio::time::sleep(delay).await;
                    let id_num: Option<i64> = id.and_then(|s| s.parse().ok());
                    if path == "/init" {
                        Json(json!({"action": "INITIALIZING", "cliente_id": id_num}))
                    } else if path == "/logout" {
                        Json(json!({"success": true, "cliente_id": id_num, "action": "LOGGED_OUT"}))
                    } else {
                        Json(json!({
                            "cliente_id": id_num, "state": "QR_REQUIRED", "connected": false,
                            "needs_qr": true, "qr_code_base64": "data:image/png;base64,iVBORw0KGgo="
                        }))
                    }
                }
            }
        };
        let app = Router::new()
            .route(
                "/health",
                get(move || {
                    let health = health.clone();
                    async move {
                        tokio::time::sleep(health_delay).await;
                        Json(health)
                    }
                }),
            )
            .route("/init", post(record(seen.clone(), "POST", "/init")))
            .route("/logout", post(record(seen.clone(), "POST", "/logout")))
            .route("/status", get(record(seen.clone(), "GET", "/status")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeSessionManager {
            url: format!("http://{addr}"),
            seen,
            task,
        }
    }

    pub fn seen(&self) -> Vec<(String, String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeSessionManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL where nothing listens (the port was free a moment ago).
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// VmRSS and VmHWM of a process, in bytes.
pub fn rss_of(pid: Pid) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Open file descriptors of a process.
pub fn fd_count(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Writes `request` on a fresh connection and reads until the server closes it (send
/// `Connection: close`). For what the HTTP client will not send: chunked bodies, lying
/// lengths. Returns the status and the body parsed as JSON (or a string).
pub async fn raw_exchange(port: u16, request: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    if let Err(e) = s.write_all(request).await {
        // The server may answer and close before taking everything (a refused body).
        eprintln!("raw_exchange: write stopped: {e}");
    }
    let mut buf = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A server that answers before reading a whole (refused) body may close
                // with bytes unread, which resets the connection after the answer arrived.
                Err(e) if !buf.is_empty() => {
                    eprintln!("raw_exchange: {e} after {} bytes", buf.len());
                    break;
                }
                Err(e) => panic!("raw_exchange: {e} before any answer"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("no complete answer within 10s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, v)
}
