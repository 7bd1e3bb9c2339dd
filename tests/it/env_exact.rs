//! Seed 004: a stale PORT=3011 in the shell and an ignored .env. The child must see
//! exactly the declared environment.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;

fn read_env(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn child_gets_exactly_the_declared_env() {
    let mut d = Daemon::new(
        r#"
[services.sm]
command = "{helper}"
args = ["env", "{dir}/sm.env"]
env = { PORT = 3001 }

[services.hub]
command = "{helper}"
args = ["env", "{dir}/hub.env"]
env_file = ["hub.env.file"]
inherit_env = ["PATH"]
env = { PORT = "3012", SESSION_MANAGER_BASE_URL = "http://127.0.0.1:${services.sm.env.PORT}", GREETING = "${FROM_FILE}-x" }
required_env = ["SESSION_MANAGER_BASE_URL", "JWT_SECRET"]
"#,
    );
    std::fs::write(
        d.path("hub.env.file"),
        "# secrets\nJWT_SECRET=s3cret\nFROM_FILE=filed\nPORT=9999\n",
    )
    .unwrap();
    d.env = vec![
        ("PORT".into(), "3011".into()),
        ("SECRET_FROM_SHELL".into(), "leak".into()),
    ];
    d.spawn();
    wait_until("both env files", Duration::from_secs(10), || {
        d.path("sm.env").exists() && d.path("hub.env").exists()
    });

    let hub = read_env(&d.path("hub.env"));
    let keys: Vec<&str> = hub.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "FROM_FILE",
            "GREETING",
            "JWT_SECRET",
            "LM_LOG_TIMESTAMPS",
            "LM_SERVICE",
            "LM_SUPERVISOR",
            "PATH",
            "PORT",
            "SESSION_MANAGER_BASE_URL"
        ],
        "nothing else may reach the child"
    );
    assert_eq!(
        hub["PORT"], "3012",
        "declared env beats the env file and the shell"
    );
    assert_eq!(hub["SESSION_MANAGER_BASE_URL"], "http://127.0.0.1:3001");
    assert_eq!(hub["JWT_SECRET"], "s3cret");
    assert_eq!(hub["GREETING"], "filed-x");
    assert_eq!(hub["LM_SERVICE"], "hub");

    let sm = read_env(&d.path("sm.env"));
    assert_eq!(
        sm["PORT"], "3001",
        "the shell's stale PORT=3011 must not leak"
    );
    assert!(!sm.contains_key("SECRET_FROM_SHELL"));
    assert!(sm.contains_key("HOME"), "HOME is inherited by default");

    // lmctl env shows the same thing, masked, with sources.
    let env = d.ok(&["env", "hub"]);
    assert!(env.contains("JWT_SECRET=********\t# "), "{env}");
    assert!(env.contains("hub.env.file:2"), "{env}");
    assert!(
        env.contains("SESSION_MANAGER_BASE_URL=http://127.0.0.1:3001\t# env (interpolated)"),
        "{env}"
    );
    let revealed = d.ok(&["env", "hub", "--reveal"]);
    assert!(revealed.contains("JWT_SECRET=s3cret"), "{revealed}");
}

/// The daemon raises its own open-file limit (it holds several descriptors per service);
/// a child gets the soft limit the daemon was started with, not the raised one.
#[test]
fn children_keep_the_open_file_limit_the_daemon_was_started_with() {
    let mut d = Daemon::new(
        r#"
[services.lim]
command = "/bin/sh"
args = ["-c", "ulimit -Sn > {dir}/limit.tmp && mv {dir}/limit.tmp {dir}/limit; exec sleep 600"]
"#,
    );
    d.nofile_soft = Some(700);
    d.spawn();
    wait_until("the child's limit", Duration::from_secs(10), || {
        d.path("limit").exists()
    });
    let child = std::fs::read_to_string(d.path("limit")).expect("limit file");
    assert_eq!(child.trim(), "700", "the child's soft limit");
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", d.daemon_pid())).expect("daemon limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    assert_eq!(f[3], f[4], "the daemon runs with soft = hard: {line}");
    assert_ne!(f[3], "700", "the daemon raised its own limit: {line}");
}
