//! Small programs the integration tests run as services, each doing one nasty thing.
//! `lm-test-helper MODE [ARGS]`; every mode prints the pids it creates as `PID name=pid`.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn notify(msg: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Ok(sock) = UnixDatagram::unbound() {
            let _ = sock.send_to(msg.as_bytes(), path);
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn arg(n: usize) -> Option<String> {
    std::env::args().nth(n)
}

fn num(n: usize, default: u64) -> u64 {
    arg(n).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Touches `mib` MiB so they count as resident.
fn hold(mib: u64) -> Vec<u8> {
    let mut v = vec![0u8; (mib as usize) << 20];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    v
}

fn main() {
    let mode = arg(1).unwrap_or_default();
    let me = std::process::id();
    match mode.as_str() {
        // Sleeps; prints its pid.
        "sleep" => {
            println!("PID main={me}");
            sleep_forever();
        }
        // Exits with the given code after the given milliseconds.
        "exit" => {
            let code = num(2, 1) as i32;
            std::thread::sleep(Duration::from_millis(num(3, 0)));
            println!("exiting with {code}");
            std::process::exit(code);
        }
        // Ignores SIGTERM (and SIGINT), then sleeps.
        "ignore-term" => {
            // SAFETY: setting a signal disposition to SIG_IGN.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                libc::signal(libc::SIGINT, libc::SIG_IGN);
            }
            println!("PID main={me} ignoring SIGTERM");
            sleep_forever();
        }
        // Writes its environment to the file given, then sleeps.
        "env" => {
            let path = arg(2).unwrap_or_else(|| "env.txt".into());
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            let tmp = format!("{path}.tmp");
            let _ = std::fs::write(&tmp, vars.join("\n") + "\n");
            let _ = std::fs::rename(&tmp, &path);
            sleep_forever();
        }
        // Sends READY=1 after the given milliseconds (never when "never"), then sleeps;
        // pings WATCHDOG=1 every N ms when a third arg is given, for M pings (0 = forever).
        "notify" => {
            let delay = arg(2).unwrap_or_else(|| "0".into());
            if delay == "never" {
                sleep_forever();
            }
            std::thread::sleep(Duration::from_millis(delay.parse().unwrap_or(0)));
            notify("STATUS=warming up\n");
            notify("READY=1\nSTATUS=serving\n");
            if let Some(every) = arg(3).and_then(|s| s.parse::<u64>().ok()) {
                let count = num(4, 0);
                let mut sent = 0;
                while count == 0 || sent < count {
                    std::thread::sleep(Duration::from_millis(every));
                    notify("WATCHDOG=1\n");
                    sent += 1;
                }
            }
            sleep_forever();
        }
        // Listens on 127.0.0.1:PORT (env) after the given ms and answers any HTTP request
        // with 200 (or with the status in HTTP_STATUS, or never when HANG=1).
        "http" => {
            std::thread::sleep(Duration::from_millis(num(2, 0)));
            let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
            let listener = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
            println!(
                "PID main={me} listening on {}",
                listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            );
            let status = std::env::var("HTTP_STATUS").unwrap_or_else(|_| "200 OK".into());
            let fail_file = std::env::var("FAIL_FILE").ok();
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 2048];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let st = match &fail_file {
                    Some(f) if std::path::Path::new(f).exists() => {
                        "500 Internal Server Error".to_string()
                    }
                    _ => status.clone(),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {st}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        }
        // Forks a child that setsid()s and forks a grandchild holding MIB MiB, like
        // Chromium's crashpad escaping the process group. Prints every pid.
        "tree" => {
            let mib = num(2, 100);
            println!("PID main={me}");
            // SAFETY: fork in a single-threaded program; children only sleep/allocate.
            let child = unsafe { libc::fork() };
            if child == 0 {
                unsafe { libc::setsid() };
                let grandchild = unsafe { libc::fork() };
                if grandchild == 0 {
                    let _mem = hold(mib);
                    println!("PID grandchild={}", std::process::id());
                    let _ = std::io::stdout().flush();
                    sleep_forever();
                }
                println!("PID child={}", std::process::id());
                let _ = std::io::stdout().flush();
                sleep_forever();
            }
            let _ = std::io::stdout().flush();
            sleep_forever();
        }
        // Like "tree", but the escaped child exits so the grandchild is orphaned (PPID ->
        // subreaper), with a fresh session, then the main process dies after MS ms.
        "escape" => {
            println!("PID main={me}");
            let _ = std::io::stdout().flush();
            // SAFETY: as above.
            let child = unsafe { libc::fork() };
            if child == 0 {
                unsafe { libc::setsid() };
                let grandchild = unsafe { libc::fork() };
                if grandchild == 0 {
                    println!("PID escaped={}", std::process::id());
                    let _ = std::io::stdout().flush();
                    sleep_forever();
                }
                std::process::exit(0);
            }
            let die_after = num(2, 0);
            if die_after > 0 {
                std::thread::sleep(Duration::from_millis(die_after));
                std::process::exit(1);
            }
            sleep_forever();
        }
        // Forks N children that ignore SIGTERM, each in its own session (so a group kill
        // misses them), then the main process exits after MS ms: N stubborn leftovers.
        "swarm" => {
            let n = num(2, 100);
            let die_after = num(3, 0);
            println!("PID main={me}");
            let _ = std::io::stdout().flush();
            for _ in 0..n {
                // SAFETY: fork in a single-threaded helper; the child only calls
                // async-signal-safe functions before sleeping.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    unsafe {
                        libc::setsid();
                        libc::signal(libc::SIGTERM, libc::SIG_IGN);
                    }
                    sleep_forever();
                }
            }
            if die_after > 0 {
                std::thread::sleep(Duration::from_millis(die_after));
                std::process::exit(1);
            }
            sleep_forever();
        }
        // Grows by STEP MiB every MS ms, in a grandchild.
        "grow" => {
            let step = num(2, 20);
            let every = num(3, 200);
            println!("PID main={me}");
            let _ = std::io::stdout().flush();
            // SAFETY: as above.
            let child = unsafe { libc::fork() };
            if child == 0 {
                println!("PID grower={}", std::process::id());
                let _ = std::io::stdout().flush();
                let mut held = Vec::new();
                loop {
                    held.push(hold(step));
                    std::thread::sleep(Duration::from_millis(every));
                }
            }
            sleep_forever();
        }
        // Writes N lines of ~100 bytes to stdout as fast as it can (and every 10th to
        // stderr when "mixed"), then a partial line without newline, then sleeps or exits.
        "lines" => {
            let n = num(2, 1000);
            let mixed = arg(3).as_deref() == Some("mixed");
            let out = std::io::stdout();
            let mut out = std::io::BufWriter::new(out.lock());
            for i in 0..n {
                let _ = writeln!(out, "line {i:08} {}", "x".repeat(80));
                if mixed && i % 10 == 0 {
                    eprintln!("err {i:08}");
                }
            }
            let _ = write!(out, "partial-tail-without-newline");
            let _ = out.flush();
            drop(out);
            if arg(4).as_deref() == Some("exit") {
                std::process::exit(0);
            }
            sleep_forever();
        }
        // Writes N lines of ~100 bytes, one write(2) each like a plain logger, as fast as it
        // can; reports on stderr how long it was blocked on the pipe, then exits.
        // N lines of ~100 bytes in one write(2) (a burst far bigger than a pipe), then sleeps.
        "burst" => {
            let n = num(2, 40_000);
            let mut all = String::with_capacity(n as usize * 100);
            for i in 0..n {
                all.push_str(&format!("line {i:08} {}\n", "x".repeat(80)));
            }
            let _ = std::io::stdout().lock().write_all(all.as_bytes());
            sleep_forever();
        }
        "flood" => {
            let n = num(2, 200_000);
            let mut out = std::io::stdout().lock();
            let start = std::time::Instant::now();
            let (mut blocked, mut worst) = (Duration::ZERO, Duration::ZERO);
            for i in 0..n {
                let line = format!("line {i:08} {}\n", "x".repeat(80));
                let t = std::time::Instant::now();
                let _ = out.write_all(line.as_bytes());
                let dt = t.elapsed();
                // A write that took over 50 µs waited for room in the pipe.
                if dt > Duration::from_micros(50) {
                    blocked += dt;
                }
                worst = worst.max(dt);
            }
            let elapsed = start.elapsed();
            eprintln!(
                "FLOOD lines={n} elapsed_ms={:.1} blocked_ms={:.1} max_write_ms={:.2}",
                elapsed.as_secs_f64() * 1e3,
                blocked.as_secs_f64() * 1e3,
                worst.as_secs_f64() * 1e3
            );
        }
        // Bursts of BURST numbered lines `seq PID N xxx`, one write(2) each, then PAUSE_MS
        // of sleep, forever: a log flood whose lines can be checked for loss per run.
        "seq" => {
            let burst = num(2, 1000);
            let pause = num(3, 50);
            let mut out = std::io::stdout().lock();
            let mut n: u64 = 0;
            loop {
                for _ in 0..burst {
                    let line = format!("seq {me} {n:08} {}\n", "x".repeat(40));
                    if out.write_all(line.as_bytes()).is_err() {
                        std::process::exit(1);
                    }
                    n += 1;
                }
                let _ = out.flush();
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
        other => {
            eprintln!("lm-test-helper: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
