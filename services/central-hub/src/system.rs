//! Process facts for `/status`: memory from procfs, CPU time from `getrusage`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Resident set size of this process, from `/proc/self/status` (`VmRSS`, in kB).
/// `None` where procfs is unavailable.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kb("VmRSS:")
}

/// The largest resident set size this process has had (`VmHWM`), so a past spike
/// shows even after the memory was returned.
pub fn rss_peak_bytes() -> Option<u64> {
    proc_status_kb("VmHWM:")
}

fn proc_status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// User and system CPU time this process has used so far.
fn cpu_time() -> Option<(Duration, Duration)> {
    // SAFETY: getrusage only writes into the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, exclusive pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some((tv(ru.ru_utime), tv(ru.ru_stime)))
}

/// CPU use as `/status` shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuReport {
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// Share of one core used over `window_seconds` (100 = one core busy).
    pub percent: f64,
    pub window_seconds: f64,
}

/// Turns cumulative CPU time into a recent percentage: the window is the time since the
/// previous sample (at least [`CpuMeter::MIN_WINDOW`]), or since start for the first one.
/// Why not a background sampler: `/status` is polled anyway, and this costs one syscall
/// per call and nothing between calls.
pub struct CpuMeter {
    last: Mutex<(Instant, Duration, f64, f64)>,
}

impl CpuMeter {
    /// Samples closer together than this reuse the previous percentage, so two quick
    /// calls do not report the noise of a few milliseconds.
    pub const MIN_WINDOW: Duration = Duration::from_secs(1);

    pub fn new(started: Instant) -> Self {
        Self {
            last: Mutex::new((started, Duration::ZERO, 0.0, 0.0)),
        }
    }

    pub fn sample(&self) -> Option<CpuReport> {
        let (user, system) = cpu_time()?;
        let total = user + system;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (at, cpu_then, percent, window) = *last;
        let (percent, window) = if now.duration_since(at) >= Self::MIN_WINDOW || window == 0.0 {
            let wall = now.duration_since(at).as_secs_f64().max(1e-3);
            let used = total.saturating_sub(cpu_then).as_secs_f64();
            let p = (used / wall * 1000.0).round() / 10.0;
            *last = (now, total, p, wall);
            (p, wall)
        } else {
            (percent, window)
        };
        Some(CpuReport {
            user_seconds: user.as_secs_f64(),
            system_seconds: system.as_secs_f64(),
            percent,
            window_seconds: (window * 1000.0).round() / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_readable_on_linux() {
        assert!(super::rss_bytes().unwrap() > 0);
        assert!(super::rss_peak_bytes().unwrap() >= super::rss_bytes().unwrap() / 2);
    }

    #[test]
    fn busy_loop_shows_as_cpu() {
        let meter = CpuMeter::new(Instant::now());
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(1100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let r = meter.sample().unwrap();
        // Loose bounds: the machine is shared, so the loop may get little of a core.
        assert!(r.percent > 0.0, "{r:?}");
        assert!(r.user_seconds + r.system_seconds > 0.01, "{r:?}");
    }
}
