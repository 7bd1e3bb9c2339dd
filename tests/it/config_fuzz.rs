//! Structure-aware fuzzing of the config loader (issue 19): random but well-formed TOML with
//! hostile values (numbers at and past every range, deep and doubling `${...}` chains,
//! cycles, unknown keys, odd files in `env_file`), plus byte-level damage, all through
//! `config::load`: the path of `lmctl check`, the daemon's start and every reload.
//!
//! The property: `load` returns (no panic, no abort, no hang) within a deadline, and what it
//! returns is sound: a config whose values respect the limits, or diagnostics that point
//! inside the file.
//!
//! CI runs `LM_FUZZ_CASES` cases (default 300). Run longer by hand:
//! `LM_FUZZ_CASES=100000 cargo test --release --test it config_fuzz -- --nocapture`
//! (it prints cases per second; a failure prints the shrunk config).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lmsup::config::{self, schema};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

/// A TOML basic string (JSON's escapes are TOML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Files an `env_file` may name: each one odd in its own way.
fn env_files() -> Vec<&'static str> {
    vec![
        "good.env",
        "broken.env",
        "fifo",
        "fifo-link",
        "/dev/zero",
        "/dev/null",
        "big.env",
        "dir",
        "missing.env",
        "-missing.env",
        "-fifo",
        "binary.env",
        "rand.env",
    ]
}

fn fixtures(dir: &Path) {
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    std::fs::write(
        dir.join("good.env"),
        "A=1\nTOKEN=sekret\nURL=mysql://u:p@h/db\n",
    )
    .unwrap();
    std::fs::write(dir.join("broken.env"), "A=1\nno equals\nB=\"open\n").unwrap();
    nix::unistd::mkfifo(&dir.join("fifo"), mode).unwrap();
    std::os::unix::fs::symlink(dir.join("fifo"), dir.join("fifo-link")).unwrap();
    let big = vec![b'#'; (schema::MAX_ENV_FILE_BYTES + 10) as usize];
    std::fs::write(dir.join("big.env"), big).unwrap();
    std::fs::create_dir(dir.join("dir")).unwrap();
    std::fs::write(dir.join("binary.env"), [0xff, 0xfe, 0, 1, b'\n']).unwrap();
}

/// Durations: ordinary, at the bounds, past them, and nonsense.
fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0s".to_string()),
        Just("1ms".to_string()),
        Just("100ms".to_string()),
        Just("30s".to_string()),
        Just("1h".to_string()),
        Just("1d".to_string()),
        Just("366d".to_string()),
        Just("99999999999999999999h".to_string()),
        Just("-1s".to_string()),
        Just("".to_string()),
        Just("30".to_string()),
        (0u64..100_000_000).prop_map(|n| format!("{n}ms")),
        "\\PC{0,12}",
    ]
}

fn size() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("256B".to_string()),
        Just("10MiB".to_string()),
        Just("1TiB".to_string()),
        Just("1e308GiB".to_string()),
        Just("18446744073709551616".to_string()),
        Just("NaN".to_string()),
        (0u64..u64::MAX).prop_map(|n| n.to_string()),
        "\\PC{0,12}",
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(5),
        Just(100),
        Just(101),
        Just(255),
        Just(256),
        Just(4_294_967_295),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ]
}

/// A value template: literals, references to own and other services' variables, `$$`,
/// broken references.
fn template(vars: usize, services: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z0-9:/@._-]{0,8}",
        (0..vars.max(1)).prop_map(|i| format!("${{V{i}}}")),
        (0..services.max(1), 0..vars.max(1))
            .prop_map(|(s, i)| format!("${{services.s{s}.env.V{i}}}")),
        Just("$$".to_string()),
        Just("${".to_string()),
        Just("${services.}".to_string()),
        Just("${PATH}".to_string()),
        Just("${TOKEN}".to_string()),
    ];
    proptest::collection::vec(piece, 0..4).prop_map(|p| p.concat())
}

