//! `leadmaster-supervisord`: wires config, the actor, the control socket, signals, the
//! resource sampler and the systemd watchdog; returns when a shutdown has finished.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::config::{CgroupMode, Config};
use crate::logs::LogHandle;
use crate::resources::{cgroup, Sampler};
use crate::spawn::{reaper, tree};
use crate::supervisor::actor::Actor;
use crate::supervisor::Msg;
use crate::systemd::Systemd;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another leadmaster-supervisord (pid {pid}) already runs on state_dir {dir}: talk to it with `lmctl`, or stop it with `lmctl shutdown` first")]
    AlreadyRunning { pid: String, dir: PathBuf },
    #[error("cannot prepare state_dir {dir}: {source}; check the path and its permissions")]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on the control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the log writer in {dir}: {source}")]
    Logs {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen for metrics on {addr} ([metrics] listen): {source}; pick a free port or remove [metrics]")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// Holds the state dir's lock for the daemon's lifetime: one daemon per state dir.
pub struct StateLock {
    _file: File,
}

pub fn lock_state_dir(dir: &Path) -> Result<StateLock, DaemonError> {
    let state_err = |e| DaemonError::StateDir {
        dir: dir.to_path_buf(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(state_err)?;
    // The socket lives here: keep the folder to its owner.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(state_err)?;
    let path = dir.join("daemon.lock");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(state_err)?;
    // SAFETY: flock on a valid open fd.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(DaemonError::AlreadyRunning {
            pid: pid.trim().to_string(),
            dir: dir.to_path_buf(),
        });
    }
    file.set_len(0).map_err(state_err)?;
    file.rewind().map_err(state_err)?;
    write!(file, "{}", std::process::id()).map_err(state_err)?;
    Ok(StateLock { _file: file })
}

/// A short stable key for a state dir: marks every process of every daemon that runs on it.
pub fn state_key(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    // FNV-1a: stable across builds and Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canon.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How often the daemon checks whether its own output file needs rotating.
const OWN_OUTPUT_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn run(config: Config) -> Result<(), DaemonError> {
    let state_dir = config.supervisor.state_dir.clone();
    let _lock = lock_state_dir(&state_dir)?;
    let prefix = state_key(&state_dir);
    let me = std::process::id() as i32;
    let start = tree::read_proc(me).map(|p| p.start_time).unwrap_or(0);
    let instance = format!("{prefix}:{me}:{start}");

    if let Some((before, after)) = crate::spawn::limits::raise() {
        tracing::debug!("open-file limit {before} -> {after} (children keep {before})");
    }
    if let Err(e) = reaper::become_subreaper() {
        tracing::warn!(
            "cannot become a child subreaper ({e}); orphans of services will re-parent to init"
        );
    }
    let log_dir = state_dir.join("logs");
    let own_output = (
        log_dir.join("daemon.out"),
        config.logs.max_size,
        config.logs.keep,
    );
    let (logs, log_thread) =
        LogHandle::start(log_dir.clone(), &config.logs).map_err(|e| DaemonError::Logs {
            dir: log_dir,
            source: e,
        })?;

    let cgroup_root = match config.supervisor.cgroups {
        CgroupMode::Off => None,
        CgroupMode::Auto => cgroup::find_root(&prefix),
    };
    let mechanism = match &cgroup_root {
        Some(r) => format!("a cgroup per service under {}", r.display()),
        None => "process groups, parent links and env markers (no writable cgroup v2)".to_string(),
    };
    {
        use crate::supervisor::event::{Event, EventKind};
        let e = Event::daemon(EventKind::DaemonStart {
            pid: me as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: config.file.display().to_string(),
            tracking: mechanism,
        });
        let text = e.kind.to_string();
        logs.record(crate::supervisor::actor::history_line(&e, &text));
        logs.event(None, text);
    }
    // What `lmctl check` reports but does not stop the daemon (a command that cannot run).
    for w in &config.warnings {
        tracing::warn!("{w}");
        logs.event(None, format!("warning: {w}; its start will fail"));
    }

    let socket_path = config.supervisor.socket.clone();
    if let Some(parent) = socket_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DaemonError::Socket {
            path: socket_path.clone(),
            source: e,
        })?;
    }
    let _ = std::fs::remove_file(&socket_path);
    let listener =
        tokio::net::UnixListener::bind(&socket_path).map_err(|e| DaemonError::Socket {
            path: socket_path.clone(),
            source: e,
        })?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600)).map_err(
        |e| DaemonError::Socket {
            path: socket_path.clone(),
            source: e,
        },
    )?;

    let metrics_listener =
        match &config.metrics.listen {
            Some(addr) => Some(crate::metrics::server::bind(addr).await.map_err(|e| {
                DaemonError::Metrics {
                    addr: addr.clone(),
                    source: e,
                }
            })?),
            None => None,
        };
    let alerts_cfg = config.alerts.clone();
    let alerts_for_actor = alerts_cfg.clone();

    let (tx, rx) = mpsc::unbounded_channel();
    let systemd = Systemd::from_env();
    let watchdog = systemd.watchdog_interval();
    let interval = config.supervisor.resource_interval;
    let actor = Actor::new(
        config,
        instance,
        prefix.clone(),
        logs.clone(),
        tx.clone(),
        cgroup_root.clone(),
        systemd,
    );
    // The engine always runs (with no rules when `[alerts]` is absent), so a reload can
    // add rules.
    let alert_stats = std::sync::Arc::new(crate::metrics::AlertStats::default());
    let (atx, arx) = mpsc::channel(crate::alerts::INBOX);
    let engine = crate::alerts::Engine::new(
        alerts_cfg.unwrap_or_else(crate::config::alerts::AlertsConfig::empty),
        state_dir.join("logs"),
        tx.clone(),
        alert_stats.clone(),
    );
    let actor = actor.with_alerts(atx, alerts_for_actor.as_ref());
    let alert_task = tokio::spawn(engine.run(arx));
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            logs.event(None, format!("metrics on http://{addr}/metrics"));
        }
        tokio::spawn(crate::metrics::server::serve(
            l,
            crate::metrics::server::Sources {
                actor: tx.clone(),
                logs: logs.stats.clone(),
                alerts: Some(alert_stats.clone()),
            },
        ))
    });

    let server = tokio::spawn(crate::control::server::serve(
        listener,
        tx.clone(),
        logs.clone(),
    ));
    let signals = spawn_signal_task(tx.clone())?;
    let sampler = tokio::spawn(sampler_task(tx.clone(), prefix, interval, own_output));
    let dog = watchdog.map(|every| tokio::spawn(watchdog_task(tx.clone(), every)));
    drop(tx);

    actor.run(rx).await;

    server.abort();
    signals.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    alert_task.abort();
    sampler.abort();
    if let Some(d) = dog {
        d.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    if let Some(root) = cgroup_root {
        cgroup::remove_tree(&root);
    }
    drop(logs);
    // Dropping every handle closes the channel; the writer flushes and ends.
    let _ = tokio::task::spawn_blocking(move || log_thread.join()).await;
    Ok(())
}

