//! Sessions: one actor owns every customer's state; one worker task per browser.
//!
//! Invariants:
//! - Only the actor task (`Actor::run`) reads or writes session state. HTTP
//!   handlers and workers talk to it by message; it never awaits a worker.
//! - At most one browser per customer: a customer's new worker first waits
//!   until the previous worker (browser destroyed, profile released) is done.
//!   Workers of one customer form a chain, so no interleaving of `/init`,
//!   `/logout`, grace timers and crashes can overlap two browsers.
//! - Every worker event carries the generation it was started for; events of
//!   an older generation are ignored, so a slow dying browser cannot rewrite
//!   the state of its successor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::browser::{Browser, Page, PageObs};
use crate::config::Config;
use crate::{procs, qr};

/// How often a worker looks at its page.
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// Bound on one page observation.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed observations in a row that count as a dead page.
const MAX_OBSERVE_FAILURES: u32 = 3;
/// How long `/send` waits for the send button.
const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Told to a caller that hits an init in progress.
pub const RETRY_AFTER_SECONDS: u64 = 3;
/// Reported in `/status`; re-inits after `ERROR` since the last `READY`.
pub const MAX_RECONNECTION_ATTEMPTS: u32 = 3;

/// The state of one customer's session (wire names in SCREAMING_SNAKE_CASE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    NotInitialized,
    Initializing,
    QrRequired,
    Authenticated,
    Ready,
    #[expect(
        dead_code,
        reason = "part of the wire contract; no automatic reconnection yet"
    )]
    Reconnecting,
    DisconnectedLogout,
    #[expect(
        dead_code,
        reason = "part of the wire contract; no ban detector on the page yet"
    )]
    DisconnectedBanned,
    Error,
}

impl State {
    /// States after which the browser is destroyed (after the grace period).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::DisconnectedLogout | State::DisconnectedBanned | State::Error
        )
    }

    fn recommended_action(self) -> &'static str {
        match self {
            State::NotInitialized => "Call POST /init to start the session",
            State::Initializing => "Wait and poll GET /status",
            State::QrRequired => "Scan QR code to authenticate",
            State::Authenticated => "Wait for the session to become READY",
            State::Ready => "None: the session can send messages",
            State::Reconnecting => "Wait for the reconnection to finish",
            State::DisconnectedLogout => {
                "Session logged out: call POST /init and scan a new QR code"
            }
            State::DisconnectedBanned => "Number banned: contact support",
            State::Error => "Call POST /init to recover the session",
        }
    }
}

/// The pure transition on a page observation: `(state, ever_ready, obs) -> state`.
pub fn on_observation(state: State, ever_ready: bool, obs: &PageObs) -> State {
    if state.is_terminal() || state == State::NotInitialized {
        return state;
    }
    if obs.ready {
        State::Ready
    } else if obs.qr.is_some() {
        if ever_ready {
            State::DisconnectedLogout
        } else {
            State::QrRequired
        }
    } else if state == State::QrRequired {
        // The QR went away but the chat pane is not there yet.
        State::Authenticated
    } else {
        state
    }
}

/// `GET /status` body.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub cliente_id: u64,
    pub state: State,
    pub connected: bool,
    pub can_send_messages: bool,
    pub needs_qr: bool,
    pub is_recoverable: bool,
    pub recommended_action: &'static str,
    pub reconnection_attempts: u32,
    pub max_reconnection_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_code_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Answer to `/init`.
#[derive(Debug)]
pub enum InitOutcome {
    Initializing(StatusView),
    NoActionNeeded(StatusView),
    InProgress,
    Failed(String),
    BrowserNotFound,
    TooManySessions(usize),
    ShuttingDown,
}

/// Answer to `/send`.
#[derive(Debug)]
pub enum SendOutcome {
    Sent,
    NotReady(State),
    Failed(String),
}

/// Answer to shutdown: how many browsers there were and whether all died in time.
#[derive(Debug)]
pub struct ShutdownReport {
    pub browsers: usize,
    pub timed_out: bool,
}

