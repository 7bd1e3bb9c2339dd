//! Every line captured, timestamped, merged, rotated, tailed and followed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::*;

/// Sequence numbers of `line NNNNNNNN xxx` lines of `SERVICE|out`, asserting each is whole.
fn seqs(text: &str, service: &str) -> Vec<u64> {
    let tag = format!(" {service}|out line ");
    text.lines()
        .filter_map(|l| l.split_once(&tag).map(|(_, rest)| rest))
        .map(|rest| {
            let (n, xs) = rest.split_once(' ').expect("torn line");
            assert_eq!(xs, "x".repeat(80), "torn line: {rest}");
            n.parse().expect("sequence number")
        })
        .collect()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn two_hundred_thousand_lines_all_on_disk_in_order() {
    let d = Daemon::start(
        "[logs]\nmax_size = \"200MiB\"\n\n[services.flood]\ncommand = \"{helper}\"\nargs = [\"lines\", \"200000\", \"mixed\", \"exit\"]\nrestart = \"never\"\n",
    );
    let out_path = d.state_dir.join("logs/flood.out.log");
    wait_until("the partial tail on disk", Duration::from_secs(120), || {
        read(&out_path).contains("partial-tail-without-newline")
    });
    let out = read(&out_path);
    assert_eq!(
        seqs(&out, "flood"),
        (0..200_000).collect::<Vec<u64>>(),
        "service file: missing, duplicated or out of order"
    );
    assert!(!out.contains("|err "), "stderr is kept apart");
    let err = read(&d.state_dir.join("logs/flood.err.log"));
    assert_eq!(err.lines().count(), 20_000);
    assert!(
        err.lines().all(|l| l.contains(" flood|err err ")),
        "stderr file holds only stderr"
    );
    d.wait_state("flood", "exited", Duration::from_secs(10));
    let merged = d.merged_log();
    assert_eq!(
        seqs(&merged, "flood"),
        (0..200_000).collect::<Vec<u64>>(),
        "merged file"
    );
    assert_eq!(merged.matches(" flood|err err ").count(), 20_000);
    assert_eq!(d.svc("flood")["log_dropped"], 0);
    // Every line starts with the configured timestamp.
    let first = out.lines().next().unwrap();
    assert!(
        chrono::DateTime::parse_from_str(
            first.split(' ').next().unwrap(),
            "%Y-%m-%dT%H:%M:%S%.3f%:z"
        )
        .is_ok(),
        "{first}"
    );
}

#[test]
fn rotation_keeps_at_most_keep_files_with_contiguous_lines() {
    let d = Daemon::start(
        "[logs]\nmax_size = \"64KiB\"\nkeep = 3\n\n[services.r]\ncommand = \"{helper}\"\nargs = [\"lines\", \"20000\", \"plain\", \"exit\"]\nrestart = \"never\"\n",
    );
    let dir = d.state_dir.join("logs");
    wait_until("the partial tail", Duration::from_secs(60), || {
        read(&dir.join("r.out.log")).contains("partial-tail")
    });
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("r.out.log"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["r.out.log", "r.out.log.1", "r.out.log.2", "r.out.log.3"],
        "keep + 1 files"
    );
    let mut all = Vec::new();
    for name in ["r.out.log.3", "r.out.log.2", "r.out.log.1", "r.out.log"] {
        let text = read(&dir.join(name));
        assert!(text.len() as u64 <= 64 * 1024, "{name} is over max_size");
        all.extend(seqs(&text, "r"));
    }
    let last = *all.last().unwrap();
    assert_eq!(last, 19_999);
    let first = all[0];
    assert_eq!(
        all,
        (first..=last).collect::<Vec<u64>>(),
        "kept lines must be contiguous, no gap or duplicate"
    );
}

#[test]
fn follow_sees_new_lines_across_a_rotation() {
    let d = Daemon::start(
        "[logs]\nmax_size = \"32KiB\"\nkeep = 2\n\n[services.f]\ncommand = \"{helper}\"\nargs = [\"lines\", \"3000\", \"plain\", \"exit\"]\nrestart = \"never\"\nautostart = false\n",
    );
    let mut follower = Command::new(LMCTL)
        .arg("--config")
        .arg(&d.config)
        .args(["logs", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The last old line and the subscription come from the log writer in one turn: once
    // that line is here, nothing written later can be missed.
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the follower's first line");
    assert!(first.contains("supervisord|event"), "{first}");
    d.ok(&["start", "f", "--no-wait"]);
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !got.iter().any(|l: &String| l.contains("partial-tail"))
        && std::time::Instant::now() < deadline
    {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push(l);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        d.state_dir.join("logs/f.out.log.1").exists(),
        "a rotation happened meanwhile"
    );
    assert_eq!(
        seqs(&got.join("\n"), "f"),
        (0..3000).collect::<Vec<u64>>(),
        "follower missed lines"
    );
}

#[test]
fn a_partial_line_of_a_killed_child_is_on_disk() {
    let d = Daemon::start(
        "[services.p]\ncommand = \"{helper}\"\nargs = [\"lines\", \"3\"]\nrestart = \"never\"\n",
    );
    d.wait_state("p", "running", Duration::from_secs(10));
    let pid = d.pid("p").unwrap();
    // The helper has written its partial line when it starts sleeping; kill it mid-line.
    wait_until("three whole lines", Duration::from_secs(10), || {
        seqs(&read(&d.state_dir.join("logs/p.out.log")), "p").len() == 3
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_until("the partial line", Duration::from_secs(10), || {
        read(&d.state_dir.join("logs/p.out.log")).contains("p|out partial-tail-without-newline")
    });
}

#[test]
fn exits_signals_and_restart_reasons_are_in_the_merged_log() {
    let d = Daemon::start(
        "[services.c]\ncommand = \"{helper}\"\nargs = [\"exit\", \"7\"]\nbackoff = { initial = \"50ms\" }\nmax_restarts = 1\n\n[services.k]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\nbackoff = { initial = \"0s\" }\n",
    );
    d.wait_state("c", "failed", Duration::from_secs(10));
    d.wait_state("k", "running", Duration::from_secs(10));
    let pid = d.pid("k").unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_until("k restarted", Duration::from_secs(10), || {
        d.pid("k").is_some_and(|p| p != pid)
    });
    let log = d.merged_log();
    for needle in [
        "c|event pid ",
        "exited with exit code 7 after",
        "c|event restarting in 50ms (exited with exit code 7",
        "c|event failed: gave up after 2 failed runs",
        &format!("k|event pid {pid} exited with signal 9 (SIGKILL)"),
        "k|event restarting in 0ms (exited with signal 9 (SIGKILL)",
        "c|out exiting with 7",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
}

#[test]
fn logs_verb_tails_and_filters() {
    let d = Daemon::start(
        "[services.m]\ncommand = \"{helper}\"\nargs = [\"lines\", \"100\", \"mixed\", \"exit\"]\nrestart = \"never\"\n\n[services.other]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n",
    );
    wait_until("lines", Duration::from_secs(10), || {
        read(&d.state_dir.join("logs/m.out.log")).contains("partial-tail")
    });
    let last5 = d.ok(&["logs", "m", "--out", "-n", "5"]);
    let lines: Vec<&str> = last5.lines().collect();
    assert_eq!(lines.len(), 5, "{last5}");
    assert!(lines[4].ends_with("partial-tail-without-newline"));
    assert!(lines[3].contains("line 00000099"));
    let errs = d.ok(&["logs", "m", "--err", "-n", "1000"]);
    assert_eq!(errs.lines().count(), 10);
    assert!(errs.lines().all(|l| l.contains("m|err")));
    let merged = d.ok(&["logs", "-n", "1000"]);
    assert!(
        merged.contains("other|event spawned") && merged.contains("m|out line"),
        "{merged}"
    );
    let m_only = d.ok(&["logs", "m", "-n", "1000"]);
    assert!(!m_only.contains("other|"), "{m_only}");
    assert!(
        m_only.contains("m|event spawned"),
        "a service's log includes its events"
    );
    let none = d.ok(&["logs", "m", "--since", "1ms", "-n", "1000"]);
    assert!(
        none.lines().count() < 5,
        "--since filters by timestamp: {none}"
    );
    let bad = d.lmctl(&["logs", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn daemon_out_is_rotated_while_the_daemon_runs() {
    let mut d = Daemon::new(
        "[logs]\nmax_size = \"4KiB\"\nkeep = 2\n\n[services.crashy]\ncommand = \"{helper}\"\nargs = [\"exit\", \"1\"]\nmax_restarts = 1000\nstart_grace = \"0s\"\nbackoff = { initial = \"10ms\", max = \"10ms\" }\n",
    );
    // `lmctl start` launches the daemon detached, its stderr in var/logs/daemon.out.
    d.ok(&["start", "--no-wait"]);
    let ping: serde_json::Value = serde_json::from_str(&d.ok(&["ping", "--json"])).unwrap();
    d.extra_pids.push(ping["pid"].as_i64().unwrap() as i32);
    let out = d.state_dir.join("logs/daemon.out");
    wait_until("daemon.out rotated twice", Duration::from_secs(30), || {
        lmsup::logs::sink::rotated(&out, 2).exists()
    });
    assert!(!lmsup::logs::sink::rotated(&out, 3).exists());
    // Still written after the rotation: the daemon moved its stderr to the fresh file.
    // (Had it kept the old descriptor, its lines would land in daemon.out.1 and the fresh
    // file would stay empty.)
    wait_until(
        "the fresh daemon.out is written",
        Duration::from_secs(10),
        || std::fs::metadata(&out).is_ok_and(|m| m.len() > 0),
    );
    d.ok(&["stop", "crashy"]);
    d.ok(&["shutdown"]);
}

/// The capacity of the pipe `fd` of `pid` names, through a descriptor of our own on it.
fn pipe_size(pid: i32, fd: u32) -> i32 {
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/{fd}"))
    else {
        return -1;
    };
    // SAFETY: F_GETPIPE_SZ on a descriptor we own; it changes nothing.
    unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETPIPE_SZ) }
}

/// A pipe whose reads keep coming back full grows to 1 MiB, so a chatty child writes
/// ahead instead of blocking whenever the daemon is descheduled; a quiet one stays at the
/// default 64 KiB. No line is lost either way.
#[test]
fn a_chatty_service_gets_a_bigger_pipe_and_a_quiet_one_does_not() {
    let d = Daemon::start(
        "[services.chatty]\ncommand = \"{helper}\"\nargs = [\"burst\", \"40000\"]\n\n\
         [services.quiet]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n",
    );
    let out_path = d.state_dir.join("logs/chatty.out.log");
    wait_until("the burst on disk", Duration::from_secs(60), || {
        read(&out_path).contains(" chatty|out line 00039999 ")
    });
    assert_eq!(
        seqs(&read(&out_path), "chatty"),
        (0..40_000).collect::<Vec<u64>>()
    );
    let chatty = d.pid("chatty").expect("chatty runs");
    let quiet = d.pid("quiet").expect("quiet runs");
    assert_eq!(pipe_size(chatty, 1), 1024 * 1024, "the chatty stdout grew");
    assert_eq!(pipe_size(chatty, 2), 64 * 1024, "its silent stderr did not");
    assert_eq!(pipe_size(quiet, 1), 64 * 1024, "a quiet stdout did not");
}
