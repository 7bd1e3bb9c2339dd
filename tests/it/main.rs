//! Integration tests: the real daemon, real processes, real pids.
#![allow(clippy::unwrap_used)]

mod harness;
mod obs_util;

mod alerts;
mod chromium;
mod config_errors;
mod control;
mod edges;
mod env_exact;
mod events;
mod import_pm2;
mod incidents;
mod lifecycle;
mod logs;
mod metrics;
mod readiness;
mod systemd_unit;
mod tree;
mod truth;
