//! `lmctl`: argument parsing and one function per verb. Exit codes: 0 success, 1 a failed
//! operation, 2 bad usage.

mod complete;
mod discover;
mod events;
mod launch;
mod logs;
mod monit;
mod pretty;
mod render;
pub mod startup;
mod status;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config;
use crate::control::client::{self, ClientError};
use crate::control::proto::{ErrorCode, Request, Response};

/// Shown under `lmctl --help`.
const EXAMPLES: &str = "\
Examples:
  lmctl start                      start the daemon if needed, then every autostart service
  lmctl ls                         one line per service (alias of `status`)
  lmctl status web worker --json   two services as JSON
  lmctl logs web worker -f         both logs merged in time order, following
  lmctl logs --grep 'timeout|5..' --json
  lmctl restart web                restart one service and wait until it is ready
  lmctl signal SIGUSR1 web         send a signal to the service's main process
  lmctl monit                      live view: state, CPU, memory, tree, log tail
  lmctl completions bash > /etc/bash_completion.d/lmctl

The config is --config FILE, else $LMCTL_CONFIG, else ./supervisor.toml, else
/etc/leadmaster/supervisor.toml. Exit codes: 0 ok, 1 an operation failed, 2 bad usage.";

#[derive(Parser, Debug)]
#[command(
    name = "lmctl",
    version = VERSION,
    about = "Control the LeadMaster supervisor daemon",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The ecosystem file; it also tells where the daemon's socket is. Default: $LMCTL_CONFIG,
    /// else ./supervisor.toml, else /etc/leadmaster/supervisor.toml.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Talk to this socket instead of the one the config names.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub verb: Verb,
}

/// `lmctl --version`: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LM_GIT_COMMIT"), ")");

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Validate the config; print each problem as file:line:col: message.
    Check(JsonFlag),
    /// Start the daemon if needed, then services (all autostart ones when none named).
    Start(StartArgs),
    /// Stop services (all when none named) and wait until their whole trees are gone.
    Stop(StopArgs),
    /// Restart services (all when none named).
    Restart(StartArgs),
    /// Re-read the config and apply the difference.
    Reload,
    /// One line per service: state, pid, uptime, restarts, cpu, memory, processes, health.
    #[command(
        visible_aliases = ["ls", "list"],
        after_help = "Examples:
  lmctl ls                       every service
  lmctl status web --json        one service as JSON
  lmctl status --watch 5s        the table again every 5 seconds"
    )]
    Status(StatusArgs),
    /// Last lines of services' logs (merged in time order), or of the merged log.
    #[command(after_help = "Examples:
  lmctl logs -f                        every service and the daemon's events, following
  lmctl logs web worker -n 200         two services merged in time order
  lmctl logs web --err --since 10m     stderr of the last ten minutes
  lmctl logs --grep 'panic|timeout' --json | jq -r .line

