//! Loading and validating `supervisor.toml`. Does no process I/O: it reads files and the
//! environment it is given, and returns a [`Config`] or every problem found, each with
//! `file:line:col`. Everything it reads is bounded (see [`schema`]'s limits), so no file can
//! make `check` or a reload hang, overflow the stack or run out of memory.

pub mod alerts;
pub mod diagnostics;
pub mod envfile;
pub mod files;
pub mod interpolate;
pub mod keys;
pub mod model;
pub mod raw;
pub mod schema;
pub mod secrets;
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
use schema::Num;
use toml::Spanned;

pub use schema::{DEFAULT_INHERIT, DEFAULT_TIMESTAMP};

/// `lmctl check`: [`load`], with [`Config::warnings`] counted as problems too.
pub fn check(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let c = load(path)?;
    if c.warnings.is_empty() {
        Ok(c)
    } else {
        Err(c.warnings)
    }
}

/// Reads and validates a config, taking inherited variables from this process's environment.
/// This is the path of `lmctl check`, the daemon's start and every reload. Besides what
/// [`parse`] checks, it looks up every `command`: one that cannot be executed is an error for
/// `check` but only a warning here (in [`Config::warnings`]), so one service whose binary
/// is missing does not keep the daemon, and every other service, from starting; it fails at
/// spawn with the same reason.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let text =
        files::read_text(path, schema::MAX_CONFIG_BYTES, schema::READ_TIMEOUT).map_err(|e| {
            vec![Diagnostic::whole_file(
                path,
                format!("cannot read the config: {e}; pass the right file with --config"),
            )]
        })?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    on_big_stack(path, move |p| validate(p, &text, &env, true))
}

/// The TOML parser recurses once per level of nesting up to its own limit, and in a debug
/// build that takes more than the 2 MiB a tokio worker has: validation runs on a thread of
/// its own with room to spare (only the pages used are ever touched), so no file can abort
/// the caller, whichever thread it is on.
fn on_big_stack(
    path: &Path,
    f: impl FnOnce(&Path) -> Result<Config, Vec<Diagnostic>> + Send + 'static,
) -> Result<Config, Vec<Diagnostic>> {
    const STACK: usize = 64 << 20;
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("config-load".into())
        .stack_size(STACK)
        .spawn(move || f(&owned));
    match spawned.map(|h| h.join()) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(vec![Diagnostic::whole_file(
            path,
            "validating the config failed unexpectedly (a bug: please report it with the file)",
        )]),
        Err(e) => Err(vec![Diagnostic::whole_file(
            path,
            format!("cannot start a thread to validate the config: {e}"),
        )]),
    }
}

/// Validates config `text` as if read from `path`; `daemon_env` is what `inherit_env` draws on.
/// Commands are not looked up (the text may come from elsewhere, like `import-pm2`).
pub fn parse(
    path: &Path,
    text: &str,
    daemon_env: &BTreeMap<String, String>,
) -> Result<Config, Vec<Diagnostic>> {
    let text = text.to_string();
    let env = daemon_env.clone();
    on_big_stack(path, move |p| validate(p, &text, &env, false))
}

fn validate(
    path: &Path,
    text: &str,
    daemon_env: &BTreeMap<String, String>,
    check_commands: bool,
) -> Result<Config, Vec<Diagnostic>> {
    if text.len() as u64 > schema::MAX_CONFIG_BYTES {
        return Err(vec![Diagnostic::whole_file(
            path,
            format!(
                "the config is {} bytes, more than the limit of {}; split it or remove what is unused",
                text.len(),
                schema::show_size(schema::MAX_CONFIG_BYTES)
            ),
        )]);
    }
    let map = SourceMap::new(path, text);
    // Unknown keys first, all of them: the typed pass below ignores them.
    let mut diags: Vec<Diagnostic> = keys::unknown_keys(text)
        .into_iter()
        .map(|u| map.error(u.span, u.message))
        .collect();
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let mut msg = e.message().trim().to_string();
            if msg.is_empty() {
                msg = "this value does not fit the config (the TOML reader gave no detail); \
                       check its type and spelling against docs/CONFIG.md"
                    .to_string();
            }
            diags.push(match e.span() {
                Some(span) => map.error(span, msg),
                None => Diagnostic::whole_file(path, msg),
            });
            return Err(finish(diags));
        }
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let mut v = Validator {
        map: &map,
        dir: &dir,
        diags,
        check_commands,
        warnings: Vec::new(),
        env_files: Default::default(),
        read_budget: schema::READ_BUDGET,
        service: String::new(),
    };
    let config = v.config(path, raw, daemon_env);
    if v.diags.is_empty() {
        config.ok_or_else(|| vec![Diagnostic::whole_file(path, "invalid config")])
    } else {
        // Refused anyway: say everything at once.
        let mut all = v.diags;
        all.append(&mut v.warnings);
        Err(finish(all))
    }
}

