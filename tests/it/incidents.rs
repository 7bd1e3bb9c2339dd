//! Incident replay: each seed incident (seeds 000–004) re-enacted against the REAL
//! services (`session-manager`, `central-hub`) under a real daemon, to show that what went
//! wrong under PM2 cannot happen, or is caught, here. One test per incident, named for it.
//!
//! The service binaries sit next to `lmctl` (`cargo build --workspace` builds them).
//! The two Chromium tests run one at a time behind `CHROMIUM`; without Chromium they print
//! a loud SKIP, and with `CI=true` they fail instead.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::*;

/// One Chromium-heavy test at a time (each browser is ~12 processes, ~400 MiB PSS).
static CHROMIUM: Mutex<()> = Mutex::new(());

const JWT_SECRET: &str = "incident-replay-secret-0123456789";

/// A tiny local page for the browser (session-manager wants an http(s) URL): any request
/// gets the same HTML. Served from a thread of the test until drop.
struct Page {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Page {
    fn serve() -> Page {
        Page::serve_html("<!doctype html><title>wa</title><p>incident replay</p>")
    }

    /// A page that shows the chat list at once: a customer whose phone is linked.
    fn linked() -> Page {
        Page::serve_html("<!doctype html><title>wa</title><div id=\"pane-side\">chats</div>")
    }

    fn serve_html(html: &'static str) -> Page {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind page");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 4096];
                        let _ = s.read(&mut buf);
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                            html.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Page {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Path of a workspace binary built next to `lmctl`.
fn service_bin(name: &str) -> String {
    let p = Path::new(LMCTL)
        .parent()
        .expect("lmctl has a parent dir")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first (`cargo test --workspace` builds it too)",
        p.display()
    );
    p.display().to_string()
}

fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
        }
    }
    None
}

/// True when Chromium is there; otherwise a loud SKIP (or a failure under `CI=true`).
fn have_chromium(test: &str) -> bool {
    if chromium().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: Chromium is missing in CI: .ci/run must install it"
    );
    eprintln!("SKIP: {test}: Chromium is not installed (apt-get install chromium) — this test did not run");
    false
}

/// The stack as in supervisor.toml, on the given ports, with test-sized timings.
/// `sm_env` is appended inside session-manager's env table (start it with ", "),
/// `sm_extra` is appended as lines of its section.
fn stack_toml(sm_port: u16, hub_port: u16, sm_env: &str, sm_extra: &str) -> String {
    let sm = service_bin("session-manager");
    let hub = service_bin("central-hub");
    format!(
        r#"[supervisor]
state_dir = "var"
resource_interval = "500ms"
reap_orphans = true

[services.session-manager]
command = "{sm}"
env = {{ PORT = "{sm_port}", NODE_ENV = "production", TOKENS_DIR = "{{dir}}/tokens", HOME = "{{dir}}/home", SHUTDOWN_TIMEOUT = "5s", SESSION_GRACE = "60s"{sm_env} }}
required_env = ["PORT"]
ready = {{ notify = true, timeout = "30s" }}
health = {{ http = "http://127.0.0.1:${{PORT}}/health", interval = "1s", timeout = "2s", retries = 3 }}
restart = "always"
backoff = {{ initial = "200ms", max = "2s", factor = 2.0 }}
min_uptime = "30s"
max_restarts = 5
stop_timeout = "10s"
{sm_extra}

[services.central-hub]
command = "{hub}"
depends_on = {{ session-manager = "ready" }}
env_file = ["hub.env"]
env = {{ PORT = "{hub_port}", SESSION_MANAGER_BASE_URL = "http://127.0.0.1:${{services.session-manager.env.PORT}}", DATABASE_URL = "sqlite://{{dir}}/hub.db", TOKENS_DIR = "{{dir}}/tokens", DRY_RUN = "true" }}
required_env = ["PORT", "SESSION_MANAGER_BASE_URL", "JWT_SECRET"]
ready = {{ http = "http://127.0.0.1:${{PORT}}/health", timeout = "10s" }}
health = {{ http = "http://127.0.0.1:${{PORT}}/health", interval = "1s", timeout = "2s", retries = 3 }}
max_memory = "300MiB"
min_uptime = "30s"
max_restarts = 5
stop_timeout = "10s"
"#
    )
}