Without a running daemon, the log files are read directly (and said so on stderr).")]
    Logs(LogsArgs),
    /// Empty log files while the daemon keeps writing (all of them when no service is named).
    #[command(after_help = "Examples:
  lmctl flush              every log file (rotated ones are deleted)
  lmctl flush web          web's own .out/.err files; the merged log keeps its lines")]
    Flush {
        /// Services whose own .out/.err logs to empty; none means every log file.
        services: Vec<String>,
    },
    /// The environment the service's process really got.
    Env {
        /// The service.
        service: String,
        /// Show secret-looking values instead of masking them.
        #[arg(long)]
        reveal: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Config, state, process tree, exits, probes and events of services.
    #[command(visible_alias = "describe")]
    Show {
        /// One or more services.
        #[arg(required = true)]
        services: Vec<String>,
        /// Print JSON (an object for one service, an array for several).
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a service's main process.
    Signal {
        /// A signal name or number: SIGTERM, TERM, 15.
        signal: String,
        /// The service.
        service: String,
    },
    /// Full-screen live view of every service (needs a terminal; else see `status --watch`).
    Monit,
    /// Stop every service and the daemon.
    #[command(visible_alias = "kill")]
    Shutdown,
    /// The event history (kept across daemon restarts): spawns, exits, restarts, alerts...
    Events(events::EventsArgs),
    /// Alert rules with their state; `alerts test RULE` sends a test message.
    Alerts(events::AlertsArgs),
    /// Is a daemon running on this config's socket?
    Ping(JsonFlag),
    /// Versions of lmctl and of the running daemon.
    Version(JsonFlag),
    /// Convert a PM2 ecosystem file (.json, or .js/.cjs evaluated with node) to
    /// supervisor.toml on stdout; a warning on stderr for each option with no meaning here.
    ImportPm2 {
        /// The PM2 ecosystem file.
        file: PathBuf,
    },
    /// Print the systemd unit for this config (`--install` writes it to /etc/systemd/system).
    Startup {
        /// Write the unit to /etc/systemd/system instead of printing it.
        #[arg(long)]
        install: bool,
    },
    /// Print a shell completion script: `lmctl completions bash > /etc/bash_completion.d/lmctl`.
    Completions {
        /// The shell.
        shell: complete::Shell,
    },
    /// Print the man page, or write one page per verb into a folder.
    Man {
        /// Write lmctl.1 and lmctl-VERB.1 into this folder instead of printing lmctl.1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only these services (all when none named).
    pub services: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Reprint the table every INTERVAL (default 2s) until interrupted.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = parse_dur)]
    pub watch: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Services to act on; none means all (autostart ones, for start).
    pub services: Vec<String>,
    /// Return at once instead of waiting until the services are ready.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for readiness before giving up.
    #[arg(long, default_value = "5m", value_parser = parse_dur)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Services to stop; none means all.
    pub services: Vec<String>,
    /// Return at once instead of waiting until the process trees are gone.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the trees to be gone before giving up.
    #[arg(long, default_value = "5m", value_parser = parse_dur)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Services to show, merged in time order; none means the merged log of all.
    pub services: Vec<String>,
    /// How many lines to show before following.
    #[arg(short = 'n', long = "lines", default_value_t = 50)]
    pub lines: usize,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only stderr lines.
    #[arg(long, conflicts_with = "out")]
    pub err: bool,
    /// Only stdout lines.
    #[arg(long)]
    pub out: bool,
    /// Only lines at most this old, like "10m".
    #[arg(long, value_parser = parse_dur)]
    pub since: Option<Duration>,
    /// Only lines matching this regular expression (applied before -n).
    #[arg(long, value_name = "PATTERN")]
    pub grep: Option<String>,
    /// One JSON object per line: time, service, stream, line.
    #[arg(long)]
    pub json: bool,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s)
}

/// Outcome of a verb, mapped to the exit code by the binary.
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1: the operation failed (the reason was printed).
    Failed,
    /// Exit 2: the command line was wrong (the reason and a hint were printed).
    Usage,
    /// Exit 3: `status` found a service in `failed` (as supervisorctl does).
    ServiceFailed,
}

