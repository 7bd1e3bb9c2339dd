//! Real headless Chromium as a service (seeds 002/003/004 §8): after stop, and after a
//! SIGKILL of its main process, nothing of it is left, crashpad handlers included.

use std::time::Duration;

use crate::harness::*;

fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = std::process::Command::new("which").arg(name).output() {
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
            }
        }
    }
    None
}

/// Live pids whose command line mentions the test's profile or crashpad database (both
/// under `dir`, which the daemon's own `--config` also names).
fn pids_with(dir: &str) -> Vec<i32> {
    let (profile, home) = (format!("{dir}/profile"), format!("{dir}/home"));
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if (cmd.contains(&profile) || cmd.contains(&home)) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// "pid ppid pgid sid comm" of each, for failure messages.
fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| {
            let stat = lmsup::spawn::tree::read_proc(*p);
            stat.map(|s| {
                format!(
                    "{} ppid={} pgid={} sid={} {} {}",
                    s.pid, s.ppid, s.pgid, s.sid, s.state, s.comm
                )
            })
            .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
fn assert_gone(needle: &str, what: &str, d: &Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline && !pids_with(needle).is_empty() {
        std::thread::sleep(Duration::from_millis(25));
    }
    let left = pids_with(needle);
    assert!(
        left.is_empty(),
        "{what}: left alive:\n{}\nevents:\n{}",
        describe(&left),
        d.events("browser").join("\n")
    );
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn nothing_of_chromium_survives_stop_or_a_sigkill_of_its_main_process() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing in CI: .ci/run must install it"
        );
        eprintln!(
            "SKIP: Chromium is not installed (apt-get install chromium) — this test did not run"
        );
        return;
    };
    for mode in ["auto", "off"] {
        let d = Daemon::start(&format!(
            r#"[supervisor]
state_dir = "var"
cgroups = "{mode}"
resource_interval = "300ms"

[services.browser]
command = "{bin}"
args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--remote-debugging-port=0",
        "--user-data-dir={{dir}}/profile", "about:blank"]
# Crashpad's database goes under $HOME: give this instance its own, so the test can find
# its crashpad handlers (they carry no --user-data-dir) by command line.
env = {{ HOME = "{{dir}}/home" }}
restart = "never"
stop_timeout = "5s"
"#
        ));
        let profile = d.dir.path().display().to_string();
        wait_until(
            &format!("[{mode}] Chromium's tree with its crashpad handler"),
            Duration::from_secs(30),
            || {
                pids_with(&profile)
                    .iter()
                    .any(|p| comm(*p).contains("crashpad"))
                    && d.svc("browser")["processes"].as_u64().unwrap_or(0) >= 9
            },
        );
        let before = pids_with(&profile);
        let s = d.svc("browser");
        eprintln!(
            "[{mode}] chromium tree: {} processes, memory {} bytes ({}), {} with the profile on their command line",
            s["processes"], s["memory_bytes"], s["memory_source"], before.len()
        );
        // Crashpad left the process group: the tree must still count it.
        let show: serde_json::Value =
            serde_json::from_str(&d.ok(&["show", "browser", "--json"])).unwrap();
        let tree: Vec<i64> = show["tree"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["pid"].as_i64().unwrap())
            .collect();
        let crashpad: Vec<i32> = before
            .iter()
            .copied()
            .filter(|p| comm(*p).contains("crashpad"))
            .collect();
        assert!(
            crashpad.iter().all(|p| tree.contains(&i64::from(*p))),
            "[{mode}] crashpad {crashpad:?} not in tree {tree:?}"
        );

        d.ok(&["stop", "browser"]);
        d.wait_state("browser", "stopped", Duration::from_secs(15));
        assert_gone(&profile, &format!("[{mode}] after stop"), &d);

        d.ok(&["start", "browser", "--no-wait"]);
        wait_until("Chromium again", Duration::from_secs(30), || {
            pids_with(&profile)
                .iter()
                .any(|p| comm(*p).contains("crashpad"))
        });
        let main = d.pid("browser").unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(main),
            nix::sys::signal::Signal::SIGKILL,
        );
        d.wait_state("browser", "exited", Duration::from_secs(15));
        assert_gone(
            &profile,
            &format!("[{mode}] after SIGKILL of its main process"),
            &d,
        );
        // Whether anything was left to reap depends on how fast Chromium's children notice
        // their parent died; that nothing survives is what counts (asserted above).
        let events = d.events("browser").join("\n");
        assert!(
            events.contains(&format!("pid {main} exited with signal 9")),
            "[{mode}] {events}"
        );
    }
}