/// Writes the config and the hub's env_file, then starts the daemon alone (no `lmctl start`)
/// with `daemon_env` added to its environment.
fn start_stack(body: &str, daemon_env: &[(&str, &str)]) -> Daemon {
    let mut d = Daemon::new(body);
    std::fs::write(d.path("hub.env"), format!("JWT_SECRET={JWT_SECRET}\n")).unwrap();
    std::fs::create_dir_all(d.path("home")).unwrap();
    d.env = daemon_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    d.spawn();
    d
}

/// A raw HTTP/1.1 request (`Connection: close`); `(status, body)` or None when the
/// connection fails.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(45))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// `/proc/PID/environ` as `KEY=VALUE` strings.
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Live pids of this test's browsers: their command line names the test's profiles
/// (`{dir}/tokens`) or crashpad database (`{dir}/home`).
fn browser_pids(d: &Daemon) -> BTreeSet<i32> {
    let dir = d.dir.path().display().to_string();
    let (tokens, home) = (format!("{dir}/tokens"), format!("{dir}/home"));
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if (cmd.contains(&tokens) || cmd.contains(&home)) && alive(pid) {
            out.insert(pid);
        }
    }
    out
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn mib(bytes: &serde_json::Value) -> String {
    format!(
        "{:.1} MiB",
        bytes.as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    )
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[track_caller]
/// The whole stack with session-manager's browser on `page`, both ready; and its port.
fn stack_on(page: &Page) -> (Daemon, u16) {
    let (smp, hubp) = (free_port(), free_port());
    let d = start_stack(
        &stack_toml(smp, hubp, &format!(", WA_WEB_URL = \"{}\"", page.url()), ""),
        &[],
    );
    wait_both_ready(&d, Duration::from_secs(45));
    (d, smp)
}

/// SIGKILL of session-manager's main process; waits for the supervisor's restart.
fn kill_session_manager_and_wait_for_its_restart(d: &Daemon) {
    let old = d.pid("session-manager").expect("session-manager pid");
    sigkill(old);
    wait_until(
        "session-manager restarted and ready",
        Duration::from_secs(45),
        || {
            d.state("session-manager") == "ready"
                && d.pid("session-manager").is_some_and(|p| p != old)
        },
    );
}

fn wait_both_ready(d: &Daemon, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !(d.state("session-manager") == "ready" && d.state("central-hub") == "ready") {
        let failed = ["session-manager", "central-hub"]
            .iter()
            .any(|n| d.state(n) == "failed");
        if Instant::now() > deadline || failed || d.daemon_exited() {
            panic!(
                "session-manager and central-hub not both ready within {timeout:?}\nstatus: {:?}\nlog:\n{}\ndaemon stderr:\n{}",
                d.status(),
                d.merged_log(),
                d.daemon_stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Seed 000: a 502 because PM2 ran nothing (the dump lacked the app). Here the daemon alone
/// brings the declared stack up, and after a crash of the daemon itself the next one reaps
/// the old processes and brings the stack back.
#[test]
fn seed000_nothing_running_after_a_restart() {
    let (smp, hubp) = (free_port(), free_port());
    let t0 = Instant::now();
    let mut d = start_stack(&stack_toml(smp, hubp, "", ""), &[]);
    wait_both_ready(&d, Duration::from_secs(45));
    eprintln!("seed000: daemon start → both ready in {:?}", t0.elapsed());

    let (code, body) = http(smp, "GET", "/health", &[], "").expect("session-manager /health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"service\":\"session-manager\""), "{body}");
    let (code, body) = http(hubp, "GET", "/health", &[], "").expect("central-hub /health");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"healthy\""), "{body}");

    let status: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["status", "--json"])).expect("status --json");
    for name in ["session-manager", "central-hub"] {
        let s = status
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from status: {status:?}"));
        assert_eq!(s["state"], "ready", "{s}");
        assert!(s["pid"].as_i64().is_some(), "{s}");
    }
    // Idle memory, once a sample has been taken.
    wait_until("a memory sample of both", Duration::from_secs(5), || {
        d.svc("session-manager")["memory_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
            && d.svc("central-hub")["memory_bytes"].as_u64().unwrap_or(0) > 0
    });
    let (sm, hub) = (d.svc("session-manager"), d.svc("central-hub"));
    eprintln!(
        "seed000: idle memory: session-manager {} ({}, {} processes), central-hub {} ({}, {} processes)",
        mib(&sm["memory_bytes"]),
        sm["memory_source"],
        sm["processes"],
        mib(&hub["memory_bytes"]),
        hub["memory_source"],
        hub["processes"]
    );

    let old = [
        d.pid("session-manager").unwrap(),
        d.pid("central-hub").unwrap(),
    ];
    d.crash();
    assert!(
        old.iter().all(|p| alive(*p)),
        "services outlive a SIGKILLed daemon"
    );

    let t1 = Instant::now();
    d.spawn();
    wait_until(
        "the old services to be reaped",
        Duration::from_secs(15),
        || old.iter().all(|p| !alive(*p)),
    );
    wait_both_ready(&d, Duration::from_secs(45));
    eprintln!("seed000: second daemon → both ready in {:?}", t1.elapsed());
    let new = [
        d.pid("session-manager").unwrap(),
        d.pid("central-hub").unwrap(),
    ];
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "new pids {new:?} vs old {old:?}"
    );
    let log = d.merged_log();
    assert!(
        log.contains("left by an earlier daemon"),
        "no reap event in the merged log:\n{log}"
    );
    assert_eq!(
        http(hubp, "GET", "/health", &[], "").map(|r| r.0),
        Some(200)
    );
}

