//! Loading and validating `supervisor.toml`. Does no process I/O: it reads files and the
//! environment it is given, and returns a [`Config`] or every problem found, each with
//! `file:line:col`.

pub mod alerts;
pub mod diagnostics;
pub mod envfile;
pub mod interpolate;
pub mod model;
pub mod raw;
pub mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostics::Diagnostic;
pub use model::*;

use diagnostics::SourceMap;
use interpolate::{Layers, Piece, Resolver};
use raw::{RawFile, RawService};
use toml::Spanned;

pub const DEFAULT_INHERIT: [&str; 3] = ["PATH", "HOME", "LANG"];
pub const DEFAULT_TIMESTAMP: &str = "%Y-%m-%dT%H:%M:%S%.3f%:z";

/// Reads and validates a config, taking inherited variables from this process's environment.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::whole_file(
            path,
            format!("cannot read the config ({e}); pass the right file with --config"),
        )]
    })?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    parse(path, &text, &env)
}

/// Validates config `text` as if read from `path`; `daemon_env` is what `inherit_env` draws on.
pub fn parse(
    path: &Path,
    text: &str,
    daemon_env: &BTreeMap<String, String>,
) -> Result<Config, Vec<Diagnostic>> {
    let map = SourceMap::new(path, text);
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        vec![match e.span() {
            Some(span) => map.error(span, msg),
            None => Diagnostic::whole_file(path, msg),
        }]
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut v = Validator {
        map: &map,
        dir: &dir,
        diags: Vec::new(),
    };
    let config = v.config(path, raw, daemon_env);
    if v.diags.is_empty() {
        config.ok_or_else(|| vec![Diagnostic::whole_file(path, "invalid config")])
    } else {
        // Problems are found service by service; people read them top to bottom.
        let mut diags = v.diags;
        diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        diags.dedup();
        Err(diags)
    }
}

struct Validator<'a> {
    map: &'a SourceMap<'a>,
    dir: &'a Path,
    diags: Vec<Diagnostic>,
}

/// A service's parsed fields that still need the env to be resolved.
struct Pending {
    spec: ServiceSpec,
    args: Vec<(Vec<Piece>, Range<usize>)>,
    ready_probe: Option<(ProbeKind, Vec<Piece>, Range<usize>)>,
    health_probe: Option<(ProbeKind, Vec<Piece>, Range<usize>)>,
    required: Vec<Spanned<String>>,
    declared_spans: BTreeMap<String, Range<usize>>,
}

#[derive(Clone, Copy)]
enum ProbeKind {
    Http,
    Tcp,
}

