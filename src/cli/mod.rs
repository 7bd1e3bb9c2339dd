//! `lmctl`: argument parsing and one function per verb. Exit codes: 0 success, 1 a failed
//! operation, 2 bad usage.

mod events;
mod launch;
mod render;
pub mod startup;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config;
use crate::control::client::{self, ClientError};
use crate::control::proto::{
    ErrorCode, LogsRequest, Request, Response, ServiceStatus, StateName, StreamFilter,
};

#[derive(Parser, Debug)]
#[command(
    name = "lmctl",
    version,
    about = "Control the LeadMaster supervisor daemon"
)]
pub struct Cli {
    /// The ecosystem file; it also tells where the daemon's socket is.
    #[arg(long, short = 'c', global = true, default_value = "supervisor.toml")]
    pub config: PathBuf,
    /// Talk to this socket instead of the one the config names.
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub verb: Verb,
}

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
    Status(JsonFlag),
    /// Last lines of a service's log, or of the merged log.
    Logs(LogsArgs),
    /// The environment the service's process really got.
    Env {
        service: String,
        /// Show secret-looking values instead of masking them.
        #[arg(long)]
        reveal: bool,
        #[arg(long)]
        json: bool,
    },
    /// Config, state, process tree, exits, probes and events of one service.
    Show {
        service: String,
        #[arg(long)]
        json: bool,
    },
    /// Send a signal to a service's main process.
    Signal { signal: String, service: String },
    /// Stop every service and the daemon.
    Shutdown,
    /// The event history (kept across daemon restarts): spawns, exits, restarts, alerts...
    Events(events::EventsArgs),
    /// Alert rules with their state; `alerts test RULE` sends a test message.
    Alerts(events::AlertsArgs),
    /// Is a daemon running on this config's socket?
    Ping(JsonFlag),
    /// Convert a PM2 ecosystem file (.json, or .js/.cjs evaluated with node) to
    /// supervisor.toml on stdout; a warning on stderr for each option with no meaning here.
    ImportPm2 { file: PathBuf },
    /// Print the systemd unit for this config (`--install` writes it to /etc/systemd/system).
    Startup {
        #[arg(long)]
        install: bool,
    },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StartArgs {
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
    pub service: Option<String>,
    #[arg(short = 'n', long = "lines", default_value_t = 50)]
    pub lines: usize,
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[arg(long, conflicts_with = "out")]
    pub err: bool,
    #[arg(long)]
    pub out: bool,
    /// Only lines at most this old, like "10m".
    #[arg(long, value_parser = parse_dur)]
    pub since: Option<Duration>,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    config::units::parse_duration(s)
}

/// Outcome of a verb, mapped to the exit code by the binary.
pub enum Outcome {
    Ok,
    /// Exit 1: the operation failed.
    Failed,
    /// Exit 3: `status` found a service in `failed` (as supervisorctl does).
    ServiceFailed,
}

impl Outcome {
    pub fn code(&self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::ServiceFailed => 3,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let ctx = Ctx {
        config: cli.config.clone(),
        socket_override: cli.socket.clone(),
    };
    match cli.verb {
        Verb::Check(f) => check(&ctx, f.json),
        Verb::Start(a) => start(&ctx, a, false),
        Verb::Restart(a) => start(&ctx, a, true),
        Verb::Stop(a) => stop(&ctx, a),
        Verb::Reload => reload(&ctx),
        Verb::Status(f) => status(&ctx, f.json),
        Verb::Logs(a) => logs(&ctx, a),
        Verb::Env {
            service,
            reveal,
            json,
        } => env(&ctx, service, reveal, json),
        Verb::Show { service, json } => show(&ctx, service, json),
        Verb::Signal { signal, service } => simple(&ctx, Request::Signal { service, signal }),
        Verb::Shutdown => shutdown(&ctx),
        Verb::Ping(f) => ping(&ctx, f.json),
        Verb::Events(a) => events::events(&ctx, a),
        Verb::Alerts(a) => events::alerts(&ctx, a),
        Verb::Startup { install } => startup_unit(&ctx, install),
        Verb::ImportPm2 { file } => import_pm2(&file),
    }
}

struct Ctx {
    config: PathBuf,
    socket_override: Option<PathBuf>,
}

impl Ctx {
    /// The socket: `--socket`, else what the config's `[supervisor]` says (read leniently,
    /// so a config with unrelated mistakes still finds its daemon).
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket_override {
            return Ok(s.clone());
        }
        socket_from_config(&self.config)
    }
}