/// Seed 004: PM2 did not read `.env`, a stale `PORT=3011` from the shell leaked into the
/// services, and the hub lacked `SESSION_MANAGER_BASE_URL`. Here the daemon's own env
/// carries the stale values; the services get exactly what is declared.
#[test]
fn seed004_stale_port_in_the_shell_does_not_leak() {
    let (smp, hubp, stale) = (free_port(), free_port(), free_port());
    let stale_s = stale.to_string();
    let d = start_stack(
        &stack_toml(smp, hubp, "", ""),
        &[
            ("PORT", &stale_s),
            ("SESSION_MANAGER_BASE_URL", "http://wrong"),
            ("JWT_SECRET", "from-the-shell"),
        ],
    );
    wait_both_ready(&d, Duration::from_secs(45));
    assert!(
        listening(smp),
        "session-manager not on its declared port {smp}"
    );
    assert!(
        listening(hubp),
        "central-hub not on its declared port {hubp}"
    );
    assert!(
        !listening(stale),
        "something listens on the stale port {stale}"
    );

    let sm = environ(d.pid("session-manager").unwrap());
    assert!(sm.contains(&format!("PORT={smp}")), "{sm:?}");
    assert!(
        !sm.iter()
            .any(|v| v.starts_with("SESSION_MANAGER_BASE_URL=")),
        "{sm:?}"
    );
    let hub = environ(d.pid("central-hub").unwrap());
    let want = format!("SESSION_MANAGER_BASE_URL=http://127.0.0.1:{smp}");
    assert!(hub.contains(&want), "hub env lacks {want}: {hub:?}");
    assert!(hub.contains(&format!("PORT={hubp}")), "{hub:?}");
    assert!(
        hub.contains(&format!("JWT_SECRET={JWT_SECRET}")),
        "env_file not applied: {hub:?}"
    );

    // The hub really reaches session-manager through that URL.
    wait_until("hub /status healthy", Duration::from_secs(10), || {
        http(hubp, "GET", "/status", &[], "")
            .is_some_and(|(c, b)| c == 200 && b.contains("\"status\":\"healthy\""))
    });

    // `lmctl env` shows the effective env, the secret masked unless --reveal.
    let masked = d.ok(&["env", "central-hub"]);
    assert!(
        masked.contains(&want[..]) || masked.contains(&format!("http://127.0.0.1:{smp}")),
        "{masked}"
    );
    assert!(
        !masked.contains(JWT_SECRET),
        "secret shown without --reveal:\n{masked}"
    );
    let revealed = d.ok(&["env", "central-hub", "--reveal"]);
    assert!(revealed.contains(JWT_SECRET), "{revealed}");
}

