//! session-manager integration tests: the real binary, real Chromium, and a
//! local fixture page standing in for WhatsApp Web. One test binary; tests
//! that launch Chromium take a process-wide lock (2 cores).

#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod fixture;
mod harness;
mod issue17;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fixture::Fixture;
use harness::*;
use serde_json::Value;

const LAUNCH: Duration = Duration::from_secs(45);

/// Runs `body` under the serial lock on a fresh runtime.
fn run<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    let _g = serial();
    runtime().block_on(body());
}

#[test]
fn missing_port_fails_fast_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_session-manager"))
        .env_remove("PORT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("PORT"), "{err}");
}

#[test]
fn bad_cliente_id_is_400_and_status_launches_nothing() {
    run(|| async {
        let env = TestEnv::new("badid");
        let svc = Service::start(&env, &[("WA_WEB_URL", "http://127.0.0.1:9")])
            .ready()
            .await;
        for (method, path) in [
            ("POST", "/init"),
            ("GET", "/status"),
            ("POST", "/send"),
            ("POST", "/logout"),
        ] {
            for id in [
                None,
                Some("abc"),
                Some("0"),
                Some("-3"),
                Some("1.5"),
                Some(""),
            ] {
                let (st, v) = svc.req(method, path, id, Some("{}")).await;
                assert_eq!(st, 400, "{method} {path} {id:?}: {v}");
                assert_eq!(v["code"], "INVALID_CLIENTE_ID", "{v}");
            }
        }
        let v = svc.status(9).await;
        assert_eq!(v["state"], "NOT_INITIALIZED");
        assert_eq!(v["cliente_id"], 9);
        assert_eq!(v["can_send_messages"], false);
        assert!(v.get("qr_code_base64").is_none());
        let (st, v) = svc
            .req(
                "POST",
                "/send",
                Some("9"),
                Some(r#"{"phone":"5491100000000","message":"hola"}"#),
            )
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (503, Some("SESSION_NOT_READY")),
            "{v}"
        );
        let (_, h) = svc.req("GET", "/health", None, None).await;
        assert_eq!(
            h,
            serde_json::json!({"status":"ok","service":"session-manager","sessions":0,"records":0,"sessions_by_state":{},"dry_run":false})
        );
        assert!(
            !env.tokens().join("9").exists(),
            "GET /status created a profile"
        );
        assert!(
            env.leftovers(&[svc.child.id()]).is_empty(),
            "GET /status launched something"
        );

        // No browser at all: 503 with the fix.
        let nob = Service::start(&env, &[("CHROMIUM_PATH", "/nonexistent/chromium")])
            .ready()
            .await;
        let (st, v) = nob.req("POST", "/init", Some("3"), None).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (503, Some("BROWSER_NOT_FOUND")),
            "{v}"
        );
        assert!(v["fix"].as_str().unwrap().contains("CHROMIUM_PATH"));
        drop((svc, nob));
        env.assert_clean(Duration::from_secs(5)).await;
    });
}

