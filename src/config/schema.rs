//! Every number a config may hold, with its default and its range, and the fixed limits of
//! the loader. This is the one place they are written: validation reads them from here, and
//! a test regenerates the defaults table of `docs/CONFIG.md` from [`NUMBERS`] and [`LIMITS`].

use std::time::Duration;

/// How a number is written in `supervisor.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `"500ms"`, `"30s"`; held in milliseconds.
    Duration,
    /// `"10MiB"` or a number of bytes; held in bytes.
    Size,
    /// A plain integer.
    Count,
    /// A plain float.
    Factor,
}

/// One numeric key: its default (None: off unless set) and inclusive range.
#[derive(Debug, Clone, Copy)]
pub struct Num {
    /// Dotted path as written in the file; `NAME` stands for any service.
    pub key: &'static str,
    pub unit: Unit,
    pub default: Option<f64>,
    pub min: f64,
    pub max: f64,
}

impl Num {
    pub fn default_duration(&self) -> Duration {
        Duration::from_millis(self.default.unwrap_or(0.0) as u64)
    }
    pub fn default_u64(&self) -> u64 {
        self.default.unwrap_or(0.0) as u64
    }
    pub fn contains(&self, v: f64) -> bool {
        v >= self.min && v <= self.max
    }
    /// The key with `NAME` replaced by the service it is about.
    pub fn key_for(&self, service: &str) -> String {
        self.key.replace("NAME", service)
    }
    /// "`logs.keep` is 4294967295, out of range: …": what, where, what to do.
    pub fn out_of_range(&self, service: &str, shown: &str) -> String {
        format!(
            "`{}` is {shown}, out of range: it must be between {} and {}",
            self.key_for(service),
            self.show(self.min),
            self.show(self.max)
        )
    }
    /// A value the way the docs and messages write it.
    pub fn show(&self, v: f64) -> String {
        match self.unit {
            Unit::Duration => show_duration(v as u64),
            Unit::Size => show_size(v as u64),
            Unit::Count => format!("{}", v as u64),
            Unit::Factor => format!("{v:.1}"),
        }
    }
}

const MS: f64 = 1.0;
const SEC: f64 = 1000.0 * MS;
const MIN: f64 = 60.0 * SEC;
const HOUR: f64 = 60.0 * MIN;
const DAY: f64 = 24.0 * HOUR;
const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * KIB;
const GIB: f64 = 1024.0 * MIB;
const TIB: f64 = 1024.0 * GIB;

const fn num(key: &'static str, unit: Unit, default: Option<f64>, min: f64, max: f64) -> Num {
    Num {
        key,
        unit,
        default,
        min,
        max,
    }
}

use Unit::{Count, Duration as Dur, Factor, Size};

// Why these ranges: each bound is where a value stops meaning something useful or starts
// hurting the daemon (a sampler spinning, a rotation loop over 4 billion files, a timer
// that never fires in this machine's lifetime).
pub const RESOURCE_INTERVAL: Num = num(
    "supervisor.resource_interval",
    Dur,
    Some(SEC),
    100.0 * MS,
    HOUR,
);
pub const LOG_MAX_SIZE: Num = num("logs.max_size", Size, Some(10.0 * MIB), 4.0 * KIB, TIB);
pub const LOG_KEEP: Num = num("logs.keep", Count, Some(5.0), 0.0, 100.0);
pub const LOG_MAX_LINE: Num = num("logs.max_line", Size, Some(64.0 * KIB), 256.0, 16.0 * MIB);
pub const READY_TIMEOUT: Num = num(
    "services.NAME.ready.timeout",
    Dur,
    Some(30.0 * SEC),
    10.0 * MS,
    DAY,
);
pub const HEALTH_INTERVAL: Num = num(
    "services.NAME.health.interval",
    Dur,
    Some(10.0 * SEC),
    100.0 * MS,
    DAY,
);
pub const HEALTH_TIMEOUT: Num = num(
    "services.NAME.health.timeout",
    Dur,
    Some(2.0 * SEC),
    10.0 * MS,
    HOUR,
);
pub const HEALTH_RETRIES: Num = num(
    "services.NAME.health.retries",
    Count,
    Some(3.0),
    1.0,
    1000.0,
);
pub const HEALTH_START_PERIOD: Num = num(
    "services.NAME.health.start_period",
    Dur,
    Some(0.0),
    0.0,
    DAY,
);
pub const WATCHDOG: Num = num("services.NAME.watchdog", Dur, None, 100.0 * MS, DAY);
pub const BACKOFF_INITIAL: Num = num(
    "services.NAME.backoff.initial",
    Dur,
    Some(500.0 * MS),
    0.0,
    DAY,
);
pub const BACKOFF_MAX: Num = num("services.NAME.backoff.max", Dur, Some(30.0 * SEC), 0.0, DAY);
pub const BACKOFF_FACTOR: Num = num(
    "services.NAME.backoff.factor",
    Factor,
    Some(2.0),
    1.0,
    100.0,
);
pub const MIN_UPTIME: Num = num("services.NAME.min_uptime", Dur, Some(10.0 * SEC), 0.0, DAY);
pub const START_GRACE: Num = num("services.NAME.start_grace", Dur, Some(SEC), 0.0, HOUR);
pub const MAX_RESTARTS: Num = num(
    "services.NAME.max_restarts",
    Count,
    Some(5.0),
    0.0,
    1_000_000.0,
);
pub const MAX_MEMORY: Num = num("services.NAME.max_memory", Size, None, MIB, 64.0 * TIB);
pub const STOP_TIMEOUT: Num = num(
    "services.NAME.stop_timeout",
    Dur,
    Some(10.0 * SEC),
    0.0,
    HOUR,
);
pub const STOP_EXIT_CODE: Num = num("services.NAME.stop_exit_codes[]", Count, None, 0.0, 255.0);