/// Sorted by position (people read them top to bottom), deduplicated, and capped: a broken
/// generated file must not print a million lines.
fn finish(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    // Every error says something, even when a library underneath said nothing (seen once
    // from the fuzzer, not reproduced since).
    for d in &mut diags {
        if d.message.trim().is_empty() {
            d.message = "invalid here (no detail available); see docs/CONFIG.md".to_string();
        }
    }
    diags.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    diags.dedup();
    if diags.len() > schema::MAX_DIAGNOSTICS {
        let more = diags.len() - schema::MAX_DIAGNOSTICS;
        let file = diags[0].file.clone();
        diags.truncate(schema::MAX_DIAGNOSTICS);
        diags.push(Diagnostic::whole_file(
            &file,
            format!("… and {more} more problems; fix the ones above first"),
        ));
    }
    diags
}

struct Validator<'a> {
    map: &'a SourceMap<'a>,
    dir: &'a Path,
    diags: Vec<Diagnostic>,
    /// Look each `command` up (as `load` does); `parse` alone does not touch the disk for it.
    check_commands: bool,
    /// Problems that do not stop the daemon (see [`load`]).
    warnings: Vec<Diagnostic>,
    /// Env files read so far, by path.
    env_files: std::collections::HashMap<PathBuf, EnvFileRead>,
    /// Time left for reading env files in this load: many slow files must not add up to a
    /// reload that takes hours.
    read_budget: Duration,
    /// The service being validated, for messages that name a key.
    service: String,
}

type EnvFileRead = Result<std::rc::Rc<str>, std::rc::Rc<files::ReadError>>;

/// A service's parsed fields that still need the env to be resolved.
struct Pending {
    spec: ServiceSpec,
    args: Vec<(Vec<Piece>, Range<usize>)>,
    ready_probe: Option<(ProbeKind, Vec<Piece>, Range<usize>)>,
    health_probe: Option<(ProbeKind, Vec<Piece>, Range<usize>)>,
    required: Vec<Spanned<String>>,
    declared_spans: BTreeMap<String, Range<usize>>,
    command_span: Range<usize>,
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