enum Msg {
    Init(u64, oneshot::Sender<InitOutcome>),
    Status(u64, oneshot::Sender<StatusView>),
    Send {
        id: u64,
        phone: String,
        message: String,
        reply: oneshot::Sender<SendOutcome>,
    },
    Logout(u64, oneshot::Sender<()>),
    Count(oneshot::Sender<usize>),
    Shutdown(oneshot::Sender<ShutdownReport>),
    // From workers and timers; `gen` is the slot generation they belong to.
    Launched {
        id: u64,
        gen: u64,
        pid: i32,
    },
    LaunchFailed {
        id: u64,
        gen: u64,
        error: String,
    },
    Observed {
        id: u64,
        gen: u64,
        obs: PageObs,
    },
    Exited {
        id: u64,
        gen: u64,
        reason: String,
    },
    GraceOver {
        id: u64,
        gen: u64,
    },
}

enum WorkerCmd {
    Stop,
    Send {
        phone: String,
        message: String,
        reply: oneshot::Sender<SendOutcome>,
    },
}

/// The actor's handle on a worker (or on a logout cleanup task).
struct WorkerHandle {
    cmd: Option<mpsc::UnboundedSender<WorkerCmd>>,
    done: watch::Receiver<bool>,
    pid: Option<i32>,
}

impl WorkerHandle {
    fn alive(&self) -> bool {
        !*self.done.borrow()
    }
    fn stop(&self) {
        if let Some(c) = &self.cmd {
            let _ = c.send(WorkerCmd::Stop);
        }
    }
}

struct Slot {
    gen: u64,
    state: State,
    ever_ready: bool,
    /// Current QR string and its PNG data URL.
    qr: Option<(String, String)>,
    last_error: Option<String>,
    reconnection_attempts: u32,
    worker: Option<WorkerHandle>,
    pending_init: Option<oneshot::Sender<InitOutcome>>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            gen: 0,
            state: State::NotInitialized,
            ever_ready: false,
            qr: None,
            last_error: None,
            reconnection_attempts: 0,
            worker: None,
            pending_init: None,
        }
    }

    fn browser_alive(&self) -> bool {
        self.worker.as_ref().is_some_and(WorkerHandle::alive)
    }

    fn view(&self, cliente_id: u64) -> StatusView {
        let s = self.state;
        StatusView {
            cliente_id,
            state: s,
            connected: s == State::Ready,
            can_send_messages: s == State::Ready,
            needs_qr: s == State::QrRequired,
            is_recoverable: matches!(
                s,
                State::Error | State::Reconnecting | State::DisconnectedLogout
            ),
            recommended_action: s.recommended_action(),
            reconnection_attempts: self.reconnection_attempts,
            max_reconnection_attempts: MAX_RECONNECTION_ATTEMPTS,
            qr_code_base64: match (s, &self.qr) {
                (State::QrRequired, Some((_, png))) => Some(png.clone()),
                _ => None,
            },
            last_error: self.last_error.clone(),
        }
    }
}

/// Cloneable handle to the session actor.
#[derive(Clone)]
pub struct Sessions {
    tx: mpsc::Sender<Msg>,
}

impl Sessions {
    /// Starts the actor.
    pub fn start(cfg: Arc<Config>) -> Sessions {
        let (tx, rx) = mpsc::channel(1024);
        let actor = Actor {
            cfg,
            instance: procs::random_hex(),
            slots: HashMap::new(),
            tx: tx.clone(),
            shutting_down: false,
        };
        tokio::spawn(actor.run(rx));
        Sessions { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn init(&self, id: u64) -> InitOutcome {
        self.ask(|r| Msg::Init(id, r))
            .await
            .unwrap_or_else(|| InitOutcome::Failed("session actor stopped".into()))
    }

    pub async fn status(&self, id: u64) -> StatusView {
        match self.ask(|r| Msg::Status(id, r)).await {
            Some(v) => v,
            None => Slot::new().view(id),
        }
    }

    pub async fn send(&self, id: u64, phone: String, message: String) -> SendOutcome {
        self.ask(|reply| Msg::Send {
            id,
            phone,
            message,
            reply,
        })
        .await
        .unwrap_or_else(|| SendOutcome::Failed("session actor stopped".into()))
    }

    pub async fn logout(&self, id: u64) {
        let _ = self.ask(|r| Msg::Logout(id, r)).await;
    }

    /// Sessions with a live browser.
    pub async fn count(&self) -> usize {
        self.ask(Msg::Count).await.unwrap_or(0)
    }

    /// Destroys every browser, waiting at most `timeout` before force-killing.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.ask(Msg::Shutdown).await.unwrap_or(ShutdownReport {
            browsers: 0,
            timed_out: false,
        })
    }
}