impl Outcome {
    pub fn code(&self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Usage => 2,
            Outcome::ServiceFailed => 3,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let ctx = Ctx {
        config_flag: cli.config.clone(),
        socket_override: cli.socket.clone(),
    };
    match cli.verb {
        Verb::Check(f) => check(&ctx, f.json),
        Verb::Start(a) => start(&ctx, a, false),
        Verb::Restart(a) => start(&ctx, a, true),
        Verb::Stop(a) => stop(&ctx, a),
        Verb::Reload => reload(&ctx),
        Verb::Status(a) => status::status(&ctx, a),
        Verb::Logs(a) => logs::logs(&ctx, a),
        Verb::Flush { services } => logs::flush(&ctx, &services),
        Verb::Env {
            service,
            reveal,
            json,
        } => env(&ctx, service, reveal, json),
        Verb::Show { services, json } => status::show(&ctx, &services, json),
        Verb::Signal { signal, service } => signal_verb(&ctx, signal, service),
        Verb::Monit => monit::monit(&ctx),
        Verb::Shutdown => shutdown(&ctx),
        Verb::Ping(f) => ping(&ctx, f.json),
        Verb::Version(f) => version(&ctx, f.json),
        Verb::Events(a) => events::events(&ctx, a),
        Verb::Alerts(a) => events::alerts(&ctx, a),
        Verb::Startup { install } => startup_unit(&ctx, install),
        Verb::ImportPm2 { file } => import_pm2(&file),
        Verb::Completions { shell } => complete::completions(shell),
        Verb::Man { dir } => complete::man(dir.as_deref()),
    }
}

/// What every verb needs: where the config is (found on first use) and the socket.
pub(crate) struct Ctx {
    config_flag: Option<PathBuf>,
    socket_override: Option<PathBuf>,
}

impl Ctx {
    /// The config file, by the discovery order (`--config`, `$LMCTL_CONFIG`,
    /// `./supervisor.toml`, `/etc/leadmaster/supervisor.toml`).
    fn config(&self) -> anyhow::Result<PathBuf> {
        discover::config_path(
            self.config_flag.as_deref(),
            std::env::var_os("LMCTL_CONFIG").as_deref(),
        )
    }

    /// The socket: `--socket`, else what the config's `[supervisor]` says (read leniently,
    /// so a config with unrelated mistakes still finds its daemon).
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket_override {
            return Ok(s.clone());
        }
        socket_from_config(&self.config()?)
    }

    /// The config, validated, when it is valid; `None` when it is missing or has errors
    /// (callers then fall back to what the daemon or the lenient reading says).
    fn loaded(&self) -> Option<config::Config> {
        config::load(&self.config().ok()?).ok()
    }
}

pub fn socket_from_config(path: &Path) -> anyhow::Result<PathBuf> {
    let sup = lenient_supervisor(path)?;
    let dir = |key: &str| {
        sup.get(key)
            .and_then(|v| v.as_str())
            .map(|s| config_dir(path).join(s))
    };
    Ok(dir("socket").unwrap_or_else(|| {
        dir("state_dir")
            .unwrap_or(config_dir(path).join("var"))
            .join("lmctl.sock")
    }))
}

fn config_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// A `[supervisor]` path key read leniently (a config with other mistakes still answers),
/// resolved against the config's folder.
fn lenient_dir(path: &Path, key: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok(lenient_supervisor(path)?
        .get(key)
        .and_then(|v| v.as_str())
        .map(|s| config_dir(path).join(s)))
}

/// The `[supervisor]` table, read leniently. Only it is kept: building a table of every
/// service of a big config was most of what `lmctl status` cost.
fn lenient_supervisor(
    path: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, toml::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); pass the config with --config or the socket with --socket",
            path.display()
        )
    })?;
    #[derive(serde::Deserialize, Default)]
    struct Lenient {
        #[serde(default)]
        supervisor: std::collections::BTreeMap<String, toml::Value>,
    }
    let parse = |t: &str| toml::from_str::<Lenient>(t).ok().map(|l| l.supervisor);
    // A thousand services make a file of ~80 KB that takes milliseconds to parse, for two
    // keys: try the `[supervisor]` section alone first, the whole file when that is not
    // clear-cut.
    // The cut-out section has no header: its keys are the table itself.
    let bare = |t: &str| toml::from_str::<std::collections::BTreeMap<String, toml::Value>>(t).ok();
    if let Some(table) = supervisor_section(&text).and_then(|t| bare(&t)) {
        return Ok(table);
    }
    Ok(parse(&text).unwrap_or_default())
}

/// The text of a plain `[supervisor]` section (its header up to the next table header),
/// when nothing else in the file can set `supervisor` keys (a dotted `supervisor.` key
/// before any header). None means: parse the whole file.
fn supervisor_section(text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut in_root = true;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_root = false;
            if out.is_some() {
                break;
            }
            if t.trim_end() == "[supervisor]" {
                out = Some(String::new());
            }
            continue;
        }
        if in_root && t.starts_with("supervisor") {
            return None;
        }
        if let Some(o) = out.as_mut() {
            o.push_str(line);
            o.push('\n');
        }
    }
    out
}

