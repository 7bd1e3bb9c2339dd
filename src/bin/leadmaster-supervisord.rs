use std::path::PathBuf;

const HELP: &str = "\
The LeadMaster supervisor daemon: runs the services of a supervisor.toml.

Usage: leadmaster-supervisord [--config FILE]

Options:
  -c, --config FILE  the ecosystem file [default: supervisor.toml]
  -h, --help         print this help
  -V, --version      print the version

Environment:
  LM_LOG=LEVEL       diagnostics on stderr: error, warn, info (default), debug, trace
";

/// The daemon's few arguments, parsed by hand: a full argument parser was a sixth of the
/// binary's code, resident for the daemon's whole life.
fn parse_args() -> Result<PathBuf, String> {
    let mut config = PathBuf::from("supervisor.toml");
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("leadmaster-supervisord {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "-c" | "--config" => match args.next() {
                Some(v) => config = PathBuf::from(v),
                None => return Err(format!("{a} needs a file")),
            },
            _ => match a.strip_prefix("--config=") {
                Some(v) => config = PathBuf::from(v),
                None => return Err(format!("unexpected argument '{a}'")),
            },
        }
    }
    Ok(config)
}

fn main() {
    // One malloc arena for the daemon's three threads: a second arena (the log writer's,
    // a blocking thread's) kept ~0.2 MB of partly used pages resident, and these threads
    // allocate too little to contend.
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    lmsup::spawn::fork::cloexec_inherited();
    let config_path = match parse_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leadmaster-supervisord: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let level = std::env::var("LM_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in the journal or in daemon.out.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match lmsup::config::load(&config_path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "leadmaster-supervisord: {} problem(s) in the config; nothing was started",
                errors.len()
            );
            std::process::exit(1);
        }
    };
    // One thread runs the actor, the pumps, the probes and the control socket: the work is
    // small and bursty, and a second worker cost thread hand-offs on every tick and ~1 MB.
    // Blocking work (`/proc` scans, reaping, config loads) goes to spawn_blocking threads;
    // the log writer has its own. An idle blocking thread goes after 2 s, not tokio's 10:
    // the boot's (stale-instance reaping, cgroups made ahead) are gone soon after boot, and
    // a resource tick at a 1 s interval still finds its thread.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(16)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leadmaster-supervisord: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(lmsup::daemon::run(config)) {
        eprintln!("leadmaster-supervisord: {e}");
        std::process::exit(1);
    }
}