/// Every number of the config, in the order the docs list them.
// `[alerts]` durations.
pub const ALERTS_MIN_INTERVAL: Num =
    num("alerts.min_interval", Dur, Some(15.0 * MIN), 0.0, 7.0 * DAY);
pub const WEBHOOK_TIMEOUT: Num = num(
    "alerts.webhook.NAME.timeout",
    Dur,
    Some(10.0 * SEC),
    100.0 * MS,
    5.0 * MIN,
);
pub const COMMAND_TIMEOUT: Num = num(
    "alerts.command.NAME.timeout",
    Dur,
    Some(30.0 * SEC),
    100.0 * MS,
    HOUR,
);
/// `restarts.within`, `unhealthy_for`, `memory.for` of a rule (required where used).
pub const RULE_WINDOW: Num = num("alerts.rule.WINDOW", Dur, Some(0.0), 0.0, 30.0 * DAY);

pub const NUMBERS: &[Num] = &[
    RESOURCE_INTERVAL,
    LOG_MAX_SIZE,
    LOG_KEEP,
    LOG_MAX_LINE,
    READY_TIMEOUT,
    HEALTH_INTERVAL,
    HEALTH_TIMEOUT,
    HEALTH_RETRIES,
    HEALTH_START_PERIOD,
    WATCHDOG,
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    BACKOFF_FACTOR,
    MIN_UPTIME,
    START_GRACE,
    MAX_RESTARTS,
    MAX_MEMORY,
    STOP_TIMEOUT,
    STOP_EXIT_CODE,
];

/// Defaults that are not numbers, kept beside the numeric ones.
pub const DEFAULT_STATE_DIR: &str = "var";
pub const DEFAULT_INHERIT: [&str; 3] = ["PATH", "HOME", "LANG"];
pub const DEFAULT_TIMESTAMP: &str = "%Y-%m-%dT%H:%M:%S%.3f%:z";
pub const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";
pub const DEFAULT_REAP_ORPHANS: bool = true;
pub const DEFAULT_AUTOSTART: bool = true;

// Fixed limits of the loader. They bound the work and memory of `check` and `reload`, so
// a hostile or broken file is refused with a message instead of taking the daemon down.

/// The config file itself (10,000 services of ordinary size fit in well under this).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Services in one config.
pub const MAX_SERVICES: usize = 10_000;
/// One env file.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;
/// How long reading one file (the config, an env file) may take before it is given up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// All env files of one load together: past this, the files not read yet are reported
/// unread rather than waited on.
pub const READ_BUDGET: Duration = Duration::from_secs(10);
/// `${A}` → `${B}` → … nesting: deeper than this is refused, never recursed into.
pub const MAX_INTERPOLATION_DEPTH: usize = 32;
/// One value after interpolation: Linux refuses a longer single argument or variable
/// (`MAX_ARG_STRLEN`, 128 KiB) at exec anyway.
pub const MAX_EXPANDED_VALUE: usize = 128 << 10;
/// Everything interpolation produces for one config: bounds memory when values multiply.
pub const MAX_EXPANDED_TOTAL: usize = 64 << 20;
/// Problems printed for one config; more are counted in one last line.
pub const MAX_DIAGNOSTICS: usize = 200;

