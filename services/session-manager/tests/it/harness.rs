//! Test harness: the real binary, a raw HTTP client, `/proc` helpers, waits.
//!
//! Every process a test starts is tagged `LM_TEST_TAG=<tag>` (the service
//! passes its environment to Chromium, and crashpad keeps it) or carries the
//! test's TOKENS_DIR in its command line; `TestEnv`'s drop kills both kinds,
//! so nothing outlives a test, even a failing one.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Chromium-heavy tests run one at a time (2 cores).
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The browser the service would find, or None after a loud SKIP; under
/// `CI=true` a missing browser fails the test instead.
pub fn chromium_or_skip(test: &str) -> bool {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|n| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()))
                .unwrap_or(false)
        })
        || std::env::var_os("CHROMIUM_PATH").is_some();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: no Chromium on this machine and CI=true; run .ci/session-manager-deps.sh"
        );
        eprintln!(
            "\n!!!!!!!! SKIP {test}: no Chromium found (apt-get install -y chromium) !!!!!!!!\n"
        );
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `f` yields Some, polling every 100 ms; panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and JSON body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    cliente: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(c) = cliente {
            req.push_str(&format!("X-Cliente-Id: {c}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("http request timed out")
        .expect("http request failed");
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Writes one request and returns the open connection without reading the
/// answer; dropping it is a client that went away.
pub async fn http_abandon(
    port: u16,
    method: &str,
    path: &str,
    cliente: &str,
    body: &str,
) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Cliente-Id: {cliente}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Per-test world: temp dir, tag, tokens dir; kills leftovers on drop.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub tag: String,
}

impl TestEnv {
    pub fn new(name: &str) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sm-{name}-"))
            .tempdir()
            .unwrap();
        let tag = format!(
            "{name}-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        TestEnv { dir, tag }
    }

    pub fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// Live processes (not zombies) of this test other than `except`.
    pub fn leftovers(&self, except: &[u32]) -> Vec<(i32, String)> {
        let tag = format!("LM_TEST_TAG={}", self.tag);
        let tokens = self.tokens().display().to_string();
        let me = std::process::id() as i32;
        all_pids()
            .into_iter()
            .filter(|&p| p != me && !except.contains(&(p as u32)) && alive(p))
            .filter(|&p| env_has(p, &tag) || cmdline(p).contains(&tokens))
            .map(|p| (p, cmdline(p).chars().take(160).collect()))
            .collect()
    }

    /// Asserts (with a short deadline for reaping) that nothing of the test is left.
    pub async fn assert_clean(&self, within: Duration) {
        self.assert_clean_except_all(&[], within).await;
    }

    /// Same, ignoring the (still running) service `pid`.
    pub async fn assert_clean_except(&self, pid: u32, within: Duration) {
        self.assert_clean_except_all(&[pid], within).await;
    }

    async fn assert_clean_except_all(&self, except: &[u32], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.leftovers(except);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "processes of this test left behind: {left:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl TestEnv {
    /// SIGKILLs every process of this test but `except`, until none is left.
    pub fn kill_leftovers(&self, except: &[u32]) {
        for _ in 0..20 {
            let left = self.leftovers(except);
            if left.is_empty() {
                break;
            }
            for (p, _) in left {
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_leftovers(&[]);
    }
}

/// The real service binary; SIGKILLed on drop if still running.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Service {
    pub fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Service {
        Self::start_with(env, extra, None, None)
    }

    /// `start` with RLIMIT_NOFILE (soft and hard) set to `nofile` when given.
    pub fn start_limited(env: &TestEnv, extra: &[(&str, &str)], nofile: Option<u64>) -> Service {
        Self::start_with(env, extra, nofile, None)
    }

    /// `start` as user and group `uid` (no supplementary groups) when given.
    pub fn start_with(
        env: &TestEnv,
        extra: &[(&str, &str)],
        nofile: Option<u64>,
        uid: Option<u32>,
    ) -> Service {
        let port = free_port();
        let log = env.dir.path().join(format!("service-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_session-manager"));
        cmd.env("PORT", port.to_string())
            .env("TOKENS_DIR", env.tokens())
            .env("LM_TEST_TAG", &env.tag)
            .env("SESSION_GRACE", "1s")
            .env("SHUTDOWN_TIMEOUT", "10s")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(id) = uid {
            use std::os::unix::process::CommandExt as _;
            // std clears the supplementary groups when root drops to a uid.
            cmd.uid(id).gid(id);
        }
        let child = cmd.spawn().unwrap();
        Service { child, port, log }
    }

    pub async fn ready(self) -> Service {
        let port = self.port;
        wait_for("service /health", Duration::from_secs(15), || async move {
            let ok = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok();
            if !ok {
                return None;
            }
            let (st, _) = http(port, "GET", "/health", None, None).await;
            (st == 200).then_some(())
        })
        .await;
        self
    }

    pub async fn req(
        &self,
        method: &str,
        path: &str,
        cliente: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        http(self.port, method, path, cliente, body).await
    }

    pub async fn status(&self, cliente: u64) -> Value {
        let (st, v) = self
            .req("GET", "/status", Some(&cliente.to_string()), None)
            .await;
        assert_eq!(st, 200, "{v}");
        v
    }

    /// Waits until the customer's state is `state`; returns that status.
    pub async fn wait_state(&self, cliente: u64, state: &str, timeout: Duration) -> Value {
        let what = format!("cliente {cliente} in state {state}");
        wait_for(&what, timeout, || async move {
            let v = self.status(cliente).await;
            (v["state"] == state).then_some(v)
        })
        .await
    }

    pub fn sigterm(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for exit up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, exit 0 within 15 s, and nothing of the test's browsers left after 2 s.
    pub async fn stop_cleanly(&mut self, env: &TestEnv) {
        self.sigterm();
        let st = self.wait_exit(Duration::from_secs(15)).await;
        assert!(
            st.is_some_and(|s| s.success()),
            "SIGTERM did not end the service with 0: {st:?}"
        );
        env.assert_clean(Duration::from_secs(2)).await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- service log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

// ---- /proc helpers (test side) ----

pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn fields(pid: i32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|f| !f.is_empty())
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn cmdline(pid: i32) -> String {
    fields(pid, "cmdline").join(" ")
}

pub fn env_has(pid: i32, entry: &str) -> bool {
    fields(pid, "environ").iter().any(|e| e == entry)
}

pub fn env_value(pid: i32, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    fields(pid, "environ")
        .into_iter()
        .find_map(|e| e.strip_prefix(&prefix).map(str::to_owned))
}

/// `(ppid, pgid, state)`.
pub fn stat(pid: i32) -> Option<(i32, i32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_ascii_whitespace();
    let st = it.next()?.chars().next()?;
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, st))
}

pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((_, _, s)) if s != 'Z' && s != 'X')
}

/// Main browser processes (no `--type=`) running on `profile`.
pub fn browser_mains(profile: &Path) -> Vec<i32> {
    let arg = format!("--user-data-dir={}", profile.display());
    all_pids()
        .into_iter()
        .filter(|&p| alive(p))
        .filter(|&p| {
            let f = fields(p, "cmdline");
            f.contains(&arg) && !f.iter().any(|a| a.starts_with("--type="))
        })
        .collect()
}

/// Every live process of one browser: its marker, its profile argument, its group.
pub fn browser_tree(profile: &Path, marker: &str, pgid: i32) -> Vec<i32> {
    let arg = format!("--user-data-dir={}", profile.display());
    let entry = format!("LM_BROWSER={marker}");
    all_pids()
        .into_iter()
        .filter(|&p| alive(p))
        .filter(|&p| {
            stat(p).is_some_and(|(_, pg, _)| pg == pgid)
                || env_has(p, &entry)
                || fields(p, "cmdline").contains(&arg)
        })
        .collect()
}

/// `(rss_kib, pss_kib)` from `/proc/PID/smaps_rollup`.
pub fn rss_pss_kib(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("Rss:"), get("Pss:"))
}

/// Decodes a `data:image/png;base64,` QR image to its text.
pub fn decode_qr_data_url(url: &str) -> String {
    use base64::Engine as _;
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .expect("not a PNG data URL");
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .expect("not a valid PNG")
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code in the PNG");
    grids[0].decode().expect("QR did not decode").1
}
