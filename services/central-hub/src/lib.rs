//! central-hub: the LeadMaster HTTP API.
//!
//! Layout, outside in:
//! - [`config`]: environment → validated [`config::Config`], one-line errors.
//! - [`server`]: database + listener + graceful shutdown wiring.
//! - [`http`]: routes (thin), auth extractors, error shape, request logging, shared state.
//! - [`controllers`]: handlers; validate input and shape answers.
//! - [`service`]: the QR authorization rule (enabled, not revoked, not expired).
//! - [`db`]: pools, migrations and the repository (SQL only).
//! - [`session_manager`]: bounded HTTP client for the proxied routes.
//! - [`system`]: process facts (RSS) for `/status`.

pub mod config;
pub mod controllers;
pub mod db;
pub mod http;
pub mod server;
pub mod service;
pub mod session_manager;
pub mod system;