/// (name, value, why) of each fixed limit, for the docs.
pub fn limits() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "config file size",
            show_size(MAX_CONFIG_BYTES),
            "a bigger file is refused before it is parsed",
        ),
        ("services", MAX_SERVICES.to_string(), "per config"),
        (
            "env file size",
            show_size(MAX_ENV_FILE_BYTES),
            "per file; only regular files are read (a FIFO or device is refused)",
        ),
        (
            "file read time",
            show_duration(READ_TIMEOUT.as_millis() as u64),
            "per file (config or env file); a read that blocks longer is given up",
        ),
        (
            "file read time, all env files",
            show_duration(READ_BUDGET.as_millis() as u64),
            "per load; env files past it are reported unread",
        ),
        (
            "interpolation depth",
            MAX_INTERPOLATION_DEPTH.to_string(),
            "`${A}` using `${B}` using … ; deeper chains are refused",
        ),
        (
            "expanded value",
            show_size(MAX_EXPANDED_VALUE as u64),
            "one value after interpolation (Linux refuses longer arguments at exec)",
        ),
        (
            "expanded total",
            show_size(MAX_EXPANDED_TOTAL as u64),
            "all values of the config after interpolation",
        ),
    ]
}

pub fn show_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

pub fn show_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// The markdown table of every number: generated into `docs/CONFIG.md`.
pub fn defaults_table() -> String {
    let mut out = String::from("| key | default | range |\n|---|---|---|\n");
    for n in NUMBERS {
        let default = match n.default {
            Some(d) => format!("`{}`", quote(n, d)),
            None if n.key.ends_with("[]") => "(each element)".into(),
            None => "none (off)".into(),
        };
        out.push_str(&format!(
            "| `{}` | {default} | `{}` … `{}` |\n",
            n.key,
            quote(n, n.min),
            quote(n, n.max)
        ));
    }
    out.push_str("\n| limit | value | |\n|---|---|---|\n");
    for (name, value, why) in limits() {
        out.push_str(&format!("| {name} | {value} | {why} |\n"));
    }
    out
}

/// As written in TOML: durations and sizes are strings.
fn quote(n: &Num, v: f64) -> String {
    match n.unit {
        Unit::Duration | Unit::Size => format!("\"{}\"", n.show(v)),
        _ => n.show(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_lie_in_their_ranges() {
        for n in NUMBERS {
            assert!(n.min <= n.max, "{}", n.key);
            if let Some(d) = n.default {
                assert!(n.contains(d), "default of {} out of its range", n.key);
            }
        }
    }

    #[test]
    fn shows_units() {
        assert_eq!(show_duration(500), "500ms");
        assert_eq!(show_duration(30_000), "30s");
        assert_eq!(show_duration(86_400_000), "1d");
        assert_eq!(show_size(10 << 20), "10MiB");
        assert_eq!(show_size(256), "256B");
    }

    /// The table between the markers of docs/CONFIG.md is exactly what the model says.
    #[test]
    fn config_md_defaults_table_is_generated_from_the_model() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
        let doc = std::fs::read_to_string(path).expect("docs/CONFIG.md");
        let begin = "<!-- BEGIN defaults: generated from src/config/schema.rs by `cargo test --lib config_md_defaults`; LM_REGENERATE_DOCS=1 rewrites it -->\n";
        let end = "<!-- END defaults -->";
        let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
            panic!("docs/CONFIG.md lacks the markers {begin:?} … {end:?}");
        };
        let current = &doc[b + begin.len()..e];
        let wanted = defaults_table();
        if current != wanted {
            if std::env::var_os("LM_REGENERATE_DOCS").is_some() {
                let new = format!("{}{begin}{wanted}{}", &doc[..b], &doc[e..]);
                std::fs::write(path, new).expect("rewrite docs/CONFIG.md");
            } else {
                panic!(
                    "the defaults table of docs/CONFIG.md differs from src/config/schema.rs; \
                     run `LM_REGENERATE_DOCS=1 cargo test --lib config_md_defaults` and commit.\n\
                     wanted:\n{wanted}\nfound:\n{current}"
                );
            }
        }
    }
}