#[test]
fn failed_init_is_500_with_retry_and_retry_is_allowed() {
    if !chromium_or_skip("failed_init") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("failinit");
        // Nothing listens on a just-freed port: navigation fails.
        let dead = format!("http://127.0.0.1:{}", free_port());
        // A long grace keeps the ERROR record readable for the checks below.
        let mut svc = Service::start(&env, &[("WA_WEB_URL", &dead), ("SESSION_GRACE", "60s")])
            .ready()
            .await;
        for attempt in 0..2 {
            let (s, v) = svc.req("POST", "/init", Some("5"), None).await;
            assert_eq!(
                (s, v["code"].as_str()),
                (500, Some("INITIALIZATION_FAILED")),
                "attempt {attempt}: {v}"
            );
            assert_eq!(v["retry"], true);
            let st = svc.status(5).await;
            assert_eq!(st["state"], "ERROR");
            assert!(
                st["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("ERR_CONNECTION_REFUSED"),
                "{st}"
            );
            env.assert_clean_except(svc.child.id(), Duration::from_secs(10))
                .await;
        }
        // A profile held by a live Chromium (e.g. a leftover of a crashed
        // instance) fails the init with the holder's pid instead of sharing it.
        let profile = env.tokens().join("8");
        std::fs::create_dir_all(&profile).unwrap();
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|d| d.join(n))
                    .find(|p| p.is_file())
            })
            .unwrap();
        let mut intruder = std::process::Command::new(chromium);
        intruder
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("LM_TEST_TAG", &env.tag)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut intruder, 0);
        let mut intruder = intruder.spawn().unwrap();
        let holder = wait_for(
            "the intruder's SingletonLock",
            Duration::from_secs(20),
            || async {
                let t = std::fs::read_link(profile.join("SingletonLock")).ok()?;
                let pid: i32 = t.to_string_lossy().rsplit_once('-')?.1.parse().ok()?;
                Some(pid)
            },
        )
        .await;
        let (s, v) = svc.req("POST", "/init", Some("8"), None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (500, Some("INITIALIZATION_FAILED")),
            "{v}"
        );
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains(&format!("pid {holder}")),
            "{v}"
        );
        assert_eq!(
            browser_mains(&profile),
            vec![holder],
            "a second browser was started"
        );
        env.kill_leftovers(&[svc.child.id()]);
        let _ = intruder.wait();

        svc.stop_cleanly(&env).await;
    });
}

#[test]
fn concurrent_init_launches_exactly_one_browser() {
    if !chromium_or_skip("concurrent_init") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("concurrent");
        let fx = Fixture::start().await;
        let mut svc = Service::start(&env, &[("WA_WEB_URL", &fx.url)])
            .ready()
            .await;
        let port = svc.port;
        let calls: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move { http(port, "POST", "/init", Some("1"), None).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.unwrap());
        }
        let started = answers
            .iter()
            .filter(|(s, v)| *s == 200 && v["action"] == "INITIALIZING")
            .count();
        assert_eq!(started, 1, "{answers:#?}");
        for (s, v) in &answers {
            let ok = (*s == 200
                && (v["action"] == "INITIALIZING" || v["action"] == "NO_ACTION_NEEDED"))
                || (*s == 409
                    && v["code"] == "INITIALIZATION_IN_PROGRESS"
                    && v["retry_after_seconds"] == 5);
            assert!(ok, "unexpected answer {s} {v}");
        }
        svc.wait_state(1, "QR_REQUIRED", LAUNCH).await;
        // A second wave once up: all NO_ACTION_NEEDED.
        for _ in 0..3 {
            let (s, v) = svc.req("POST", "/init", Some("1"), None).await;
            assert_eq!(
                (s, v["action"].as_str()),
                (200, Some("NO_ACTION_NEEDED")),
                "{v}"
            );
        }
        let profile = env.tokens().join("1");
        let mains = browser_mains(&profile);
        assert_eq!(mains.len(), 1, "browsers on the profile: {mains:?}");
        let tag = format!("LM_TEST_TAG={}", env.tag);
        let markers: HashSet<String> = all_pids()
            .into_iter()
            .filter(|&p| alive(p) && env_has(p, &tag))
            .filter_map(|p| env_value(p, "LM_BROWSER"))
            .collect();
        assert_eq!(markers.len(), 1, "distinct browser markers: {markers:?}");
        let (_, h) = svc.req("GET", "/health", None, None).await;
        assert_eq!(h["sessions"], 1);

        svc.stop_cleanly(&env).await;
    });
}

