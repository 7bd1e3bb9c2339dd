//! One integration-test binary for central-hub (see STYLE.md: one binary, modules by behaviour).
//!
//! Everything here is real: the hub binary, SQLite files in temp dirs, a
//! MariaDB server owned by the test, and a fake session-manager listening on
//! loopback. Every process started is killed by a drop guard.

#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod flood;
mod harness;
mod http_admin;
mod http_lifecycle;
mod http_proxy;
mod mariadb;
mod repository;
mod revoke;
mod status;
mod tokens;
mod validation;
