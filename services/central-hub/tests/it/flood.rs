//! The listener under abuse (issue 17): idle and slow-header connections are closed, and a
//! flood of half-open connections larger than the open-file limit leaves `/health` answering
//! with bounded memory.

use std::time::{Duration, Instant};

use axum::http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{dead_url, fd_count, raw_exchange, rss_of, try_call, Hub, HubOpts};

/// Waits until the server closes `s` (EOF or reset); returns how long that took.
async fn closed_after(mut s: tokio::net::tcp::OwnedReadHalf, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a response; keep waiting for the close
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .ok()
        .map(|()| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_header_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&dead_url());
    opts.extra_env = vec![
        ("HTTP_IDLE_TIMEOUT".into(), "1s".into()),
        ("HTTP_HEADER_TIMEOUT".into(), "3s".into()),
    ];
    opts.extra_env
        .push(("HTTP_BODY_TIMEOUT".into(), "2s".into()));
    let hub = Hub::start(dir.path(), &opts).await;
    let addr = ("127.0.0.1", hub.port);
    let limit = Duration::from_secs(10);

    // A body promised and never finished: the request is running (so not idle), and the
    // body timeout answers 408 in the JSON shape.
    let slow_body = tokio::spawn(async move {
        let start = Instant::now();
        let (s, b) = raw_exchange(
            addr.1,
            b"POST /api/admin/whatsapp-qr/1/enable HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"exp",
        )
        .await;
        (s, b, start.elapsed())
    });

    // Silent: never sends a byte → the idle timeout.
    let (silent, _silent_w) = TcpStream::connect(addr).await.unwrap().into_split();
    let silent = tokio::spawn(closed_after(silent, limit));

    // Slowloris: a header byte every 200 ms, never finishing → bytes keep it from being
    // idle, so only the header read timeout can end it.
    let (slow_r, mut slow_w) = TcpStream::connect(addr).await.unwrap().into_split();
    let slow = tokio::spawn(closed_after(slow_r, limit));
    let trickle = tokio::spawn(async move {
        let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let mut sent = 0usize;
        loop {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if slow_w.write_all(&[byte]).await.is_err() {
                return sent;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if sent > 200 {
                return sent;
            }
        }
    });

    // Kept alive after one request → idle again once the answer is written.
    let mut ka = TcpStream::connect(addr).await.unwrap();
    ka.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    ka.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let (ka_r, _ka_w) = ka.into_split();
    let kept_alive = tokio::spawn(closed_after(ka_r, limit));

    let silent = silent
        .await
        .unwrap()
        .expect("silent connection never closed");
    let slow = slow
        .await
        .unwrap()
        .expect("slow-header connection never closed");
    let kept_alive = kept_alive
        .await
        .unwrap()
        .expect("kept-alive connection never closed");
    let trickled = trickle.await.unwrap();
    let (s, b, body_took) = slow_body.await.unwrap();
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (408, Some("REQUEST_TIMEOUT")),
        "{b}"
    );
    assert!(
        body_took >= Duration::from_millis(1900) && body_took < Duration::from_secs(6),
        "slow body: {body_took:?}"
    );
    eprintln!("closed after: silent {silent:?}, slow header {slow:?} ({trickled} bytes), kept-alive {kept_alive:?}");
    assert!(
        silent >= Duration::from_millis(900) && silent < Duration::from_secs(4),
        "silent: {silent:?}"
    );
    assert!(
        kept_alive < Duration::from_secs(4),
        "kept-alive: {kept_alive:?}"
    );
    // Past the idle timeout (bytes kept it busy), ended by the 3 s header timeout.
    assert!(
        slow >= Duration::from_millis(2500) && slow < Duration::from_secs(7),
        "slow header: {slow:?}"
    );
    // Still serving.
    assert_eq!(hub.call(Method::GET, "/health", None, None).await.0, 200);
}