/// The state dir's `logs/` folder, read leniently like the socket.
fn log_dir(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let path = ctx.config()?;
    Ok(lenient_dir(&path, "state_dir")?
        .unwrap_or(config_dir(&path).join("var"))
        .join("logs"))
}

fn print_error(resp: &Response) -> bool {
    match resp {
        Response::Error { code, message } => {
            eprintln!("lmctl: {message} [{}]", code.as_str());
            true
        }
        Response::ConfigErrors { errors } => {
            for e in errors {
                eprintln!("{e}");
            }
            eprintln!(
                "lmctl: the config has {} problem(s); nothing was changed",
                errors.len()
            );
            true
        }
        _ => false,
    }
}

fn ask(ctx: &Ctx, req: Request) -> anyhow::Result<Response> {
    Ok(client::request(&ctx.socket()?, req)?)
}

fn check(ctx: &Ctx, json: bool) -> anyhow::Result<Outcome> {
    let path = ctx.config()?;
    match config::check(&path) {
        Ok(c) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "services": c.start_order})
                );
            } else {
                println!(
                    "{}: ok ({} services, start order: {})",
                    path.display(),
                    c.services.len(),
                    c.start_order.join(" -> ")
                );
            }
            Ok(Outcome::Ok)
        }
        Err(errors) => {
            if json {
                println!("{}", serde_json::json!({"ok": false, "errors": errors}));
            } else {
                for e in &errors {
                    println!("{e}");
                }
                eprintln!("lmctl: {} problem(s) in {}", errors.len(), path.display());
            }
            Ok(Outcome::Failed)
        }
    }
}

fn simple(ctx: &Ctx, req: Request) -> anyhow::Result<Outcome> {
    let resp = ask(ctx, req)?;
    if print_error(&resp) {
        return Ok(Outcome::Failed);
    }
    if let Response::Outcomes { outcomes, warnings } = resp {
        wait::print_outcomes(&outcomes, &warnings);
    }
    Ok(Outcome::Ok)
}

/// A service named that the daemon does not know: when the file on disk has it, the
/// config was edited since the daemon loaded it.
fn hint_unknown(ctx: &Ctx, resp: &Response, names: &[String]) {
    let Response::Error {
        code: ErrorCode::UnknownService,
        ..
    } = resp
    else {
        return;
    };
    let Ok(path) = ctx.config() else { return };
    if let Ok(disk) = config::load(&path) {
        for n in names.iter().filter(|n| disk.services.contains_key(*n)) {
            eprintln!(
                "lmctl: `{n}` is in {} but the running daemon has not loaded it yet: run `lmctl reload` first",
                path.display()
            );
        }
    }
}

