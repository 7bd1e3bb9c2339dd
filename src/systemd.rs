//! sd_notify to our own manager (systemd `Type=notify`). A no-op when `NOTIFY_SOCKET` is
//! unset, e.g. in a terminal.

use sd_notify::NotifyState;

pub struct Systemd {
    enabled: bool,
}

impl Systemd {
    pub fn from_env() -> Systemd {
        Systemd {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                tracing::warn!("sd_notify failed: {e}");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn extend_timeout(&self, usec: u32) {
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    /// Half of systemd's `WatchdogSec`, when it asked us for pings.
    pub fn watchdog_interval(&self) -> Option<std::time::Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
    }
}
