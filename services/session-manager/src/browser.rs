//! One headless Chromium: launch, drive one page, destroy everything of it.

use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cdp::{Cdp, CdpError};
use crate::procs;

/// Env var that tags every process of one browser (`<cliente_id>-<random>`).
pub const MARKER_VAR: &str = "LM_BROWSER";
/// Env var that tags every browser of this service instance.
pub const INSTANCE_VAR: &str = "LM_SM_INSTANCE";

/// How long Chromium may take to answer its first DevTools command (its
/// start-up, slow on a loaded 2-core machine).
const DEVTOOLS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("failed to create profile dir {dir}: {source}")]
    Profile { dir: String, source: std::io::Error },
    #[error(transparent)]
    Lock(#[from] procs::ProfileLockError),
    #[error("failed to start {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("browser did not answer on its DevTools pipe within {0:?}")]
    NoDevTools(Duration),
    #[error(transparent)]
    Cdp(#[from] CdpError),
    #[error("failed to open {url}: {reason}")]
    Navigate { url: String, reason: String },
    #[error("page error: {0}")]
    Page(String),
    #[error("send button {selector} did not appear within {timeout:?}")]
    NoSendButton { selector: String, timeout: Duration },
}

/// A spawned browser process (the leader of its own process group).
pub struct Browser {
    pub child: Child,
    pub pid: i32,
    /// `LM_BROWSER=<cliente_id>-<random>`, exactly as in the environment.
    pub marker: String,
    /// `--user-data-dir=<profile>`, exactly as on the command line.
    pub profile_arg: String,
    /// The DevTools connection until `open_page` takes it.
    cdp: Option<Cdp>,
}

impl Browser {
    /// Checks the profile lock and spawns Chromium on `profile`.
    pub fn spawn(
        exe: &Path,
        profile: &Path,
        cliente_id: u64,
        instance: &str,
        user_agent: Option<&str>,
    ) -> Result<Browser, BrowserError> {
        make_private_dir(profile).map_err(|source| BrowserError::Profile {
            dir: profile.display().to_string(),
            source,
        })?;
        procs::check_profile_lock(profile)?;
        let marker_value = format!("{cliente_id}-{}", procs::random_hex());
        let profile_arg = procs::profile_arg(profile);
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-gpu",
            "--disable-quic",
            "--password-store=basic",
            // DevTools on fds 3/4 instead of a port anyone on the host can reach.
            "--remote-debugging-pipe",
        ])
        .arg(&profile_arg);
        if let Some(ua) = user_agent {
            // Browser-wide, so service workers and every request say it too;
            // open_page adds the matching client hints for the page.
            cmd.arg(format!("--user-agent={ua}"));
        }
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .env(MARKER_VAR, &marker_value)
            .env(INSTANCE_VAR, instance)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            // Safety net only: `destroy` is the real cleanup, this covers a panic.
            .kill_on_drop(true);
        let pipe_err = |source| BrowserError::Spawn {
            exe: exe.display().to_string(),
            source,
        };
        // Both pipes are close-on-exec in this process, so a browser of another
        // customer launched at the same time cannot inherit (and keep open)
        // this browser's ends; only the child gets them, as fds 3 and 4.
        let (cmd_r, cmd_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| pipe_err(e.into()))?;
        let (ev_r, ev_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| pipe_err(e.into()))?;
        let (child_in, child_out) = (cmd_r.as_raw_fd(), ev_w.as_raw_fd());
        // Our ends first, so no error path below leaves a browser running.
        // (Non-blocking mode is per open file; the child's ends stay blocking.)
        let cdp = Cdp::from_pipes(cmd_w, ev_r)?;
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move both above 4 first, so dup2 cannot overwrite one with
                // the other when the kernel handed out 3 or 4 for them.
                let a = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| BrowserError::Spawn {
            exe: exe.display().to_string(),
            source,
        })?;
        // The child has its copies; ours must go so EOF means the browser is gone.
        drop((cmd_r, ev_w));
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if let Some(stderr) = child.stderr.take() {
            // Drain stderr for the browser's whole life: a full pipe would block Chromium.
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::trace!(pid, "chromium: {line}");
                }
            });
        }
        Ok(Browser {
            child,
            pid,
            marker: format!("{MARKER_VAR}={marker_value}"),
            profile_arg,
            cdp: Some(cdp),
        })
    }

    /// Opens `url` in a fresh page, presenting a desktop user agent
    /// (`user_agent`, or the browser's own without "Headless").
    /// Does not borrow the browser, so callers can race it against the child's exit.
    pub fn open_page(
        &mut self,
        url: String,
        user_agent: Option<String>,
    ) -> impl std::future::Future<Output = Result<Page, BrowserError>> {
        let cdp = self.cdp.take();
        async move {
            let cdp = cdp.ok_or(BrowserError::NoDevTools(Duration::ZERO))?;
            // The first answer also tells us the browser is up.
            let version = match cdp
                .call_within("Browser.getVersion", json!({}), None, DEVTOOLS_TIMEOUT)
                .await
            {
                Err(CdpError::Timeout { .. }) => {
                    return Err(BrowserError::NoDevTools(DEVTOOLS_TIMEOUT))
                }
                r => r?,
            };
            let target = cdp
                .call("Target.createTarget", json!({ "url": "about:blank" }), None)
                .await?;
            let target_id = target
                .get("targetId")
                .and_then(Value::as_str)
                .ok_or_else(|| BrowserError::Page("createTarget returned no targetId".into()))?
                .to_owned();
            let attached = cdp
                .call(
                    "Target.attachToTarget",
                    json!({ "targetId": target_id, "flatten": true }),
                    None,
                )
                .await?;
            let session = attached
                .get("sessionId")
                .and_then(Value::as_str)
                .ok_or_else(|| BrowserError::Page("attachToTarget returned no sessionId".into()))?
                .to_owned();
            let page = Page { cdp, session };
            let ua = desktop_user_agent(&version, user_agent);
            page.cdp
                .call("Emulation.setUserAgentOverride", ua, Some(&page.session))
                .await?;
            page.navigate(&url).await?;
            Ok(page)
        }
    }

    /// Waits for the browser's main process to exit (cancel safe).
    pub async fn wait(&mut self) -> String {
        match self.child.wait().await {
            Ok(st) => describe_exit(st),
            Err(e) => format!("wait failed: {e}"),
        }
    }

    /// Kills everything of this browser and reaps the main process.
    ///
    /// Ladder: `Browser.close` over DevTools (lets Chromium flush the profile),
    /// SIGTERM to the main process, SIGKILL to the process group, then SIGKILL
    /// to every process still carrying our marker or profile argument; this
    /// last step catches `chrome_crashpad_handler`, which double-forks out of
    /// the group into its own session.
    pub async fn destroy(mut self, page: Option<Page>) {
        let exited = |b: &mut Browser| matches!(b.child.try_wait(), Ok(Some(_)));
        if let Some(page) = page {
            if !exited(&mut self) {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    page.cdp.call("Browser.close", json!({}), None),
                )
                .await;
                let _ = tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await;
            }
        }
        if !exited(&mut self) {
            procs::signal_pid(self.pid, Signal::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
        }
        // The group id cannot be reused while any member lives, so this only
        // reaches our browser's processes.
        procs::signal_group(self.pid, Signal::SIGKILL);
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let left = procs::find_browser_procs(&self.marker, &self.profile_arg, Some(self.pid));
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::error!(pids = ?left, marker = %self.marker, "browser processes survived SIGKILL");
                break;
            }
            for pid in left {
                procs::signal_pid(pid, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn describe_exit(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown exit".into(),
    }
}

/// What the page shows, from one `Runtime.evaluate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageObs {
    /// The QR element's `data-ref`, when the QR element is present.
    pub qr: Option<String>,
    /// The ready element (chat list) is present.
    pub ready: bool,
    /// The logged-out screen is shown.
    pub logged_out: bool,
    /// The banned screen is shown.
    pub banned: bool,
    /// The disconnected screen or banner is shown.
    pub disconnected: bool,
}

