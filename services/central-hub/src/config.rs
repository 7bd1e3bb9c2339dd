//! Configuration read once from the environment at start.
//!
//! Every problem is reported as one [`ConfigError`] whose `Display` is a single
//! line naming the variable and what to do, so `main` can print it and exit 1
//! before anything binds.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hyper::Uri;

/// Default database when `DATABASE_URL` is unset: an SQLite file relative to the cwd.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://var/hub.db";
/// Default bound on one proxied call to session-manager.
pub const DEFAULT_SESSION_MANAGER_TIMEOUT: Duration = Duration::from_secs(10);
/// HS256 is only as strong as its key: RFC 7518 §3.2 asks for a key at least as long as the
/// hash output (256 bits). A shorter secret can be brute-forced from one captured token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Default bound on receiving a complete request head (slow-header clients are cut off).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay silent with no request running. Node's
/// `keepAliveTimeout` (what the hub replaced) is 5 s; clients reconnect cheaply on loopback.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on receiving a request body once its head is in.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open client connections (lowered further to fit `RLIMIT_NOFILE`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Validated process configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:3001`.
    pub session_manager_base_url: String,
    pub session_manager_timeout: Duration,
    pub jwt_secret: String,
    pub database_url: String,
    /// Carried for the operator's benefit and shown in `/status`; nothing is sent by the hub itself.
    pub dry_run: bool,
    /// Limits of the HTTP server (see [`crate::http::serve`]).
    pub http: HttpLimits,
}

/// Bounds that keep the listener answering under a flood of slow or idle connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head must be complete this long after the server starts waiting for it.
    pub header_read_timeout: Duration,
    /// A connection with no request running and no byte moving for this long is closed.
    pub idle_timeout: Duration,
    /// A request body must be complete this long after its head (408 otherwise).
    pub body_timeout: Duration,
    /// At most this many client connections are open; at the cap the longest-idle one is closed.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A missing or malformed environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{var} {problem}; {fix}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get`, so tests need not touch the real environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let port_raw = required(
            &get,
            "PORT",
            "set PORT to the TCP port to listen on, e.g. PORT=3012",
        )?;
        let port = match port_raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(ConfigError {
                    var: "PORT",
                    problem: format!("={port_raw:?} is not a port number"),
                    fix: "set PORT to an integer between 1 and 65535, e.g. PORT=3012",
                })
            }
        };

        let sm_fix = "set SESSION_MANAGER_BASE_URL to session-manager's address, e.g. SESSION_MANAGER_BASE_URL=http://127.0.0.1:3001";
        let sm_raw = required(&get, "SESSION_MANAGER_BASE_URL", sm_fix)?;
        let session_manager_base_url = parse_base_url(&sm_raw).map_err(|problem| ConfigError {
            var: "SESSION_MANAGER_BASE_URL",
            problem,
            fix: sm_fix,
        })?;

        let jwt_fix = "set JWT_SECRET to the HS256 secret shared with the token issuer, at least 32 bytes (e.g. `openssl rand -hex 32`)";
        let jwt_secret = required(&get, "JWT_SECRET", jwt_fix)?;
        if jwt_secret.len() < MIN_JWT_SECRET_BYTES {
            // The value itself is never printed: even a weak secret is a secret.
            return Err(ConfigError {
                var: "JWT_SECRET",
                problem: format!(
                    "is {} bytes long, shorter than the {MIN_JWT_SECRET_BYTES} bytes HS256 needs",
                    jwt_secret.len()
                ),
                fix: jwt_fix,
            });
        }

        let bind = match get("BIND") {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(raw) => raw.trim().parse().map_err(|_| ConfigError {
                var: "BIND",
                problem: format!("={raw:?} is not an IP address"),
                fix: "set BIND to an address such as 127.0.0.1 or 0.0.0.0, or unset it",
            })?,
        };

        let database_url = match get("DATABASE_URL") {
            None => DEFAULT_DATABASE_URL.to_owned(),
            Some(raw) if raw.trim().is_empty() => DEFAULT_DATABASE_URL.to_owned(),
            Some(raw) => {
                let raw = raw.trim().to_owned();
                if !(raw.starts_with("sqlite:")
                    || raw.starts_with("mysql://")
                    || raw.starts_with("mariadb://"))
                {
                    return Err(ConfigError {
                        var: "DATABASE_URL",
                        problem: format!("={:?} has an unsupported scheme", redact_url(&raw)),
                        fix: "use sqlite://PATH or mysql://USER:PASS@HOST:PORT/DB, or unset it for sqlite://var/hub.db",
                    });
                }
                raw
            }
        };

        let dry_run = match get("DRY_RUN") {
            None => true,
            Some(raw) => parse_bool(&raw).ok_or_else(|| ConfigError {
                var: "DRY_RUN",
                problem: format!("={raw:?} is not a boolean"),
                fix: "set DRY_RUN to true or false (default true)",
            })?,
        };

        let session_manager_timeout = match get("SESSION_MANAGER_TIMEOUT") {
            None => DEFAULT_SESSION_MANAGER_TIMEOUT,
            Some(raw) => parse_duration(&raw).ok_or_else(|| ConfigError {
                var: "SESSION_MANAGER_TIMEOUT",
                problem: format!("={raw:?} is not a duration"),
                fix: "set SESSION_MANAGER_TIMEOUT like 10s, 500ms or 10 (seconds); must be > 0",
            })?,
        };

        let duration_var = |var: &'static str, default: Duration, fix: &'static str| match get(var)
        {
            None => Ok(default),
            Some(raw) => parse_duration(&raw).ok_or_else(|| ConfigError {
                var,
                problem: format!("={raw:?} is not a duration"),
                fix,
            }),
        };
        let header_read_timeout = duration_var(
            "HTTP_HEADER_TIMEOUT",
            DEFAULT_HEADER_READ_TIMEOUT,
            "set HTTP_HEADER_TIMEOUT like 10s or 500ms; must be > 0 (default 10s)",
        )?;
        let idle_timeout = duration_var(
            "HTTP_IDLE_TIMEOUT",
            DEFAULT_IDLE_TIMEOUT,
            "set HTTP_IDLE_TIMEOUT like 5s or 500ms; must be > 0 (default 5s)",
        )?;
        let body_timeout = duration_var(
            "HTTP_BODY_TIMEOUT",
            DEFAULT_BODY_TIMEOUT,
            "set HTTP_BODY_TIMEOUT like 10s or 500ms; must be > 0 (default 10s)",
        )?;
        let max_connections = match get("HTTP_MAX_CONNECTIONS") {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(ConfigError {
                    var: "HTTP_MAX_CONNECTIONS",
                    problem: format!("={raw:?} is not a positive integer"),
                    fix:
                        "set HTTP_MAX_CONNECTIONS to the most client connections to keep open, e.g. 1024",
                }),
            },
        };

        Ok(Config {
            bind,
            port,
            session_manager_base_url,
            session_manager_timeout,
            jwt_secret,
            database_url,
            dry_run,
            http: HttpLimits {
                header_read_timeout,
                idle_timeout,
                body_timeout,
                max_connections,
            },
        })
    }
}