struct Actor {
    cfg: Arc<Config>,
    /// Tags every browser of this service instance, for the last-resort kill.
    instance: String,
    slots: HashMap<u64, Slot>,
    /// Our own inbox, for workers and timers.
    tx: mpsc::Sender<Msg>,
    shutting_down: bool,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
        }
    }

    fn live_browsers(&self) -> usize {
        self.slots.values().filter(|s| s.browser_alive()).count()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Init(id, reply) => self.init(id, reply),
            Msg::Status(id, reply) => {
                let v = match self.slots.get(&id) {
                    Some(s) => s.view(id),
                    None => Slot::new().view(id),
                };
                let _ = reply.send(v);
            }
            Msg::Send {
                id,
                phone,
                message,
                reply,
            } => {
                let Some(slot) = self.slots.get(&id) else {
                    let _ = reply.send(SendOutcome::NotReady(State::NotInitialized));
                    return;
                };
                match (
                    &slot.state,
                    slot.worker.as_ref().and_then(|w| w.cmd.as_ref()),
                ) {
                    (State::Ready, Some(cmd)) => {
                        if let Err(mpsc::error::SendError(WorkerCmd::Send { reply, .. })) = cmd
                            .send(WorkerCmd::Send {
                                phone,
                                message,
                                reply,
                            })
                        {
                            let _ = reply.send(SendOutcome::NotReady(slot.state));
                        }
                    }
                    (s, _) => {
                        let _ = reply.send(SendOutcome::NotReady(*s));
                    }
                }
            }
            Msg::Logout(id, reply) => self.logout(id, reply),
            Msg::Count(reply) => {
                let n = self
                    .slots
                    .values()
                    .filter(|s| s.state != State::NotInitialized && s.browser_alive())
                    .count();
                let _ = reply.send(n);
            }
            Msg::Shutdown(reply) => self.shutdown(reply),
            Msg::Launched { id, gen, pid } => {
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                if let Some(w) = slot.worker.as_mut() {
                    w.pid = Some(pid);
                }
                tracing::info!(cliente_id = id, pid, "browser launched");
                if let Some(reply) = slot.pending_init.take() {
                    let _ = reply.send(InitOutcome::Initializing(slot.view(id)));
                }
            }
            Msg::LaunchFailed { id, gen, error } => {
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                tracing::warn!(cliente_id = id, %error, "browser launch failed");
                slot.state = State::Error;
                slot.last_error = Some(error.clone());
                if let Some(reply) = slot.pending_init.take() {
                    let _ = reply.send(InitOutcome::Failed(error));
                }
            }
            Msg::Observed { id, gen, obs } => {
                let grace = self.cfg.session_grace;
                let tx = self.tx.clone();
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                let next = on_observation(slot.state, slot.ever_ready, &obs);
                if next == State::QrRequired {
                    if let Some(q) = &obs.qr {
                        if slot.qr.as_ref().map(|(s, _)| s) != Some(q) {
                            match qr::png_data_url(q) {
                                Ok(png) => slot.qr = Some((q.clone(), png)),
                                Err(e) => tracing::warn!(cliente_id = id, "{e}"),
                            }
                        }
                    }
                } else {
                    slot.qr = None;
                }
                if next == State::Ready {
                    slot.ever_ready = true;
                    slot.reconnection_attempts = 0;
                }
                if next != slot.state {
                    tracing::info!(cliente_id = id, from = ?slot.state, to = ?next, "session state");
                    slot.state = next;
                    if next.is_terminal() {
                        schedule_grace(tx, id, gen, grace);
                    }
                }
            }
            Msg::Exited { id, gen, reason } => {
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                tracing::warn!(cliente_id = id, %reason, "browser gone");
                if let Some(reply) = slot.pending_init.take() {
                    let _ = reply.send(InitOutcome::Failed(reason.clone()));
                }
                if !slot.state.is_terminal() && slot.state != State::NotInitialized {
                    slot.state = State::Error;
                    slot.qr = None;
                    slot.last_error = Some(reason);
                }
            }
            Msg::GraceOver { id, gen } => {
                let Some(slot) = self.current(id, gen) else {
                    return;
                };
                if slot.state.is_terminal() {
                    if let Some(w) = &slot.worker {
                        tracing::info!(cliente_id = id, state = ?slot.state, "grace over, destroying browser");
                        w.stop();
                    }
                }
            }
        }
    }

    /// The slot when `gen` is its current generation.
    fn current(&mut self, id: u64, gen: u64) -> Option<&mut Slot> {
        self.slots.get_mut(&id).filter(|s| s.gen == gen)
    }

    fn init(&mut self, id: u64, reply: oneshot::Sender<InitOutcome>) {
        if self.shutting_down {
            let _ = reply.send(InitOutcome::ShuttingDown);
            return;
        }
        let live = self.live_browsers();
        let slot = self.slots.entry(id).or_insert_with(Slot::new);
        match slot.state {
            State::Initializing => {
                let _ = reply.send(InitOutcome::InProgress);
                return;
            }
            State::QrRequired | State::Authenticated | State::Ready | State::Reconnecting
                if slot.browser_alive() =>
            {
                let _ = reply.send(InitOutcome::NoActionNeeded(slot.view(id)));
                return;
            }
            _ => {}
        }
        // A browser still dying for this customer is replaced, not added.
        let own = usize::from(slot.browser_alive());
        if live - own >= self.cfg.max_sessions {
            let _ = reply.send(InitOutcome::TooManySessions(self.cfg.max_sessions));
            return;
        }
        let Some(exe) = self.cfg.find_chromium() else {
            let _ = reply.send(InitOutcome::BrowserNotFound);
            return;
        };
        if slot.state == State::Error {
            slot.reconnection_attempts += 1;
        }
        slot.gen += 1;
        slot.state = State::Initializing;
        slot.ever_ready = false;
        slot.qr = None;
        slot.last_error = None;
        slot.pending_init = Some(reply);
        let prev = slot.worker.take().map(|w| {
            w.stop();
            w.done
        });
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        slot.worker = Some(WorkerHandle {
            cmd: Some(cmd_tx),
            done: done_rx,
            pid: None,
        });
        let ctx = WorkerCtx {
            cfg: self.cfg.clone(),
            id,
            gen: slot.gen,
            exe,
            instance: self.instance.clone(),
            events: self.tx.clone(),
        };
        tokio::spawn(async move {
            if let Some(prev) = prev {
                wait_done(prev).await;
            }
            ctx.run(cmd_rx).await;
            let _ = done_tx.send(true);
        });
    }

    fn logout(&mut self, id: u64, reply: oneshot::Sender<()>) {
        let slot = self.slots.entry(id).or_insert_with(Slot::new);
        if let Some(r) = slot.pending_init.take() {
            let _ = r.send(InitOutcome::Failed(
                "logged out during initialization".into(),
            ));
        }
        slot.gen += 1;
        slot.state = State::NotInitialized;
        slot.ever_ready = false;
        slot.qr = None;
        slot.last_error = None;
        slot.reconnection_attempts = 0;
        let prev = slot.worker.take().map(|w| {
            w.stop();
            w.done
        });
        // The profile is deleted by a task in the customer's worker chain, so
        // a later init cannot launch on a half-deleted profile.
        let (done_tx, done_rx) = watch::channel(false);
        slot.worker = Some(WorkerHandle {
            cmd: None,
            done: done_rx,
            pid: None,
        });
        let profile = self.cfg.profile_dir(id);
        tokio::spawn(async move {
            if let Some(prev) = prev {
                wait_done(prev).await;
            }
            match tokio::fs::remove_dir_all(&profile).await {
                Ok(()) => tracing::info!(cliente_id = id, "profile deleted"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::error!(
                    cliente_id = id,
                    "failed to delete profile {}: {e}",
                    profile.display()
                ),
            }
            let _ = done_tx.send(true);
            let _ = reply.send(());
        });
    }

    fn shutdown(&mut self, reply: oneshot::Sender<ShutdownReport>) {
        self.shutting_down = true;
        let mut waits = Vec::new();
        let mut pgids = Vec::new();
        for slot in self.slots.values_mut() {
            if let Some(r) = slot.pending_init.take() {
                let _ = r.send(InitOutcome::ShuttingDown);
            }
            if let Some(w) = &slot.worker {
                if w.alive() {
                    w.stop();
                    waits.push(w.done.clone());
                    pgids.extend(w.pid);
                }
            }
        }
        let timeout = self.cfg.shutdown_timeout;
        let instance = format!("{}={}", crate::browser::INSTANCE_VAR, self.instance);
        let tokens_arg = procs::profile_arg(&self.cfg.tokens_dir);
        tokio::spawn(async move {
            let browsers = waits.len();
            // Keep a margin inside the bound for the last-resort kill below.
            let soft = timeout
                .saturating_sub(Duration::from_secs(1))
                .max(timeout / 2);
            let all = futures_util::future::join_all(waits.into_iter().map(wait_done));
            let timed_out = tokio::time::timeout(soft, all).await.is_err();
            if timed_out {
                tracing::error!("browsers not destroyed within {soft:?}; killing what is left");
                force_kill(&instance, &tokens_arg, &pgids);
            }
            let _ = reply.send(ShutdownReport {
                browsers,
                timed_out,
            });
        });
    }
}

