use super::*;
use std::time::Duration;

fn env() -> BTreeMap<String, String> {
    [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/root"),
        ("SECRET_FROM_SHELL", "leak"),
        ("PORT", "3011"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn check(text: &str) -> Result<Config, Vec<String>> {
    parse(Path::new("/etc/lm/supervisor.toml"), text, &env()).map_err(|d| {
        d.iter()
            .map(|d| d.to_string().replace("/etc/lm/supervisor.toml", "S"))
            .collect()
    })
}

#[track_caller]
fn expect_errors(text: &str, expected: &[&str]) {
    let errs = check(text).expect_err("config should be rejected");
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = check("[services.a]\ncommand = \"sleep\"\nargs = [\"100\"]\n").unwrap();
    let a = &c.services["a"];
    assert_eq!(a.command, "sleep");
    assert_eq!(a.args, vec!["100"]);
    assert_eq!(a.restart, RestartPolicy::Always);
    assert_eq!(a.stop_signal, "SIGTERM");
    assert_eq!(c.supervisor.state_dir, Path::new("/etc/lm/var"));
    assert_eq!(c.supervisor.socket, Path::new("/etc/lm/var/lmctl.sock"));
    // Only the allow-list is inherited: the shell's PORT and secrets stay out.
    let keys: Vec<&str> = a.env.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["HOME", "PATH"]);
}

#[test]
fn declared_env_wins_over_shell_and_interpolates() {
    let c = check(
        r#"
[services.sm]
command = "./bin/sm"
env = { PORT = 3001 }
[services.hub]
command = "hub"
depends_on = { sm = "ready" }
env = { URL = "http://127.0.0.1:${services.sm.env.PORT}/x", PATH = "/opt/bin:${PATH}" }
required_env = ["URL"]
"#,
    )
    .unwrap();
    assert_eq!(c.services["sm"].env["PORT"].value, "3001");
    assert_eq!(c.services["sm"].command, "/etc/lm/./bin/sm");
    assert_eq!(
        c.services["hub"].env["URL"].value,
        "http://127.0.0.1:3001/x"
    );
    assert_eq!(
        c.services["hub"].env["PATH"].value,
        "/opt/bin:/usr/bin:/bin"
    );
    assert_eq!(
        c.services["hub"].env["URL"].source,
        EnvSource::Declared { interpolated: true }
    );
    assert_eq!(c.start_order, vec!["sm", "hub"]);
}

#[test]
fn syntax_and_unknown_keys_name_the_position() {
    expect_errors(
        "[services.a]\ncommand = \"x\"\nrestrat = \"always\"\n",
        &["S:3:1: unknown key `restrat` in [services.a]; did you mean `restart`?"],
    );
    expect_errors("[services.a]\ncommand = \n", &["S:2:11:"]);
    expect_errors(
        "[supervisor]\nstate_dirr = \"x\"\n",
        &["S:2:1: unknown key `state_dirr` in [supervisor]; did you mean `state_dir`?"],
    );
}

#[test]
fn every_semantic_error_at_once() {
    expect_errors(
        r#"[services.a]
command = "x"
stop_timeout = "30"
stop_signal = "SIGFOO"
restart = "sometimes"
max_memory = "lots"
depends_on = { ghost = "ready" }
env = { X = "${NOPE}" }
required_env = ["MISSING"]
"#,
        &[
            "S:3:16: invalid duration",
            "S:4:15: unknown signal",
            "S:5:11: invalid restart policy",
            "S:6:14: invalid size",
            "S:7:16: service `a` depends on `ghost`, which is not defined",
            "S:8:13: `${NOPE}` is not defined",
            "S:9:17: service `a` requires MISSING",
        ],
    );
}

#[test]
fn dependency_cycles_are_named() {
    expect_errors(
        "[services.a]\ncommand = \"x\"\ndepends_on = { b = \"started\" }\n[services.b]\ncommand = \"x\"\ndepends_on = { a = \"started\" }\n",
        &["S:6:16: dependency cycle: a -> b -> a"],
    );
}

#[test]
fn cross_service_references_must_resolve() {
    expect_errors(
        "[services.a]\ncommand = \"x\"\nenv = { U = \"${services.zz.env.PORT}\" }\n",
        &["S:3:13: `${services.zz.env.PORT}` names no service"],
    );
    expect_errors(
        "[services.a]\ncommand = \"x\"\nenv = { U = \"${services.b.env.PORT}\" }\n[services.b]\ncommand = \"x\"\n",
        &["S:3:13: `${services.b.env.PORT}`: service `b` has no variable `PORT`"],
    );
}

#[test]
fn env_files_are_read_and_errors_point_into_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.env"), "TOKEN=abc\nPORT=1\n").unwrap();
    std::fs::write(dir.path().join("bad.env"), "OK=1\nbroken line\n").unwrap();
    let file = dir.path().join("supervisor.toml");
    let text = "[services.a]\ncommand = \"x\"\nenv_file = [\"good.env\", \"-absent.env\"]\nenv = { PORT = \"2\" }\n";
    let c = parse(&file, text, &env()).unwrap();
    let a = &c.services["a"];
    assert_eq!(a.env["TOKEN"].value, "abc");
    assert_eq!(
        a.env["TOKEN"].source,
        EnvSource::EnvFile {
            file: dir.path().join("good.env"),
            line: 1
        }
    );
    assert_eq!(a.env["PORT"].value, "2", "declared env overrides env files");

    let text = "[services.a]\ncommand = \"x\"\nenv_file = [\"bad.env\", \"missing.env\"]\n";
    let errs: Vec<String> = parse(&file, text, &env())
        .unwrap_err()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(
        errs[0],
        format!(
            "{}:2:1: expected KEY=VALUE",
            dir.path().join("bad.env").display()
        )
    );
    assert!(
        errs[1].contains(":3:12: cannot read env file"),
        "{}",
        errs[1]
    );
}

/// Issue 15 §3: every unknown key, with a suggestion, and the other errors as well.
#[test]
fn every_unknown_key_is_reported_with_the_other_errors() {
    expect_errors(
        "[supervisor]\nstatedir = \"v\"\n[services.a]\ncomand = \"x\"\ncommand = \"x\"\nrestrat = \"always\"\nstop_timeout = \"soon\"\n",
        &[
            "S:2:1: unknown key `statedir` in [supervisor]; did you mean `state_dir`?",
            "S:4:1: unknown key `comand` in [services.a]; did you mean `command`?",
            "S:6:1: unknown key `restrat` in [services.a]; did you mean `restart`?",
            "S:7:16: invalid duration \"soon\"",
        ],
    );
}

/// Issue 19 defect 2: a 12,000-long chain of `${...}` used to overflow the stack (abort).
#[test]
fn a_deep_interpolation_chain_is_refused_not_recursed_into() {
    let mut text = String::from("[services.a]\ncommand = \"x\"\n[services.a.env]\n");
    for i in 0..12_000 {
        text.push_str(&format!("V{i} = \"${{V{}}}\"\n", i + 1));
    }
    text.push_str("V12000 = \"end\"\n");
    // On a small stack, as the daemon's worker threads have.
    let errs = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || check(&text))
        .unwrap()
        .join()
        .expect("no stack overflow")
        .expect_err("too deep");
    assert!(
        errs[0].contains("references nest deeper than 32 levels (`V"),
        "{errs:?}"
    );
    assert!(errs.len() <= schema::MAX_DIAGNOSTICS + 1, "{}", errs.len());
    // 32 levels are fine.
    let mut text = String::from("[services.a]\ncommand = \"x\"\n[services.a.env]\n");
    for i in 0..31 {
        text.push_str(&format!("V{i:02} = \"${{V{:02}}}\"\n", i + 1));
    }
    text.push_str("V31 = \"end\"\n");
    assert_eq!(check(&text).unwrap().services["a"].env["V00"].value, "end");
}

