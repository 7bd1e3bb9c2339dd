//! `lmctl import-pm2 FILE`: turns a PM2 ecosystem file into `supervisor.toml` text.
//!
//! [`load`] reads the file (`.json` directly; `.js`/`.cjs`/`.mjs` by asking `node` to print
//! `JSON.stringify` of its export), [`convert`] maps every PM2 option that has a meaning here
//! and returns one warning per option that has none (or whose meaning changes).
//!
//! Decisions, also written as comments into the output where they matter:
//! - `env` is imported; `env_production` and other `env_*` profiles are *not* merged (there
//!   are no profiles here): each gets a warning listing its variables, to move into `env`.
//! - `wait_ready`: when the app declares `PORT` in `env`, readiness becomes a TCP connect to
//!   `127.0.0.1:${PORT}` (true for any server once it listens, unlike an http path the app
//!   may not serve); otherwise `ready = { notify = true }`, and the app must send `READY=1`.
//!   Either way a timeout is a failed start here, where PM2 marked the app online anyway.
//! - PM2 stops an app with SIGINT, so `stop_signal = "SIGINT"` keeps what the app expects.
//! - `restart_delay` is ignored when `exp_backoff_restart_delay` is set, as PM2 does.
//! - Options whose value asks for the only behaviour there is (`instances: 1`,
//!   `exec_mode: 'fork'`, `watch: false`, `autorestart: true`, `treekill: true`) are accepted
//!   without a warning.
//! - Env values and args are written with `$` doubled: PM2 does not interpolate them, our
//!   config does.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Bound on evaluating an ecosystem file with node (it may start timers or servers).
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Pm2Error {
    #[error("cannot read {path}: {source}; check the path")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON ({source}); fix it, or pass the .js ecosystem file so node evaluates it")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot evaluate {path}: `{node}` was not found ({source}). A .js ecosystem file is a program and needs Node.js to run it: install Node.js, or on a machine that has it export the file as JSON with `node -p 'JSON.stringify(require(\"./{file}\"))' > ecosystem.json` and import that .json file instead")]
    NodeMissing {
        path: PathBuf,
        file: String,
        node: PathBuf,
        source: std::io::Error,
    },
    #[error("node could not evaluate {path} ({status}): {stderr}; fix the file (`node {path}` shows the same error), or import a JSON export of it")]
    NodeFailed {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("evaluating {path} with node took longer than {}s and was stopped; the file must only export the config, not start anything", NODE_TIMEOUT.as_secs())]
    NodeTimeout { path: PathBuf },
    #[error("node printed something that is not JSON while evaluating {path} ({source}); the file must export a plain object such as `module.exports = {{ apps: [...] }}`")]
    NodeOutput {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot import {path}: {format} ecosystem files are not supported; export it as JSON (or .js) and import that")]
    UnsupportedFormat { path: PathBuf, format: String },
    #[error("{source_name} is not a PM2 ecosystem: expected an object with `apps: [...]`, an array of apps or one app object with `script`, but found {found}")]
    NotAnEcosystem { source_name: String, found: String },
    #[error("{source_name} declares no apps (`apps` is empty); nothing to import")]
    NoApps { source_name: String },
    #[error("{source_name}: app #{index} {problem}")]
    BadApp {
        source_name: String,
        index: usize,
        problem: String,
    },
    #[error("internal error: the generated supervisor.toml does not parse ({0}); please report it with the ecosystem file")]
    Generated(String),
}

/// Reads a PM2 ecosystem file: `.json` parsed directly; `.js`/`.cjs`/`.mjs` evaluated with
/// `node` from PATH. See [`load_with_node`].
pub fn load(path: &Path) -> Result<Value, Pm2Error> {
    load_with_node(path, Path::new("node"))
}

/// [`load`] with an explicit node binary. The file is evaluated by `node -e` with a small
/// script that `require`s it (or `import`s it: `.mjs`, ES modules) in the file's folder and
/// prints `JSON.stringify` of the export.
pub fn load_with_node(path: &Path, node: &Path) -> Result<Value, Pm2Error> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "js" | "cjs" | "mjs" => eval_with_node(path, node),
        "yml" | "yaml" | "json5" => Err(Pm2Error::UnsupportedFormat {
            path: path.to_path_buf(),
            format: ext.to_ascii_uppercase(),
        }),
        _ => {
            let text = std::fs::read_to_string(path).map_err(|source| Pm2Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| Pm2Error::Json {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

const NODE_SCRIPT: &str = r#"
const path = require('path');
const url = require('url');
const file = path.resolve(process.argv[1]);
const fail = (e) => { process.stderr.write(String((e && e.stack) || e)); process.exit(1); };
const out = (m) => {
  if (m && m.__esModule && m.default !== undefined) m = m.default;
  process.stdout.write(JSON.stringify(m === undefined ? null : m), () => process.exit(0));
};
const viaImport = () => import(url.pathToFileURL(file).href)
  .then((ns) => out(ns.default !== undefined ? ns.default : Object.assign({}, ns)))
  .catch(fail);
if (file.endsWith('.mjs')) {
  viaImport();
} else {
  let m;
  try { m = require(file); } catch (e) {
    if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) { viaImport(); m = undefined; return; }
    fail(e);
  }
  out(m);
}
"#;

fn eval_with_node(path: &Path, node: &Path) -> Result<Value, Pm2Error> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if !abs.is_file() {
        return Err(Pm2Error::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let dir = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    // `return` is legal at the top of a CommonJS `-e` script only inside a function.
    let script = format!("(function () {{{NODE_SCRIPT}}})();");
    let mut child = Command::new(node)
        .arg("-e")
        .arg(script)
        .arg("--")
        .arg(&abs)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Pm2Error::NodeMissing {
            path: path.to_path_buf(),
            file: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            node: node.to_path_buf(),
            source,
        })?;
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + NODE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(Pm2Error::NodeTimeout {
            path: path.to_path_buf(),
        });
    };
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        // The first lines name the file, line and error; the stack below adds little.
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.truncate(6);
        return Err(Pm2Error::NodeFailed {
            path: path.to_path_buf(),
            status: status.to_string(),
            stderr: lines.join(" | "),
        });
    }
    serde_json::from_slice(&stdout).map_err(|source| Pm2Error::NodeOutput {
        path: path.to_path_buf(),
        source,
    })
}

/// Converts PM2's `{apps: [...]}` (or a bare array of apps, or one app object) into
/// `supervisor.toml` text plus one warning per option that has no meaning here or whose
/// meaning changes. `source_name` is the ecosystem file's path as the user gave it: it is
/// named in the header, and relative env files are looked up beside it (the output is meant
/// to be written next to it); a missing env file is marked optional (`-` prefix) with a warning.
pub fn convert(ecosystem: &Value, source_name: &str) -> Result<(String, Vec<String>), Pm2Error> {
    let not_eco = |found: String| Pm2Error::NotAnEcosystem {
        source_name: source_name.to_string(),
        found,
    };
    let mut warnings = Vec::new();
    let apps: Vec<&Value> = match ecosystem {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => match o.get("apps") {
            Some(Value::Array(a)) => {
                for key in o.keys().filter(|k| k.as_str() != "apps") {
                    warnings.push(match key.as_str() {
                        "deploy" => "`deploy` section ignored: `pm2 deploy` has no equivalent; deploy with your own tooling, then `lmctl reload`".to_string(),
                        other => format!("top-level `{other}` ignored: only `apps` is imported"),
                    });
                }
                a.iter().collect()
            }
            Some(single @ Value::Object(_)) => vec![single],
            Some(other) => return Err(not_eco(format!("`apps` as {}", describe(other)))),
            None if o.contains_key("script") => vec![ecosystem],
            None => {
                let keys: Vec<&str> = o.keys().map(String::as_str).take(8).collect();
                return Err(not_eco(format!(
                    "an object with keys [{}] and neither `apps` nor `script`",
                    keys.join(", ")
                )));
            }
        },
        other => return Err(not_eco(describe(other))),
    };
    if apps.is_empty() {
        return Err(Pm2Error::NoApps {
            source_name: source_name.to_string(),
        });
    }
    let base_dir = Path::new(source_name).parent().map(Path::to_path_buf);

    let mut text = String::new();
    let src = one_line(source_name);
    push(
        &mut text,
        &format!("# Imported from {src} by `lmctl import-pm2`."),
    );
    push(
        &mut text,
        "# Review it, then run `lmctl check`. Relative paths resolve against this file's folder.",
    );
    push(
        &mut text,
        "# This file is the only source of truth for what runs: there is no `pm2 save` dump.",
    );
    push(&mut text, "");
    push(&mut text, "[supervisor]");
    push(&mut text, "state_dir = \"var\"");

    let mut used = BTreeSet::new();
    for (i, app) in apps.iter().enumerate() {
        let index = i + 1;
        let Value::Object(app) = app else {
            return Err(Pm2Error::BadApp {
                source_name: source_name.to_string(),
                index,
                problem: format!("is {}, expected an object with `script`", describe(app)),
            });
        };
        let section = convert_app(
            index,
            app,
            source_name,
            base_dir.as_deref(),
            &mut used,
            &mut warnings,
        )?;
        push(&mut text, "");
        text.push_str(&section);
    }
    toml::from_str::<toml::Table>(&text).map_err(|e| Pm2Error::Generated(e.to_string()))?;
    Ok((text, warnings))
}

/// Options this module maps (or reads while mapping others).
const MAPPED: &[&str] = &[
    "name",
    "script",
    "args",
    "interpreter",
    "exec_interpreter",
    "interpreter_args",
    "node_args",
    "cwd",
    "env",
    "env_file",
    "autorestart",
    "autostart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "max_memory_restart",
    "kill_timeout",
    "wait_ready",
    "listen_timeout",
    "stop_exit_codes",
];

const LOGS: &str = "logs are captured, timestamped, merged and rotated by the supervisor under state_dir/logs (NAME.out.log, NAME.err.log and the merged supervisor.log); read them with `lmctl logs NAME [-f] [--err]`";
const MONITORING: &str =
    "PM2.io/Keymetrics monitoring has no equivalent; `lmctl status` shows cpu and tree memory";

/// Why a PM2 option has no meaning here: `Some(None)` = its value asks for the only
/// behaviour there is (no warning); `Some(Some(why))` = ignored, warn; `None` = unknown.
fn no_equivalent(key: &str, value: &Value, wait_ready: bool) -> Option<Option<String>> {
    let s = |t: &str| Some(Some(t.to_string()));
    match key {
        "instances" => match value {
            Value::Number(n) if n.as_f64() == Some(1.0) => Some(None),
            Value::String(t) if t == "1" => Some(None),
            _ => s("a service is one process (tree) here; for several copies declare one service per copy, each with its own PORT"),
        },
        "exec_mode" => match value.as_str() {
            Some("fork" | "fork_mode") => Some(None),
            _ => s("cluster mode (Node's cluster module sharing one port) has no equivalent; each service is one process tree, declare one service per instance"),
        },
        "watch" if value == &Value::Bool(false) => Some(None),
        "watch" => s("no file watching: after a deploy run `lmctl restart NAME`, after editing supervisor.toml `lmctl reload`"),
        "ignore_watch" | "watch_delay" | "watch_options" => {
            s("only used by `watch`, which has no equivalent")
        }
        "error_file" | "out_file" | "log_file" | "log" | "output" | "error" | "merge_logs"
        | "combine_logs" | "disable_logs" => s(LOGS),
        "log_date_format" | "time" => s("every log line gets a timestamp; its format is [logs] timestamp (strftime, one format for all services; default ISO 8601 with milliseconds)"),
        "log_type" => s("log lines are stored as plain text, `TIMESTAMP SERVICE|out LINE`; use `lmctl logs` to read them"),
        "pid_file" => s("no pid files; the pid is in `lmctl status --json`"),
        "cron_restart" | "cron" => s("no scheduled restarts; use a systemd timer or cron job that runs `lmctl restart NAME`"),
        "vizion" | "vizon" => s("no version-control metadata is collected"),
        "post_update" => s("no `pm2 pull` update flow; run your update steps, then `lmctl restart NAME`"),
        "force" => s("a service runs at most once; `lmctl start` on a running service does nothing"),
        "source_map_support" | "disable_source_map_support" => s("PM2's Node instrumentation has no equivalent; add `--enable-source-maps` to node_args if wanted"),
        "instance_var" | "increment_var" => s("only meaningful with several instances (cluster mode), which have no equivalent"),
        "namespace" => s("no namespaces; name services explicitly, as in `lmctl start a b`"),
        "filter_env" => s("not needed: only inherit_env and the declared variables reach the process"),
        "append_env_to_name" => s("service names are fixed in supervisor.toml"),
        "shutdown_with_message" => s("stopping is a signal (stop_signal, then SIGKILL to the tree after stop_timeout), never an IPC message"),
        "treekill" if value == &Value::Bool(true) => Some(None),
        "treekill" => s("the whole process tree is always stopped and escaped descendants are reaped; this cannot be turned off"),
        "kill_retry_time" => s("after stop_timeout the whole tree gets SIGKILL at once; there is no retry interval"),
        "uid" | "gid" | "user" => s("services run as the daemon's user; run the daemon as that user (systemd `User=`)"),
        "pmx" | "automation" | "trace" | "disable_trace" | "deep_monitoring" | "io" => s(MONITORING),
        "listen_timeout" if !wait_ready => s("only used with `wait_ready` (or cluster mode) in PM2, and neither is set"),
        _ => None,
    }
}

fn convert_app(
    index: usize,
    app: &Map<String, Value>,
    source_name: &str,
    base_dir: Option<&Path>,
    used: &mut BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Result<String, Pm2Error> {
    let bad = |problem: String| Pm2Error::BadApp {
        source_name: source_name.to_string(),
        index,
        problem,
    };
    let script = match app.get("script") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(other) => {
            return Err(bad(format!(
                "has `script` = {}, expected the path of the program to run",
                describe(other)
            )))
        }
        None => {
            return Err(bad(
                "has no `script`; PM2 needs one too: the program (or .js file) to run".to_string(),
            ))
        }
    };

    // Name: PM2 defaults it to the script's file name without extension.
    let given = match app.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => Path::new(&script)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_string()),
    };
    let mut name: String = given
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.trim_matches('-').is_empty() {
        name = format!("app{index}");
    }
    if name != given {
        warnings.push(format!(
            "{given}: renamed to `{name}`: service names use only letters, digits, '-' and '_'"
        ));
    }
    if used.contains(&name) {
        let mut n = 2;
        while used.contains(&format!("{name}-{n}")) {
            n += 1;
        }
        let renamed = format!("{name}-{n}");
        warnings.push(format!(
            "{given}: a service named `{name}` already exists; this app was named `{renamed}`"
        ));
        name = renamed;
    }
    used.insert(name.clone());
    let warn = |warnings: &mut Vec<String>, key: &str, why: &str| {
        warnings.push(format!("{name}: `{key}` ignored: {why}"));
    };

    let mut out = String::new();
    push(&mut out, &format!("[services.{name}]"));

    // Command and args.
    let cwd = match app.get("cwd") {
        Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
        Some(other @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))) => {
            warn(
                warnings,
                "cwd",
                &format!("expected a path, found {}", describe(other)),
            );
            None
        }
        _ => None,
    };
    let interpreter = app
        .get("interpreter")
        .or_else(|| app.get("exec_interpreter"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut interp_args = Vec::new();
    for key in ["interpreter_args", "node_args"] {
        if let Some(v) = app.get(key) {
            match string_list(v) {
                Ok(a) => interp_args.extend(a),
                Err(why) => warn(warnings, key, &why),
            }
        }
    }
    // Node's --env-file is read by the supervisor instead, so `lmctl env` shows it.
    let mut env_files: Vec<(String, bool)> = Vec::new();
    let mut kept = Vec::new();
    let mut it = interp_args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let optional = match flag.as_str() {
            "--env-file" => false,
            "--env-file-if-exists" => true,
            _ => {
                kept.push(a);
                continue;
            }
        };
        match inline.or_else(|| it.next()) {
            Some(file) => env_files.push((file, optional)),
            None => kept.push(a),
        }
    }
    let interp_args = kept;
    let user_args = match app.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => string_list(v).unwrap_or_else(|why| {
            warn(warnings, "args", &why);
            Vec::new()
        }),
    };
    let ext = Path::new(&script)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let by_ext = match ext.as_str() {
        "js" | "cjs" | "mjs" | "jsx" => Some("node"),
        "sh" => Some("bash"),
        "py" => Some("python3"),
        "rb" => Some("ruby"),
        "php" => Some("php"),
        "pl" => Some("perl"),
        _ => None,
    };
    let interp = match interpreter.as_deref() {
        Some("none") => None,
        Some(i) => Some(i.to_string()),
        None => by_ext.map(str::to_string),
    };
    let (command, args) = match interp {
        Some(i) => {
            let mut args = interp_args;
            args.push(script.clone());
            args.extend(user_args);
            (i, args)
        }
        None => {
            if !interp_args.is_empty() {
                warn(warnings, "node_args", "the script is run directly (no interpreter), so interpreter arguments do not apply");
            }
            // A relative program path is relative to PM2's cwd; ours would be relative to
            // this file's folder.
            let cmd = match &cwd {
                Some(c) if script.contains('/') && !Path::new(&script).is_absolute() => {
                    let rel = script.trim_start_matches("./");
                    Path::new(c).join(rel).to_string_lossy().into_owned()
                }
                _ => script.clone(),
            };
            (cmd, user_args)
        }
    };
    push(&mut out, &format!("command = {}", q(&command)));
    let args: Vec<String> = args.iter().map(|a| q(&dollars(a))).collect();
    push(&mut out, &format!("args = [{}]", args.join(", ")));
    if let Some(c) = &cwd {
        push(&mut out, &format!("cwd = {}", q(c)));
    }

    // Env files: PM2 has none of its own; node's --env-file and `env_file` land here.
    if let Some(v) = app.get("env_file") {
        match string_list(v) {
            Ok(files) => env_files.extend(files.into_iter().map(|f| (f, false))),
            Err(why) => warn(warnings, "env_file", &why),
        }
    }
    if !env_files.is_empty() {
        let mut entries = Vec::new();
        for (file, optional) in env_files {
            // Node resolves --env-file against the process's cwd; ours against this file.
            let path = match &cwd {
                Some(c) if !Path::new(&file).is_absolute() => {
                    Path::new(c).join(&file).to_string_lossy().into_owned()
                }
                _ => file.clone(),
            };
            let on_disk = if Path::new(&path).is_absolute() {
                PathBuf::from(&path)
            } else {
                base_dir.unwrap_or(Path::new(".")).join(&path)
            };
            let optional = optional
                || {
                    let missing = !on_disk.exists();
                    if missing {
                        warnings.push(format!(
                        "{name}: env file {path} does not exist; it was marked optional (\"-{path}\"): create it, or remove the entry"
                    ));
                    }
                    missing
                };
            entries.push(q(&if optional { format!("-{path}") } else { path }));
        }
        push(
            &mut out,
            "# Read by the supervisor itself, so `lmctl env` shows every value (\"-\" = optional).",
        );
        push(&mut out, &format!("env_file = [{}]", entries.join(", ")));
    }
    push(
        &mut out,
        "# Only these come from the daemon's environment; nothing else leaks in (PM2 passed its",
    );
    push(
        &mut out,
        "# whole shell environment on, so a stray variable such as an old PORT could reach the app).",
    );
    push(&mut out, "inherit_env = [\"PATH\", \"HOME\", \"LANG\"]");

    // Declared env (written last as a sub-table).
    let mut env_lines = Vec::new();
    let mut port = false;
    match app.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(env)) => {
            for (k, v) in env {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    warnings.push(format!(
                        "{name}: env variable {k:?} skipped: not a valid variable name"
                    ));
                    continue;
                }
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => {
                        warnings.push(format!("{name}: env variable {k} skipped: its value is null (an unset variable in the .js file?)"));
                        continue;
                    }
                    other => {
                        warnings.push(format!(
                            "{name}: env variable {k} is {}; written as its JSON text",
                            describe(other)
                        ));
                        other.to_string()
                    }
                };
                port |= k == "PORT";
                env_lines.push(format!("{} = {}", key(k), q(&dollars(&value))));
            }
        }
        Some(other) => warn(
            warnings,
            "env",
            &format!("expected an object of variables, found {}", describe(other)),
        ),
    }
    let mut profile_notes = Vec::new();
    for (k, v) in app {
        if let (Some(profile), Value::Object(vars)) = (k.strip_prefix("env_"), v) {
            if k == "env_file" {
                continue;
            }
            let keys: Vec<&str> = vars.keys().map(String::as_str).collect();
            warnings.push(format!(
                "{name}: `{k}` not imported: it applied only with `pm2 start --env {profile}` and there are no env profiles here; if that is how the app ran, move its variables ({}) into [services.{name}.env]",
                keys.join(", ")
            ));
            profile_notes.push(format!(
                "# `{k}` (pm2 start --env {profile}) was not imported; it set: {}",
                one_line(&keys.join(", "))
            ));
        }
    }

    if app.get("autostart") == Some(&Value::Bool(false)) {
        push(&mut out, "autostart = false");
    }

    // Readiness.
    let wait_ready = app.get("wait_ready").and_then(Value::as_bool) == Some(true);
    let listen_timeout = app.get("listen_timeout").and_then(|v| duration(v).ok());
    if wait_ready {
        let timeout = listen_timeout
            .map(fmt_ms)
            .unwrap_or_else(|| "30s".to_string());
        if port {
            push(&mut out, "# PM2's wait_ready: ready once the app accepts TCP connections on its PORT; a timeout");
            push(&mut out, "# is a failed start (PM2 marked the app online anyway). Stricter, if the app serves it:");
            push(
                &mut out,
                &format!("# ready = {{ http = \"http://127.0.0.1:${{PORT}}/health\", timeout = \"{timeout}\" }}"),
            );
            push(
                &mut out,
                &format!("ready = {{ tcp = \"127.0.0.1:${{PORT}}\", timeout = \"{timeout}\" }}"),
            );
            warnings.push(format!(
                "{name}: `wait_ready` mapped to ready = {{ tcp = \"127.0.0.1:${{PORT}}\" }}: process.send('ready') means nothing here; the app is ready when it accepts connections on its PORT, and not being ready within {timeout} (listen_timeout) is a failed start, where PM2 marked it online anyway. Use ready = {{ http = \".../health\" }} for a stricter check"
            ));
        } else {
            push(
                &mut out,
                "# PM2's wait_ready: the app must send READY=1 to $NOTIFY_SOCKET (sd_notify);",
            );
            push(
                &mut out,
                "# a timeout is a failed start (PM2 marked the app online anyway).",
            );
            push(
                &mut out,
                &format!("ready = {{ notify = true, timeout = \"{timeout}\" }}"),
            );
            warnings.push(format!(
                "{name}: `wait_ready` mapped to ready = {{ notify = true }}: the app must send READY=1 to the datagram socket in $NOTIFY_SOCKET (sd_notify) instead of process.send('ready'), or use ready = {{ tcp = \"127.0.0.1:PORT\" }} / {{ http = URL }}; not being ready within {timeout} is a failed start, where PM2 marked it online anyway"
            ));
        }
    } else if port {
        push(
            &mut out,
            "# Without readiness the service counts as up once spawned. To wait until it listens",
        );
        push(
            &mut out,
            "# (needed for depends_on = { this = \"ready\" }):",
        );
        push(
            &mut out,
            "# ready = { tcp = \"127.0.0.1:${PORT}\", timeout = \"30s\" }",
        );
    }

    // Restart policy.
    let autorestart = app.get("autorestart").and_then(Value::as_bool) != Some(false);
    push(
        &mut out,
        &format!(
            "restart = {}",
            q(if autorestart { "always" } else { "never" })
        ),
    );
    if let Some(v) = app.get("stop_exit_codes") {
        let codes = match v {
            Value::Array(a) => a.iter().map(|c| c.as_i64()).collect::<Option<Vec<_>>>(),
            other => other.as_i64().map(|c| vec![c]),
        };
        match codes.filter(|c| c.iter().all(|x| i32::try_from(*x).is_ok())) {
            Some(c) => {
                let c: Vec<String> = c.iter().map(i64::to_string).collect();
                push(&mut out, &format!("stop_exit_codes = [{}]", c.join(", ")));
            }
            None => warn(
                warnings,
                "stop_exit_codes",
                "expected an exit code or a list of them",
            ),
        }
    }
    let exp = app.get("exp_backoff_restart_delay");
    let fixed = app.get("restart_delay");
    if let Some(v) = exp {
        match duration(v) {
            Ok(ms) => {
                push(
                    &mut out,
                    "# PM2's exp_backoff_restart_delay: x1.5 per failed run, at most 15s.",
                );
                push(
                    &mut out,
                    &format!(
                        "backoff = {{ initial = \"{}\", max = \"{}\", factor = 1.5 }}",
                        fmt_ms(ms),
                        fmt_ms(ms.max(15_000))
                    ),
                );
                if fixed.is_some() {
                    warn(warnings, "restart_delay", "PM2 ignores it when exp_backoff_restart_delay is set, and so does this import (backoff starts at exp_backoff_restart_delay)");
                }
            }
            Err(why) => warn(warnings, "exp_backoff_restart_delay", &why),
        }
    } else if let Some(v) = fixed {
        match duration(v) {
            Ok(ms) => {
                let d = fmt_ms(ms);
                push(
                    &mut out,
                    "# PM2's restart_delay: a fixed delay between restarts.",
                );
                push(
                    &mut out,
                    &format!("backoff = {{ initial = \"{d}\", max = \"{d}\", factor = 1.0 }}"),
                );
            }
            Err(why) => warn(warnings, "restart_delay", &why),
        }
    }
    if let Some(v) = app.get("min_uptime") {
        match duration(v) {
            Ok(ms) => push(&mut out, &format!("min_uptime = \"{}\"", fmt_ms(ms))),
            Err(why) => warn(warnings, "min_uptime", &why),
        }
    }
    if let Some(v) = app.get("max_restarts") {
        match v
            .as_f64()
            .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n <= f64::from(u32::MAX))
        {
            Some(n) => push(&mut out, &format!("max_restarts = {}", n as u32)),
            None => warn(
                warnings,
                "max_restarts",
                &format!("expected a whole number, found {}", describe(v)),
            ),
        }
    }
    if let Some(v) = app.get("max_memory_restart") {
        match memory(v) {
            Ok(bytes) => {
                push(
                    &mut out,
                    "# PM2 counted only the main process; this counts the whole process tree.",
                );
                push(&mut out, &format!("max_memory = \"{}\"", fmt_bytes(bytes)));
                warnings.push(format!(
                    "{name}: `max_memory_restart` mapped to max_memory = \"{}\", which counts the memory of the whole process tree (PM2 counted only the main process): raise it if the app starts child processes such as browsers",
                    fmt_bytes(bytes)
                ));
            }
            Err(why) => warn(warnings, "max_memory_restart", &why),
        }
    }
    push(
        &mut out,
        "# PM2 stops apps with SIGINT; use \"SIGTERM\" if the app handles that instead.",
    );
    push(&mut out, "stop_signal = \"SIGINT\"");
    if let Some(v) = app.get("kill_timeout") {
        match duration(v) {
            Ok(ms) => push(&mut out, &format!("stop_timeout = \"{}\"", fmt_ms(ms))),
            Err(why) => warn(warnings, "kill_timeout", &why),
        }
    }

    // Everything else: no equivalent, or unknown.
    for (k, v) in app {
        let unused_timeout = k == "listen_timeout" && !wait_ready;
        if (MAPPED.contains(&k.as_str()) && !unused_timeout)
            || (k.starts_with("env_") && v.is_object())
        {
            continue;
        }
        match no_equivalent(k, v, wait_ready) {
            Some(None) => {}
            Some(Some(why)) => warn(warnings, k, &why),
            None => warn(
                warnings,
                k,
                "not a PM2 option this import knows; check whether it matters",
            ),
        }
    }

    for note in profile_notes {
        push(&mut out, &note);
    }
    if !env_lines.is_empty() {
        push(&mut out, "");
        push(&mut out, &format!("[services.{name}.env]"));
        for l in env_lines {
            push(&mut out, &l);
        }
    }
    Ok(out)
}