#[test]
fn qr_then_scan_then_send_then_logout() {
    if !chromium_or_skip("qr_flow") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("qrflow");
        let fx = Fixture::start().await;
        let mut svc = Service::start(
            &env,
            &[("WA_WEB_URL", &fx.url), ("SESSION_GRACE", "1500ms")],
        )
        .ready()
        .await;
        let (s, v) = svc.req("POST", "/init", Some("7"), None).await;
        assert_eq!(
            (s, v["action"].as_str()),
            (200, Some("INITIALIZING")),
            "{v}"
        );

        let st = svc.wait_state(7, "QR_REQUIRED", LAUNCH).await;
        assert_eq!(st["needs_qr"], true);
        let png = st["qr_code_base64"]
            .as_str()
            .expect("qr_code_base64 missing");
        let decoded = decode_qr_data_url(png);
        assert!(
            fx.served_qrs().contains(&decoded),
            "decoded {decoded:?} not among served {:?}",
            fx.served_qrs()
        );

        // The QR changes over time and /status follows it.
        let first = decoded.clone();
        wait_for(
            "a rotated QR in /status",
            Duration::from_secs(15),
            || async {
                let v = svc.status(7).await;
                let png = v["qr_code_base64"].as_str()?;
                let q = decode_qr_data_url(png);
                (q != first).then_some(())
            },
        )
        .await;

        let body = r#"{"phone":"+5491100000000","message":"hola mundo & ñ? #1"}"#;
        let (s, v) = svc.req("POST", "/send", Some("7"), Some(body)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (503, Some("SESSION_NOT_READY")),
            "{v}"
        );

        fx.scan();
        let st = svc.wait_state(7, "READY", Duration::from_secs(20)).await;
        assert_eq!(st["connected"], true);
        assert_eq!(st["can_send_messages"], true);
        assert!(st.get("qr_code_base64").is_none());
        // The page saw a normal desktop browser, never "HeadlessChrome".
        let uas = fx.user_agents();
        assert!(!uas.is_empty());
        for ua in &uas {
            assert!(
                ua.matches("Chrome/").count() == 2 && !ua.contains("Headless"),
                "user agent (header || navigator) {ua:?}"
            );
            assert!(ua.contains(r#""brand":"Chromium""#), "{ua:?}");
        }

        let (s, v) = svc.req("POST", "/send", Some("7"), Some(body)).await;
        assert_eq!(s, 200, "{v}");
        let sent = wait_for(
            "the fixture to receive the message",
            Duration::from_secs(10),
            || async {
                let s = fx.sent();
                (!s.is_empty()).then_some(s)
            },
        )
        .await;
        assert_eq!(
            sent,
            vec![("5491100000000".to_owned(), "hola mundo & ñ? #1".to_owned())]
        );
        let (s, v) = svc
            .req(
                "POST",
                "/send",
                Some("7"),
                Some(r#"{"phone":"12","message":""}"#),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("INVALID_PAYLOAD")),
            "{v}"
        );

        // The phone logs out: QR back after READY.
        let profile = env.tokens().join("7");
        assert_eq!(browser_mains(&profile).len(), 1);
        fx.logout();
        let st = svc
            .wait_state(7, "DISCONNECTED_LOGOUT", Duration::from_secs(20))
            .await;
        assert_eq!(st["is_recoverable"], true);
        let t0 = Instant::now();
        wait_for(
            "browser destroyed after the grace",
            Duration::from_secs(15),
            || async { browser_mains(&profile).is_empty().then_some(()) },
        )
        .await;
        assert!(t0.elapsed() < Duration::from_secs(12));
        env.assert_clean_except(svc.child.id(), Duration::from_secs(5))
            .await;
        // The terminal record is dropped with its browser.
        wait_for(
            "/health to count 0 sessions and 0 records",
            Duration::from_secs(5),
            || async {
                let (_, h) = svc.req("GET", "/health", None, None).await;
                (h["sessions"] == 0 && h["records"] == 0).then_some(())
            },
        )
        .await;
        assert_eq!(svc.status(7).await["state"], "NOT_INITIALIZED");

        // POST /logout deletes the profile (kept, but no longer marked linked).
        assert!(profile.exists());
        assert!(!profile.join(".session-manager-linked").exists());
        let (s, v) = svc.req("POST", "/logout", Some("7"), None).await;
        assert_eq!((s, v["action"].as_str()), (200, Some("LOGGED_OUT")), "{v}");
        assert!(!profile.exists(), "profile not deleted");
        assert_eq!(svc.status(7).await["state"], "NOT_INITIALIZED");
        wait_for(
            "the logout record dropped",
            Duration::from_secs(5),
            || async {
                let (_, h) = svc.req("GET", "/health", None, None).await;
                (h["records"] == 0).then_some(())
            },
        )
        .await;

        svc.stop_cleanly(&env).await;
    });
}

#[test]
fn killed_browser_is_error_leaves_nothing_and_init_recovers() {
    if !chromium_or_skip("crash") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("crash");
        let fx = Fixture::start().await;
        // The ERROR record must outlive the checks below (it is dropped after the grace).
        let mut svc = Service::start(&env, &[("WA_WEB_URL", &fx.url), ("SESSION_GRACE", "60s")])
            .ready()
            .await;
        let (s, _) = svc.req("POST", "/init", Some("4"), None).await;
        assert_eq!(s, 200);
        svc.wait_state(4, "QR_REQUIRED", LAUNCH).await;
        let profile = env.tokens().join("4");
        let mains = browser_mains(&profile);
        assert_eq!(mains.len(), 1);
        let main = mains[0];
        let marker = env_value(main, "LM_BROWSER").expect("browser has no LM_BROWSER marker");
        let tree = browser_tree(&profile, &marker, main);
        let escaped: Vec<i32> = tree
            .iter()
            .copied()
            .filter(|&p| stat(p).is_some_and(|(_, pg, _)| pg != main))
            .collect();
        assert!(
            !escaped.is_empty(),
            "expected crashpad outside the group; tree {tree:?}"
        );

        unsafe { libc::kill(main, libc::SIGKILL) };
        let st = svc.wait_state(4, "ERROR", Duration::from_secs(15)).await;
        assert_eq!(st["is_recoverable"], true);
        wait_for(
            "every process of the killed browser gone",
            Duration::from_secs(10),
            || async {
                browser_tree(&profile, &marker, main)
                    .is_empty()
                    .then_some(())
            },
        )
        .await;
        for p in &escaped {
            assert!(!alive(*p), "escaped process {p} survived");
        }
        env.assert_clean_except(svc.child.id(), Duration::from_secs(5))
            .await;

        let (s, v) = svc.req("POST", "/init", Some("4"), None).await;
        assert_eq!(
            (s, v["action"].as_str()),
            (200, Some("INITIALIZING")),
            "{v}"
        );
        svc.wait_state(4, "QR_REQUIRED", LAUNCH).await;
        assert_eq!(browser_mains(&profile).len(), 1);
        assert_eq!(svc.status(4).await["reconnection_attempts"], 1);

        svc.stop_cleanly(&env).await;
    });
}

