//! The control socket: protocol types shared by daemon and CLI, the daemon's server, and the
//! CLI's client. Only `proto` types cross the socket.

pub mod client;
pub mod proto;
pub mod server;