fn push(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if c.is_control() => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A TOML key: bare when it can be.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        q(k)
    }
}

/// Our config interpolates `${...}` in env values and args; PM2 did not.
fn dollars(s: &str) -> String {
    s.replace('$', "$$")
}

/// Text safe inside a `#` comment.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".to_string(),
    }
}

/// `args`/`node_args`: an array of strings (numbers allowed), or one string split like a shell.
fn string_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => shell_split(s),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("expected strings, found {}", describe(other))),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "expected a string or a list of strings, found {}",
            describe(other)
        )),
    }
}

/// Splits like a POSIX shell: whitespace separates; '...' is literal; "..." allows `\"`,
/// `\\`, `\$` and `` \` ``; a backslash outside quotes escapes the next character.
fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated ' quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated \" quote in {s:?}")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated \" quote in {s:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// PM2 durations: milliseconds as a number or digits, or a string with a unit ("10s", "1m").
fn duration(v: &Value) -> Result<u64, String> {
    let bad = || {
        format!(
            "expected milliseconds or a duration like \"10s\", found {}",
            describe(v)
        )
    };
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
            .ok_or_else(bad),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(ms) = t.parse::<u64>() {
                return Ok(ms);
            }
            humantime::parse_duration(t)
                .map(|d| d.as_millis() as u64)
                .map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// PM2 memory: bytes as a number, or "300M", "1G", "512K" (binary units, as PM2 reads them).
fn memory(v: &Value) -> Result<u64, String> {
    let bad = || {
        format!(
            "expected bytes or a size like \"300M\" or \"1G\", found {}",
            describe(v)
        )
    };
    match v {
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(|f| f as u64)
            .ok_or_else(bad),
        Value::String(s) => {
            let t = s.trim();
            let split = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad())?;
            let unit = unit.trim().to_ascii_uppercase();
            let unit = unit
                .strip_suffix("IB")
                .or_else(|| unit.strip_suffix('B'))
                .unwrap_or(&unit);
            let mult: u64 = match unit {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(bad()),
            };
            let bytes = (n * mult as f64) as u64;
            if bytes == 0 {
                return Err(bad());
            }
            Ok(bytes)
        }
        _ => Err(bad()),
    }
}

