//! HTTP plumbing shared by the controllers: state, auth, errors, routing, logging.

pub mod auth;
pub mod body;
pub mod error;
pub mod logging;
pub mod routes;
pub mod serve;
pub mod state;
