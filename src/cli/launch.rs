//! `lmctl start` with no daemon: launch `leadmaster-supervisord` detached and wait for its
//! socket to answer.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::client;
use crate::control::proto::{Request, Response};

fn daemon_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("leadmaster-supervisord")));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("leadmaster-supervisord"),
    }
}

pub fn ensure_daemon(config: &Path, socket: &Path) -> anyhow::Result<()> {
    if matches!(
        client::request(socket, Request::Ping),
        Ok(Response::Pong { .. })
    ) {
        return Ok(());
    }
    // Validate first, so errors reach the terminal instead of a log file.
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!(
                "the config has {} problem(s); fix them and run `lmctl start` again",
                errors.len()
            );
        }
    };
    let log_dir = cfg.supervisor.state_dir.join("logs");
    std::fs::create_dir_all(&log_dir)?;
    let out_path = log_dir.join("daemon.out");
    crate::logs::rotate_if_big(&out_path, cfg.logs.max_size, cfg.logs.keep);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)?;
    let err = out.try_clone()?;
    let bin = daemon_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; the daemon gets its own session, so closing this
    // terminal (SIGHUP to its session) does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        anyhow::anyhow!(
            "cannot launch {} ({e}); is it installed beside lmctl or on PATH?",
            bin.display()
        )
    })?;
    println!(
        "started leadmaster-supervisord (pid {}), output in {}",
        child.id(),
        out_path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if matches!(
            client::request(socket, Request::Ping),
            Ok(Response::Pong { .. })
        ) {
            // Reap our direct child later is not possible once we exit; the daemon lives on
            // re-parented to init (or our own supervisor), which reaps it.
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&out_path).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(5).collect();
            anyhow::bail!(
                "the daemon exited at once ({status}); its last words:\n{}",
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the daemon did not open {} within 15s; see {}",
                socket.display(),
                out_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_big_daemon_out_is_rotated_and_the_oldest_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("daemon.out");
        std::fs::write(&p, "x".repeat(100)).expect("write");
        std::fs::write(dir.path().join("daemon.out.1"), "one").expect("write");
        std::fs::write(dir.path().join("daemon.out.2"), "two").expect("write");
        crate::logs::rotate_if_big(&p, 10, 2);
        assert!(!p.exists());
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
        assert_eq!(read("daemon.out.1").len(), 100);
        assert_eq!(read("daemon.out.2"), "one");
        std::fs::write(&p, "small").expect("write");
        crate::logs::rotate_if_big(&p, 10, 2);
        assert_eq!(read("daemon.out"), "small");
    }
}