    /// Reads an env file once per load (services often share one), never for longer than
    /// what is left of the load's time for reading files.
    fn read_env_file(&mut self, path: &Path) -> EnvFileRead {
        if let Some(r) = self.env_files.get(path) {
            return r.clone();
        }
        let started = std::time::Instant::now();
        let timeout = schema::READ_TIMEOUT.min(self.read_budget);
        let r = if timeout.is_zero() {
            Err(files::ReadError::Timeout(Duration::ZERO))
        } else {
            files::read_text(path, schema::MAX_ENV_FILE_BYTES, timeout)
        };
        self.read_budget = self.read_budget.saturating_sub(started.elapsed());
        let r = r.map(std::rc::Rc::from).map_err(std::rc::Rc::new);
        self.env_files.insert(path.to_path_buf(), r.clone());
        r
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// A text key with a unit: parsed, checked against its range in `schema` (as
    /// `measure` of the value), else its default.
    fn ranged<T: Copy>(
        &mut self,
        v: &Option<Spanned<String>>,
        n: &Num,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
        measure: impl Fn(T) -> f64,
    ) -> T {
        let Some(s) = v else { return default };
        match parse(s.get_ref()) {
            Ok(x) if n.contains(measure(x)) => x,
            Ok(_) => {
                let msg = n.out_of_range(&self.service, &format!("{:?}", s.get_ref()));
                self.err(s.span(), msg);
                default
            }
            Err(e) => {
                self.err(s.span(), e);
                default
            }
        }
    }

    /// A duration key (milliseconds in `schema`).
    fn duration(&mut self, v: &Option<Spanned<String>>, n: &Num) -> Duration {
        self.ranged(v, n, n.default_duration(), units::parse_duration, |d| {
            d.as_millis() as f64
        })
    }

    /// A size key (bytes in `schema`).
    fn size(&mut self, v: &Option<Spanned<String>>, n: &Num) -> u64 {
        self.ranged(v, n, n.default_u64(), units::parse_size, |b| b as f64)
    }

    /// An integer key, like [`Self::duration`].
    fn count(&mut self, v: &Option<Spanned<i64>>, n: &Num) -> u64 {
        match v {
            None => n.default_u64(),
            Some(c) => self.count_value(c, n).unwrap_or(n.default_u64()),
        }
    }

    fn count_value(&mut self, c: &Spanned<i64>, n: &Num) -> Option<u64> {
        let x = *c.get_ref();
        if n.contains(x as f64) {
            Some(x as u64)
        } else {
            self.err(c.span(), n.out_of_range(&self.service, &x.to_string()));
            None
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
                .unwrap_or(schema::DEFAULT_STATE_DIR),
        );
        let socket = match &sup.socket {
            Some(s) => self.resolve_path(s.get_ref()),
            None => state_dir.join("lmctl.sock"),
        };
        let resource_interval = self.duration(&sup.resource_interval, &schema::RESOURCE_INTERVAL);
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
            reap_orphans: sup.reap_orphans.unwrap_or(schema::DEFAULT_REAP_ORPHANS),
            cgroups,
            secret_keys: sup.secret_keys.clone().unwrap_or_default(),
        };

        let lg = &raw.logs;
        let max_size = self.size(&lg.max_size, &schema::LOG_MAX_SIZE);
        let max_line = self.size(&lg.max_line, &schema::LOG_MAX_LINE) as usize;
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
        let logs = LogSettings {
            timestamp,
            max_size,
            keep: self.count(&lg.keep, &schema::LOG_KEEP) as u32,
            max_line,
        };

        // Services: fields first, then env across services, then dependencies.
        let mut layers = BTreeMap::new();
        let mut pending = BTreeMap::new();
        let mut dep_spans: BTreeMap<String, BTreeMap<String, Range<usize>>> = BTreeMap::new();
        let count = raw.services.len();
        for (i, (name, svc)) in raw.services.into_iter().enumerate() {
            let name_span = name.span();
            if i == schema::MAX_SERVICES {
                self.err(
                    name_span,
                    format!(
                        "too many services: this config has {count}, at most {} are allowed in one config",
                        schema::MAX_SERVICES,
                    ),
                );
                break;
            }
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
        let secret_keys = supervisor.secret_keys.clone();
        let mut resolver = Resolver::with_secrets(&layers, &secret_keys);
        let declared_spans: BTreeMap<String, BTreeMap<String, Range<usize>>> = pending
            .iter()
            .map(|(n, p)| (n.clone(), p.declared_spans.clone()))
            .collect();
        let mut services = BTreeMap::new();
        for (name, mut p) in pending {
            let mut env = BTreeMap::new();
            let l = &layers[&name];
            for key in l.base.keys().chain(l.declared.keys()) {
                if env.contains_key(key) {
                    continue;
                }
                // A failure is reported below, where it started.
                if let Ok(Some(r)) = resolver.var(&name, key) {
                    let value = r.value.clone();
                    if r.shown != r.value && !secrets::is_secret_name(key, &secret_keys) {
                        p.spec.shown_env.insert(key.clone(), r.shown.clone());
                    }
                    let source = match (l.declared.get(key), p.spec.env.get(key)) {
                        (Some(pieces), _) => EnvSource::Declared {
                            interpolated: pieces.iter().any(|x| !matches!(x, Piece::Lit(_))),
                        },
                        (None, Some(v)) => v.source.clone(),
                        (None, None) => EnvSource::Inherited,
                    };
                    env.insert(key.clone(), EnvVar { value, source });
                }
            }
            p.spec.env = env;
            for (pieces, span) in &p.args {
                match resolver.render(&name, None, pieces) {
                    Ok(a) => {
                        p.spec.args.push(a.value);
                        p.spec.shown_args.push(a.shown);
                    }
                    Err(f) => {
                        if let Some(m) = f.message("this argument") {
                            self.err(span.clone(), m);
                        }
                    }
                }
            }
            let mut probe = |v: &mut Self, x: &Option<(ProbeKind, Vec<Piece>, Range<usize>)>| {
                let (kind, pieces, span) = x.as_ref()?;
                match resolver.render(&name, None, pieces) {
                    Ok(target) => {
                        let probe = v.probe(*kind, target.value, span.clone())?;
                        // What `show` prints: the same probe with its secrets masked.
                        let shown = match probe {
                            Probe::Http(_) => Probe::Http(target.shown),
                            Probe::Tcp(_) => Probe::Tcp(target.shown),
                        };
                        Some(Some((probe, shown)))
                    }
                    Err(f) => {
                        if let Some(m) = f.message("this probe address") {
                            v.err(span.clone(), m);
                        }
                        None
                    }
                }
            };
            let ready_probe = probe(self, &p.ready_probe).flatten();
            let health_probe = probe(self, &p.health_probe).flatten();
            if let Some(r) = p.spec.ready.as_mut() {
                (r.probe, r.shown_probe) = ready_probe.unzip();
            }
            if let Some(h) = p.spec.health.as_mut() {
                if let Some((probe, shown)) = health_probe {
                    h.probe = probe;
                    h.shown_probe = shown;
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
            if self.check_commands {
                if let Err(e) = command_check(&p.spec) {
                    let w = self.map.error(p.command_span.clone(), e);
                    self.warnings.push(w);
                }
            }
            services.insert(name, p.spec);
        }
        // Variables that failed, at the line that defines them.
        for (service, var, msg) in std::mem::take(&mut resolver.errors) {
            let span = declared_spans
                .get(&service)
                .and_then(|s| s.get(&var))
                .cloned()
                .unwrap_or(0..0);
            self.err(span, msg);
        }

        Some(Config {
            file: path.to_path_buf(),
            supervisor,
            logs,
            services,
            start_order,
            warnings: finish(std::mem::take(&mut self.warnings)),
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
        self.service = name.to_string();
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
            match self.read_env_file(&path) {
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
                Err(e) if optional && e.is_not_found() => {}
                Err(e) => {
                    let hint = if e.is_not_found() {
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
                        format!("cannot read env file {}: {e}{hint}", path.display()),
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
                shown_probe: None,
                timeout: self.duration(&r.timeout, &schema::READY_TIMEOUT),
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
                shown_probe: Probe::Tcp(String::new()),
                interval: self.duration(&h.interval, &schema::HEALTH_INTERVAL),
                timeout: self.duration(&h.timeout, &schema::HEALTH_TIMEOUT),
                retries: self.count(&h.retries, &schema::HEALTH_RETRIES) as u32,
                start_period: self.duration(&h.start_period, &schema::HEALTH_START_PERIOD),
            }
        });
        let watchdog = svc
            .watchdog
            .as_ref()
            .map(|w| self.duration(&Some(w.clone()), &schema::WATCHDOG));
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
                initial: schema::BACKOFF_INITIAL.default_duration(),
                max: schema::BACKOFF_MAX.default_duration(),
                factor: schema::BACKOFF_FACTOR.default.unwrap_or(2.0),
            },
            Some(b) => {
                let n = &schema::BACKOFF_FACTOR;
                let factor = match &b.factor {
                    Some(f) if !n.contains(*f.get_ref()) => {
                        self.err(
                            f.span(),
                            n.out_of_range(&self.service, &f.get_ref().to_string()),
                        );
                        n.default.unwrap_or(2.0)
                    }
                    Some(f) => *f.get_ref(),
                    None => n.default.unwrap_or(2.0),
                };
                let initial = self.duration(&b.initial, &schema::BACKOFF_INITIAL);
                let max = self.duration(&b.max, &schema::BACKOFF_MAX);
                if let (Some(m), true) = (&b.max, max < initial) {
                    self.err(
                        m.span(),
                        format!(
                            "backoff max ({}) is shorter than backoff initial ({}); make max at least initial",
                            units::human_duration(max),
                            units::human_duration(initial)
                        ),
                    );
                }
                BackoffSpec {
                    initial,
                    max,
                    factor,
                }
            }
        };
        let max_memory = svc
            .max_memory
            .as_ref()
            .map(|m| self.size(&Some(m.clone()), &schema::MAX_MEMORY));
        let stop_signal = match &svc.stop_signal {
            None => schema::DEFAULT_STOP_SIGNAL.to_string(),
            Some(s) => match units::parse_signal(s.get_ref()) {
                Ok(sig) => sig.as_str().to_string(),
                Err(e) => {
                    self.err(s.span(), e);
                    schema::DEFAULT_STOP_SIGNAL.to_string()
                }
            },
        };
        let stop_exit_codes = svc
            .stop_exit_codes
            .iter()
            .flatten()
            .filter_map(|c| self.count_value(c, &schema::STOP_EXIT_CODE))
            .map(|c| c as i32)
            .collect();
        let spec = ServiceSpec {
            name: name.to_string(),
            command,
            args: Vec::new(),
            shown_args: Vec::new(),
            shown_env: BTreeMap::new(),
            cwd,
            env: sources,
            required_env: Vec::new(),
            autostart: svc.autostart.unwrap_or(schema::DEFAULT_AUTOSTART),
            depends_on,
            ready,
            health,
            watchdog,
            restart,
            stop_exit_codes,
            backoff,
            min_uptime: self.duration(&svc.min_uptime, &schema::MIN_UPTIME),
            start_grace: self.duration(&svc.start_grace, &schema::START_GRACE),
            max_restarts: self.count(&svc.max_restarts, &schema::MAX_RESTARTS) as u32,
            max_memory,
            stop_signal,
            stop_timeout: self.duration(&svc.stop_timeout, &schema::STOP_TIMEOUT),
        };
        let pending = Pending {
            spec,
            args,
            ready_probe,
            health_probe,
            required: svc.required_env,
            declared_spans,
            command_span: svc.command.span(),
        };
        (pending, Layers { base, declared }, dep_spans)
    }

    /// Topological order (Kahn), ties broken by name; reports each cycle once. O(n log n):
    /// `check` of 8,000 services must not take seconds.
    fn order(
        &mut self,
        services: &BTreeMap<String, Pending>,
        spans: &BTreeMap<String, BTreeMap<String, Range<usize>>>,
    ) -> Vec<String> {
        let mut order = Vec::new();
        let mut placed = BTreeSet::new();
        // Unknown and self dependencies are reported elsewhere and do not hold anything back.
        let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, p) in services {
            let deps: BTreeSet<&str> = p
                .spec
                .depends_on
                .keys()
                .map(String::as_str)
                .filter(|d| services.contains_key(*d) && d != name)
                .collect();
            waiting.insert(name, deps.len());
            for d in deps {
                dependents.entry(d).or_default().push(name);
            }
        }
        let mut ready: BTreeSet<&str> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(name, _)| *name)
            .collect();
        while let Some(name) = ready.pop_first() {
            placed.insert(name.to_string());
            order.push(name.to_string());
            for d in dependents.get(name).into_iter().flatten() {
                if let Some(n) = waiting.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(d);
                    }
                }
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

/// Can `spec.command` be executed? Resolved as exec will: a path as it is, a bare name
/// through the service's own `PATH` (the one it is given, not the daemon's; relative entries
/// against its `cwd`), `/bin:/usr/bin` when it has none.
fn command_check(spec: &ServiceSpec) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".to_string(),
            _ => e.to_string(),
        })?;
        if meta.is_dir() {
            return Err("it is a directory".into());
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err("it is not executable (chmod +x it)".into());
        }
        Ok(())
    };
    let c = &spec.command;
    if c.trim().is_empty() {
        return Ok(()); // "command is empty" is reported already
    }
    if c.contains('/') {
        let p = if Path::new(c).is_absolute() {
            PathBuf::from(c)
        } else {
            spec.cwd.join(c)
        };
        return executable(&p).map_err(|e| {
            format!(
                "command {} of service `{}` cannot be executed: {e}; build or install it, or fix `command`",
                p.display(),
                spec.name
            )
        });
    }
    let path = spec
        .env
        .get("PATH")
        .map(|v| v.value.as_str())
        .unwrap_or("/bin:/usr/bin");
    let mut why = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(dir)
        };
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            spec.cwd.join(dir)
        };
        let candidate = dir.join(c);
        if candidate.exists() {
            match executable(&candidate) {
                Ok(()) => return Ok(()),
                Err(e) => why = Some(format!("{}: {e}", candidate.display())),
            }
        }
    }
    Err(match why {
        Some(w) => format!(
            "command `{c}` of service `{}` cannot be executed ({w})",
            spec.name
        ),
        None => {
            // A long PATH would drown the message; say how long it is instead.
            let shown = if path.len() <= 80 {
                path.to_string()
            } else {
                format!("{} folders", path.split(':').count())
            };
            format!(
                "command `{c}` of service `{}` is not found in its PATH ({shown}); install it, give a path, or add its folder to PATH (env or inherit_env)",
                spec.name
            )
        }
    })
}

#[cfg(test)]
mod tests;