impl<'a> Validator<'a> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.diags.push(self.map.error(span, msg));
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    fn duration(&mut self, v: &Option<Spanned<String>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match units::parse_duration(s.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.err(s.span(), e);
                    default
                }
            },
        }
    }

    fn template(&mut self, s: &Spanned<String>) -> Vec<Piece> {
        match interpolate::parse(s.get_ref()) {
            Ok(p) => p,
            Err(e) => {
                self.err(s.span(), e);
                Vec::new()
            }
        }
    }

    fn config(
        &mut self,
        path: &Path,
        raw: RawFile,
        daemon_env: &BTreeMap<String, String>,
    ) -> Option<Config> {
        let sup = &raw.supervisor;
        let state_dir = self.resolve_path(
            sup.state_dir
                .as_ref()
                .map(|s| s.get_ref().as_str())
                .unwrap_or("var"),
        );
        let socket = match &sup.socket {
            Some(s) => self.resolve_path(s.get_ref()),
            None => state_dir.join("lmctl.sock"),
        };
        let resource_interval = self.duration(&sup.resource_interval, Duration::from_secs(1));
        if resource_interval.is_zero() {
            if let Some(s) = &sup.resource_interval {
                self.err(s.span(), "resource_interval must be more than 0s");
            }
        }
        let cgroups = match &sup.cgroups {
            None => CgroupMode::Auto,
            Some(s) => match s.get_ref().as_str() {
                "auto" => CgroupMode::Auto,
                "off" => CgroupMode::Off,
                other => {
                    self.err(
                        s.span(),
                        format!("invalid cgroups mode {other:?}; expected \"auto\" or \"off\""),
                    );
                    CgroupMode::Auto
                }
            },
        };
        let supervisor = SupervisorSettings {
            state_dir,
            socket,
            resource_interval,
            reap_orphans: sup.reap_orphans.unwrap_or(true),
            cgroups,
            secret_keys: sup.secret_keys.clone().unwrap_or_default(),
        };

        let lg = &raw.logs;
        let size = |v: &mut Self, s: &Option<Spanned<String>>, default: u64| match s {
            None => default,
            Some(s) => units::parse_size(s.get_ref()).unwrap_or_else(|e| {
                v.err(s.span(), e);
                default
            }),
        };
        let max_size = size(self, &lg.max_size, 10 << 20);
        let max_line = size(self, &lg.max_line, 64 << 10) as usize;
        let timestamp = match &lg.timestamp {
            None => DEFAULT_TIMESTAMP.to_string(),
            Some(t) => {
                use chrono::format::{Item, StrftimeItems};
                if StrftimeItems::new(t.get_ref()).any(|i| matches!(i, Item::Error)) {
                    self.err(t.span(), format!("invalid timestamp format {:?}; use strftime, like {DEFAULT_TIMESTAMP:?}", t.get_ref()));
                }
                t.get_ref().clone()
            }
        };
        if max_line < 256 {
            if let Some(s) = &lg.max_line {
                self.err(s.span(), "max_line must be at least 256B");
            }
        }
        let logs = LogSettings {
            timestamp,
            max_size,
            keep: lg.keep.unwrap_or(5),
            max_line,
        };

        // Services: fields first, then env across services, then dependencies.
        let mut layers = BTreeMap::new();
        let mut pending = BTreeMap::new();
        let mut dep_spans: BTreeMap<String, BTreeMap<String, Range<usize>>> = BTreeMap::new();
        for (name, svc) in raw.services {
            let name_span = name.span();
            let name = name.into_inner();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                self.err(
                    name_span,
                    format!("invalid service name {name:?}: use letters, digits, '-' and '_'"),
                );
                continue;
            }
            let svc = svc.into_inner();
            let (p, l, deps) = self.service(&name, svc, daemon_env);
            layers.insert(name.clone(), l);
            dep_spans.insert(name.clone(), deps);
            pending.insert(name, p);
        }

        // Dependencies: known, no cycles.
        for (name, deps) in &dep_spans {
            for (dep, span) in deps {
                if !pending.contains_key(dep) {
                    let known: Vec<&str> = pending.keys().map(String::as_str).collect();
                    self.err(
                        span.clone(),
                        format!("service `{name}` depends on `{dep}`, which is not defined (services: {})", known.join(", ")),
                    );
                } else if dep == name {
                    self.err(span.clone(), format!("service `{name}` depends on itself"));
                }
            }
        }
        let start_order = self.order(&pending, &dep_spans);
        let names: BTreeSet<String> = pending.keys().cloned().collect();
        let alerts = self.alerts(raw.alerts, &names, daemon_env);
        let metrics = self.metrics(raw.metrics);

        // Env: interpolate every declared value, then args and probes.
        let mut resolver = Resolver::new(&layers);
        let mut services = BTreeMap::new();
        for (name, mut p) in pending {
            let mut env = BTreeMap::new();
            let l = &layers[&name];
            for key in l.base.keys().chain(l.declared.keys()) {
                if env.contains_key(key) {
                    continue;
                }
                match resolver.var(&name, key) {
                    Ok(Some(value)) => {
                        let source = match (l.declared.get(key), p.spec.env.get(key)) {
                            (Some(pieces), _) => EnvSource::Declared {
                                interpolated: pieces.iter().any(|x| !matches!(x, Piece::Lit(_))),
                            },
                            (None, Some(v)) => v.source.clone(),
                            (None, None) => EnvSource::Inherited,
                        };
                        env.insert(key.clone(), EnvVar { value, source });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let span = p.declared_spans.get(key).cloned().unwrap_or(0..0);
                        self.err(span, e);
                    }
                }
            }
            p.spec.env = env;
            for (pieces, span) in &p.args {
                match resolver.render(&name, None, pieces) {
                    Ok(a) => p.spec.args.push(a),
                    Err(e) => self.err(span.clone(), e),
                }
            }
            let mut probe = |v: &mut Self, x: &Option<(ProbeKind, Vec<Piece>, Range<usize>)>| {
                let (kind, pieces, span) = x.as_ref()?;
                match resolver.render(&name, None, pieces) {
                    Ok(target) => Some(v.probe(*kind, target, span.clone())),
                    Err(e) => {
                        v.err(span.clone(), e);
                        None
                    }
                }
            };
            let ready_probe = probe(self, &p.ready_probe).flatten();
            let health_probe = probe(self, &p.health_probe).flatten();
            if let Some(r) = p.spec.ready.as_mut() {
                r.probe = ready_probe;
            }
            if let Some(h) = p.spec.health.as_mut() {
                if let Some(probe) = health_probe {
                    h.probe = probe;
                }
            }
            for req in &p.required {
                let present = p
                    .spec
                    .env
                    .get(req.get_ref())
                    .is_some_and(|v| !v.value.is_empty());
                if !present {
                    self.err(
                        req.span(),
                        format!(
                            "service `{name}` requires {} but it is not set: declare it in env, an env_file or inherit_env",
                            req.get_ref()
                        ),
                    );
                }
            }
            p.spec.required_env = p.required.iter().map(|r| r.get_ref().clone()).collect();
            services.insert(name, p.spec);
        }

        Some(Config {
            file: path.to_path_buf(),
            supervisor,
            logs,
            services,
            start_order,
            alerts,
            metrics,
        })
    }

    fn probe(&mut self, kind: ProbeKind, target: String, span: Range<usize>) -> Option<Probe> {
        match kind {
            ProbeKind::Http => {
                if !(target.starts_with("http://")) {
                    self.err(
                        span,
                        format!("invalid http probe {target:?}: expected an http:// URL"),
                    );
                    return None;
                }
                Some(Probe::Http(target))
            }
            ProbeKind::Tcp => {
                if target
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    self.err(
                        span,
                        format!("invalid tcp probe {target:?}: expected HOST:PORT"),
                    );
                    return None;
                }
                Some(Probe::Tcp(target))
            }
        }
    }

    fn service(
        &mut self,
        name: &str,
        svc: RawService,
        daemon_env: &BTreeMap<String, String>,
    ) -> (Pending, Layers, BTreeMap<String, Range<usize>>) {
        let command = {
            let c = svc.command.get_ref();
            if c.trim().is_empty() {
                self.err(svc.command.span(), "command is empty");
            }
            if c.contains('/') {
                self.resolve_path(c).to_string_lossy().into_owned()
            } else {
                c.clone()
            }
        };
        let cwd = match &svc.cwd {
            Some(c) => self.resolve_path(c.get_ref()),
            None => self.dir.to_path_buf(),
        };

        // Env layers: inherited < env files (in order) < declared.
        let mut base = BTreeMap::new();
        let mut sources: BTreeMap<String, EnvVar> = BTreeMap::new();
        let inherit = svc
            .inherit_env
            .unwrap_or_else(|| DEFAULT_INHERIT.iter().map(|s| s.to_string()).collect());
        for key in &inherit {
            if let Some(v) = daemon_env.get(key) {
                base.insert(key.clone(), v.clone());
                sources.insert(
                    key.clone(),
                    EnvVar {
                        value: v.clone(),
                        source: EnvSource::Inherited,
                    },
                );
            }
        }
        let (files, files_span) = match svc.env_file {
            Some(f) => (f.get_ref().clone().into_vec(), f.span()),
            None => (Vec::new(), 0..0),
        };
        for f in files {
            let (optional, file) = match f.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, f.as_str()),
            };
            let path = self.resolve_path(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => match envfile::parse(&path, &text) {
                    Ok(entries) => {
                        for e in entries {
                            base.insert(e.key.clone(), e.value.clone());
                            sources.insert(
                                e.key,
                                EnvVar {
                                    value: e.value,
                                    source: EnvSource::EnvFile {
                                        file: path.clone(),
                                        line: e.line,
                                    },
                                },
                            );
                        }
                    }
                    Err(errs) => self.diags.extend(errs),
                },
                Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let hint = if e.kind() == std::io::ErrorKind::NotFound {
                        let example = format!("{}.example", path.display());
                        if Path::new(&example).exists() {
                            format!("; copy {example} to it and fill it in")
                        } else {
                            "; create it, or prefix the name with '-' to make it optional"
                                .to_string()
                        }
                    } else {
                        String::new()
                    };
                    self.err(
                        files_span.clone(),
                        format!("cannot read env file {} ({e}){hint}", path.display()),
                    );
                }
            }
        }
        let mut declared = BTreeMap::new();
        let mut declared_spans = BTreeMap::new();
        for (k, v) in svc.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                self.err(v.span(), format!("invalid variable name {k:?}"));
                continue;
            }
            let span = v.span();
            let text = Spanned::new(span.clone(), v.into_inner().into_string());
            declared.insert(k.clone(), self.template(&text));
            declared_spans.insert(k, span);
        }

        let args = svc
            .args
            .iter()
            .map(|a| (self.template(a), a.span()))
            .collect();

        let mut depends_on = BTreeMap::new();
        let mut dep_spans = BTreeMap::new();
        for (dep, cond) in svc.depends_on {
            let c = match cond.get_ref().as_str() {
                "started" => DepCondition::Started,
                "ready" => DepCondition::Ready,
                "healthy" => DepCondition::Healthy,
                other => {
                    self.err(cond.span(), format!("invalid dependency condition {other:?}; expected \"started\", \"ready\" or \"healthy\""));
                    DepCondition::Started
                }
            };
            dep_spans.insert(dep.get_ref().clone(), dep.span());
            depends_on.insert(dep.into_inner(), c);
        }

        let mut ready_probe = None;
        let ready = svc.ready.map(|r| {
            let span = r.span();
            let r = r.into_inner();
            let kinds = usize::from(r.notify == Some(true))
                + usize::from(r.http.is_some())
                + usize::from(r.tcp.is_some());
            if kinds != 1 {
                self.err(
                    span,
                    "ready needs exactly one of notify = true, http = URL or tcp = ADDR",
                );
            }
            if let Some(h) = &r.http {
                ready_probe = Some((ProbeKind::Http, self.template(h), h.span()));
            } else if let Some(t) = &r.tcp {
                ready_probe = Some((ProbeKind::Tcp, self.template(t), t.span()));
            }
            ReadySpec {
                notify: r.notify == Some(true),
                probe: None,
                timeout: self.duration(&r.timeout, Duration::from_secs(30)),
            }
        });
        let mut health_probe = None;
        let health = svc.health.map(|h| {
            let span = h.span();
            let h = h.into_inner();
            if usize::from(h.http.is_some()) + usize::from(h.tcp.is_some()) != 1 {
                self.err(span, "health needs exactly one of http = URL or tcp = ADDR");
            }
            if let Some(u) = &h.http {
                health_probe = Some((ProbeKind::Http, self.template(u), u.span()));
            } else if let Some(t) = &h.tcp {
                health_probe = Some((ProbeKind::Tcp, self.template(t), t.span()));
            }
            HealthSpec {
                probe: Probe::Tcp(String::new()),
                interval: self.duration(&h.interval, Duration::from_secs(10)),
                timeout: self.duration(&h.timeout, Duration::from_secs(2)),
                retries: h.retries.unwrap_or(3).max(1),
                start_period: self.duration(&h.start_period, Duration::ZERO),
            }
        });
        let watchdog = svc
            .watchdog
            .as_ref()
            .map(|w| self.duration(&Some(w.clone()), Duration::from_secs(20)));
        if let (Some(w), false) = (&svc.watchdog, ready.as_ref().is_some_and(|r| r.notify)) {
            self.err(w.span(), "watchdog needs ready = { notify = true }: only a notify service can send WATCHDOG=1");
        }
        let restart = match &svc.restart {
            None => RestartPolicy::Always,
            Some(r) => match r.get_ref().as_str() {
                "always" => RestartPolicy::Always,
                "on-failure" => RestartPolicy::OnFailure,
                "never" => RestartPolicy::Never,
                other => {
                    self.err(r.span(), format!("invalid restart policy {other:?}; expected \"always\", \"on-failure\" or \"never\""));
                    RestartPolicy::Always
                }
            },
        };
        let backoff = match &svc.backoff {
            None => BackoffSpec {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
                factor: 2.0,
            },
            Some(b) => {
                let factor = match &b.factor {
                    Some(f) if !(1.0..=100.0).contains(f.get_ref()) => {
                        self.err(
                            f.span(),
                            format!(
                                "backoff factor {} is out of range; expected 1.0 to 100.0",
                                f.get_ref()
                            ),
                        );
                        2.0
                    }
                    Some(f) => *f.get_ref(),
                    None => 2.0,
                };
                BackoffSpec {
                    initial: self.duration(&b.initial, Duration::from_millis(500)),
                    max: self.duration(&b.max, Duration::from_secs(30)),
                    factor,
                }
            }
        };
        let max_memory =
            svc.max_memory
                .as_ref()
                .and_then(|m| match units::parse_size(m.get_ref()) {
                    Ok(0) => {
                        self.err(m.span(), "max_memory must be more than 0");
                        None
                    }
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.err(m.span(), e);
                        None
                    }
                });
        let stop_signal = match &svc.stop_signal {
            None => "SIGTERM".to_string(),
            Some(s) => match units::parse_signal(s.get_ref()) {
                Ok(sig) => sig.as_str().to_string(),
                Err(e) => {
                    self.err(s.span(), e);
                    "SIGTERM".to_string()
                }
            },
        };
        let spec = ServiceSpec {
            name: name.to_string(),
            command,
            args: Vec::new(),
            cwd,
            env: sources,
            required_env: Vec::new(),
            autostart: svc.autostart.unwrap_or(true),
            depends_on,
            ready,
            health,
            watchdog,
            restart,
            stop_exit_codes: svc.stop_exit_codes.unwrap_or_default(),
            backoff,
            min_uptime: self.duration(&svc.min_uptime, Duration::from_secs(10)),
            start_grace: self.duration(&svc.start_grace, Duration::from_secs(1)),
            max_restarts: svc.max_restarts.unwrap_or(5),
            max_memory,
            stop_signal,
            stop_timeout: self.duration(&svc.stop_timeout, Duration::from_secs(10)),
        };
        let pending = Pending {
            spec,
            args,
            ready_probe,
            health_probe,
            required: svc.required_env,
            declared_spans,
        };
        (pending, Layers { base, declared }, dep_spans)
    }

    /// Topological order (Kahn), ties broken by name; reports each cycle once.
    fn order(
        &mut self,
        services: &BTreeMap<String, Pending>,
        spans: &BTreeMap<String, BTreeMap<String, Range<usize>>>,
    ) -> Vec<String> {
        let mut order = Vec::new();
        let mut placed = BTreeSet::new();
        loop {
            let next = services.iter().find(|(name, p)| {
                !placed.contains(*name)
                    && p.spec
                        .depends_on
                        .keys()
                        .all(|d| placed.contains(d) || !services.contains_key(d) || d == *name)
            });
            match next {
                Some((name, _)) => {
                    placed.insert(name.clone());
                    order.push(name.clone());
                }
                None => break,
            }
        }
        if order.len() < services.len() {
            // Every unplaced service is in or behind a cycle; name one cycle by walking it.
            let start = services
                .keys()
                .find(|n| !placed.contains(*n))
                .cloned()
                .unwrap_or_default();
            let mut path = vec![start.clone()];
            let mut cur = start;
            loop {
                let next = services[&cur]
                    .spec
                    .depends_on
                    .keys()
                    .find(|d| services.contains_key(*d) && !placed.contains(*d));
                let Some(next) = next.cloned() else { break };
                if let Some(pos) = path.iter().position(|p| *p == next) {
                    let cycle: Vec<&str> = path[pos..]
                        .iter()
                        .map(String::as_str)
                        .chain([next.as_str()])
                        .collect();
                    let from = &path[path.len() - 1];
                    let span = spans
                        .get(from)
                        .and_then(|s| s.get(&next))
                        .cloned()
                        .unwrap_or(0..0);
                    self.err(span, format!("dependency cycle: {}", cycle.join(" -> ")));
                    break;
                }
                path.push(next.clone());
                cur = next;
            }
            for n in services.keys() {
                if !placed.contains(n) {
                    order.push(n.clone());
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests;