fn stop(ctx: &Ctx, a: StopArgs) -> anyhow::Result<Outcome> {
    let socket = ctx.socket()?;
    let resp = client::request(
        &socket,
        Request::Stop {
            services: a.services.clone(),
        },
    )?;
    if print_error(&resp) {
        hint_unknown(ctx, &resp, &a.services);
        return Ok(Outcome::Failed);
    }
    let Response::Outcomes { outcomes, warnings } = resp else {
        anyhow::bail!("the daemon sent an unexpected answer to stop");
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    if a.no_wait {
        wait::print_outcomes(&outcomes, &[]);
        return Ok(Outcome::Ok);
    }
    let names: Vec<String> = outcomes.iter().map(|o| o.service.clone()).collect();
    wait::until_stopped(&socket, &names, a.timeout)
}

fn start(ctx: &Ctx, a: StartArgs, restart: bool) -> anyhow::Result<Outcome> {
    let socket = ctx.socket()?;
    if !restart {
        launch::ensure_daemon(&ctx.config()?, &socket)?;
    }
    let req = if restart {
        Request::Restart {
            services: a.services.clone(),
        }
    } else {
        Request::Start {
            services: a.services.clone(),
        }
    };
    let resp = client::request(&socket, req)?;
    if print_error(&resp) {
        hint_unknown(ctx, &resp, &a.services);
        return Ok(Outcome::Failed);
    }
    let Response::Outcomes { outcomes, warnings } = resp else {
        anyhow::bail!("the daemon sent an unexpected answer");
    };
    wait::print_outcomes(&outcomes, &warnings);
    if a.no_wait {
        return Ok(Outcome::Ok);
    }
    let names: Vec<String> = outcomes.iter().map(|o| o.service.clone()).collect();
    wait::until_started(&socket, &names, a.timeout, &[])
}

fn reload(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let resp = ask(ctx, Request::Reload)?;
    if print_error(&resp) {
        return Ok(Outcome::Failed);
    }
    if let Response::Reload { diff } = resp {
        print!("{}", render::diff(&diff));
    }
    Ok(Outcome::Ok)
}

/// A verb that reads: ask, then print the answer as a table or as `--json`.
fn read_verb<T: serde::Serialize>(
    ctx: &Ctx,
    req: Request,
    json: bool,
    extract: impl FnOnce(Response) -> Option<T>,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<Outcome> {
    let resp = ask(ctx, req)?;
    if print_error(&resp) {
        return Ok(Outcome::Failed);
    }
    let value =
        extract(resp).ok_or_else(|| anyhow::anyhow!("the daemon sent an unexpected answer"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&value));
    }
    Ok(Outcome::Ok)
}

fn env(ctx: &Ctx, service: String, reveal: bool, json: bool) -> anyhow::Result<Outcome> {
    let extract = |r| match r {
        Response::Env { vars, .. } => Some(vars),
        _ => None,
    };
    read_verb(ctx, Request::Env { service, reveal }, json, extract, |v| {
        render::env_table(v)
    })
}

/// `lmctl signal SIGNAL SERVICE`, with a hint when the two are swapped.
fn signal_verb(ctx: &Ctx, signal: String, service: String) -> anyhow::Result<Outcome> {
    let is_signal = |s: &str| config::units::parse_signal(s).is_ok();
    if !is_signal(&signal) {
        if is_signal(&service) {
            eprintln!(
                "lmctl: `{signal}` is not a signal, but `{service}` is: the signal comes first.\n\
                 Try: lmctl signal {service} {signal}"
            );
        } else {
            eprintln!(
                "lmctl: `{signal}` is not a signal; use a name like SIGTERM, SIGHUP, SIGUSR1 \
                 (or TERM, or a number).\nUsage: lmctl signal SIGNAL SERVICE"
            );
        }
        return Ok(Outcome::Usage);
    }
    simple(ctx, Request::Signal { service, signal })
}

/// `lmctl version`: ours, and the running daemon's when there is one.
fn version(ctx: &Ctx, json: bool) -> anyhow::Result<Outcome> {
    let daemon = match ctx.socket().map(|s| client::request(&s, Request::Ping)) {
        Ok(Ok(Response::Pong { version, pid, .. })) => Some((version, pid)),
        _ => None,
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "lmctl": VERSION,
                "daemon": daemon.as_ref().map(|(v, pid)| serde_json::json!({"version": v, "pid": pid})),
            })
        );
    } else {
        println!("lmctl {VERSION}");
        match daemon {
            Some((v, pid)) => println!("leadmaster-supervisord {v} (pid {pid})"),
            None => println!("leadmaster-supervisord: not running"),
        }
    }
    Ok(Outcome::Ok)
}

fn ping(ctx: &Ctx, json: bool) -> anyhow::Result<Outcome> {
    match ask(ctx, Request::Ping) {
        Ok(Response::Pong {
            pid,
            instance,
            version,
            config,
            state_dir,
        }) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"pid": pid, "instance": instance, "version": version, "config": config, "state_dir": state_dir})
                );
            } else {
                println!("leadmaster-supervisord {version} running as pid {pid} ({config}, state in {state_dir})");
            }
            Ok(Outcome::Ok)
        }
        Ok(other) => {
            print_error(&other);
            Ok(Outcome::Failed)
        }
        Err(e) => {
            eprintln!("lmctl: {e}");
            Ok(Outcome::Failed)
        }
    }
}

