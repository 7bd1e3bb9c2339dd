//! Process lifecycle: fail-fast env checks, readiness/stopping notifications,
//! graceful shutdown, persistence across restarts, database loss.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use axum::http::Method;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::harness::{
    admin_token, call, customer_token, dead_url, free_port, hub_command, wait_until, ChildGuard,
    FakeSessionManager, Hub, HubOpts,
};
use crate::mariadb::MariaDb;

/// Runs `cmd` to its exit, bounded: a hub that starts instead of refusing is killed
/// (by the guard, by PID) after 10 s rather than hanging the test.
fn exit_of(cmd: &mut std::process::Command) -> std::process::Output {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let err_path = tempfile::NamedTempFile::new().unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out_path.reopen().unwrap())
        .stderr(err_path.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard { child: Some(child) };
    let status = guard
        .wait_for_exit(Duration::from_secs(10))
        .expect("the hub kept running instead of refusing to start");
    std::process::Output {
        status,
        stdout: std::fs::read(out_path.path()).unwrap(),
        stderr: std::fs::read(err_path.path()).unwrap(),
    }
}

#[test]
fn missing_or_bad_env_exits_1_with_one_line_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let cases: [(&str, &[(&str, &str)]); 5] = [
        (
            "JWT_SECRET",
            &[
                ("PORT", &port),
                ("SESSION_MANAGER_BASE_URL", "http://127.0.0.1:3001"),
            ],
        ),
        (
            "PORT",
            &[
                ("SESSION_MANAGER_BASE_URL", "http://127.0.0.1:3001"),
                ("JWT_SECRET", "s"),
            ],
        ),
        (
            "SESSION_MANAGER_BASE_URL",
            &[("PORT", &port), ("JWT_SECRET", "s")],
        ),
        (
            "SESSION_MANAGER_BASE_URL",
            &[
                ("PORT", &port),
                ("JWT_SECRET", "s"),
                ("SESSION_MANAGER_BASE_URL", "localhost"),
            ],
        ),
        // 31 bytes: one short of what HS256 needs.
        (
            "JWT_SECRET",
            &[
                ("PORT", &port),
                ("SESSION_MANAGER_BASE_URL", "http://127.0.0.1:3001"),
                ("JWT_SECRET", "0123456789abcdef0123456789abcde"),
            ],
        ),
    ];
    for (var, env) in cases {
        let out = exit_of(hub_command(dir.path()).envs(env.iter().copied()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{var}: want one line, got {stderr:?}"
        );
        assert!(stderr.contains(var), "{var} not named in {stderr:?}");
        assert!(
            !stderr.contains("0123456789abcdef"),
            "a secret was printed: {stderr:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "nothing should start: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Nothing was created either: the check runs before the database is opened.
    assert!(!dir.path().join("var").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_restart_and_sigterm_exits_zero_with_notifications() {
    let sm = FakeSessionManager::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut opts = HubOpts::new(&sm.url);
    opts.extra_env
        .push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));

    let mut hub = Hub::start(dir.path(), &opts).await;
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(
        dir.path().join("var/hub.db").is_file(),
        "default sqlite://var/hub.db not created"
    );

    let (s, _) = hub
        .call(
            Method::POST,
            "/api/admin/whatsapp-qr/11/enable",
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(s, 200);

    let st = hub
        .guard
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "log:\n{}", hub.log());
    let n = sock.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));

    let hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;
    let (s, b) = hub
        .call(
            Method::GET,
            "/api/admin/whatsapp-qr/11",
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!((s, b["authorized"].clone()), (200, json!(true)), "{b}");
    assert_eq!(
        hub.call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(11)),
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let sm = FakeSessionManager::start(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &HubOpts::new(&sm.url)).await;
    hub.call(
        Method::POST,
        "/api/admin/whatsapp-qr/4/enable",
        Some(&admin_token()),
        None,
    )
    .await;

    let url = hub.url("/api/whatsapp/status");
    let token = customer_token(4);
    let pending = tokio::spawn(async move { call(Method::GET, &url, Some(&token), None).await });
    wait_until(
        Duration::from_secs(10),
        "request to reach session-manager",
        || {
            let n = sm.seen().len();
            async move { n == 1 }
        },
    )
    .await;

    let pid = hub.guard.pid();
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let (s, b) = pending.await.unwrap();
    assert_eq!((s, b["state"].as_str()), (200, Some("QR_REQUIRED")), "{b}");
    let st = hub
        .guard
        .wait_for_exit(Duration::from_secs(12))
        .expect("hub did not exit");
    assert_eq!(st.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_backed_hub_reports_unhealthy_when_the_database_dies() {
    let Some(mut maria) =
        MariaDb::start("mariadb_backed_hub_reports_unhealthy_when_the_database_dies").await
    else {
        return;
    };
    let sm = FakeSessionManager::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&sm.url);
    opts.database_url = Some(maria.url());
    let hub = Hub::start(dir.path(), &opts).await;
    assert!(
        !dir.path().join("var").exists(),
        "sqlite must not be used with a mysql DATABASE_URL"
    );

    hub.call(
        Method::POST,
        "/api/admin/whatsapp-qr/21/enable",
        Some(&admin_token()),
        None,
    )
    .await;
    assert_eq!(
        hub.call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(21)),
            None
        )
        .await
        .0,
        200
    );
    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("healthy")), "{b}");
    assert_eq!(b["checks"]["database"]["backend"], json!("mysql"));

    maria.kill();

    let start = std::time::Instant::now();
    let (s, b) = hub.call(Method::GET, "/status", None, None).await;
    assert_eq!((s, b["status"].as_str()), (503, Some("unhealthy")), "{b}");
    assert_eq!(b["checks"]["database"]["status"], json!("unhealthy"));
    // The check timeout is 5 s; a dead server is refused at once, well inside it.
    assert!(
        start.elapsed() < Duration::from_secs(7),
        "/status took {:?}",
        start.elapsed()
    );
    let (s, b) = hub
        .call(
            Method::GET,
            "/api/whatsapp/status",
            Some(&customer_token(21)),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (503, Some("DATABASE_UNAVAILABLE")),
        "{b}"
    );
    // /health is liveness only: still 200.
    assert_eq!(hub.call(Method::GET, "/health", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_at_start_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = exit_of(
        hub_command(dir.path())
            .env("PORT", free_port().to_string())
            .env("SESSION_MANAGER_BASE_URL", dead_url())
            .env("JWT_SECRET", crate::harness::SECRET)
            .env(
                "DATABASE_URL",
                format!("mysql://root@127.0.0.1:{}/hub", free_port()),
            ),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_half_open_connections() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(dir.path(), &HubOpts::new(&dead_url())).await;
    // One silent connection, one stuck halfway through its request head: neither is a
    // request to wait for, so neither may hold the exit up to the 10 s grace.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", hub.port))
        .await
        .unwrap();
    let mut half = tokio::net::TcpStream::connect(("127.0.0.1", hub.port))
        .await
        .unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Both accepted: a request after them is answered.
    assert_eq!(hub.call(Method::GET, "/health", None, None).await.0, 200);

    let start = std::time::Instant::now();
    let st = hub
        .guard
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(15));
    let took = start.elapsed();
    assert_eq!(st.code(), Some(0), "log:\n{}", hub.log());
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    assert!(!hub.log().contains("exiting anyway"), "{}", hub.log());
}