/// Issue 17: a restart (e.g. a `max_memory` restart by the supervisor) brings
/// a linked customer back to READY with nobody calling /init.
#[test]
fn linked_customer_is_ready_again_after_a_restart_without_init() {
    if !chromium_or_skip("restart") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("restart");
        let fx = Fixture::start().await;
        let mut svc = Service::start(&env, &[("WA_WEB_URL", &fx.url)])
            .ready()
            .await;
        svc.req("POST", "/init", Some("11"), None).await;
        svc.wait_state(11, "QR_REQUIRED", LAUNCH).await;
        fx.scan();
        svc.wait_state(11, "READY", Duration::from_secs(20)).await;
        svc.stop_cleanly(&env).await;

        assert!(env.tokens().join("11/.session-manager-linked").is_file());
        // A profile without the marker (never linked) is not reopened.
        std::fs::create_dir_all(env.tokens().join("12")).unwrap();
        let mut svc = Service::start(&env, &[("WA_WEB_URL", &fx.url)])
            .ready()
            .await;
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + LAUNCH;
        loop {
            let v: Value = svc.status(11).await;
            let state = v["state"].as_str().unwrap_or_default().to_owned();
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == "READY" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not READY after restart: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !seen.iter().any(|s| s == "QR_REQUIRED"),
            "a new QR was needed: {seen:?}"
        );
        assert_eq!(svc.status(12).await["state"], "NOT_INITIALIZED");
        let (_, h) = svc.req("GET", "/health", None, None).await;
        assert_eq!(h["sessions"], 1, "{h}");

        svc.stop_cleanly(&env).await;
    });
}

