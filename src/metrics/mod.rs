//! Prometheus metrics: what the actor counts from events (`Counters`), one snapshot per
//! scrape (`Snapshot`, one message to the actor), rendered as text format 0.0.4
//! (`render`). `server.rs` is the `/metrics` listener. A scrape reads what the sampler
//! already measured; the only `/proc` read it does is the daemon's own `stat`/`statm`.

pub mod server;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::control::proto::{ServiceStatus, StateName};
use crate::logs::StreamCount;
use crate::resources::Sample;
use crate::supervisor::event::{Event, EventKind};

/// Counted by the actor as events go out; since the daemon started.
#[derive(Debug, Default)]
pub struct Counters {
    /// (service, reason) → automatic and user restarts.
    restarts: BTreeMap<(String, &'static str), u64>,
    /// CPU seconds of each service's tree, integrated from the sampler's CPU share.
    cpu_seconds: BTreeMap<String, f64>,
    last_sample: BTreeMap<String, Instant>,
    /// (service, probe) → failed probes.
    probe_failures: BTreeMap<(String, &'static str), u64>,
    /// Events the alert engine's full inbox could not take.
    pub alert_inputs_dropped: u64,
    /// (service, probe) → how long checks took.
    probe_durations: BTreeMap<(String, &'static str), Histogram>,
}

/// Upper bounds (seconds) of the probe duration buckets.
pub const PROBE_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last slot is above every bound.
    counts: [u64; PROBE_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, v: f64) {
        let i = PROBE_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(PROBE_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

fn probe_name(kind: crate::supervisor::ProbeKind) -> &'static str {
    match kind {
        crate::supervisor::ProbeKind::Ready => "ready",
        crate::supervisor::ProbeKind::Health => "health",
    }
}

impl Counters {
    pub fn on_probe(
        &mut self,
        service: &str,
        kind: crate::supervisor::ProbeKind,
        took: std::time::Duration,
    ) {
        self.probe_durations
            .entry((service.to_string(), probe_name(kind)))
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub fn on_event(&mut self, e: &Event, all: &[String]) {
        match (&e.service, &e.kind) {
            (Some(s), EventKind::Restart { reason, .. }) => {
                *self
                    .restarts
                    .entry((s.clone(), reason.as_str()))
                    .or_default() += 1;
            }
            (Some(s), EventKind::ProbeFailed { probe, .. }) => {
                *self
                    .probe_failures
                    .entry((s.clone(), probe_name(*probe)))
                    .or_default() += 1;
            }
            (None, EventKind::UserRequest { verb, .. }) => {
                // "restart" (every service) or "restart a b".
                let mut words = verb.split_whitespace();
                if words.next() != Some("restart") {
                    return;
                }
                let named: Vec<String> = words.map(str::to_string).collect();
                let names = if named.is_empty() {
                    all.to_vec()
                } else {
                    named
                };
                for n in names {
                    *self.restarts.entry((n, "user")).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// CPU seconds integrated per service: each sample's percentage holds since that
    /// service's previous sample (services are not all sampled every tick).
    pub fn on_samples(&mut self, samples: &[Sample], now: Instant) {
        for s in samples {
            // No key clone on the hot path: the service is known after its first sample.
            let prev = match self.last_sample.get_mut(&s.service) {
                Some(at) => Some(std::mem::replace(at, now)),
                None => self.last_sample.insert(s.service.clone(), now),
            };
            if let Some(prev) = prev {
                let dt = now.saturating_duration_since(prev).as_secs_f64();
                let add = s.cpu_percent / 100.0 * dt;
                match self.cpu_seconds.get_mut(&s.service) {
                    Some(v) => *v += add,
                    None => {
                        self.cpu_seconds.insert(s.service.clone(), add);
                    }
                }
            }
        }
    }

    pub fn snapshot(&self, services: Vec<ServiceStatus>) -> Snapshot {
        Snapshot {
            services,
            restarts: self.restarts.clone(),
            cpu_seconds: self.cpu_seconds.clone(),
            probe_failures: self.probe_failures.clone(),
            alert_inputs_dropped: self.alert_inputs_dropped,
            probe_durations: self.probe_durations.clone(),
        }
    }
}

/// What the actor answers to a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub services: Vec<ServiceStatus>,
    pub restarts: BTreeMap<(String, &'static str), u64>,
    pub cpu_seconds: BTreeMap<String, f64>,
    pub probe_failures: BTreeMap<(String, &'static str), u64>,
    pub alert_inputs_dropped: u64,
    pub probe_durations: BTreeMap<(String, &'static str), Histogram>,
}

/// Alert deliveries, counted by the alert engine's delivery tasks.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub sent: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub given_up: AtomicU64,
}

/// The daemon's own numbers, read from `/proc/self` at scrape time (cheap: two small files).
#[derive(Debug, Default, Clone, Copy)]
pub struct DaemonSelf {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    /// How long the actor took to answer this scrape.
    pub actor_seconds: f64,
}

impl DaemonSelf {
    pub fn read(actor_seconds: f64) -> DaemonSelf {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let resident_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|p| p * page)
            .unwrap_or(0);
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        // After the comm: state is field 3, utime 14, stime 15, starttime 22 (1-based).
        let num = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = (num(14).unwrap_or(0.0) + num(15).unwrap_or(0.0)) / tck;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let start_time_seconds = boot + num(22).unwrap_or(0.0) / tck;
        DaemonSelf {
            resident_bytes,
            cpu_seconds,
            start_time_seconds,
            actor_seconds,
        }
    }
}

const STATES: [StateName; 9] = [
    StateName::Stopped,
    StateName::Starting,
    StateName::Running,
    StateName::Ready,
    StateName::Unhealthy,
    StateName::Stopping,
    StateName::Backoff,
    StateName::Failed,
    StateName::Exited,
];

/// A label value escaped per the text format (`\\`, `\"`, `\n`).
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Prometheus text format (0.0.4). Every service appears in every per-service family, so a
/// dashboard sees zeros rather than gaps.
pub fn render(
    snap: &Snapshot,
    logs: &[(String, &'static str, StreamCount)],
    alerts: Option<&AlertStats>,
    me: &DaemonSelf,
) -> String {
    let mut o = String::with_capacity(256 + snap.services.len() * 1400);
    let svcs = &snap.services;

    head(
        &mut o,
        "lm_service_up",
        "gauge",
        "1 when the service's process is running (running, ready or unhealthy).",
    );
    for s in svcs {
        let up = matches!(
            s.state,
            StateName::Running | StateName::Ready | StateName::Unhealthy
        );
        let _ = writeln!(
            o,
            "lm_service_up{{service=\"{}\"}} {}",
            esc(&s.name),
            u8::from(up)
        );
    }

    head(
        &mut o,
        "lm_service_state",
        "gauge",
        "1 for the state the service is in, 0 for the others.",
    );
    for s in svcs {
        let n = esc(&s.name);
        for st in STATES {
            let _ = writeln!(
                o,
                "lm_service_state{{service=\"{n}\",state=\"{}\"}} {}",
                st.as_str(),
                u8::from(s.state == st)
            );
        }
    }

    head(
        &mut o,
        "lm_service_restarts_total",
        "counter",
        "Restarts since the daemon started, by reason (crash, memory, health, watchdog, user).",
    );
    for s in svcs {
        let n = esc(&s.name);
        for reason in ["crash", "memory", "health", "watchdog", "user"] {
            let v = snap
                .restarts
                .get(&(s.name.clone(), reason))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "lm_service_restarts_total{{service=\"{n}\",reason=\"{reason}\"}} {v}"
            );
        }
    }

    head(
        &mut o,
        "lm_service_memory_bytes",
        "gauge",
        "Memory of the service's whole process tree (cgroup counter, else PSS sum).",
    );
    for s in svcs {
        let _ = writeln!(
            o,
            "lm_service_memory_bytes{{service=\"{}\"}} {}",
            esc(&s.name),
            s.memory_bytes
        );
    }

    head(
        &mut o,
        "lm_service_cpu_seconds_total",
        "counter",
        "CPU time of the service's tree since the daemon started, integrated from samples.",
    );
    for s in svcs {
        let v = snap.cpu_seconds.get(&s.name).copied().unwrap_or(0.0);
        let _ = writeln!(
            o,
            "lm_service_cpu_seconds_total{{service=\"{}\"}} {v:.3}",
            esc(&s.name)
        );
    }

    head(
        &mut o,
        "lm_service_processes",
        "gauge",
        "Processes in the service's tree.",
    );
    for s in svcs {
        let _ = writeln!(
            o,
            "lm_service_processes{{service=\"{}\"}} {}",
            esc(&s.name),
            s.processes
        );
    }

    head(
        &mut o,
        "lm_service_uptime_seconds",
        "gauge",
        "Seconds since the current process started (0 when none runs).",
    );
    for s in svcs {
        let _ = writeln!(
            o,
            "lm_service_uptime_seconds{{service=\"{}\"}} {:.3}",
            esc(&s.name),
            s.uptime_ms as f64 / 1000.0
        );
    }

    head(
        &mut o,
        "lm_service_last_exit_code",
        "gauge",
        "Exit code of the last exit (128+N for a signal N); absent before the first exit.",
    );
    for s in svcs {
        if let Some(x) = s.last_exit {
            let code = x.code.or(x.signal.map(|sig| 128 + sig)).unwrap_or(-1);
            let _ = writeln!(
                o,
                "lm_service_last_exit_code{{service=\"{}\"}} {code}",
                esc(&s.name)
            );
        }
    }

    head(
        &mut o,
        "lm_service_probe_failures_total",
        "counter",
        "Failed ready and health probes.",
    );
    for s in svcs {
        let n = esc(&s.name);
        for p in ["ready", "health"] {
            let v = snap
                .probe_failures
                .get(&(s.name.clone(), p))
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                o,
                "lm_service_probe_failures_total{{service=\"{n}\",probe=\"{p}\"}} {v}"
            );
        }
    }

    head(
        &mut o,
        "lm_service_probe_duration_seconds",
        "histogram",
        "How long ready and health checks took (health: every check; ready: the passing one and each new error).",
    );
    for ((svc, probe), h) in &snap.probe_durations {
        let n = esc(svc);
        let mut cum = 0;
        for (i, b) in PROBE_BUCKETS.iter().enumerate() {
            cum += h.counts[i];
            let _ = writeln!(
                o,
                "lm_service_probe_duration_seconds_bucket{{service=\"{n}\",probe=\"{probe}\",le=\"{b}\"}} {cum}"
            );
        }
        let _ = writeln!(
            o,
            "lm_service_probe_duration_seconds_bucket{{service=\"{n}\",probe=\"{probe}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            o,
            "lm_service_probe_duration_seconds_sum{{service=\"{n}\",probe=\"{probe}\"}} {:.6}",
            h.sum
        );
        let _ = writeln!(
            o,
            "lm_service_probe_duration_seconds_count{{service=\"{n}\",probe=\"{probe}\"}} {}",
            h.count
        );
    }

    // Log counters: every configured service and stream, plus what the writer saw.
    let mut by: BTreeMap<(String, &'static str), StreamCount> = BTreeMap::new();
    for s in svcs {
        for st in ["out", "err"] {
            by.insert((s.name.clone(), st), StreamCount::default());
        }
    }
    for (svc, st, c) in logs {
        by.insert((svc.clone(), st), *c);
    }
    head(
        &mut o,
        "lm_log_lines_total",
        "counter",
        "Lines written to the service's log files.",
    );
    for ((svc, st), c) in &by {
        let _ = writeln!(
            o,
            "lm_log_lines_total{{service=\"{}\",stream=\"{st}\"}} {}",
            esc(svc),
            c.lines
        );
    }
    head(
        &mut o,
        "lm_log_bytes_total",
        "counter",
        "Bytes of child output written to the log files (before the prefix).",
    );
    for ((svc, st), c) in &by {
        let _ = writeln!(
            o,
            "lm_log_bytes_total{{service=\"{}\",stream=\"{st}\"}} {}",
            esc(svc),
            c.bytes
        );
    }
    let mut dropped: BTreeMap<&str, u64> = BTreeMap::new();
    for ((svc, _), c) in &by {
        *dropped.entry(svc.as_str()).or_default() += c.dropped;
    }
    head(
        &mut o,
        "lm_log_dropped_lines_total",
        "counter",
        "Lines dropped because the log queue stayed full (a slow disk).",
    );
    for (svc, v) in dropped {
        let _ = writeln!(
            o,
            "lm_log_dropped_lines_total{{service=\"{}\"}} {v}",
            esc(svc)
        );
    }

    head(
        &mut o,
        "lm_daemon_resident_memory_bytes",
        "gauge",
        "Resident memory of leadmaster-supervisord itself.",
    );
    let _ = writeln!(o, "lm_daemon_resident_memory_bytes {}", me.resident_bytes);
    head(
        &mut o,
        "lm_daemon_cpu_seconds_total",
        "counter",
        "CPU time used by leadmaster-supervisord itself.",
    );
    let _ = writeln!(o, "lm_daemon_cpu_seconds_total {:.2}", me.cpu_seconds);
    head(
        &mut o,
        "lm_daemon_start_time_seconds",
        "gauge",
        "Start time of the daemon, seconds since the epoch.",
    );
    let _ = writeln!(
        o,
        "lm_daemon_start_time_seconds {:.0}",
        me.start_time_seconds
    );
    head(
        &mut o,
        "lm_daemon_actor_response_seconds",
        "gauge",
        "How long the actor took to answer this scrape (its queue delay).",
    );
    let _ = writeln!(
        o,
        "lm_daemon_actor_response_seconds {:.6}",
        me.actor_seconds
    );
    head(
        &mut o,
        "lm_services",
        "gauge",
        "Services in the config the daemon runs with.",
    );
    let _ = writeln!(o, "lm_services {}", svcs.len());

    if let Some(a) = alerts {
        head(
            &mut o,
            "lm_alert_deliveries_total",
            "counter",
            "Alert messages delivered, and attempts that failed (each retry counts).",
        );
        let _ = writeln!(
            o,
            "lm_alert_deliveries_total{{result=\"sent\"}} {}",
            a.sent.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "lm_alert_deliveries_total{{result=\"failed_attempt\"}} {}",
            a.failed_attempts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "lm_alert_deliveries_total{{result=\"given_up\"}} {}",
            a.given_up.load(Ordering::Relaxed)
        );
        head(
            &mut o,
            "lm_alert_inputs_dropped_total",
            "counter",
            "Events the alert engine could not take (its queue was full).",
        );
        let _ = writeln!(
            o,
            "lm_alert_inputs_dropped_total {}",
            snap.alert_inputs_dropped
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{Health, MemorySource, RestartReason, TreeKind};

    fn svc(name: &str, state: StateName) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            pid: Some(1),
            uptime_ms: 1500,
            restarts: 0,
            last_exit: None,
            cpu_percent: 0.0,
            memory_bytes: 1 << 20,
            processes: 2,
            health: Health::Unknown,
            last_error: None,
            log_dropped: 0,
            waiting_for: vec![],
            status_text: None,
            tree: TreeKind::Cgroup,
            memory_source: MemorySource::Cgroup,
            backoff_ms: None,
            last_restart_reason: None,
            last_stop: None,
            has_health: false,
        }
    }

    #[test]
    fn restarts_are_counted_by_reason_and_user_restarts_by_name() {
        let mut c = Counters::default();
        let all = vec!["a".to_string(), "b".to_string()];
        for _ in 0..3 {
            c.on_event(
                &Event::of(
                    "a",
                    EventKind::restart(
                        RestartReason::Crash,
                        "x".into(),
                        std::time::Duration::ZERO,
                        1,
                    ),
                ),
                &all,
            );
        }
        c.on_event(
            &Event::daemon(EventKind::UserRequest {
                verb: "restart".into(),
                uid: None,
            }),
            &all,
        );
        c.on_event(
            &Event::daemon(EventKind::UserRequest {
                verb: "restart b".into(),
                uid: None,
            }),
            &all,
        );
        let snap = c.snapshot(vec![
            svc("a", StateName::Ready),
            svc("b", StateName::Failed),
        ]);
        let text = render(&snap, &[], None, &DaemonSelf::default());
        assert!(text.contains("lm_service_restarts_total{service=\"a\",reason=\"crash\"} 3\n"));
        assert!(text.contains("lm_service_restarts_total{service=\"a\",reason=\"user\"} 1\n"));
        assert!(text.contains("lm_service_restarts_total{service=\"b\",reason=\"user\"} 2\n"));
        assert!(text.contains("lm_service_up{service=\"a\"} 1\n"));
        assert!(text.contains("lm_service_up{service=\"b\"} 0\n"));
        assert!(text.contains("lm_service_state{service=\"b\",state=\"failed\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