#[derive(Debug, Clone)]
struct Svc {
    name: String,
    command: String,
    args: Vec<String>,
    env: Vec<String>,
    env_file: Vec<&'static str>,
    deps: Vec<(usize, &'static str)>,
    numbers: Vec<(&'static str, String)>,
    unknown: Option<String>,
    /// `Some(n)`: a chain of n `${...}`; `Some` with doubling: each level twice.
    chain: Option<(usize, bool)>,
}

fn service(i: usize, services: usize) -> impl Strategy<Value = Svc> {
    let vars = 6;
    (
        prop_oneof![
            4 => Just(format!("s{i}")),
            1 => "\\PC{0,6}".prop_map(move |s| format!("s{i}{s}")),
        ],
        prop_oneof![
            Just("/bin/sh".to_string()),
            Just("sleep".to_string()),
            Just("no-such-program".to_string()),
            Just("dir".to_string()),
            Just("./good.env".to_string()),
            Just("".to_string()),
        ],
        proptest::collection::vec(template(vars, services), 0..4),
        proptest::collection::vec(template(vars, services), 0..vars),
        proptest::collection::vec(proptest::sample::select(env_files()), 0..3),
        proptest::collection::vec(
            (
                0..services.max(1),
                proptest::sample::select(vec!["started", "ready", "healthy", "soon"]),
            ),
            0..3,
        ),
        numbers(),
        proptest::option::weighted(0.2, "[a-z_]{1,12}"),
        proptest::option::weighted(0.25, (0usize..200, any::<bool>())),
    )
        .prop_map(
            |(name, command, args, env, env_file, deps, numbers, unknown, chain)| Svc {
                name,
                command,
                args,
                env,
                env_file,
                deps,
                numbers,
                unknown,
                chain,
            },
        )
}

/// Some numeric keys of a service, each with a hostile or ordinary value.
fn numbers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    proptest::collection::vec(
        prop_oneof![
            duration().prop_map(|d| ("stop_timeout", q(&d))),
            duration().prop_map(|d| ("min_uptime", q(&d))),
            duration().prop_map(|d| ("watchdog", q(&d))),
            size().prop_map(|s| ("max_memory", q(&s))),
            int().prop_map(|n| ("max_restarts", n.to_string())),
            proptest::collection::vec(int(), 0..3).prop_map(|v| (
                "stop_exit_codes",
                format!(
                    "[{}]",
                    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                )
            )),
            (
                duration(),
                duration(),
                prop_oneof![
                    Just(f64::NAN),
                    Just(0.5),
                    Just(2.0),
                    Just(1e300),
                    any::<f64>()
                ]
            )
                .prop_map(|(a, b, f)| (
                    "backoff",
                    format!(
                        "{{ initial = {}, max = {}, factor = {} }}",
                        q(&a),
                        q(&b),
                        toml_float(f)
                    )
                )),
            (duration(), int()).prop_map(|(d, r)| (
                "health",
                format!(
                    "{{ tcp = \"127.0.0.1:1\", interval = {}, retries = {r} }}",
                    q(&d)
                )
            )),
            duration().prop_map(|d| ("ready", format!("{{ notify = true, timeout = {} }}", q(&d)))),
            "\\PC{0,10}".prop_map(|s| ("stop_signal", q(&s))),
            "\\PC{0,10}".prop_map(|s| ("restart", q(&s))),
        ],
        0..6,
    )
}

fn toml_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{f:?}")
    }
}

#[derive(Debug, Clone)]
struct File {
    keep: Option<i64>,
    max_size: Option<String>,
    max_line: Option<String>,
    timestamp: Option<String>,
    interval: Option<String>,
    services: Vec<Svc>,
    /// Byte damage applied to the rendered text: (position fraction, byte).
    damage: Vec<(f64, u8)>,
    /// Nested arrays, inline tables or dotted tables this deep, at the end.
    nesting: Option<(usize, u8)>,
    /// What `rand.env` holds for this case: dotenv-ish lines with hostile bits.
    env_text: String,
}

fn file() -> impl Strategy<Value = File> {
    (0usize..6)
        .prop_flat_map(|n| {
            (
                proptest::option::of(int()),
                proptest::option::of(size()),
                proptest::option::of(size()),
                proptest::option::of("\\PC{0,12}"),
                proptest::option::of(duration()),
                (0..n).map(|i| service(i, n)).collect::<Vec<_>>(),
                proptest::option::weighted(
                    0.15,
                    proptest::collection::vec((0.0f64..1.0, any::<u8>()), 1..4),
                ),
                proptest::option::weighted(0.1, (0usize..5000, 0u8..3)),
                proptest::collection::vec(
                    prop_oneof![
                        "[A-Z_]{1,8}=\\PC{0,20}",
                        "export [A-Z]{1,4} = \"[^\"]{0,10}\"?",
                        "[A-Z]{1,4}='[^']{0,10}'?",
                        "\\PC{0,30}",
                        Just("TOKEN=sekret".to_string()),
                    ],
                    0..8,
                )
                .prop_map(|l| l.join("\n")),
            )
        })
        .prop_map(
            |(
                keep,
                max_size,
                max_line,
                timestamp,
                interval,
                services,
                damage,
                nesting,
                env_text,
            )| File {
                keep,
                max_size,
                max_line,
                timestamp,
                interval,
                services,
                damage: damage.unwrap_or_default(),
                nesting,
                env_text,
            },
        )
}