/// Last resort at shutdown: SIGKILL whatever carries our instance marker, our
/// tokens dir as profile, or sits in one of our browsers' groups.
fn force_kill(instance: &str, tokens_arg: &str, pgids: &[i32]) {
    for &pg in pgids {
        procs::signal_group(pg, nix::sys::signal::Signal::SIGKILL);
    }
    let prefix = format!("{tokens_arg}/");
    for pid in procs::all_pids() {
        if pid == std::process::id() as i32 || !procs::alive(pid) {
            continue;
        }
        let ours = procs::environ_has(pid, instance)
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    c.split(|b| *b == 0)
                        .any(|a| a.starts_with(prefix.as_bytes()))
                })
                .unwrap_or(false);
        if ours {
            procs::signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

async fn wait_done(mut done: watch::Receiver<bool>) {
    let _ = done.wait_for(|d| *d).await;
}

fn schedule_grace(tx: mpsc::Sender<Msg>, id: u64, gen: u64, grace: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let _ = tx.send(Msg::GraceOver { id, gen }).await;
    });
}

/// Everything one worker needs.
struct WorkerCtx {
    cfg: Arc<Config>,
    id: u64,
    gen: u64,
    exe: std::path::PathBuf,
    instance: String,
    events: mpsc::Sender<Msg>,
}

