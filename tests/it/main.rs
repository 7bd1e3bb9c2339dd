//! Integration tests: the real daemon, real processes, real pids.
#![allow(clippy::unwrap_used)]

mod harness;
mod obs_util;

mod alerts;
mod chaos;
mod chromium;
mod cli_verbs;
mod config_errors;
mod config_fuzz;
mod control;
mod edges;
mod env_exact;
mod events;
mod import_pm2;
mod incidents;
mod lifecycle;
mod logs;
mod metrics;
mod monit;
mod readiness;
mod robustness;
mod systemd_unit;
mod tree;
mod truth;