/// Issue 19 defect 3: values that double at each level used to allocate 2^N bytes.
#[test]
fn doubling_interpolation_stops_at_the_expanded_length_limit() {
    let mut text = String::from("[services.a]\ncommand = \"x\"\n[services.a.env]\n");
    for i in 0..30 {
        text.push_str(&format!(
            "L{i:02} = \"${{L{:02}}}${{L{:02}}}\"\n",
            i + 1,
            i + 1
        ));
    }
    text.push_str("L30 = \"0123456789abcdef\"\n");
    let t = std::time::Instant::now();
    let errs = check(&text).expect_err("too long");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        errs.iter()
            .any(|e| e.contains("expands to more than 128KiB")),
        "{errs:?}"
    );
    // Each error names the variable, at its own line.
    assert!(errs[0].starts_with("S:"), "{errs:?}");
    // Across services, the total is bounded too.
    let mut text = String::new();
    for s in 0..600 {
        text.push_str(&format!(
            "[services.s{s}]\ncommand = \"x\"\n[services.s{s}.env]\n"
        ));
        for i in 0..12 {
            text.push_str(&format!(
                "L{i:02} = \"${{L{:02}}}${{L{:02}}}\"\n",
                i + 1,
                i + 1
            ));
        }
        text.push_str("L12 = \"0123456789abcdef\"\n");
    }
    let errs = check(&text).expect_err("too much in all");
    assert!(
        errs.iter()
            .any(|e| e.contains("expand to more than 64MiB in all")),
        "{errs:?}"
    );
}

