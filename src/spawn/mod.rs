//! Starting children with exactly the declared environment, in their own session, and
//! finding and killing their whole tree afterwards. Never kills by name: only pids and pgids
//! it recorded, or processes carrying our markers.

pub mod fork;
pub mod kill;
pub mod limits;
pub mod reaper;
pub mod tree;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::config::{EnvSource, EnvVar, ServiceSpec};

/// Env markers every child gets, so escaped descendants can be found again.
pub const MARKER_SERVICE: &str = "LM_SERVICE";
pub const MARKER_INSTANCE: &str = "LM_SUPERVISOR";
/// Tells a child that the supervisor timestamps each line it writes.
pub const LOG_TIMESTAMPS: &str = "LM_LOG_TIMESTAMPS";

pub type Output = Box<dyn OutputPipe>;

/// The read end of a child's stdout or stderr: read by a log pump, which may also resize
/// the pipe (`F_SETPIPE_SZ`) through its descriptor.
pub trait OutputPipe: tokio::io::AsyncRead + std::os::fd::AsRawFd + Unpin + Send {}
impl<T: tokio::io::AsyncRead + std::os::fd::AsRawFd + Unpin + Send> OutputPipe for T {}
pub type ExitFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = crate::control::proto::ExitInfo> + Send>>;

pub struct Spawned {
    pub pid: i32,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
    /// Resolves (and reaps) when the process exits.
    pub exit: ExitFuture,
    /// The exact environment the process got, with sources, for `lmctl env`.
    pub env: BTreeMap<String, EnvVar>,
    /// Why the child may not have joined its cgroup, when known on this side.
    pub cgroup_error: Option<String>,
    /// The kernel placed the child in its cgroup (`CLONE_INTO_CGROUP` succeeded): nothing
    /// to check. False on the portable path, whose child joins by itself.
    pub placed: bool,
}

/// Fault injection for tests, `LMSUP_FAILPOINTS` in the daemon's environment: `cgroup-join`
/// makes every child skip joining its cgroup, as a failed `cgroup.procs` write would;
/// `clone3-enosys` makes clone3 fail as under a seccomp filter. The fallbacks they
/// exercise are the real ones.
pub(crate) fn failpoint(name: &str) -> bool {
    std::env::var("LMSUP_FAILPOINTS").is_ok_and(|v| v.split(',').any(|f| f.trim() == name))
}

/// What the supervisor adds to a spawn beyond the service's spec.
pub struct SpawnExtras<'a> {
    pub instance: &'a str,
    pub notify_socket: Option<&'a Path>,
    pub watchdog: Option<Duration>,
    /// cgroup directory to enter before exec (its `cgroup.procs`).
    pub cgroup: Option<&'a Path>,
}

/// A child started by the fork path, before its pipes and exit are handed to the runtime:
/// what `fork_service` returns, on any thread.
pub struct Forked {
    child: fork::ForkedChild,
    env: BTreeMap<String, EnvVar>,
    cgroup_error: Option<String>,
    placed: bool,
}

impl Forked {
    /// Registers the pipes and the pidfd with the runtime (call it on the runtime).
    pub fn into_spawned(self) -> Spawned {
        let Forked {
            child,
            env,
            cgroup_error,
            placed,
        } = self;
        // Pipes made and set non-blocking by `fork`.
        let out = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(child.stdout)
            .map(|r| Box::new(r) as Output)
            .ok();
        let err = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(child.stderr)
            .map(|r| Box::new(r) as Output)
            .ok();
        Spawned {
            placed,
            pid: child.pid,
            stdout: out,
            stderr: err,
            exit: Box::pin(fork::wait(child.pidfd)),
            env,
            cgroup_error,
        }
    }
}

/// The environment a service's child gets: the declared one plus our markers.
fn child_env(spec: &ServiceSpec, extras: &SpawnExtras<'_>) -> BTreeMap<String, EnvVar> {
    let mut env = spec.env.clone();
    let supervisor = |v: String| EnvVar {
        value: v,
        source: EnvSource::Supervisor,
    };
    env.insert(MARKER_SERVICE.into(), supervisor(spec.name.clone()));
    // Like JOURNAL_STREAM under systemd: every line gets our timestamp, so a service may
    // leave its own out (ours do) and `lmctl logs` shows one time per line.
    env.insert(LOG_TIMESTAMPS.into(), supervisor("1".into()));
    env.insert(
        MARKER_INSTANCE.into(),
        supervisor(extras.instance.to_string()),
    );
    if let Some(sock) = extras.notify_socket {
        env.insert(
            "NOTIFY_SOCKET".into(),
            supervisor(sock.display().to_string()),
        );
    }
    if let Some(w) = extras.watchdog {
        env.insert(
            "WATCHDOG_USEC".into(),
            supervisor(w.as_micros().to_string()),
        );
    }
    env
}