/// Milliseconds as our duration text: "15s", "2m", "1h", "100ms".
fn fmt_ms(ms: u64) -> String {
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Bytes as our size text, in the largest binary unit that is exact.
fn fmt_bytes(b: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if b.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config, Probe, RestartPolicy};
    use std::collections::BTreeMap;

    const HUB: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pm2/central-hub.ecosystem.config.js"
    );
    const SM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pm2/session-manager.ecosystem.config.cjs"
    );

    fn daemon_env() -> BTreeMap<String, String> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/root"),
            ("PORT", "3011"),
            ("SECRET_FROM_SHELL", "leak"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn check(text: &str) -> Config {
        check_at(Path::new("/tmp/x/supervisor.toml"), text)
    }

    fn check_at(path: &Path, text: &str) -> Config {
        match config::parse(path, text, &daemon_env()) {
            Ok(c) => c,
            Err(d) => panic!("generated config rejected: {d:#?}\n{text}"),
        }
    }

    fn import(path: &str) -> (String, Vec<String>, Config) {
        let eco = load(Path::new(path)).unwrap();
        let (text, warnings) = convert(&eco, path).unwrap();
        let config = check(&text);
        (text, warnings, config)
    }

    fn has(warnings: &[String], parts: &[&str]) -> bool {
        warnings.iter().any(|w| parts.iter().all(|p| w.contains(p)))
    }

    #[test]
    fn central_hub_example() {
        let (text, warnings, c) = import(HUB);
        assert_eq!(c.services.len(), 1);
        let s = &c.services["leadmaster-central-hub"];
        assert_eq!(s.command, "node");
        assert_eq!(s.args, vec!["--max-old-space-size=2048", "src/index.js"]);
        assert_eq!(
            s.cwd,
            Path::new("/root/leadmaster-workspace/services/central-hub")
        );
        assert_eq!(s.env["PORT"].value, "3012");
        assert_eq!(
            s.env["SESSION_MANAGER_BASE_URL"].value,
            "http://localhost:3001"
        );
        assert_eq!(s.env["DRY_RUN"].value, "true");
        assert_eq!(s.env["AUTO_CAMPAIGNS_ENABLED"].value, "false");
        // Exactly declared + PATH/HOME: the shell's PORT and secrets stay out.
        let keys: Vec<&str> = s.env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "AUTO_CAMPAIGNS_ENABLED",
                "DRY_RUN",
                "HOME",
                "NODE_ENV",
                "PATH",
                "PORT",
                "SESSION_MANAGER_BASE_URL"
            ]
        );
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.max_restarts, 10);
        assert_eq!(s.min_uptime, Duration::from_secs(10));
        assert_eq!(s.max_memory, Some(1 << 30));
        assert_eq!(s.backoff.initial, Duration::from_millis(100));
        assert_eq!(s.backoff.max, Duration::from_secs(15));
        assert_eq!(s.backoff.factor, 1.5);
        assert_eq!(s.stop_timeout, Duration::from_secs(10));
        assert_eq!(s.stop_signal, "SIGINT");
        assert_eq!(s.stop_exit_codes, vec![0]);
        let ready = s.ready.as_ref().unwrap();
        assert!(!ready.notify);
        assert_eq!(ready.probe, Some(Probe::Tcp("127.0.0.1:3012".to_string())));
        assert_eq!(ready.timeout, Duration::from_secs(10));
        assert!(text.contains("inherit_env = [\"PATH\", \"HOME\", \"LANG\"]"));
        assert!(text.contains("# PM2 counted only the main process"));
        assert!(text.contains("state_dir = \"var\""));

        for opt in ["error_file", "out_file", "log_date_format", "merge_logs"] {
            assert!(
                has(
                    &warnings,
                    &["leadmaster-central-hub", opt, "state_dir/logs"]
                ) || has(&warnings, &[opt, "[logs] timestamp"]),
                "{opt}: {warnings:#?}"
            );
        }
        assert!(has(
            &warnings,
            &["restart_delay", "exp_backoff_restart_delay"]
        ));
        assert!(has(&warnings, &["wait_ready", "process.send('ready')"]));
        assert!(has(
            &warnings,
            &["max_memory_restart", "whole process tree"]
        ));
        // instances: 1, exec_mode: fork, watch: false ask for what we do anyway.
        assert!(!has(&warnings, &["instances"]), "{warnings:#?}");
        assert!(!has(&warnings, &["exec_mode"]));
        assert!(!has(&warnings, &["`watch`"]));
        assert_eq!(warnings.len(), 7, "{warnings:#?}");
    }

    #[test]
    fn session_manager_example() {
        let (_, warnings, c) = import(SM);
        let s = &c.services["session-manager"];
        assert_eq!(s.command, "node");
        assert_eq!(
            s.args,
            vec![
                "--max-old-space-size=1536",
                "--experimental-modules",
                "index.js"
            ]
        );
        assert_eq!(s.env["PORT"].value, "3001");
        assert_eq!(s.env["NODE_ENV"].value, "production");
        assert_eq!(s.max_memory, Some(1 << 30));
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.max_restarts, 5);
        assert_eq!(s.min_uptime, Duration::from_secs(30));
        assert_eq!(s.backoff.initial, Duration::from_millis(500));
        assert_eq!(s.backoff.max, Duration::from_secs(15));
        assert_eq!(s.stop_timeout, Duration::from_secs(30));
        assert!(s.ready.is_none());
        assert!(s.stop_exit_codes.is_empty());
        assert!(has(
            &warnings,
            &["session-manager", "`out_file`", "lmctl logs"]
        ));
        assert!(has(&warnings, &["restart_delay"]));
        assert!(!has(&warnings, &["wait_ready"]));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn json_file_with_everything() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("present.env"), "A=1\n").unwrap();
        let p = write(
            dir.path(),
            "eco.json",
            r#"{
              "apps": [
                {
                  "name": "api server!",
                  "script": "./bin/api",
                  "cwd": "srv",
                  "args": "--port 8080 --msg 'hello world' \"a \\\"b\\\"\"",
                  "env": { "PORT": 8080, "PRICE": "$5 ${x}", "FLAG": true },
                  "env_production": { "DB": "prod", "LEVEL": "warn" },
                  "autorestart": false,
                  "restart_delay": 2000,
                  "max_memory_restart": 314572800,
                  "kill_timeout": 1600,
                  "listen_timeout": 5000,
                  "cron_restart": "0 3 * * *",
                  "instances": 4,
                  "exec_mode": "cluster",
                  "frobnicate": 1
                },
                {
                  "script": "worker.js",
                  "interpreter_args": ["--env-file=missing.env", "--env-file", "present.env", "--inspect"],
                  "args": ["one", 2],
                  "autostart": false,
                  "wait_ready": true,
                  "min_uptime": 5000,
                  "stop_exit_codes": 3
                },
                { "name": "worker", "script": "python/job.py", "interpreter": "/usr/bin/python3.11" },
                { "name": "sh", "script": "run.sh", "interpreter": "none" }
              ]
            }"#,
        );
        let eco = load(&p).unwrap();
        let source = p.to_string_lossy().into_owned();
        let (text, warnings) = convert(&eco, &source).unwrap();
        let c = check_at(&dir.path().join("supervisor.toml"), &text);
        let names: Vec<&str> = c.services.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["api-server-", "sh", "worker", "worker-2"]);

        let api = &c.services["api-server-"];
        assert_eq!(
            api.command,
            dir.path().join("srv/bin/api").to_string_lossy()
        );
        assert_eq!(
            api.args,
            vec!["--port", "8080", "--msg", "hello world", "a \"b\""]
        );
        assert_eq!(api.cwd, dir.path().join("srv"));
        assert!(has(
            &warnings,
            &["`listen_timeout`", "only used with `wait_ready`"]
        ));
        assert_eq!(api.env["PORT"].value, "8080");
        assert_eq!(api.env["PRICE"].value, "$5 ${x}");
        assert_eq!(api.env["FLAG"].value, "true");
        assert!(!api.env.contains_key("DB"));
        assert_eq!(api.restart, RestartPolicy::Never);
        assert_eq!(api.backoff.initial, Duration::from_secs(2));
        assert_eq!(api.backoff.max, Duration::from_secs(2));
        assert_eq!(api.backoff.factor, 1.0);
        assert_eq!(api.max_memory, Some(300 << 20));
        assert_eq!(api.stop_timeout, Duration::from_millis(1600));
        assert!(api.ready.is_none());
        assert!(has(&warnings, &["renamed to `api-server-`"]));
        assert!(has(
            &warnings,
            &["env_production", "--env production", "DB, LEVEL"]
        ));
        assert!(has(&warnings, &["cron_restart", "systemd timer"]));
        assert!(has(&warnings, &["`instances`", "one service per copy"]));
        assert!(has(&warnings, &["`exec_mode`", "cluster"]));
        assert!(has(&warnings, &["`frobnicate`", "not a PM2 option"]));

        // Named after the script; a second "worker" gets a suffix.
        let w = &c.services["worker"];
        assert_eq!(w.command, "node");
        assert_eq!(w.args, vec!["--inspect", "worker.js", "one", "2"]);
        assert!(!w.autostart);
        assert_eq!(w.min_uptime, Duration::from_secs(5));
        assert_eq!(w.stop_exit_codes, vec![3]);
        let ready = w.ready.as_ref().unwrap();
        assert!(ready.notify);
        assert_eq!(ready.timeout, Duration::from_secs(30));
        assert!(has(&warnings, &["worker: `wait_ready`", "NOTIFY_SOCKET"]));
        // Node's --env-file becomes env_file; the missing one is optional.
        assert!(
            text.contains("env_file = [\"-missing.env\", \"present.env\"]"),
            "{text}"
        );
        assert!(has(&warnings, &["missing.env does not exist", "optional"]));

        let py = &c.services["worker-2"];
        assert_eq!(py.command, "/usr/bin/python3.11");
        assert_eq!(py.args, vec!["python/job.py"]);
        assert!(has(&warnings, &["already exists", "worker-2"]));

        let sh = &c.services["sh"];
        assert_eq!(sh.command, "run.sh");
        assert!(sh.args.is_empty());
    }

    #[test]
    fn bare_array_and_single_app() {
        let arr =
            serde_json::json!([{ "name": "a", "script": "a.js" }, { "name": "b", "script": "b" }]);
        let (text, w) = convert(&arr, "eco.json").unwrap();
        let c = check(&text);
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services["b"].command, "b");
        assert!(w.is_empty(), "{w:#?}");

        let one =
            serde_json::json!({ "name": "solo", "script": "server.js", "env": { "PORT": "80" } });
        let (text, _) = convert(&one, "eco.json").unwrap();
        let c = check(&text);
        assert_eq!(c.services["solo"].args, vec!["server.js"]);
        assert_eq!(c.services["solo"].env["PORT"].value, "80");
    }

    #[test]
    fn nonsense_is_a_clear_error() {
        let e = convert(&serde_json::json!(42), "eco.json").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("not a PM2 ecosystem"), "{msg}");
        assert!(msg.contains("a number (42)"), "{msg}");

        let e = convert(&serde_json::json!({ "foo": 1 }), "eco.json").unwrap_err();
        assert!(e.to_string().contains("neither `apps` nor `script`"), "{e}");

        let e = convert(&serde_json::json!({ "apps": [] }), "eco.json").unwrap_err();
        assert!(matches!(e, Pm2Error::NoApps { .. }), "{e}");

        let e = convert(
            &serde_json::json!({ "apps": [{ "name": "x" }] }),
            "eco.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("app #1 has no `script`"), "{e}");

        let e = convert(&serde_json::json!({ "apps": ["x"] }), "eco.json").unwrap_err();
        assert!(e.to_string().contains("app #1 is a string"), "{e}");
    }

    #[test]
    fn bad_json_and_yaml_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "eco.json", "{ apps: [ }");
        let e = load(&p).unwrap_err();
        assert!(e.to_string().contains("is not valid JSON"), "{e}");
        let p = write(dir.path(), "process.yml", "apps: []");
        let e = load(&p).unwrap_err();
        assert!(
            e.to_string()
                .contains("YML ecosystem files are not supported"),
            "{e}"
        );
        let e = load(&dir.path().join("nope.json")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn node_missing_is_a_clear_error() {
        let e = load_with_node(Path::new(HUB), Path::new("/nonexistent/node")).unwrap_err();
        assert!(matches!(e, Pm2Error::NodeMissing { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/node` was not found"), "{msg}");
        assert!(msg.contains("JSON.stringify"), "{msg}");
        assert!(msg.contains(".json file"), "{msg}");
    }

    #[test]
    fn node_errors_and_esm() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "broken.config.js",
            "module.exports = { apps: [ ;\n",
        );
        let e = load(&p).unwrap_err();
        assert!(matches!(e, Pm2Error::NodeFailed { .. }), "{e}");
        assert!(e.to_string().contains("SyntaxError"), "{e}");

        let p = write(
            dir.path(),
            "eco.mjs",
            "export default { apps: [{ name: 'm', script: 'm.js', env: { X: process.env.NOPE_NOT_SET ?? 'd' } }] };\n",
        );
        let v = load(&p).unwrap();
        assert_eq!(v["apps"][0]["env"]["X"], "d");

        // A timer left running must not keep the import waiting.
        let p = write(
            dir.path(),
            "timer.config.cjs",
            "setInterval(() => {}, 1000); module.exports = { apps: [{ script: 't.js' }] };\n",
        );
        let v = load(&p).unwrap();
        assert_eq!(v["apps"][0]["script"], "t.js");
    }

    #[test]
    fn helpers() {
        assert_eq!(
            shell_split(r#"a  'b c' "d \"e\" \$f" g\ h"#).unwrap(),
            vec!["a", "b c", "d \"e\" $f", "g h"]
        );
        assert!(shell_split("'open").is_err());
        assert_eq!(fmt_ms(100), "100ms");
        assert_eq!(fmt_ms(15_000), "15s");
        assert_eq!(fmt_ms(120_000), "2m");
        assert_eq!(duration(&serde_json::json!("10s")).unwrap(), 10_000);
        assert_eq!(duration(&serde_json::json!("1500")).unwrap(), 1500);
        assert!(duration(&serde_json::json!("soon")).is_err());
        assert_eq!(memory(&serde_json::json!("1024M")).unwrap(), 1 << 30);
        assert_eq!(memory(&serde_json::json!("300m")).unwrap(), 300 << 20);
        assert_eq!(memory(&serde_json::json!("512K")).unwrap(), 512 << 10);
        assert!(memory(&serde_json::json!("lots")).is_err());
        assert_eq!(fmt_bytes(1 << 30), "1GiB");
        assert_eq!(fmt_bytes(1000), "1000");
        assert_eq!(q("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(key("NODE_ENV"), "NODE_ENV");
        assert_eq!(key("a.b"), "\"a.b\"");
    }
}