#[test]
fn sigterm_with_three_sessions_exits_0_and_leaves_nothing() {
    if !chromium_or_skip("sigterm") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("sigterm");
        let fx = Fixture::start().await;
        let mut svc = Service::start(
            &env,
            &[
                ("WA_WEB_URL", &fx.url),
                ("SHUTDOWN_TIMEOUT", "8s"),
                ("MAX_SESSIONS", "3"),
            ],
        )
        .ready()
        .await;
        for id in 1..=3 {
            let (s, v) = svc.req("POST", "/init", Some(&id.to_string()), None).await;
            assert_eq!(s, 200, "{v}");
        }
        for id in 1..=3 {
            svc.wait_state(id, "QR_REQUIRED", LAUNCH).await;
        }
        let (_, h) = svc.req("GET", "/health", None, None).await;
        assert_eq!(h["sessions"], 3);
        let (s, v) = svc.req("POST", "/init", Some("4"), None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (429, Some("TOO_MANY_SESSIONS")),
            "{v}"
        );
        assert!(env.leftovers(&[svc.child.id()]).len() >= 3 * 5);

        let t0 = Instant::now();
        svc.sigterm();
        let st = svc.wait_exit(Duration::from_secs(8 + 3)).await;
        let took = t0.elapsed();
        assert!(
            st.is_some_and(|s| s.code() == Some(0)),
            "exit {st:?} after {took:?}"
        );
        // Right at exit, not after a wait: nothing of those sessions may remain.
        let left = env.leftovers(&[]);
        assert!(left.is_empty(), "left after SIGTERM: {left:#?}");
        eprintln!("SIGTERM with 3 sessions: exited 0 in {took:?}");
    });
}

/// Numbers for the README; runs only with `SM_MEASURE=1`.
#[test]
fn measure_init_to_qr_and_memory() {
    if std::env::var("SM_MEASURE").as_deref() != Ok("1") || !chromium_or_skip("measure") {
        return;
    }
    run(|| async {
        let env = TestEnv::new("measure");
        let fx = Fixture::start().await;
        let mut svc = Service::start(&env, &[("WA_WEB_URL", &fx.url)])
            .ready()
            .await;
        let mut times = Vec::new();
        for id in 1..=5u64 {
            let t0 = Instant::now();
            let (s, _) = svc.req("POST", "/init", Some(&id.to_string()), None).await;
            assert_eq!(s, 200);
            let t_init = t0.elapsed();
            wait_for("QR_REQUIRED", LAUNCH, || async {
                let v = svc.status(id).await;
                (v["state"] == "QR_REQUIRED").then_some(())
            })
            .await;
            let t = t0.elapsed();
            times.push(t);
            let profile = env.tokens().join(id.to_string());
            let main = browser_mains(&profile)[0];
            let marker = env_value(main, "LM_BROWSER").unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await; // settle before sampling memory (measurement only)
            let tree = browser_tree(&profile, &marker, main);
            let (rss, pss) = tree.iter().fold((0, 0), |(r, p), &pid| {
                let (a, b) = rss_pss_kib(pid);
                (r + a, p + b)
            });
            let (mr, mp) = rss_pss_kib(main);
            eprintln!(
                "MEASURE id={id} init_answer={t_init:?} init_to_qr={t:?} processes={} rss_sum={}MiB pss_sum={}MiB main_rss={}MiB main_pss={}MiB",
                tree.len(),
                rss / 1024,
                pss / 1024,
                mr / 1024,
                mp / 1024
            );
            let (s, _) = svc
                .req("POST", "/logout", Some(&id.to_string()), None)
                .await;
            assert_eq!(s, 200);
        }
        times.sort();
        eprintln!(
            "MEASURE median init_to_qr={:?} all={times:?}",
            times[times.len() / 2]
        );
        svc.stop_cleanly(&env).await;
    });
}
