//! Request handlers: parse and validate input, call the service or the
//! session-manager client, shape the JSON answer.

pub mod admin;
pub mod health;
pub mod whatsapp;
