//! A private MariaDB server per test: own datadir, socket and port, stopped
//! by its PID on drop. Never touches a machine-wide service.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sqlx::{Connection, MySqlConnection};

use crate::harness::{free_port, ChildGuard};

pub struct MariaDb {
    pub guard: ChildGuard,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/sbin"])
        .map(|d| PathBuf::from(d).join(bin))
        .find(|p| p.is_file());
    found
}

impl MariaDb {
    /// Starts a server, or returns `None` with a loud SKIP when MariaDB is not
    /// installed. Under `CI=true` a missing MariaDB is a failure instead.
    pub async fn start(test: &str) -> Option<MariaDb> {
        let (Some(mariadbd), Some(install_db)) = (find("mariadbd"), find("mariadb-install-db"))
        else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: mariadbd not found and CI=true; run .ci/central-hub-deps.sh");
            }
            eprintln!("\n!!!!!!!! SKIP {test}: mariadbd is not installed (apt-get install -y mariadb-server) !!!!!!!!\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = Command::new(install_db)
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg("--skip-test-db")
            .arg("--auth-root-authentication-method=normal")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let child = Command::new(mariadbd)
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mariadb.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-grant-tables")
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--innodb-log-file-size=8M")
            // A lax server, like many hosted MySQL installs: the hub must not rely on the
            // server's default SQL mode to refuse bad values.
            .arg("--sql-mode=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut db = MariaDb {
            guard: ChildGuard { child: Some(child) },
            port,
            dir,
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = MySqlConnection::connect(&db.server_url()).await {
                sqlx::query("CREATE DATABASE IF NOT EXISTS hub")
                    .execute(&mut c)
                    .await
                    .unwrap();
                let _ = c.close().await;
                return Some(db);
            }
            if let Some(st) = db.guard.wait_for_exit(Duration::ZERO) {
                panic!("mariadbd exited with {st}: {}", db.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd not answering in 30s: {}",
                db.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }

    /// URL of the test database `hub`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/hub", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Stops the server now (SIGKILL: the database "goes away").
    pub fn kill(&mut self) {
        if self.guard.child.is_some() {
            self.guard
                .signal_and_wait(Signal::SIGKILL, Duration::from_secs(10));
        }
    }
}