pub fn socket_from_config(path: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {} ({e}); pass the config with --config or the socket with --socket",
            path.display()
        )
    })?;
    let table: toml::Table = toml::from_str(&text).unwrap_or_default();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let sup = table.get("supervisor").and_then(|v| v.as_table());
    let get = |k: &str| {
        sup.and_then(|t| t.get(k))
            .and_then(|v| v.as_str())
            .map(|s| dir.join(s))
    };
    Ok(get("socket").unwrap_or_else(|| {
        get("state_dir")
            .unwrap_or_else(|| dir.join("var"))
            .join("lmctl.sock")
    }))
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
    match config::load(&ctx.config) {
        Ok(c) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "services": c.start_order})
                );
            } else {
                println!(
                    "{}: ok ({} services, start order: {})",
                    ctx.config.display(),
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
                eprintln!(
                    "lmctl: {} problem(s) in {}",
                    errors.len(),
                    ctx.config.display()
                );
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
    if let Ok(disk) = config::load(&ctx.config) {
        for n in names.iter().filter(|n| disk.services.contains_key(*n)) {
            eprintln!(
                "lmctl: `{n}` is in {} but the running daemon has not loaded it yet: run `lmctl reload` first",
                ctx.config.display()
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
        launch::ensure_daemon(&ctx.config, &socket)?;
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

fn status(ctx: &Ctx, json: bool) -> anyhow::Result<Outcome> {
    let extract = |r| match r {
        Response::Status { services } => Some(services),
        _ => None,
    };
    let mut any_failed = false;
    let extract = |r| {
        let s = extract(r)?;
        any_failed = s
            .iter()
            .any(|x: &ServiceStatus| x.state == StateName::Failed);
        Some(s)
    };
    let out = read_verb(ctx, Request::Status, json, extract, |s| {
        render::status_table(s)
    })?;
    Ok(match out {
        Outcome::Ok if any_failed => Outcome::ServiceFailed,
        o => o,
    })
}

fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<Outcome> {
    let stream = if a.err {
        StreamFilter::Err
    } else if a.out {
        StreamFilter::Out
    } else {
        StreamFilter::Both
    };
    let req = LogsRequest {
        service: a.service,
        lines: a.lines,
        follow: a.follow,
        stream,
        since_ms: a.since.map(|d| d.as_millis() as u64),
    };
    let mut failed = false;
    client::stream(&ctx.socket()?, Request::Logs(req), |resp| match resp {
        Response::LogLine { line } => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) ends the follow quietly.
            writeln!(out, "{line}").is_ok() && out.flush().is_ok()
        }
        other => {
            failed |= print_error(&other);
            false
        }
    })?;
    Ok(if failed { Outcome::Failed } else { Outcome::Ok })
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

fn show(ctx: &Ctx, service: String, json: bool) -> anyhow::Result<Outcome> {
    let extract = |r| match r {
        Response::Show { service } => Some(service),
        _ => None,
    };
    read_verb(ctx, Request::Show { service }, json, extract, |d| {
        render::detail(d)
    })
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
    let config = ctx.config.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "cannot find {} ({e}); pass the config with --config",
            ctx.config.display()
        )
    })?;
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().unwrap_or(Path::new("/usr/local/bin"));
    let workdir = config.parent().unwrap_or(Path::new("/"));
    let text = startup::unit(bin_dir, &config, workdir);
    if !install {
        print!("{text}");
        return Ok(Outcome::Ok);
    }
    let path = Path::new("/etc/systemd/system").join(startup::UNIT_NAME);
    std::fs::write(&path, text)
        .map_err(|e| anyhow::anyhow!("cannot write {} ({e}); run as root", path.display()))?;
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