impl WorkerCtx {
    async fn emit(&self, msg: Msg) {
        let _ = self.events.send(msg).await;
    }

    /// Launches the browser, watches its page until stopped or dead, destroys it.
    async fn run(self, mut cmds: mpsc::UnboundedReceiver<WorkerCmd>) {
        let (id, gen) = (self.id, self.gen);
        let profile = self.cfg.profile_dir(id);
        let mut browser = match Browser::spawn(&self.exe, &profile, id, &self.instance) {
            Ok(b) => b,
            Err(e) => {
                self.emit(Msg::LaunchFailed {
                    id,
                    gen,
                    error: e.to_string(),
                })
                .await;
                return;
            }
        };
        let open = browser.open_page(self.cfg.wa_web_url.clone(), self.cfg.user_agent.clone());
        let page = tokio::select! {
            r = open => r.map_err(|e| e.to_string()),
            st = browser.wait() => Err(format!("browser exited during launch ({st})")),
            () = wait_stop(&mut cmds) => Err("stopped during launch".to_owned()),
        };
        let page = match page {
            Ok(p) => p,
            Err(error) => {
                self.emit(Msg::LaunchFailed { id, gen, error }).await;
                browser.destroy(None).await;
                return;
            }
        };
        self.emit(Msg::Launched {
            id,
            gen,
            pid: browser.pid,
        })
        .await;
        let gone = self.watch(&mut browser, &page, &mut cmds).await;
        if let Some(reason) = gone {
            self.emit(Msg::Exited { id, gen, reason }).await;
        }
        browser.destroy(Some(page)).await;
        tracing::info!(cliente_id = id, "browser destroyed");
    }