fn shutdown(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let socket = ctx.socket()?;
    // Shutdown answers once every service has stopped: stop timeouts can add up.
    match client::request_within(&socket, Request::Shutdown, Duration::from_secs(3600)) {
        Ok(resp) => {
            if print_error(&resp) {
                return Ok(Outcome::Failed);
            }
            if let Response::ShutDown = resp {
                println!("all services stopped; daemon exited");
            }
            Ok(Outcome::Ok)
        }
        Err(ClientError::NotRunning { .. }) => {
            println!("no daemon is running on {}", socket.display());
            Ok(Outcome::Ok)
        }
        Err(e) => Err(e.into()),
    }
}

fn startup_unit(ctx: &Ctx, install: bool) -> anyhow::Result<Outcome> {
    let path = ctx.config()?;
    let config = path.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "cannot find {} ({e}); pass the config with --config",
            path.display()
        )
    })?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().unwrap_or(Path::new("/usr/local/bin"));
    let workdir = config.parent().unwrap_or(Path::new("/"));
    let config_text = std::fs::read_to_string(&config)
        .map_err(|e| anyhow::anyhow!("cannot read {} ({e})", config.display()))?;
    let plan = startup::Plan::from_toml(&config_text);
    let text = startup::unit(bin_dir, &config, workdir, &plan);
    if !install {
        print!("{text}");
        return Ok(Outcome::Ok);
    }
    let path = Path::new("/etc/systemd/system").join(startup::UNIT_NAME);
    std::fs::write(&path, text)
        .map_err(|e| anyhow::anyhow!("cannot write {} ({e}); run as root", path.display()))?;
    let state_dir = lenient_dir(&config, "state_dir")?.unwrap_or_else(|| workdir.join("var"));
    startup::ensure_user(startup::USER, &state_dir)?;
    println!("wrote {}; now run: systemctl daemon-reload && systemctl enable --now leadmaster-supervisord", path.display());
    Ok(Outcome::Ok)
}

fn import_pm2(file: &Path) -> anyhow::Result<Outcome> {
    let eco = crate::pm2::load(file)?;
    let name = file.display().to_string();
    let (toml, warnings) = crate::pm2::convert(&eco, &name)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    print!("{toml}");
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod lenient_tests {
    use super::{socket_from_config, supervisor_section};

    #[test]
    fn the_socket_follows_the_state_dir_and_socket_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("supervisor.toml");
        let services = "\n[services.a]\ncommand = \"x\"\n";
        for (head, want) in [
            (
                "[supervisor]\nstate_dir = \"/srv/lm\"\n",
                "/srv/lm/lmctl.sock",
            ),
            ("[supervisor]\nsocket = \"/run/lm.sock\"\n", "/run/lm.sock"),
            ("[supervisor]\nstate_dir = \"st\"\n", "st/lmctl.sock"),
            ("supervisor.state_dir = \"/d\"\n", "/d/lmctl.sock"),
            ("[logs]\nkeep = 2\n", "var/lmctl.sock"),
        ] {
            std::fs::write(&cfg, format!("{head}{services}")).expect("write");
            let got = socket_from_config(&cfg).expect("socket");
            assert_eq!(got, dir.path().join(want), "{head}");
        }
    }

    #[test]
    fn the_supervisor_section_is_cut_out_only_when_that_is_clear_cut() {
        let text = "[supervisor]\nstate_dir = \"v\"\n\n[services.a]\ncommand = \"x\"\n";
        assert_eq!(
            supervisor_section(text).as_deref(),
            Some("state_dir = \"v\"\n\n")
        );
        // A dotted key at the root could set it too: the whole file is read then.
        assert_eq!(
            supervisor_section("supervisor.socket = \"s\"\n[services.a]\n"),
            None
        );
        // No section: nothing to cut.
        assert_eq!(supervisor_section("[services.a]\ncommand = \"x\"\n"), None);
    }
}