/// Seed 004: the hub was started without `SESSION_MANAGER_BASE_URL`. Here `required_env`
/// makes it a config error, found by `lmctl check` and by the daemon before anything runs.
#[test]
fn seed004_missing_session_manager_base_url_is_caught_by_check() {
    let (smp, hubp) = (free_port(), free_port());
    let full = stack_toml(smp, hubp, "", "");
    let body = full.replace(
        "SESSION_MANAGER_BASE_URL = \"http://127.0.0.1:${services.session-manager.env.PORT}\", ",
        "",
    );
    assert_ne!(body, full, "the replacement must remove the URL");
    let d = Daemon::new(&body);
    std::fs::write(d.path("hub.env"), format!("JWT_SECRET={JWT_SECRET}\n")).unwrap();
    let text = std::fs::read_to_string(&d.config).unwrap();
    let (line, col) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("required_env") && l.contains("SESSION_MANAGER_BASE_URL"))
        .map(|(i, l)| (i + 1, l.find("\"SESSION_MANAGER_BASE_URL\"").unwrap() + 1))
        .next()
        .expect("required_env line");

    let out = d.lmctl(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "check must exit 1:\n{stdout}");
    let want = format!(
        "{}:{line}:{col}: service `central-hub` requires SESSION_MANAGER_BASE_URL",
        d.config.display()
    );
    assert!(
        stdout.lines().any(|l| l.starts_with(&want)),
        "want a line starting with {want:?}, got:\n{stdout}"
    );

    // The daemon refuses the same config and starts nothing.
    let mut child = Command::new(DAEMON)
        .arg("--config")
        .arg(&d.config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SESSION_MANAGER_BASE_URL", "http://wrong")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon kept running with a broken config");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("requires SESSION_MANAGER_BASE_URL"), "{err}");
    assert!(err.contains("nothing was started"), "{err}");
    assert!(!listening(smp) && !listening(hubp), "a service was started");
    assert!(marked_pids(&d.state_dir).is_empty());
    assert!(!d.path("hub.db").exists(), "central-hub ran");
}

/// Seed 004 §9.5: PM2's `wait_ready` waited `listen_timeout` and then marked the app
/// online anyway. Here a service that never sends READY=1 is a failed start, never ready,
/// and its dependent never spawns.
#[test]
fn seed004_wait_ready_without_a_ready_signal_fails_instead_of_going_online() {
    let (smp, hubp) = (free_port(), free_port());
    let full = stack_toml(smp, hubp, "", "");
    let sm = service_bin("session-manager");
    // session-manager replaced by a program that never says READY=1.
    let body = full
        .replace(
            &format!("command = \"{sm}\"\n"),
            "command = \"{helper}\"\nargs = [\"notify\", \"never\"]\n",
        )
        .replace(
            "ready = { notify = true, timeout = \"30s\" }",
            "ready = { notify = true, timeout = \"1s\" }",
        )
        .replace("initial = \"200ms\"", "initial = \"0s\"")
        .replacen("max_restarts = 5", "max_restarts = 1", 1);
    assert!(body.contains("notify\", \"never") && body.contains("timeout = \"1s\""));
    let d = start_stack(&body, &[]);

    let mut seen = Vec::new();
    wait_until(
        "session-manager to end failed",
        Duration::from_secs(20),
        || {
            let sm = d.state("session-manager");
            let hub = d.svc("central-hub");
            seen.push(sm.clone());
            assert!(
                hub["pid"].is_null(),
                "central-hub spawned while its dependency is not ready: {hub}"
            );
            sm == "failed"
        },
    );
    assert!(
        !seen.iter().any(|s| s == "ready" || s == "running"),
        "marked up without a ready signal: {seen:?}"
    );
    let err = d.svc("session-manager")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(err.contains("not ready within 1s"), "{err}");

    let hub = d.svc("central-hub");
    assert!(hub["pid"].is_null(), "{hub}");
    let waiting = hub["waiting_for"][0].as_str().unwrap_or("").to_string();
    assert!(
        waiting.starts_with("session-manager to be ready") && waiting.contains("failed"),
        "{hub}"
    );
    let log = d.merged_log();
    assert!(!log.contains("session-manager|event ready after"), "{log}");
    assert!(!log.contains("central-hub|event spawned"), "{log}");
    // A failed service makes `status` exit 3 (as supervisorctl does).
    let out = d.lmctl(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("waiting for session-manager to be ready"),
        "{text}"
    );
}

