use std::path::PathBuf;

use clap::Parser;

/// The LeadMaster supervisor daemon: runs the services of a supervisor.toml.
#[derive(Parser)]
#[command(name = "leadmaster-supervisord", version)]
struct Args {
    /// The ecosystem file.
    #[arg(long, short = 'c', default_value = "supervisor.toml")]
    config: PathBuf,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: not in the journal or in daemon.out.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match lmsup::config::load(&args.config) {
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
    // the log writer has its own.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(16)
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
