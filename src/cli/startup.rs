//! `lmctl startup`: the systemd unit for a config, so the stack comes back after a reboot
//! (seed 000: PM2 had nothing to resurrect). `units/leadmaster-supervisord.service` is this
//! template rendered for /opt/leadmaster and the repository's `supervisor.toml`; a test
//! keeps the two in sync.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// `stop_timeout` when a service does not set one (the config's default; a unit test checks
/// they agree).
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to the longest stop chain: the SIGKILL after a stop timeout, leftovers' grace and
/// the daemon's own exit.
const STOP_MARGIN: Duration = Duration::from_secs(20);

/// What the unit says that depends on the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Service names, sorted.
    pub services: Vec<String>,
    /// The slowest sequence of stops: dependents stop before what they depend on, each with
    /// its own `stop_timeout`. First to stop first.
    pub longest_chain: Vec<(String, Duration)>,
}

impl Plan {
    /// Reads service names, `depends_on` and `stop_timeout` from the config text leniently:
    /// a config with unrelated mistakes (a missing env file) still gets its unit.
    pub fn from_toml(text: &str) -> Plan {
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        let services = table
            .get("services")
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default();
        let mut timeout: BTreeMap<String, Duration> = BTreeMap::new();
        // dependents[x] = services that depend on x, so stop before x.
        let mut dependents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, svc) in &services {
            let t = svc
                .get("stop_timeout")
                .and_then(|v| v.as_str())
                .and_then(|s| crate::config::units::parse_duration(s).ok())
                .unwrap_or(DEFAULT_STOP_TIMEOUT);
            timeout.insert(name.clone(), t);
            let deps: Vec<String> = match svc.get("depends_on") {
                Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            for d in deps {
                dependents.entry(d).or_default().insert(name.clone());
            }
        }
        let mut memo: BTreeMap<String, Vec<(String, Duration)>> = BTreeMap::new();
        let mut longest: Vec<(String, Duration)> = Vec::new();
        for name in timeout.keys() {
            let chain = chain(name, &timeout, &dependents, &mut memo, &mut BTreeSet::new());
            if total(&chain) > total(&longest) {
                longest = chain;
            }
        }
        Plan {
            services: timeout.into_keys().collect(),
            longest_chain: longest,
        }
    }

    /// `Description=`: the services, a few by name.
    pub fn description(&self) -> String {
        const SHOWN: usize = 4;
        let mut names = self
            .services
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.services.len() > SHOWN {
            names.push_str(&format!(" and {} more", self.services.len() - SHOWN));
        }
        if names.is_empty() {
            "LeadMaster Supervisor".to_string()
        } else {
            format!("LeadMaster Supervisor ({names})")
        }
    }

    /// `TimeoutStopSec=` in whole seconds: the longest chain plus a margin.
    pub fn timeout_stop_secs(&self) -> u64 {
        (total(&self.longest_chain) + STOP_MARGIN)
            .as_secs_f64()
            .ceil() as u64
    }
}

fn total(chain: &[(String, Duration)]) -> Duration {
    chain.iter().map(|(_, d)| *d).sum()
}

/// The slowest stop sequence ending with `name`: its slowest dependent's chain, then itself.
/// A dependency cycle (which `check` reports) is cut where it closes.
fn chain(
    name: &str,
    timeout: &BTreeMap<String, Duration>,
    dependents: &BTreeMap<String, BTreeSet<String>>,
    memo: &mut BTreeMap<String, Vec<(String, Duration)>>,
    visiting: &mut BTreeSet<String>,
) -> Vec<(String, Duration)> {
    if let Some(c) = memo.get(name) {
        return c.clone();
    }
    let Some(own) = timeout.get(name) else {
        return Vec::new();
    };
    if !visiting.insert(name.to_string()) {
        return Vec::new();
    }
    let mut before: Vec<(String, Duration)> = Vec::new();
    for d in dependents.get(name).into_iter().flatten() {
        let c = chain(d, timeout, dependents, memo, visiting);
        if total(&c) > total(&before) {
            before = c;
        }
    }
    visiting.remove(name);
    before.push((name.to_string(), *own));
    memo.insert(name.to_string(), before.clone());
    before
}

