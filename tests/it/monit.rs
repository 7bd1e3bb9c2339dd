//! `lmctl monit` in a real pseudo-terminal (a private tmux server, 80×24): it renders,
//! selects, restarts (the pid changes), stops and starts, filters, quits and leaves the
//! terminal as it found it; colours follow NO_COLOR. tmux is installed by .ci/run; on a
//! machine without it these tests skip loudly (and fail under CI=true).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// A tmux server on its own socket in the test's temp dir, killed (by that socket) on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// None when tmux is not installed (outside CI).
    fn start(dir: &Path, script: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "tmux is missing in CI (apt-get install tmux)"
            );
            eprintln!("SKIP: tmux is not installed; `apt-get install tmux` to run this test");
            return None;
        }
        let t = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let script_path = dir.join("pane.sh");
        std::fs::write(&script_path, script).unwrap();
        // A fresh tmux server now and then dies while starting on a loaded machine ("server
        // exited unexpectedly"): that is tmux, not monit, so it gets three tries.
        let mut last = String::new();
        for _ in 0..3 {
            let out = t
                .cmd()
                .args(["new-session", "-d", "-x", "80", "-y", "24", "-s", "t", "sh"])
                .arg(&script_path)
                .output()
                .unwrap();
            if out.status.success() {
                return Some(t);
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = t.cmd().arg("kill-server").output();
            let _ = std::fs::remove_file(&t.socket);
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("tmux would not start a session: {last}");
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket).args(["-f", "/dev/null"]);
        // CI runs without a terminal: tmux still needs to know what the pane emulates.
        c.env("TERM", "xterm-256color");
        c
    }

    /// The screen as text (`escapes`: with colour sequences).
    fn screen(&self, escapes: bool) -> String {
        let mut c = self.cmd();
        c.args(["capture-pane", "-p", "-t", "t"]);
        if escapes {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let out = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .output()
            .unwrap();
        assert!(out.status.success());
    }

    fn display(&self, what: &str) -> String {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "t", what])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[track_caller]
    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        wait_until(what, Duration::from_secs(20), || cond(&self.screen(false)));
        self.screen(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The pane runs monit, then reports how it exited and the terminal modes it left.
fn pane_script(d: &Daemon, env: &str) -> String {
    format!(
        "{env} '{LMCTL}' --config '{}' monit\necho \"EXIT=$?\"\nstty -a | tr '\\n' ' '\necho\nexec sleep 600\n",
        d.config.display()
    )
}

fn selected_line(screen: &str) -> Option<String> {
    screen
        .lines()
        .find(|l| l.starts_with('>'))
        .map(str::to_string)
}

#[test]
fn monit_renders_selects_restarts_stops_filters_and_restores_the_terminal() {
    let d = Daemon::start(
        "[services.alpha]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n\n[services.beta]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n",
    );
    d.wait_state("alpha", "running", Duration::from_secs(10));
    d.wait_state("beta", "running", Duration::from_secs(10));
    let Some(t) = Tmux::start(d.dir.path(), &pane_script(&d, "")) else {
        return;
    };
    let screen = t.wait_screen("a first frame with both services", |s| {
        s.contains("NAME") && s.contains("alpha") && s.contains("beta") && s.contains("q quit")
    });
    assert_eq!(t.display("#{alternate_on}"), "1", "full screen:\n{screen}");
    assert!(
        screen.contains(&d.pid("alpha").unwrap().to_string()),
        "{screen}"
    );
    assert!(screen.contains("log: all services"), "{screen}");

    // Colours on a terminal: the running state is green.
    wait_until("a green state", Duration::from_secs(10), || {
        let s = t.screen(true);
        s.contains("\x1b[32mrunning") || s.contains("\x1b[38;5;2mrunning")
    });

    // Down selects the first service; the panels follow it.
    t.keys(&["Down"]);
    let screen = t.wait_screen("a selected row", |s| selected_line(s).is_some());
    let line = selected_line(&screen).unwrap();
    let name = if line.contains("alpha") {
        "alpha"
    } else {
        "beta"
    };
    t.wait_screen("the selected service's panels", |s| {
        s.contains(&format!("log: {name}")) && s.contains("PPID")
    });
    let old = d.pid(name).unwrap();

    // r restarts it: a new pid in the daemon and on the screen.
    t.keys(&["r"]);
    wait_until("a new pid after r", Duration::from_secs(20), || {
        d.pid(name).is_some_and(|p| p != old)
    });
    let new = d.pid(name).unwrap();
    t.wait_screen("the new pid on screen", |s| {
        selected_line(s).is_some_and(|l| l.contains(&new.to_string()))
    });
    assert!(!alive(old), "the old process is gone");

    // s stops it, s again starts it.
    t.keys(&["s"]);
    d.wait_state(name, "stopped", Duration::from_secs(20));
    t.wait_screen("stopped on screen", |s| {
        selected_line(s).is_some_and(|l| l.contains("stopped"))
    });
    t.keys(&["s"]);
    d.wait_state(name, "running", Duration::from_secs(20));

    // / filters by name.
    let other = if name == "alpha" { "beta" } else { "alpha" };
    // The filter must read exactly `other` on the title line before Enter (on a loaded
    // machine a key can arrive while the view is busy; type it again then).
    let mut typed = false;
    for _ in 0..3 {
        t.keys(&["/"]);
        t.keys(&["-l", other]);
        let want = format!("filter: {other}_");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline && !typed {
            typed = t
                .screen(false)
                .lines()
                .next()
                .is_some_and(|l| l.contains(&want));
            std::thread::sleep(Duration::from_millis(50));
        }
        if typed {
            break;
        }
        t.keys(&["Escape"]);
    }
    assert!(typed, "the filter never read {other}: {}", t.screen(false));
    t.keys(&["Enter"]);
    t.wait_screen("only the other service listed", |s| {
        // The table's rows: below the title, above the panels (whose log may name anyone).
        let rows: Vec<&str> = s
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('┌'))
            .collect();
        rows.iter().any(|l| l.contains(other)) && !rows.iter().any(|l| l.contains(name))
    });

    // l hides the log panel.
    t.keys(&["l"]);
    t.wait_screen("no log panel", |s| !s.contains("log: "));

    // q quits, exit 0, and the terminal is back: primary screen, cooked mode, echo.
    t.keys(&["q"]);
    // Wait for the stty report after EXIT= too: under load it comes a moment later.
    let screen = t.wait_screen("monit to exit and stty to report", |s| {
        s.contains("EXIT=") && s.contains("icanon") && s.contains("opost")
    });
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(t.display("#{alternate_on}"), "0", "{screen}");
    assert_eq!(t.display("#{cursor_flag}"), "1", "cursor visible again");
    let stty = screen
        .lines()
        .skip_while(|l| !l.contains("EXIT="))
        .collect::<Vec<_>>()
        .join(" ");
    for mode in [" icanon", " echo ", " isig", " opost"] {
        assert!(stty.contains(mode), "terminal left without {mode}: {stty}");
    }
}

