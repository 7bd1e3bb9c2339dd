//! Configuration from the environment (DESIGN.md, "The services" → session-manager).
//!
//! Everything is read once at start; a missing or malformed value is a fatal
//! error naming the variable, so the service fails fast instead of half-starting.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP port to listen on (`PORT`, required).
    pub port: u16,
    /// Address to listen on (`BIND`, default 127.0.0.1).
    pub bind: IpAddr,
    /// Parent of the per-customer browser profiles (`TOKENS_DIR`), absolute.
    pub tokens_dir: PathBuf,
    /// `CHROMIUM_PATH` as given; resolved at each launch so that installing
    /// Chromium later does not need a restart.
    pub chromium_path: Option<PathBuf>,
    /// Page the browser opens (`WA_WEB_URL`), without a trailing slash.
    pub wa_web_url: String,
    /// Element whose `data-ref` attribute holds the QR string.
    pub qr_selector: String,
    /// Element present once the phone is linked.
    pub ready_selector: String,
    /// Button clicked on the send page.
    pub send_button_selector: String,
    /// Element of the "phone logged this session out" screen.
    pub logged_out_selector: String,
    /// Element of the "this number is banned" screen.
    pub banned_selector: String,
    /// Element of the "phone/computer not connected" screen or banner.
    pub disconnected_selector: String,
    /// How long a session may stay in INITIALIZING or AUTHENTICATED.
    pub init_timeout: Duration,
    /// First wait of a READY session that lost its link before relaunching;
    /// doubles per attempt.
    pub reconnect_backoff: Duration,
    /// Sessions reopened at once at start.
    pub restore_concurrency: usize,
    /// `/send` answers without touching the page.
    pub dry_run: bool,
    /// Sends waiting per session behind the one in progress.
    pub send_queue: usize,
    /// Largest `/send` body in bytes.
    pub max_body_bytes: usize,
    /// Most open HTTP connections.
    pub http_max_connections: usize,
    /// Time a new connection has to deliver its first request's headers.
    pub http_header_timeout: Duration,
    /// Time a keep-alive connection may sit between requests.
    pub http_idle_timeout: Duration,
    /// `USER_AGENT`; None = the browser's own with "HeadlessChrome" → "Chrome".
    pub user_agent: Option<String>,
    /// Most browsers alive at once.
    pub max_sessions: usize,
    /// How long terminal states keep their browser before it is destroyed.
    pub session_grace: Duration,
    /// Bound on destroying every browser at SIGTERM.
    pub shutdown_timeout: Duration,
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("required environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is invalid: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the config from any key lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let invalid =
            |name: &'static str, value: &str, expected: &'static str| ConfigError::Invalid {
                name,
                value: value.to_owned(),
                expected,
            };
        let port_s = get("PORT").ok_or(ConfigError::Missing("PORT"))?;
        let port: u16 = port_s
            .trim()
            .parse()
            .map_err(|_| invalid("PORT", &port_s, "a TCP port number 0-65535"))?;
        let bind = match get("BIND") {
            Some(b) => b
                .trim()
                .parse()
                .map_err(|_| invalid("BIND", &b, "an IP address"))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let tokens_dir = PathBuf::from(get("TOKENS_DIR").unwrap_or_else(|| "var/tokens".into()));
        let wa_web_url = get("WA_WEB_URL")
            .unwrap_or_else(|| "https://web.whatsapp.com".into())
            .trim_end_matches('/')
            .to_owned();
        if !(wa_web_url.starts_with("http://") || wa_web_url.starts_with("https://")) {
            return Err(invalid(
                "WA_WEB_URL",
                &wa_web_url,
                "an http:// or https:// URL",
            ));
        }
        let duration = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(name) {
                Some(v) => parse_duration(&v)
                    .ok_or_else(|| invalid(name, &v, "a duration like 60s, 500ms or 2m")),
                None => Ok(default),
            }
        };
        let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match get(name) {
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(invalid(name, &v, "a positive integer")),
                },
                None => Ok(default),
            }
        };
        let dry_run = match get("DRY_RUN").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => return Err(invalid("DRY_RUN", &v, "true or false")),
        };
        Ok(Config {
            port,
            bind,
            tokens_dir,
            chromium_path: get("CHROMIUM_PATH").map(PathBuf::from),
            wa_web_url,
            qr_selector: get("WA_QR_SELECTOR").unwrap_or_else(|| "div[data-ref]".into()),
            ready_selector: get("WA_READY_SELECTOR").unwrap_or_else(|| "#pane-side".into()),
            send_button_selector: get("WA_SEND_BUTTON_SELECTOR")
                .unwrap_or_else(|| r#"span[data-icon="send"]"#.into()),
            logged_out_selector: get("WA_LOGGED_OUT_SELECTOR")
                .unwrap_or_else(|| r#"[data-testid="logged-out"]"#.into()),
            banned_selector: get("WA_BANNED_SELECTOR")
                .unwrap_or_else(|| r#"[data-testid="banned"]"#.into()),
            disconnected_selector: get("WA_DISCONNECTED_SELECTOR")
                .unwrap_or_else(|| r#"[data-testid="disconnected"]"#.into()),
            init_timeout: duration("INIT_TIMEOUT", Duration::from_secs(90))?,
            reconnect_backoff: duration("RECONNECT_BACKOFF", Duration::from_secs(5))?,
            restore_concurrency: count("RESTORE_CONCURRENCY", 2)?,
            dry_run,
            send_queue: count("SEND_QUEUE", 5)?,
            max_body_bytes: count("MAX_BODY_BYTES", 256 * 1024)?,
            http_max_connections: count("HTTP_MAX_CONNECTIONS", 1024)?,
            http_header_timeout: duration("HTTP_HEADER_TIMEOUT", Duration::from_secs(10))?,
            http_idle_timeout: duration("HTTP_IDLE_TIMEOUT", Duration::from_secs(60))?,
            user_agent: get("USER_AGENT"),
            max_sessions: count("MAX_SESSIONS", 20)?,
            session_grace: duration("SESSION_GRACE", Duration::from_secs(60))?,
            shutdown_timeout: duration("SHUTDOWN_TIMEOUT", Duration::from_secs(15))?,
        })
    }

    /// The profile directory of one customer.
    pub fn profile_dir(&self, cliente_id: u64) -> PathBuf {
        self.tokens_dir.join(cliente_id.to_string())
    }

    /// The browser binary: `CHROMIUM_PATH`, else the first of `chromium`,
    /// `chromium-browser`, `google-chrome` on `PATH`.
    pub fn find_chromium(&self) -> Option<PathBuf> {
        if let Some(p) = &self.chromium_path {
            return is_executable(p).then(|| p.clone());
        }
        let path = std::env::var_os("PATH")?;
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            for dir in std::env::split_paths(&path) {
                let cand = dir.join(name);
                if is_executable(&cand) {
                    return Some(cand);
                }
            }
        }
        None
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Parses `"60s"`, `"500ms"`, `"2m"`, `"1h"`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "" | "s" => n.checked_mul(1000)?,
        "ms" => n,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
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

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn port_is_required_and_named() {
        let e = cfg(&[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("PORT"), "{e}");
        assert!(cfg(&[("PORT", "x")]).is_err());
    }

    #[test]
    fn defaults() {
        let c = cfg(&[("PORT", "3001")]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!(c.max_sessions, 20);
        assert_eq!(c.session_grace, Duration::from_secs(60));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(15));
        assert_eq!(c.qr_selector, "div[data-ref]");
        assert_eq!(c.wa_web_url, "https://web.whatsapp.com");
        assert!(cfg(&[("PORT", "1"), ("MAX_SESSIONS", "0")]).is_err());
        assert!(cfg(&[("PORT", "1"), ("SESSION_GRACE", "soon")]).is_err());
        assert_eq!(c.init_timeout, Duration::from_secs(90));
        assert!(!c.dry_run);
        assert!(cfg(&[("PORT", "1"), ("DRY_RUN", "TRUE")]).unwrap().dry_run);
        assert!(cfg(&[("PORT", "1"), ("DRY_RUN", "maybe")]).is_err());
        assert!(cfg(&[("PORT", "1"), ("SEND_QUEUE", "0")]).is_err());
    }
}