/// Issue 19 defect 5, and every other number of the config: out of range is an error
/// naming the key and its range.
#[test]
fn every_number_has_a_range() {
    expect_errors(
        "[logs]\nkeep = 4294967295\n",
        &["S:2:8: `logs.keep` is 4294967295, out of range: it must be between 0 and 100"],
    );
    let cases = [
        ("[supervisor]\nresource_interval = \"1ms\"\n", "`supervisor.resource_interval` is \"1ms\", out of range: it must be between 100ms and 1h"),
        ("[logs]\nmax_size = \"1\"\n", "`logs.max_size` is \"1\""),
        ("[logs]\nmax_line = \"1TiB\"\n", "`logs.max_line` is \"1TiB\""),
        ("[logs]\nkeep = -1\n", "`logs.keep` is -1"),
        ("[services.a]\ncommand = \"x\"\nready = { notify = true, timeout = \"0s\" }\n", "`services.a.ready.timeout` is \"0s\""),
        ("[services.a]\ncommand = \"x\"\nhealth = { tcp = \"h:1\", interval = \"0s\" }\n", "`services.a.health.interval`"),
        ("[services.a]\ncommand = \"x\"\nhealth = { tcp = \"h:1\", timeout = \"2d\" }\n", "`services.a.health.timeout`"),
        ("[services.a]\ncommand = \"x\"\nhealth = { tcp = \"h:1\", retries = 0 }\n", "`services.a.health.retries` is 0"),
        ("[services.a]\ncommand = \"x\"\nhealth = { tcp = \"h:1\", start_period = \"300d\" }\n", "`services.a.health.start_period`"),
        ("[services.a]\ncommand = \"x\"\nready = { notify = true }\nwatchdog = \"1ms\"\n", "`services.a.watchdog`"),
        ("[services.a]\ncommand = \"x\"\nbackoff = { initial = \"2d\" }\n", "`services.a.backoff.initial`"),
        ("[services.a]\ncommand = \"x\"\nbackoff = { max = \"300d\" }\n", "`services.a.backoff.max`"),
        ("[services.a]\ncommand = \"x\"\nbackoff = { factor = 0.5 }\n", "`services.a.backoff.factor` is 0.5"),
        ("[services.a]\ncommand = \"x\"\nmin_uptime = \"30d\"\n", "`services.a.min_uptime`"),
        ("[services.a]\ncommand = \"x\"\nstart_grace = \"2h\"\n", "`services.a.start_grace`"),
        ("[services.a]\ncommand = \"x\"\nmax_restarts = -3\n", "`services.a.max_restarts` is -3"),
        ("[services.a]\ncommand = \"x\"\nmax_memory = \"0\"\n", "`services.a.max_memory` is \"0\""),
        ("[services.a]\ncommand = \"x\"\nstop_timeout = \"2h\"\n", "`services.a.stop_timeout`"),
        ("[services.a]\ncommand = \"x\"\nstop_exit_codes = [0, 256]\n", "`services.a.stop_exit_codes[]` is 256"),
        ("[services.a]\ncommand = \"x\"\nbackoff = { initial = \"10s\", max = \"1s\" }\n", "backoff max (1s) is shorter than backoff initial (10s)"),
    ];
    for (text, want) in cases {
        let errs = check(text).expect_err(text);
        assert_eq!(errs.len(), 1, "{text}: {errs:?}");
        assert!(
            errs[0].contains(want),
            "{text}: got {errs:?}, want {want:?}"
        );
    }
    // Every key of the model is covered above.
    for n in schema::NUMBERS {
        let short = n.key.replace("services.NAME.", "services.a.");
        assert!(
            cases.iter().any(|(_, w)| w.contains(&format!("`{short}"))),
            "no range test for {}",
            n.key
        );
    }
}

