//! A real daemon in a temp dir, `lmctl` against it, waits with deadlines, and cleanup of
//! every process it started, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const HELPER: &str = env!("CARGO_BIN_EXE_lm-test-helper");
pub const DAEMON: &str = env!("CARGO_BIN_EXE_leadmaster-supervisord");
pub const LMCTL: &str = env!("CARGO_BIN_EXE_lmctl");

/// Polls `cond` every 25 ms until it holds; panics naming `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Pids of live processes whose env carries this state dir's daemon marker.
pub fn marked_pids(state_dir: &Path) -> Vec<i32> {
    let key = lmsup::daemon::state_key(state_dir);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((_, inst)) = lmsup::spawn::tree::read_markers(pid) {
            if inst.starts_with(&key) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub child: Option<Child>,
    /// Extra pids a test started by hand (killed at drop).
    pub extra_pids: Vec<i32>,
    /// Environment given to the daemon (besides PATH and HOME).
    pub env: Vec<(String, String)>,
    /// A soft open-file limit to start the daemon with.
    pub nofile_soft: Option<u64>,
}

impl Daemon {
    /// Writes the config (`{helper}` and `{dir}` substituted) without starting anything.
    pub fn new(body: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("supervisor.toml");
        let state_dir = dir.path().join("var");
        let d = Daemon {
            dir,
            config,
            state_dir,
            child: None,
            extra_pids: Vec::new(),
            env: Vec::new(),
            nofile_soft: None,
        };
        d.write_config(body);
        d
    }

    /// `new` + `spawn` + wait for the socket.
    pub fn start(body: &str) -> Daemon {
        let mut d = Daemon::new(body);
        d.spawn();
        d
    }

    pub fn write_config(&self, body: &str) {
        let text = body
            .replace("{helper}", HELPER)
            .replace("{dir}", &self.dir.path().display().to_string());
        let full = if text.contains("[supervisor]") {
            text
        } else {
            format!("[supervisor]\nstate_dir = \"var\"\n\n{text}")
        };
        std::fs::write(&self.config, full).expect("write config");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn spawn(&mut self) {
        let mut cmd = Command::new(DAEMON);
        cmd.arg("--config").arg(&self.config).env_clear();
        for k in ["PATH", "HOME", "LANG"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(soft) = self.nofile_soft {
            use std::os::unix::process::CommandExt;
            // SAFETY: getrlimit/setrlimit between fork and exec, nothing allocated.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = soft.min(lim.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                    Ok(())
                });
            }
        }
        let log = std::fs::File::create(self.dir.path().join("daemon.stderr")).expect("daemon log");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("spawn daemon"));
        wait_until(
            "the daemon's socket to answer",
            Duration::from_secs(20),
            || self.lmctl(&["ping"]).status.success() || self.daemon_exited(),
        );
        assert!(
            !self.daemon_exited(),
            "daemon exited early: {}",
            self.daemon_stderr()
        );
    }

    pub fn daemon_exited(&self) -> bool {
        match &self.child {
            Some(c) => !alive(c.id() as i32),
            None => true,
        }
    }

    pub fn daemon_pid(&self) -> i32 {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("daemon running")
    }

    pub fn daemon_stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.stderr")).unwrap_or_default()
    }

    pub fn lmctl(&self, args: &[&str]) -> Output {
        Command::new(LMCTL)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run lmctl")
    }

    /// `lmctl ARGS`, asserting success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.lmctl(args);
        assert!(
            out.status.success(),
            "lmctl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> Vec<Value> {
        let out = self.lmctl(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub fn svc(&self, name: &str) -> Value {
        self.status()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or(Value::Null)
    }

    pub fn state(&self, name: &str) -> String {
        self.svc(name)["state"].as_str().unwrap_or("").to_string()
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        self.svc(name)["pid"].as_i64().map(|p| p as i32)
    }

    #[track_caller]
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) {
        wait_until(&format!("{name} to be {state}"), timeout, || {
            self.state(name) == state
        });
    }

    /// The merged log as text.
    pub fn merged_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("logs/supervisor.log")).unwrap_or_default()
    }

    /// Event lines of one service in the merged log.
    pub fn events(&self, name: &str) -> Vec<String> {
        let tag = format!(" {name}|event ");
        self.merged_log()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect()
    }

    /// PIDs a service printed as `PID label=N` on stdout.
    pub fn printed_pids(&self, name: &str) -> Vec<(String, i32)> {
        let text = std::fs::read_to_string(self.state_dir.join(format!("logs/{name}.out.log")))
            .unwrap_or_default();
        let mut out = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.split("|out PID ").nth(1) {
                let word = rest.split_whitespace().next().unwrap_or("");
                if let Some((label, pid)) = word.split_once('=') {
                    if let Ok(p) = pid.parse() {
                        out.push((label.to_string(), p));
                    }
                }
            }
        }
        out
    }

    /// SIGTERM the daemon and wait for it; returns its exit status code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the daemon (a crash), leaving its services behind.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever the test left: only processes carrying this daemon's marker, and pids
        // the test recorded itself.
        for pid in marked_pids(&self.state_dir)
            .into_iter()
            .chain(self.extra_pids.iter().copied())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        lmsup::resources::cgroup::remove_tree(std::path::Path::new(&format!(
            "/sys/fs/cgroup/unified/leadmaster-{}",
            lmsup::daemon::state_key(&self.state_dir)
        )));
    }
}

/// A free loopback port (bound then released; the test's service binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Index of the first line of the merged log containing `needle`.
pub fn line_of(log: &str, needle: &str) -> Option<usize> {
    log.lines().position(|l| l.contains(needle))
}
