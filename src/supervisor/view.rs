//! Read-only answers built from the machine's state: `status`, `show`, `env`.

use std::collections::BTreeMap;
use std::time::Instant;

use super::machine::{Machine, Services};
use super::state::State;
use crate::control::proto::{
    EnvEntry, Health, MemorySource, ServiceDetail, ServiceStatus, StopReport, TreeKind,
};

/// What the actor keeps beside the machine for `show`: recent exits, probes, events.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub exits: Vec<String>,
    pub probes: Vec<String>,
    pub events: Vec<String>,
}

pub fn status(s: &Services, now: Instant) -> Vec<ServiceStatus> {
    s.config
        .start_order
        .iter()
        .filter_map(|n| status_of(s, n, now))
        .collect()
}

/// `tree` when no run says otherwise: how the next run will be tracked.
pub fn status_of(s: &Services, name: &str, now: Instant) -> Option<ServiceStatus> {
    status_with(s, name, now, TreeKind::GroupMarkers)
}

pub fn status_with(
    s: &Services,
    name: &str,
    now: Instant,
    default_tree: TreeKind,
) -> Option<ServiceStatus> {
    let svc = s.svcs.get(name)?;
    let state = svc.state();
    let run = state.run();
    let sample = run.and_then(|r| r.sample.as_ref());
    let tree = run.map(|r| r.tree).unwrap_or(default_tree);
    Some(ServiceStatus {
        name: name.to_string(),
        state: state.name(),
        pid: run.map(|r| r.pid),
        uptime_ms: run
            .map(|r| now.saturating_duration_since(r.started).as_millis() as u64)
            .unwrap_or(0),
        restarts: svc.restarts,
        last_exit: svc.last_exit,
        cpu_percent: sample
            .map(|x| (x.cpu_percent * 10.0).round() / 10.0)
            .unwrap_or(0.0),
        memory_bytes: sample.map(|x| x.memory_bytes).unwrap_or(0),
        processes: sample.map(|x| x.procs.len() as u32).unwrap_or(0),
        health: if svc.spec.health.is_some() {
            run.map(|r| r.health).unwrap_or(Health::Unknown)
        } else {
            Health::Unknown
        },
        last_error: svc.last_error.clone(),
        log_dropped: svc.log_dropped,
        waiting_for: if *state == State::Waiting {
            Machine::unmet(s, name)
        } else {
            Vec::new()
        },
        status_text: run.and_then(|r| r.status_text.clone()),
        tree,
        memory_source: sample.map(|x| x.memory_source).unwrap_or(match tree {
            TreeKind::Cgroup => MemorySource::Cgroup,
            TreeKind::GroupMarkers => MemorySource::Pss,
        }),
        backoff_ms: match state {
            State::Backoff { until } => {
                Some(until.saturating_duration_since(now).as_millis() as u64)
            }
            _ => None,
        },
        last_restart_reason: svc.last_restart,
        last_stop: svc
            .last_stop
            .map(|(took_ms, sigkill)| StopReport { took_ms, sigkill }),
        has_health: svc.spec.health.is_some(),
    })
}

pub fn detail(
    s: &Services,
    name: &str,
    now: Instant,
    default_tree: TreeKind,
    history: Option<&History>,
) -> Option<ServiceDetail> {
    let svc = s.svcs.get(name)?;
    let status = status_with(s, name, now, default_tree)?;
    let mut cfg = serde_json::to_value(&svc.spec).unwrap_or(serde_json::Value::Null);
    // The env has its own verb with secret masking; keep `show` free of values.
    if let Some(obj) = cfg.as_object_mut() {
        let keys: Vec<serde_json::Value> = svc
            .spec
            .env
            .keys()
            .map(|k| serde_json::Value::String(k.clone()))
            .collect();
        obj.insert("env".into(), serde_json::Value::Array(keys));
    }
    let sample = svc.state().run().and_then(|r| r.sample.as_ref());
    let mut memory = BTreeMap::new();
    if let Some(x) = sample {
        memory.insert("rss_sum".to_string(), x.rss_bytes);
        memory.insert("pss_sum".to_string(), x.pss_bytes);
        if let Some(c) = x.cgroup_bytes {
            memory.insert("cgroup".to_string(), c);
        }
    }
    let h = history.cloned().unwrap_or_default();
    let extra = &s.config.supervisor.secret_keys;
    Some(ServiceDetail {
        status,
        config: cfg,
        tree: sample
            .map(|x| svc.spec.redact_procs(&x.procs))
            .unwrap_or_default(),
        memory,
        exits: h.exits.iter().map(|e| svc.spec.redact(e, extra)).collect(),
        probes: h.probes.iter().map(|p| svc.spec.redact(p, extra)).collect(),
        events: h.events,
    })
}

/// The environment the latest run really got (or the declared one before any run),
/// secret-looking values masked unless `reveal`.
pub fn env(s: &Services, name: &str, reveal: bool) -> Option<Vec<EnvEntry>> {
    let svc = s.svcs.get(name)?;
    let env = if svc.spawned_env.is_empty() {
        &svc.spec.env
    } else {
        &svc.spawned_env
    };
    let extra = &s.config.supervisor.secret_keys;
    Some(
        env.iter()
            .map(|(k, v)| {
                let (value, masked) = if reveal {
                    (v.value.clone(), false)
                } else {
                    svc.spec.shown_env_value(k, &v.value, extra)
                };
                EnvEntry {
                    key: k.clone(),
                    value,
                    source: v.source.clone(),
                    masked,
                }
            })
            .collect(),
    )
}