fn spawn_signal_task(
    tx: mpsc::UnboundedSender<Msg>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut chld = signal(SignalKind::child()).map_err(DaemonError::Signals)?;
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = term.recv() => Msg::Terminate,
                _ = int.recv() => Msg::Terminate,
                _ = hup.recv() => Msg::Reload,
                _ = chld.recv() => Msg::ChildSignal,
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    }))
}

/// Up to this many services a tick with a cgroup each is sampled on the runtime.
const INLINE_SAMPLES: usize = 64;

/// The resource tick. It also checks `daemon.out` (our stderr when `lmctl start` launched
/// us, rotated like the other logs) every `OWN_OUTPUT_CHECK`: a timer of its own woke the
/// idle daemon twice more a second or two (tokio's wheel fires a far timer in two steps).
async fn sampler_task(
    tx: mpsc::UnboundedSender<Msg>,
    prefix: String,
    every: Duration,
    own_output: (PathBuf, u64, u32),
) {
    let mut sampler = Some(Sampler::new(prefix));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut output_checked = tokio::time::Instant::now();
    loop {
        let now = tick.tick().await;
        if now.saturating_duration_since(output_checked) >= OWN_OUTPUT_CHECK {
            output_checked = now;
            let (path, max_size, keep) = &own_output;
            crate::logs::rotate_own_output(path, *max_size, *keep);
        }
        let (rtx, rrx) = oneshot::channel();
        if tx.send(Msg::SampleTargets(rtx)).is_err() {
            return;
        }
        let Ok(targets) = rrx.await else { return };
        let Some(mut s) = sampler.take() else { return };
        // With a cgroup each, a tick is a few re-reads of open files (µs per service): no
        // thread hop. A `/proc` scan (no cgroups) can take milliseconds, and so do many
        // services (a first tick opens every file): off the runtime, where spawns and
        // requests are served.
        let (s, samples) =
            if targets.len() <= INLINE_SAMPLES && targets.iter().all(|t| t.cgroup.is_some()) {
                let samples = s.sample(&targets);
                (s, samples)
            } else {
                let Ok(done) = tokio::task::spawn_blocking(move || {
                    let samples = s.sample(&targets);
                    (s, samples)
                })
                .await
                else {
                    return;
                };
                done
            };
        sampler = Some(s);
        if tx.send(Msg::Samples(samples)).is_err() {
            return;
        }
    }
}

/// Pings systemd only while the actor answers: a wedged actor stops the pings and systemd
/// restarts the daemon.
async fn watchdog_task(tx: mpsc::UnboundedSender<Msg>, every: Duration) {
    let systemd = Systemd::from_env();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let (rtx, rrx) = oneshot::channel();
        if tx.send(Msg::Alive(rtx)).is_err() {
            return;
        }
        if tokio::time::timeout(every, rrx)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            systemd.watchdog();
        }
    }
}