/// Seeds 002/003/004 §8: restarts left Chromium behind and the runbook said
/// to kill every `chrome` by name. Here a SIGKILL of session-manager's main process leaves nothing of
/// its browser: the supervisor reaps the tree, crashpad handlers included, and restarts it.
#[test]
fn seed002_sigkilled_session_manager_leaves_no_chromium() {
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    if !have_chromium("seed002_sigkilled_session_manager_leaves_no_chromium") {
        return;
    }
    let page = Page::serve();
    let (d, smp) = stack_on(&page);

    let (code, body) =
        http(smp, "POST", "/init", &[("X-Cliente-Id", "1")], "").expect("POST /init answered");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("INITIALIZING"), "{body}");
    wait_until(
        "Chromium with its crashpad handler",
        Duration::from_secs(30),
        || {
            let p = browser_pids(&d);
            p.len() >= 5 && p.iter().any(|p| comm(*p).contains("crashpad"))
        },
    );
    // Let the sampler see the whole tree, then report it.
    std::thread::sleep(Duration::from_millis(1500));
    let before = browser_pids(&d);
    let (sm, hub) = (d.svc("session-manager"), d.svc("central-hub"));
    eprintln!(
        "seed002: one browser session: {} browser processes; session-manager {} ({}, tree by {}, {} processes), central-hub {}",
        before.len(),
        mib(&sm["memory_bytes"]),
        sm["memory_source"],
        sm["tree"],
        sm["processes"],
        mib(&hub["memory_bytes"])
    );

    kill_session_manager_and_wait_for_its_restart(&d);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<i32> = Vec::new();
    while Instant::now() < deadline {
        left = before.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        left.is_empty(),
        "old browser processes left: {:?}\nevents:\n{}",
        left.iter()
            .map(|p| format!("{p} {}", comm(*p)))
            .collect::<Vec<_>>(),
        d.events("session-manager").join("\n")
    );
    assert!(
        browser_pids(&d).is_disjoint(&before),
        "an old browser pid is still there"
    );
    let events = d.events("session-manager").join("\n");
    assert!(
        events.contains("SIGKILL") || events.contains("signal 9"),
        "{events}"
    );
    // The new instance can open the same customer's profile again (no stale lock holder).
    let (code, body) = http(smp, "POST", "/init", &[("X-Cliente-Id", "1")], "")
        .expect("POST /init after the restart");
    assert_eq!(code, 200, "{body}");
}

