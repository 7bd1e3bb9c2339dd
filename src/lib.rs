//! LeadMaster Supervisor: a process supervisor daemon (`leadmaster-supervisord`) and its CLI
//! (`lmctl`).
//!
//! Layout: `config` turns `supervisor.toml` into a validated [`config::Config`]; `spawn`
//! starts children with exactly the declared environment and kills their whole tree;
//! `supervisor` is the one task that owns all service state; `probe` (readiness and health),
//! `logs` (capture, merge, rotate, tail) and `resources` (tree memory, CPU, orphans) report
//! to it through messages; `control` is the socket protocol shared by daemon and CLI;
//! `daemon` wires it all; `cli` is `lmctl`.

pub mod alerts;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod logs;
pub mod metrics;
pub mod pm2;
pub mod probe;
pub mod resources;
pub mod spawn;
pub mod supervisor;
pub mod systemd;
