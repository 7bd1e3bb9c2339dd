use super::*;

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
        &["S:3:1: unknown field `restrat`"],
    );
    expect_errors("[services.a]\ncommand = \n", &["S:2:11:"]);
    expect_errors(
        "[supervisor]\nstate_dirr = \"x\"\n",
        &["S:2:1: unknown field `state_dirr`"],
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