/// Issue 19 defect 6: a secret passed through `args` is shown masked; so are passwords in
/// URLs, and secrets used through a non-secret variable.
#[test]
fn secrets_in_args_are_masked_where_shown() {
    let c = check(
        r#"
[supervisor]
secret_keys = ["SIGNING"]
[services.a]
command = "x"
env = { API_TOKEN = "tok-123456", GITHUB_PAT = "ghp_abc", DB = "mysql://u:hunter2@db/x", WRAPPED = "pre-${API_TOKEN}", SIGNING_THING = "sig" }
args = ["--token=${API_TOKEN}", "--pat", "${GITHUB_PAT}", "--db=${DB}", "${WRAPPED}", "--literal=https://me:pw@h/", "${SIGNING_THING}", "--port=1"]
health = { http = "http://u:${API_TOKEN}@127.0.0.1:1/health" }
"#,
    )
    .unwrap();
    let a = &c.services["a"];
    assert_eq!(
        a.args[0], "--token=tok-123456",
        "the child gets the real value"
    );
    assert_eq!(
        a.shown_args,
        vec![
            "--token=********",
            "--pat",
            "********",
            "--db=mysql://u:********@db/x",
            "pre-********",
            "--literal=https://me:********@h/",
            "********",
            "--port=1"
        ]
    );
    let json = serde_json::to_string(a).unwrap();
    for secret in ["tok-123456", "ghp_abc", "hunter2", "pw@", "\"sig\""] {
        assert!(!json.contains(secret), "{secret} leaks into {json}");
    }
    assert!(json.contains("--token=********"), "{json}");
    // `lmctl env`: by name, URL passwords, and a variable that carries a secret.
    let shown = |k: &str| a.shown_env_value(k, &a.env[k].value, &c.supervisor.secret_keys);
    assert_eq!(shown("API_TOKEN"), ("********".into(), true));
    assert_eq!(shown("GITHUB_PAT"), ("********".into(), true));
    assert_eq!(shown("SIGNING_THING"), ("********".into(), true));
    assert_eq!(shown("DB"), ("mysql://u:********@db/x".into(), true));
    assert_eq!(shown("WRAPPED"), ("pre-********".into(), true));
    assert_eq!(shown("PATH"), ("/usr/bin:/bin".into(), false));
}

#[test]
fn too_many_services_and_too_big_a_file_are_refused() {
    let mut text = String::new();
    for i in 0..=schema::MAX_SERVICES {
        text.push_str(&format!("[services.s{i:05}]\ncommand = \"x\"\n"));
    }
    let errs = check(&text).expect_err("too many");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("too many services: this config has 10001, at most 10000"),
        "{errs:?}"
    );
    let big = format!("# {}\n", "x".repeat(schema::MAX_CONFIG_BYTES as usize));
    let errs = check(&big).expect_err("too big");
    assert!(errs[0].contains("more than the limit of 4MiB"), "{errs:?}");
}

/// `check` of 8,000 services used to take 100 times as long as 1,000 (quadratic ordering).
#[test]
fn check_time_grows_about_linearly_with_services() {
    let text = |n: usize| {
        let mut t = String::new();
        for i in 0..n {
            t.push_str(&format!(
                "[services.s{i}]\ncommand = \"x\"\nenv = {{ PORT = \"{i}\" }}\n"
            ));
            if i > 0 {
                t.push_str(&format!("depends_on = {{ s{} = \"started\" }}\n", i - 1));
            }
        }
        t
    };
    let time = |n: usize| {
        let t = text(n);
        // Best of two: the machine is shared.
        (0..2)
            .map(|_| {
                let start = std::time::Instant::now();
                assert!(check(&t).is_ok());
                start.elapsed()
            })
            .min()
            .unwrap()
    };
    let small = time(1000);
    let big = time(8000);
    // Linear is 8x; quadratic was ~100x. Leave room for noise and allocation growth.
    assert!(
        big < small * 24 + Duration::from_millis(200),
        "1000 services: {small:?}, 8000: {big:?}"
    );
}

/// Through `load` (the path of check, start and reload).
mod load_path {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn load_in(dir: &Path, text: &str) -> Result<Config, Vec<String>> {
        let file = dir.join("supervisor.toml");
        std::fs::write(&file, text).unwrap();
        super::super::check(&file).map_err(|d| d.iter().map(|d| d.to_string()).collect())
    }