/// One `/health` on a fresh connection, bounded by `within`; its latency, or why not.
async fn health_within(hub: &Hub, within: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    match tokio::time::timeout(
        within,
        try_call(Method::GET, &hub.url("/health"), None, None),
    )
    .await
    {
        Ok(Ok((200, _))) => Ok(start.elapsed()),
        Ok(Ok((s, b))) => Err(format!("status {s}: {b}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_under_a_flood_of_half_open_connections() {
    const FLOOD: usize = 2000;
    const NOFILE: u64 = 1024;
    let deadline = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&dead_url());
    // Twice as many connections as the hub may open files, as in the 20,000 against
    // a larger limit. Long timeouts: here the cap must do the work, not the timers.
    opts.nofile = Some(NOFILE);
    opts.extra_env = vec![
        ("HTTP_IDLE_TIMEOUT".into(), "120s".into()),
        ("HTTP_HEADER_TIMEOUT".into(), "120s".into()),
    ];
    let hub = Hub::start(dir.path(), &opts).await;
    let pid = hub.guard.pid();
    let (rss_before, _) = rss_of(pid);

    let mut flood = Vec::with_capacity(FLOOD);
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    for i in 0..FLOOD {
        let mut s = TcpStream::connect(("127.0.0.1", hub.port)).await.unwrap();
        // Half send the start of a request head and stop; half send nothing.
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        }
        flood.push(s);
        if i % 250 == 249 {
            let t = health_within(&hub, deadline)
                .await
                .unwrap_or_else(|e| panic!("/health after {} flood connections: {e}", i + 1));
            worst = worst.max(t);
        }
    }
    let flood_time = started.elapsed();
    for _ in 0..10 {
        let t = health_within(&hub, deadline)
            .await
            .unwrap_or_else(|e| panic!("/health after the flood: {e}"));
        worst = worst.max(t);
    }
    let (rss_after, rss_peak) = rss_of(pid);
    let fds = fd_count(pid);
    eprintln!(
        "flood of {FLOOD} connections in {flood_time:?} against RLIMIT_NOFILE {NOFILE}: \
         /health worst {worst:?}; hub fds {fds}; RSS {} KiB before, {} KiB after, peak {} KiB",
        rss_before / 1024,
        rss_after / 1024,
        rss_peak / 1024
    );
    assert!(fds <= NOFILE as usize, "fds {fds}");
    // Bounded: well under the 439 MB for 20,000, and independent of the flood size.
    assert!(
        rss_peak < rss_before + 64 * 1024 * 1024,
        "RSS grew from {rss_before} to a peak of {rss_peak}"
    );
    assert!(
        hub.log().contains("connection cap"),
        "evictions not logged:\n{}",
        hub.log()
    );
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_running_requests_are_kept_and_newcomers_refused() {
    use crate::harness::{admin_token, customer_token, FakeSessionManager};
    // session-manager takes 2 s per call, so two proxied requests fill a cap of 2.
    let sm = FakeSessionManager::start(Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = HubOpts::new(&sm.url);
    opts.extra_env
        .push(("HTTP_MAX_CONNECTIONS".into(), "2".into()));
    let hub = Hub::start(dir.path(), &opts).await;
    for id in [1, 2] {
        let (s, _) = hub
            .call(
                Method::POST,
                &format!("/api/admin/whatsapp-qr/{id}/enable"),
                Some(&admin_token()),
                None,
            )
            .await;
        assert_eq!(s, 200);
    }
    let running: Vec<_> = [1, 2]
        .into_iter()
        .map(|id| {
            let url = hub.url("/api/whatsapp/status");
            tokio::spawn(async move {
                try_call(Method::GET, &url, Some(&customer_token(id)), None).await
            })
        })
        .collect();
    let seen = sm.seen.clone();
    crate::harness::wait_until(Duration::from_secs(10), "both requests upstream", || {
        let n = seen.lock().unwrap().len();
        async move { n == 2 }
    })
    .await;

    // Both connections are running a request: the newcomer is refused, not served by
    // cutting one of them off.
    let refused = health_within(&hub, Duration::from_secs(1)).await;
    assert!(refused.is_err(), "served at a full cap: {refused:?}");
    for r in running {
        let (s, b) = r.await.unwrap().expect("a running request was cut off");
        assert_eq!((s, b["state"].as_str()), (200, Some("QR_REQUIRED")), "{b}");
    }
    // Once they are done, those connections are idle and make room.
    health_within(&hub, Duration::from_secs(2)).await.unwrap();
    assert!(hub.log().contains("refused 1 new"), "{}", hub.log());
}