    /// The watch loop; returns why the browser is gone, or None when stopped.
    async fn watch(
        &self,
        browser: &mut Browser,
        page: &Page,
        cmds: &mut mpsc::UnboundedReceiver<WorkerCmd>,
    ) -> Option<String> {
        let (id, gen) = (self.id, self.gen);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<PageObs> = None;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                st = browser.wait() => return Some(format!("browser exited ({st})")),
                () = page.closed() => return Some("DevTools connection lost".into()),
                cmd = cmds.recv() => match cmd {
                    None | Some(WorkerCmd::Stop) => return None,
                    Some(WorkerCmd::Send { phone, message, reply }) => {
                        let r = page
                            .send_message(&self.cfg.wa_web_url, &phone, &message, &self.cfg.send_button_selector, SEND_TIMEOUT)
                            .await;
                        let _ = reply.send(match r {
                            Ok(()) => SendOutcome::Sent,
                            Err(e) => SendOutcome::Failed(e.to_string()),
                        });
                    }
                },
                _ = tick.tick() => {
                    match tokio::time::timeout(OBSERVE_TIMEOUT, page.observe(&self.cfg.qr_selector, &self.cfg.ready_selector)).await {
                        Ok(Ok(obs)) => {
                            failures = 0;
                            if last.as_ref() != Some(&obs) {
                                last = Some(obs.clone());
                                self.emit(Msg::Observed { id, gen, obs }).await;
                            }
                        }
                        Ok(Err(e)) => {
                            failures += 1;
                            tracing::debug!(cliente_id = id, "observe failed: {e}");
                        }
                        Err(_) => failures += 1,
                    }
                    if failures >= MAX_OBSERVE_FAILURES {
                        return Some("page not responding".into());
                    }
                }
            }
        }
    }
}

/// Resolves on Stop (or a closed channel); answers sends meanwhile.
async fn wait_stop(cmds: &mut mpsc::UnboundedReceiver<WorkerCmd>) {
    loop {
        match cmds.recv().await {
            None | Some(WorkerCmd::Stop) => return,
            Some(WorkerCmd::Send { reply, .. }) => {
                let _ = reply.send(SendOutcome::NotReady(State::Initializing));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(qr: Option<&str>, ready: bool) -> PageObs {
        PageObs {
            qr: qr.map(str::to_owned),
            ready,
        }
    }

    #[test]
    fn transitions() {
        use State::*;
        let cases = [
            (Initializing, false, obs(None, false), Initializing),
            (Initializing, false, obs(Some("q"), false), QrRequired),
            (QrRequired, false, obs(None, false), Authenticated),
            (QrRequired, false, obs(None, true), Ready),
            (Initializing, false, obs(None, true), Ready),
            (Ready, true, obs(None, false), Ready),
            (Ready, true, obs(Some("q"), false), DisconnectedLogout),
            (
                DisconnectedLogout,
                true,
                obs(None, true),
                DisconnectedLogout,
            ),
            (Error, false, obs(None, true), Error),
            (NotInitialized, false, obs(None, true), NotInitialized),
        ];
        for (from, ever, o, to) in cases {
            assert_eq!(on_observation(from, ever, &o), to, "{from:?} + {o:?}");
        }
    }

    #[test]
    fn status_flags() {
        let mut s = Slot::new();
        s.state = State::QrRequired;
        s.qr = Some(("x".into(), "data:image/png;base64,AA".into()));
        let v = s.view(7);
        assert!(v.needs_qr && !v.can_send_messages && v.qr_code_base64.is_some());
        s.state = State::Ready;
        let v = s.view(7);
        assert!(v.connected && v.can_send_messages && v.qr_code_base64.is_none());
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["state"], "READY");
    }
}