#[test]
fn monit_has_no_colour_with_no_color_and_status_colours_only_on_a_terminal() {
    let d = Daemon::start("[services.solo]\ncommand = \"{helper}\"\nargs = [\"sleep\"]\n");
    d.wait_state("solo", "running", Duration::from_secs(10));
    let Some(t) = Tmux::start(d.dir.path(), &pane_script(&d, "NO_COLOR=1")) else {
        return;
    };
    t.wait_screen("a frame", |s| s.contains("solo") && s.contains("running"));
    let colored = t.screen(true);
    for sgr in ["\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[36m", "\x1b[38;5;"] {
        assert!(!colored.contains(sgr), "colour {sgr:?} despite NO_COLOR");
    }
    t.keys(&["q"]);
    t.wait_screen("monit to exit", |s| s.contains("EXIT=0"));

    // `lmctl status` on the same terminal: green without NO_COLOR, plain with it.
    let script = format!(
        "'{LMCTL}' --config '{c}' status\nNO_COLOR=1 '{LMCTL}' --config '{c}' status\nexec sleep 600\n",
        c = d.config.display()
    );
    drop(t);
    let t2 = Tmux::start(d.dir.path(), &script).unwrap();
    t2.wait_screen("two tables", |s| s.matches("NAME").count() == 2);
    let colored = t2.screen(true);
    assert_eq!(colored.matches("\x1b[32mrunning").count(), 1, "{colored:?}");
}