fn render(f: &File) -> Vec<u8> {
    let mut t = String::from("[supervisor]\nstate_dir = \"var\"\n");
    if let Some(i) = &f.interval {
        t.push_str(&format!("resource_interval = {}\n", q(i)));
    }
    t.push_str("[logs]\n");
    if let Some(k) = f.keep {
        t.push_str(&format!("keep = {k}\n"));
    }
    if let Some(s) = &f.max_size {
        t.push_str(&format!("max_size = {}\n", q(s)));
    }
    if let Some(s) = &f.max_line {
        t.push_str(&format!("max_line = {}\n", q(s)));
    }
    if let Some(s) = &f.timestamp {
        t.push_str(&format!("timestamp = {}\n", q(s)));
    }
    for s in &f.services {
        t.push_str(&format!(
            "\n[services.{}]\ncommand = {}\n",
            q(&s.name),
            q(&s.command)
        ));
        t.push_str(&format!(
            "args = [{}]\n",
            s.args.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")
        ));
        if !s.env_file.is_empty() {
            t.push_str(&format!(
                "env_file = [{}]\n",
                s.env_file
                    .iter()
                    .map(|a| q(a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !s.deps.is_empty() {
            let deps: Vec<String> = s
                .deps
                .iter()
                .map(|(i, c)| format!("s{i} = {}", q(c)))
                .collect();
            // Duplicate keys in an inline table are a TOML error: fine, that is input too.
            t.push_str(&format!("depends_on = {{ {} }}\n", deps.join(", ")));
        }
        for (k, v) in &s.numbers {
            t.push_str(&format!("{k} = {v}\n"));
        }
        if let Some(u) = &s.unknown {
            t.push_str(&format!("{u} = 1\n"));
        }
        t.push_str(&format!("[services.{}.env]\n", q(&s.name)));
        for (i, v) in s.env.iter().enumerate() {
            t.push_str(&format!("V{i} = {}\n", q(v)));
        }
        if let Some((n, double)) = s.chain {
            for i in 0..n {
                if double {
                    t.push_str(&format!("C{i} = \"${{C{}}}${{C{}}}\"\n", i + 1, i + 1));
                } else {
                    t.push_str(&format!("C{i} = \"${{C{}}}\"\n", i + 1));
                }
            }
            t.push_str(&format!("C{n} = \"0123456789abcdef\"\n"));
        }
    }
    match f.nesting {
        Some((n, 0)) => t.push_str(&format!(
            "\n[services.deep]\ncommand = \"sleep\"\nargs = {}{}\n",
            "[".repeat(n),
            "]".repeat(n)
        )),
        Some((n, 1)) => t.push_str(&format!(
            "\n[services.deep]\ncommand = \"sleep\"\nenv = {{ A = {}1{} }}\n",
            "{b=".repeat(n),
            "}".repeat(n)
        )),
        Some((n, _)) => t.push_str(&format!("\n[{}]\n", vec!["a"; n.max(1)].join("."))),
        None => {}
    }
    let mut bytes = t.into_bytes();
    for (at, b) in &f.damage {
        if !bytes.is_empty() {
            let i = ((bytes.len() - 1) as f64 * at) as usize;
            bytes[i] = *b;
        }
    }
    bytes
}

/// One case: load, then check what came back.
fn one(dir: &Path, cfg_path: &Path, f: &File) -> Result<(), TestCaseError> {
    let bytes = render(f);
    std::fs::write(cfg_path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    std::fs::write(dir.join("rand.env"), &f.env_text)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let t = Instant::now();
    let result = config::load(cfg_path);
    let took = t.elapsed();
    // Every env file here answers at once (odd ones are refused without a read).
    prop_assert!(took < Duration::from_secs(5), "load took {took:?}");
    let lines = bytes.split(|b| *b == b'\n').count();
    match result {
        Ok(c) => {
            prop_assert_eq!(c.start_order.len(), c.services.len());
            prop_assert!(c.logs.keep <= 100);
            for s in c.services.values() {
                prop_assert_eq!(s.args.len(), s.shown_args.len());
                for a in &s.args {
                    prop_assert!(a.len() <= schema::MAX_EXPANDED_VALUE);
                }
                for v in s.env.values() {
                    prop_assert!(
                        v.value.len()
                            <= schema::MAX_EXPANDED_VALUE + schema::MAX_ENV_FILE_BYTES as usize
                    );
                }
                // Nothing secret in what `show` serializes.
                let json =
                    serde_json::to_string(s).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(!json.contains("sekret"), "{json}");
                prop_assert!(s.backoff.factor.is_finite());
            }
        }
        Err(diags) => {
            prop_assert!(!diags.is_empty());
            prop_assert!(diags.len() <= schema::MAX_DIAGNOSTICS + 1);
            for d in &diags {
                prop_assert!(!d.message.trim().is_empty(), "an empty message: {:?}", d);
                if d.file == cfg_path {
                    if let Some(l) = d.line {
                        prop_assert!(l >= 1 && l <= lines, "line {} of {}: {}", l, lines, d);
                    }
                } else {
                    // Errors inside env files name a file of the fixture dir.
                    prop_assert!(
                        d.file.starts_with(dir) || d.file.starts_with("/dev"),
                        "{}",
                        d
                    );
                }
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("LM_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn config_fuzz_load_never_panics_hangs_or_lies() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let cfg_path: PathBuf = dir.path().join("supervisor.toml");
    let cases = cases();
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        // Shrinking a deep chain takes a while; keep the report quick.
        max_shrink_iters: 2000,
        ..RunnerConfig::default()
    });
    let start = Instant::now();
    let result = runner.run(&file(), |f| one(dir.path(), &cfg_path, &f));
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "config fuzz: {cases} cases in {secs:.2}s = {:.0} cases/s",
        f64::from(cases) / secs
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