/// The CSS selectors that tell the page's screens apart.
pub struct Selectors<'a> {
    pub qr: &'a str,
    pub ready: &'a str,
    pub logged_out: &'a str,
    pub banned: &'a str,
    pub disconnected: &'a str,
}

/// One page of the browser, attached in flat session mode.
pub struct Page {
    cdp: Cdp,
    session: String,
}

impl Page {
    async fn navigate(&self, url: &str) -> Result<(), BrowserError> {
        let r = self
            .cdp
            .call("Page.navigate", json!({ "url": url }), Some(&self.session))
            .await?;
        if let Some(err) = r.get("errorText").and_then(Value::as_str) {
            return Err(BrowserError::Navigate {
                url: url.to_owned(),
                reason: err.to_owned(),
            });
        }
        Ok(())
    }

    async fn eval(&self, expression: &str) -> Result<Value, BrowserError> {
        let r = self
            .cdp
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
                Some(&self.session),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(BrowserError::Page(ex.to_string()));
        }
        Ok(r.pointer("/result/value").cloned().unwrap_or(Value::Null))
    }

    /// Looks for the elements of every screen we tell apart. A selector the
    /// page rejects (invalid CSS) counts as absent rather than failing the poll.
    pub async fn observe(&self, sel: &Selectors<'_>) -> Result<PageObs, BrowserError> {
        let expr = format!(
            "(() => {{ const f = s => {{ try {{ return document.querySelector(s); }} catch (e) {{ return null; }} }}; \
             const q = f({q}); \
             return {{ qr: q ? q.getAttribute('data-ref') : null, ready: !!f({r}), \
             logged_out: !!f({l}), banned: !!f({b}), disconnected: !!f({d}) }}; }})()",
            q = js_str(sel.qr),
            r = js_str(sel.ready),
            l = js_str(sel.logged_out),
            b = js_str(sel.banned),
            d = js_str(sel.disconnected),
        );
        let v = self.eval(&expr).await?;
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(PageObs {
            qr: v.get("qr").and_then(Value::as_str).map(str::to_owned),
            ready: flag("ready"),
            logged_out: flag("logged_out"),
            banned: flag("banned"),
            disconnected: flag("disconnected"),
        })
    }

    /// Opens `{base}/send?phone=P&text=T`, waits for the send button and clicks it.
    pub async fn send_message(
        &self,
        base: &str,
        phone: &str,
        text: &str,
        button_selector: &str,
        timeout: Duration,
    ) -> Result<(), BrowserError> {
        let url = format!(
            "{base}/send?phone={}&text={}",
            url_encode(phone),
            url_encode(text)
        );
        self.navigate(&url).await?;
        let click = format!(
            "(() => {{ if (!location.href.startsWith({u})) return false; \
             const b = document.querySelector({s}); if (!b) return false; b.click(); return true; }})()",
            u = js_str(&url),
            s = js_str(button_selector),
        );
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.eval(&click).await?.as_bool() == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrowserError::NoSendButton {
                    selector: button_selector.to_owned(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Resolves when the DevTools connection is gone.
    pub async fn closed(&self) {
        self.cdp.closed().await;
    }
}

/// The user agent to present: `configured` (`USER_AGENT`) when set, else a
/// desktop Chrome one with the version `exe --version` prints (cached per
/// binary and modification time). None when the version cannot be read; the
/// page then still gets the override built from `Browser.getVersion`.
pub async fn user_agent_for(exe: &Path, configured: Option<&str>) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Cache = Mutex<HashMap<(PathBuf, Option<std::time::SystemTime>), String>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    if let Some(ua) = configured {
        return Some(ua.to_owned());
    }
    let key = (
        exe.to_path_buf(),
        std::fs::metadata(exe).and_then(|m| m.modified()).ok(),
    );
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(ua) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return Some(ua.clone());
    }
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(exe)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    // "Chromium 156.0.8078.114 built on Debian ..." or "Google Chrome 156.0...".
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.split('.').count() == 4 && w.split('.').all(|p| p.parse::<u32>().is_ok()))?;
    let major = version.split('.').next()?;
    // Chrome itself reports the major version only (user-agent reduction).
    let ua = format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/{major}.0.0.0 Safari/537.36"
    );
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, ua.clone());
    Some(ua)
}