    /// Issue 19 defect 4: an env_file that is a FIFO froze check and reload.
    #[test]
    fn an_env_file_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo.env"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let t = std::time::Instant::now();
        let errs = load_in(
            dir.path(),
            "[services.a]\ncommand = \"/bin/sh\"\nenv_file = [\"fifo.env\", \"/dev/zero\"]\n",
        )
        .expect_err("not regular");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].contains("fifo.env: it is a FIFO (named pipe), not a regular file"),
            "{errs:?}"
        );
        assert!(errs[1].contains("character device"), "{errs:?}");
        // The config itself as a FIFO: the same.
        let cfg = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let errs = load(&cfg).unwrap_err();
        assert!(errs[0].to_string().contains("FIFO"), "{errs:?}");
    }

    /// Issue 15 §3: a command that does not exist or cannot run is found by check, looked up
    /// with the service's own PATH and cwd.
    #[test]
    fn commands_are_looked_up_like_exec_does() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("plain"), "data").unwrap();
        let errs = load_in(
            dir.path(),
            r#"
[services.missing]
command = "no-such-program-lm"
[services.notexec]
command = "bin/plain"
[services.dir]
command = "./bin"
[services.ownpath]
command = "tool"
inherit_env = []
env = { PATH = "/nowhere:bin" }
[services.daemonpath]
command = "tool"
[services.abs]
command = "/bin/sh"
"#,
        )
        .expect_err("bad commands");
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].contains(
                ":3:11: command `no-such-program-lm` of service `missing` is not found in its PATH"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[1].contains("service `notexec` cannot be executed: it is not executable"),
            "{errs:#?}"
        );
        assert!(
            errs[2].contains("service `dir` cannot be executed: it is a directory"),
            "{errs:#?}"
        );
        // `tool` is on the service's own PATH (relative to its cwd), not the daemon's.
        assert!(
            errs[3].contains("command `tool` of service `daemonpath` is not found"),
            "{errs:#?}"
        );
        // For the daemon (start, reload) they are warnings: the other services still run.
        let c = load(&dir.path().join("supervisor.toml")).expect("loads");
        assert_eq!(c.warnings.len(), 4);
    }
}

#[test]
fn command_lines_from_proc_are_redacted_even_when_cut() {
    let c = check(
        "[services.a]\ncommand = \"x\"\nenv = { API_TOKEN = \"tok-123456\" }\nargs = [\"--token=${API_TOKEN}\", \"-v\"]\n",
    )
    .unwrap();
    let a = &c.services["a"];
    assert_eq!(
        a.redact("x --token=tok-123456 -v", &[]),
        "x --token=******** -v"
    );
    assert_eq!(a.redact("x --token=tok-12…", &[]), "x ********…");
    assert_eq!(
        a.redact("x mysql://u:p@h/ …", &[]),
        "x mysql://u:********@h/ …"
    );
    assert_eq!(a.redact("x -v", &[]), "x -v");
}

/// Nesting is bounded by the TOML parser's recursion limit; what is left under it (tables in
/// tables, arrays in arrays) must not overflow a worker thread's stack in our own walks.
#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let cases = [
        format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("x = {}1{}\n", "{a=".repeat(100_000), "}".repeat(100_000)),
        format!("[{}]\n", vec!["a"; 100_000].join(".")),
        // Just under any limit: many levels of dotted tables, of inline tables, of arrays.
        format!("[{}]\n", vec!["a"; 60].join(".")),
        format!(
            "[services.a]\ncommand = \"x\"\nenv = {{ A = {}1{} }}\n",
            "{b=".repeat(60),
            "}".repeat(60)
        ),
        format!(
            "[services.a]\ncommand = \"x\"\nargs = {}{}\n",
            "[".repeat(60),
            "]".repeat(60)
        ),
    ];
    for text in cases {
        let res = std::thread::Builder::new()
            // Less than tokio's worker and blocking threads get (2 MiB).
            .stack_size(1 << 20)
            .spawn(move || check(&text).map(|_| ()))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(res.is_err());
    }
}

#[test]
fn wrong_value_types_say_what_was_expected() {
    expect_errors(
        "[services.a]\ncommand = \"x\"\nenv = { A = [1] }\n",
        &["S:3:13: invalid type: sequence, expected a string, a number or a boolean"],
    );
    expect_errors(
        "[services.a]\ncommand = \"x\"\nenv_file = 3\n",
        &["S:3:12: invalid type: integer `3`, expected a file name or a list of file names"],
    );
    let c = check(
        "[services.a]\ncommand = \"x\"\nenv = { P = 3001, Q = true, R = 1.5 }\nenv_file = []\n",
    )
    .unwrap();
    let env = &c.services["a"].env;
    assert_eq!(
        (
            env["P"].value.as_str(),
            env["Q"].value.as_str(),
            env["R"].value.as_str()
        ),
        ("3001", "true", "1.5")
    );
}