fn required(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    fix: &'static str,
) -> Result<String, ConfigError> {
    match get(var) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(ConfigError {
            var,
            problem: "is empty".into(),
            fix,
        }),
        None => Err(ConfigError {
            var,
            problem: "is not set".into(),
            fix,
        }),
    }
}

/// Accepts `http://host[:port][/prefix]` and returns it without a trailing slash.
fn parse_base_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| format!("={raw:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("={raw:?} does not start with http://"));
    }
    if uri.authority().is_none() {
        return Err(format!("={raw:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("={raw:?} carries a query string"));
    }
    Ok(trimmed.to_owned())
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds; zero is rejected.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let s = raw.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// Hides a password in a database URL before it is printed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}://{}:***{}", &url[..s], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    const OK: [(&str, &str); 3] = [
        ("PORT", "3012"),
        ("SESSION_MANAGER_BASE_URL", "http://127.0.0.1:3001/"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn defaults_apply() {
        let c = cfg(&OK).unwrap();
        assert_eq!(c.port, 3012);
        assert_eq!(c.session_manager_base_url, "http://127.0.0.1:3001");
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert!(c.dry_run);
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.session_manager_timeout, Duration::from_secs(10));
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.http.body_timeout, Duration::from_secs(10));
        assert_eq!(c.http.max_connections, 1024);
    }

    #[test]
    fn each_required_var_is_named_when_missing() {
        for var in ["PORT", "SESSION_MANAGER_BASE_URL", "JWT_SECRET"] {
            let rest: Vec<_> = OK.iter().copied().filter(|(k, _)| *k != var).collect();
            let e = cfg(&rest).unwrap_err();
            assert_eq!(e.var, var);
            let line = e.to_string();
            assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn malformed_values_are_rejected() {
        for (k, v) in [
            ("PORT", "0"),
            ("PORT", "abc"),
            ("SESSION_MANAGER_BASE_URL", "ftp://x"),
            ("SESSION_MANAGER_BASE_URL", "localhost:3001"),
            ("BIND", "nowhere"),
            ("DRY_RUN", "maybe"),
            ("SESSION_MANAGER_TIMEOUT", "0s"),
            ("SESSION_MANAGER_TIMEOUT", "10h"),
            ("DATABASE_URL", "postgres://x"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcde"),
            ("HTTP_HEADER_TIMEOUT", "0"),
            ("HTTP_IDLE_TIMEOUT", "soon"),
            ("HTTP_BODY_TIMEOUT", "-1s"),
            ("HTTP_MAX_CONNECTIONS", "0"),
        ] {
            let mut pairs = OK.to_vec();
            pairs.retain(|(kk, _)| *kk != k);
            pairs.push((k, v));
            assert_eq!(cfg(&pairs).unwrap_err().var, k, "{k}={v}");
        }
    }

    #[test]
    fn a_short_jwt_secret_is_named_but_never_printed() {
        let mut pairs = OK.to_vec();
        pairs.retain(|(k, _)| *k != "JWT_SECRET");
        pairs.push(("JWT_SECRET", "hunter2-hunter2"));
        let line = cfg(&pairs).unwrap_err().to_string();
        assert!(line.starts_with("JWT_SECRET is 15 bytes long"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("mysql://u:pw@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact_url("sqlite://var/hub.db"), "sqlite://var/hub.db");
    }
}