/// `Emulation.setUserAgentOverride` params: headless Chromium says
/// `HeadlessChrome/<v>` in its user agent and client hints, which a real site
/// may refuse. We present the same browser as a normal desktop Chrome.
fn desktop_user_agent(version: &Value, configured: Option<String>) -> Value {
    let product = version
        .get("product")
        .and_then(Value::as_str)
        .unwrap_or("Chrome/120.0.0.0");
    let full = product.rsplit('/').next().unwrap_or("120.0.0.0");
    let major = full.split('.').next().unwrap_or("120");
    let ua = configured.unwrap_or_else(|| {
        let own = version
            .get("userAgent")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if own.contains("Mozilla/") {
            own.replace("HeadlessChrome", "Chrome")
        } else {
            format!(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/{major}.0.0.0 Safari/537.36"
            )
        }
    });
    json!({
        "userAgent": ua,
        "userAgentMetadata": {
            "brands": [
                { "brand": "Chromium", "version": major },
                { "brand": "Not)A;Brand", "version": "24" }
            ],
            "fullVersion": full,
            "platform": "Linux",
            "platformVersion": "",
            "architecture": "x86",
            "model": "",
            "mobile": false
        }
    })
}

/// Creates `dir` (and missing parents) with mode 0700 and tightens it to 0700
/// when it already existed: profiles hold the customer's WhatsApp session.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A JavaScript string literal (JSON strings are valid JS).
fn js_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Absolute form of the tokens dir (so the `--user-data-dir` argument we match
/// in `/proc` is the same string whatever our cwd is later).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes() {
        assert_eq!(url_encode("hola mundo & ñ"), "hola%20mundo%20%26%20%C3%B1");
        assert_eq!(url_encode("+54911"), "%2B54911");
        assert_eq!(
            js_str(r#"span[data-icon="send"]"#),
            r#""span[data-icon=\"send\"]""#
        );
    }
}