/// Seeds 001/002: `max_memory_restart` counted only the main process, so a growing browser
/// was never caught. Here the limit covers the whole tree: one browser pushes
/// session-manager over 150 MiB and it is restarted, with the old Chromium gone.
#[test]
fn seed001_memory_growth_in_chromium_restarts_at_the_limit() {
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    if !have_chromium("seed001_memory_growth_in_chromium_restarts_at_the_limit") {
        return;
    }
    let page = Page::serve();
    let (smp, hubp) = (free_port(), free_port());
    let d = start_stack(
        &stack_toml(
            smp,
            hubp,
            &format!(", WA_WEB_URL = \"{}\"", page.url()),
            "max_memory = \"150MiB\"",
        ),
        &[],
    );
    wait_both_ready(&d, Duration::from_secs(45));
    let old = d.pid("session-manager").unwrap();
    let idle = d.svc("session-manager")["memory_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        idle < 150 << 20,
        "idle session-manager already over the limit: {idle}"
    );

    let init = std::thread::spawn(move || http(smp, "POST", "/init", &[("X-Cliente-Id", "1")], ""));
    // The browser may be killed soon after it appears: collect every pid seen.
    let mut seen = BTreeSet::new();
    wait_until("a restart over max_memory", Duration::from_secs(45), || {
        seen.extend(browser_pids(&d));
        d.events("session-manager")
            .iter()
            .any(|e| e.contains("over max_memory"))
    });
    let _ = init.join();
    assert!(!seen.is_empty(), "no browser process was ever seen");
    let event = d
        .events("session-manager")
        .into_iter()
        .find(|e| e.contains("over max_memory"))
        .unwrap();
    eprintln!("seed001: {event}");
    assert!(event.contains("max_memory 150"), "{event}");

    wait_until(
        "session-manager back, ready, with a new pid",
        Duration::from_secs(45),
        || {
            d.state("session-manager") == "ready"
                && d.pid("session-manager").is_some_and(|p| p != old)
        },
    );
    wait_until("the old browser gone", Duration::from_secs(10), || {
        seen.iter().all(|p| !alive(*p))
    });
    assert!(d.svc("session-manager")["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("over max_memory"));
}

/// Seed 004 §11: the hub must not start before session-manager is up. Here session-manager
/// is a program that says READY=1 after 1.5 s; the real hub waits for it.
#[test]
fn seed004_hub_never_starts_before_session_manager() {
    let (smp, hubp) = (free_port(), free_port());
    let full = stack_toml(smp, hubp, "", "");
    let sm = service_bin("session-manager");
    let body = full.replace(
        &format!("command = \"{sm}\"\n"),
        "command = \"{helper}\"\nargs = [\"notify\", \"1500\"]\n",
    );
    // The helper serves no HTTP: no health probe for it.
    let body = body.replacen(
        "health = { http = \"http://127.0.0.1:${PORT}/health\", interval = \"1s\", timeout = \"2s\", retries = 3 }\n",
        "",
        1,
    );
    assert!(body.contains("notify\", \"1500"));
    let d = start_stack(&body, &[]);

    wait_until(
        "the hub to say what it waits for",
        Duration::from_secs(5),
        || {
            d.svc("central-hub")["waiting_for"]
                .as_array()
                .is_some_and(|w| !w.is_empty())
        },
    );
    let hub = d.svc("central-hub");
    assert!(hub["pid"].is_null(), "{hub}");
    assert_eq!(hub["state"], "starting", "{hub}");
    let waiting = hub["waiting_for"][0].as_str().unwrap_or("");
    assert!(waiting.starts_with("session-manager to be ready"), "{hub}");
    assert_eq!(d.state("session-manager"), "starting");
    assert!(
        !listening(hubp),
        "the hub listens before session-manager is ready"
    );

    wait_until("central-hub ready", Duration::from_secs(30), || {
        d.state("central-hub") == "ready"
    });
    let log = d.merged_log();
    let ready = line_of(&log, "session-manager|event ready after").expect("ready event");
    let spawned = line_of(&log, "central-hub|event spawned pid").expect("hub spawn event");
    assert!(
        ready < spawned,
        "hub spawned before session-manager was ready:\n{log}"
    );
    // LM_LOG_TIMESTAMPS: the hub leaves its own time out, so each line has one.
    let hub_lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" central-hub|out ").map(|(_, rest)| rest))
        .collect();
    assert!(!hub_lines.is_empty(), "{log}");
    assert!(
        hub_lines
            .iter()
            .all(|rest| !rest.trim_start().starts_with("20")),
        "a second timestamp in the hub's lines:\n{hub_lines:#?}"
    );
}

/// Seeds 002/003/004: every restart of session-manager (a crash, a memory restart) left each
/// customer `NOT_INITIALIZED` until its frontend called `/init`. Under the supervisor, a
/// linked customer is `READY` again after session-manager is killed and restarted, with no
/// `/init`.
#[test]
fn seed003_a_linked_customer_is_ready_again_after_a_restart_without_init() {
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    if !have_chromium("seed003_a_linked_customer_is_ready_again_after_a_restart_without_init") {
        return;
    }
    let page = Page::linked();
    let (d, smp) = stack_on(&page);
    let state = |id: &str| -> String {
        http(smp, "GET", "/status", &[("X-Cliente-Id", id)], "")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (code, body) =
        http(smp, "POST", "/init", &[("X-Cliente-Id", "7")], "").expect("POST /init answered");
    assert_eq!(code, 200, "{body}");
    wait_until("customer 7 READY", Duration::from_secs(45), || {
        state("7") == "READY"
    });

    // A crash of session-manager: the supervisor reaps its tree and starts it again.
    kill_session_manager_and_wait_for_its_restart(&d);
    // Nobody calls /init: the restarted service reopens the linked customer by itself.
    wait_until(
        "customer 7 READY again without /init",
        Duration::from_secs(60),
        || state("7") == "READY",
    );
    assert_eq!(
        state("8"),
        "NOT_INITIALIZED",
        "only linked customers come back"
    );
}