/// Renders the unit. `bin_dir` holds both binaries; `config` is absolute.
pub fn unit(bin_dir: &Path, config: &Path, workdir: &Path, plan: &Plan) -> String {
    let bin = bin_dir.display();
    let cfg = config.display();
    let wd = workdir.display();
    let description = plan.description();
    let timeout_stop = plan.timeout_stop_secs();
    let chain = if plan.longest_chain.is_empty() {
        "no services".to_string()
    } else {
        let steps: Vec<String> = plan
            .longest_chain
            .iter()
            .map(|(n, d)| format!("{n} {}", humantime::format_duration(*d)))
            .collect();
        format!(
            "{} = {}",
            steps.join(", then "),
            humantime::format_duration(total(&plan.longest_chain))
        )
    };
    format!(
        "# LeadMaster Supervisor under systemd. Generated by `lmctl startup`; see docs/OPERATIONS.md.
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
# The daemon sends READY=1 once every autostart service is ready (or has given up),
# STATUS= with counts, RELOADING=1/STOPPING=1, and WATCHDOG=1 while its actor answers.
Type=notify
NotifyAccess=main
WorkingDirectory={wd}
ExecStart={bin}/leadmaster-supervisord --config {cfg}
ExecReload={bin}/lmctl --config {cfg} reload
# The stack runs as an unprivileged user that owns the state dir (`lmctl startup --install`
# creates it): as root, Chromium (session-manager) runs without its sandbox and any service
# that is compromised owns the machine. Remove both lines only if you must run as root.
User=leadmaster
Group=leadmaster
# SIGTERM to the daemon only: it stops services in reverse dependency order with their
# own stop_timeout; whatever is left after TimeoutStopSec gets SIGKILL from systemd.
KillMode=mixed
KillSignal=SIGTERM
# The daemon extends this while a service is still within its own ready timeout.
TimeoutStartSec=90
# The longest stop chain ({chain}), plus {margin}s for
# SIGKILL after a stop timeout, leftovers and the daemon's own exit.
TimeoutStopSec={timeout_stop}
WatchdogSec=30
Restart=on-failure
RestartSec=2
# A cgroup subtree of our own: one cgroup per service, atomic kill, tree memory.
Delegate=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
",
        margin = STOP_MARGIN.as_secs()
    )
}

pub const UNIT_NAME: &str = "leadmaster-supervisord.service";

/// The user the unit runs the stack as.
pub const USER: &str = "leadmaster";

/// Creates the system user `user` when missing and gives it the state dir, so the unit's
/// `User=` can start the stack. Runs `useradd` and `chown` (as root, from `--install`).
pub fn ensure_user(user: &str, state_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::process::Command;
    let exists = Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .is_ok_and(|o| o.status.success());
    if !exists {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
            ])
            .arg(state_dir)
            .arg(user)
            .status()
            .map_err(|e| {
                anyhow::anyhow!("cannot run useradd ({e}); create the user `{user}` yourself")
            })?;
        anyhow::ensure!(
            st.success(),
            "useradd {user} failed; create the user `{user}` yourself"
        );
        println!("created the system user `{user}`");
    }
    std::fs::create_dir_all(state_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {} ({e})", state_dir.display()))?;
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(state_dir)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run chown ({e})"))?;
    anyhow::ensure!(
        st.success(),
        "chown -R {user}:{user} {} failed",
        state_dir.display()
    );
    println!("{} belongs to `{user}`", state_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_chain_follows_reverse_dependencies() {
        let plan = Plan::from_toml(
            r#"
[services.db]
command = "x"
stop_timeout = "30s"
[services.api]
command = "x"
depends_on = { db = "ready" }
stop_timeout = "1m"
[services.web]
command = "x"
depends_on = ["api"]
[services.lone]
command = "x"
stop_timeout = "90s"
"#,
        );
        let names: Vec<&str> = plan.longest_chain.iter().map(|(n, _)| n.as_str()).collect();
        // web (default 10s) stops first, then api (60s), then db (30s): 100s > lone's 90s.
        assert_eq!(names, ["web", "api", "db"]);
        assert_eq!(plan.timeout_stop_secs(), 100 + 20);
        assert_eq!(
            plan.description(),
            "LeadMaster Supervisor (api, db, lone, web)"
        );
    }

    #[test]
    fn a_cycle_does_not_hang_and_many_services_are_summarised() {
        let mut text = String::from(
            "[services.a]\ndepends_on = [\"b\"]\n[services.b]\ndepends_on = [\"a\"]\n",
        );
        for i in 0..5 {
            text.push_str(&format!("[services.s{i}]\ncommand = \"x\"\n"));
        }
        let plan = Plan::from_toml(&text);
        assert!(plan.timeout_stop_secs() >= 30);
        assert!(
            plan.description().ends_with("and 3 more)"),
            "{}",
            plan.description()
        );
    }

    #[test]
    fn default_stop_timeout_is_the_configs() {
        let cfg = crate::config::parse(
            Path::new("/tmp/x/supervisor.toml"),
            "[services.a]\ncommand = \"sleep\"\n",
            &Default::default(),
        )
        .expect("valid");
        assert_eq!(cfg.services["a"].stop_timeout, DEFAULT_STOP_TIMEOUT);
    }
}