fn check_cwd(spec: &ServiceSpec) -> Result<(), String> {
    if spec.cwd.is_dir() {
        return Ok(());
    }
    Err(format!(
        "working directory {} does not exist: create it or fix `cwd` of service `{}`",
        spec.cwd.display(),
        spec.name
    ))
}

/// The fork path alone (`clone3`), callable from any thread: nothing here needs the
/// runtime. None where that path is not available (then `spawn` takes the portable one).
pub fn fork_service(
    spec: &ServiceSpec,
    extras: &SpawnExtras<'_>,
) -> Option<Result<Forked, String>> {
    if !fork::supported() {
        return None;
    }
    if let Err(e) = check_cwd(spec) {
        return Some(Err(e));
    }
    let env = child_env(spec, extras);
    let skip_join = failpoint("cgroup-join");
    let cgroup = extras.cgroup.filter(|_| !skip_join);
    let plan = match fork::Plan::new(
        &spec.command,
        &spec.args,
        env.iter().map(|(k, v)| (k.as_str(), v.value.as_str())),
        &spec.cwd,
    ) {
        Ok(plan) => plan,
        Err(e) => return Some(Err(format!("cannot execute {:?}: {e}", spec.command))),
    };
    let cg_fd = cgroup.and_then(open_dir);
    match fork::spawn(&plan, cg_fd.as_ref()) {
        Ok(mut child) => {
            let placed = child.in_cgroup && cg_fd.is_some();
            let cgroup_error = child
                .cgroup_error
                .take()
                .or_else(|| skip_join.then(|| "skipped by the cgroup-join failpoint".to_string()));
            Some(Ok(Forked {
                child,
                env,
                cgroup_error,
                placed,
            }))
        }
        Err(e) if fork::supported() => Some(Err(exec_error(spec, &e))),
        // clone3 is not available here: the portable path.
        Err(_) => None,
    }
}

/// Spawns the service's command. The child gets `env_clear()` plus the declared env plus our
/// markers, a new session (so it is its own process group leader), default signal
/// dispositions, stdin from /dev/null and piped stdout/stderr.
pub fn spawn(spec: &ServiceSpec, extras: &SpawnExtras<'_>) -> Result<Spawned, String> {
    if let Some(forked) = fork_service(spec, extras) {
        return forked.map(Forked::into_spawned);
    }
    check_cwd(spec)?;
    let env = child_env(spec, extras);
    let skip_join = failpoint("cgroup-join");
    let cgroup = extras.cgroup.filter(|_| !skip_join);
    let mut cmd = tokio::process::Command::new(&spec.command);
    cmd.args(&spec.args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, &v.value)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let cgroup_procs = cgroup.map(|c| {
        let mut p = c.join("cgroup.procs").into_os_string().into_encoded_bytes();
        p.push(0);
        p
    });
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setsid, sigprocmask, signal, open/write/close); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            limits::restore_in_child();
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // Rust ignores SIGPIPE in its own binaries; an ignored signal stays ignored
            // across exec, which would change how children die on a closed pipe.
            for sig in [
                libc::SIGPIPE,
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if let Some(path) = &cgroup_procs {
                // Join the service's cgroup before exec, so nothing the child forks can be
                // outside it. "0" means the calling process.
                let fd = libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| exec_error(spec, &e))?;
    let pid = child
        .id()
        .map(|p| p as i32)
        .ok_or("the child exited before its pid was known")?;
    let stdout = child.stdout.take().map(|r| Box::new(r) as Output);
    let stderr = child.stderr.take().map(|r| Box::new(r) as Output);
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        exit: Box::pin(async move {
            use std::os::unix::process::ExitStatusExt;
            match child.wait().await {
                Ok(st) => crate::control::proto::ExitInfo {
                    code: st.code(),
                    signal: st.signal(),
                },
                Err(_) => crate::control::proto::ExitInfo {
                    code: None,
                    signal: None,
                },
            }
        }),
        env,
        cgroup_error: skip_join.then(|| "skipped by the cgroup-join failpoint".to_string()),
        placed: false,
    })
}

fn exec_error(spec: &ServiceSpec, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => "check `command` (a bare name is looked up in the child's PATH)",
        io::ErrorKind::PermissionDenied => "make the file executable (chmod +x) or fix `command`",
        _ => "check `command` and `cwd`",
    };
    format!("cannot execute {:?}: {e}; {hint}", spec.command)
}

/// The cgroup directory as an fd for `CLONE_INTO_CGROUP`.
fn open_dir(dir: &Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .ok()
        .map(std::os::fd::OwnedFd::from)
}
