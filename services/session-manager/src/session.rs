//! Sessions: one actor owns every customer's state; one worker task per browser.
//!
//! Invariants:
//! - Only the actor task (`Actor::run`) reads or writes session state. HTTP
//!   handlers and workers talk to it by message; it never awaits a worker.
//! - At most one browser per customer: a customer's new worker first waits
//!   until the previous worker (browser destroyed, profile released) is done.
//!   Workers of one customer form a chain, so no interleaving of `/init`,
//!   `/logout`, grace timers, reconnections and crashes can overlap two browsers.
//! - Every worker event carries the generation it was started for; events of
//!   an older generation are ignored, so a slow dying browser cannot rewrite
//!   the state of its successor. Timers carry the state sequence number they
//!   were armed for and are ignored once the state moved on.
//! - A record exists only for a customer with something going on: refused
//!   requests create none, and a record in a terminal state (or after
//!   `/logout`) is dropped once its browser is gone, so unknown ids cannot
//!   grow memory.
//! - Stopping a worker (logout, grace, shutdown, init timeout) goes ahead of
//!   its queued sends: the stop signal is a separate channel the worker
//!   checks first, also while a send is in progress.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::browser::{Browser, Page, PageObs, Selectors};
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
/// Told to a caller that hits an init in progress or a full send queue (seed 002).
pub const RETRY_AFTER_SECONDS: u64 = 5;
/// Relaunches of a READY session that lost its link before it is `ERROR` (seeds 003).
pub const MAX_RECONNECTION_ATTEMPTS: u32 = 3;
/// File in a profile that marks its customer as linked, so a restart reopens it.
pub const LINKED_MARKER: &str = ".session-manager-linked";

/// The state of one customer's session (wire names in SCREAMING_SNAKE_CASE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    NotInitialized,
    Initializing,
    QrRequired,
    Authenticated,
    Ready,
    Reconnecting,
    DisconnectedLogout,
    DisconnectedBanned,
    Error,
}

impl State {
    /// The wire name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            State::NotInitialized => "NOT_INITIALIZED",
            State::Initializing => "INITIALIZING",
            State::QrRequired => "QR_REQUIRED",
            State::Authenticated => "AUTHENTICATED",
            State::Ready => "READY",
            State::Reconnecting => "RECONNECTING",
            State::DisconnectedLogout => "DISCONNECTED_LOGOUT",
            State::DisconnectedBanned => "DISCONNECTED_BANNED",
            State::Error => "ERROR",
        }
    }

    /// States after which the browser is destroyed and the record dropped
    /// (after the grace period).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::DisconnectedLogout | State::DisconnectedBanned | State::Error
        )
    }

    /// States that must not last longer than `INIT_TIMEOUT`.
    fn is_starting(self) -> bool {
        matches!(self, State::Initializing | State::Authenticated)
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
    if obs.banned {
        return State::DisconnectedBanned;
    }
    if obs.logged_out {
        return State::DisconnectedLogout;
    }
    if obs.ready && !obs.disconnected {
        return State::Ready;
    }
    if obs.qr.is_some() {
        // A QR after the phone was linked means the phone ended the session.
        return if ever_ready {
            State::DisconnectedLogout
        } else {
            State::QrRequired
        };
    }
    match state {
        // Chat pane gone, or the disconnected screen over it.
        State::Ready => State::Reconnecting,
        // The QR went away but the chat pane is not there yet.
        State::QrRequired => State::Authenticated,
        s => s,
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
    /// Sends waiting behind the one in progress (bounded by `SEND_QUEUE`).
    pub queued_sends: usize,
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
    Sent {
        dry_run: bool,
    },
    NotReady(State),
    QueueFull(usize),
    /// The session stopped (logout, shutdown, lost link) before the message went out.
    Cancelled(String),
    Failed(String),
}

/// Answer to shutdown: how many browsers there were and whether all died in time.
#[derive(Debug)]
pub struct ShutdownReport {
    pub browsers: usize,
    pub timed_out: bool,
}

/// Counts for `/health`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Sessions with a live browser.
    pub sessions: usize,
    /// Per-customer records held in memory.
    pub records: usize,
    /// Records per state (wire names), for the hub's `/status` summary.
    pub by_state: std::collections::BTreeMap<String, usize>,
}

/// Why a worker is being started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// `/init` from a customer.
    Init,
    /// A linked customer reopened at start.
    Restore,
}

enum Msg {
    Init(u64, oneshot::Sender<InitOutcome>),
    Restore(u64, oneshot::Sender<InitOutcome>),
    Status(u64, oneshot::Sender<StatusView>),
    Send(u64, SendJob),
    Logout(u64, oneshot::Sender<bool>),
    Count(oneshot::Sender<Counts>),
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
        seq: u64,
    },
    InitTimeout {
        id: u64,
        seq: u64,
    },
    ReconnectTick {
        id: u64,
        seq: u64,
    },
    /// The worker chain of a record ended (browser gone, profile released).
    Forget {
        id: u64,
        gen: u64,
    },
}

/// One `/send`, queued to the customer's worker.
pub struct SendJob {
    phone: String,
    message: String,
    reply: oneshot::Sender<SendOutcome>,
}

/// The actor's handle on a worker (or on a logout cleanup task).
struct WorkerHandle {
    stop: Option<watch::Sender<bool>>,
    sends: Option<mpsc::Sender<SendJob>>,
    done: watch::Receiver<bool>,
    pid: Option<i32>,
}

impl WorkerHandle {
    fn alive(&self) -> bool {
        !*self.done.borrow()
    }
    fn stop(&self) {
        if let Some(s) = &self.stop {
            let _ = s.send(true);
        }
    }
}

struct Slot {
    gen: u64,
    /// Bumped on every state change; timers armed for an older one are stale.
    seq: u64,
    state: State,
    ever_ready: bool,
    /// The linked marker is on disk.
    linked: bool,
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
            seq: 0,
            state: State::NotInitialized,
            ever_ready: false,
            linked: false,
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
            queued_sends: self
                .worker
                .as_ref()
                .and_then(|w| w.sends.as_ref())
                .map(|q| q.max_capacity() - q.capacity())
                .unwrap_or(0),
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

    /// Queues a send. Dropping the returned future (the client went away)
    /// cancels it: the worker skips a job whose caller is gone, and aborts
    /// one in progress.
    pub async fn send(&self, id: u64, phone: String, message: String) -> SendOutcome {
        self.ask(|reply| {
            Msg::Send(
                id,
                SendJob {
                    phone,
                    message,
                    reply,
                },
            )
        })
        .await
        .unwrap_or_else(|| {
            SendOutcome::Cancelled("the session stopped before the message was sent".into())
        })
    }

    /// Destroys the browser and deletes the profile; false when there was
    /// nothing to log out (no record, no profile).
    pub async fn logout(&self, id: u64) -> bool {
        self.ask(|r| Msg::Logout(id, r)).await.unwrap_or(false)
    }

    pub async fn counts(&self) -> Counts {
        self.ask(Msg::Count).await.unwrap_or_default()
    }

    /// Destroys every browser, waiting at most `timeout` before force-killing.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.ask(Msg::Shutdown).await.unwrap_or(ShutdownReport {
            browsers: 0,
            timed_out: false,
        })
    }

    /// Reopens every linked customer found in `TOKENS_DIR`, `concurrency` at a
    /// time; each slot is released once its session left the start-up states
    /// (or after `INIT_TIMEOUT`), so a restart does not launch 20 browsers at once.
    pub async fn restore(&self, cfg: Arc<Config>) {
        let ids = linked_customers(&cfg.tokens_dir);
        if ids.is_empty() {
            return;
        }
        tracing::info!(
            "reopening {} linked customer(s), {} at a time",
            ids.len(),
            cfg.restore_concurrency
        );
        let permits = Arc::new(tokio::sync::Semaphore::new(cfg.restore_concurrency));
        let mut tasks = Vec::new();
        for id in ids {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            let bound = cfg.init_timeout + Duration::from_secs(5);
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                match this.ask(|r| Msg::Restore(id, r)).await {
                    Some(InitOutcome::Initializing(_)) => {}
                    Some(other) => {
                        tracing::warn!(cliente_id = id, "not reopened: {other:?}");
                        return;
                    }
                    None => return,
                }
                let deadline = tokio::time::Instant::now() + bound;
                while tokio::time::Instant::now() < deadline {
                    if !this.status(id).await.state.is_starting() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Customers whose profile carries the linked marker, in id order.
pub fn linked_customers(tokens_dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(tokens_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = rd
        .filter_map(|e| {
            let e = e.ok()?;
            let id: u64 = e.file_name().to_str()?.parse().ok()?;
            (id > 0 && e.path().join(LINKED_MARKER).is_file()).then_some(id)
        })
        .collect();
    ids.sort_unstable();
    ids
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

/// Sends `msg` to the actor after `after`.
fn schedule(tx: &mpsc::Sender<Msg>, after: Duration, msg: Msg) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = tx.send(msg).await;
    });
}

/// Sends `Forget` once the worker chain behind `done` has ended.
fn forget_when_done(tx: &mpsc::Sender<Msg>, done: watch::Receiver<bool>, id: u64, gen: u64) {
    let tx = tx.clone();
    tokio::spawn(async move {
        wait_done(done).await;
        let _ = tx.send(Msg::Forget { id, gen }).await;
    });
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
            Msg::Init(id, reply) => self.init(id, reply, Launch::Init),
            Msg::Restore(id, reply) => self.init(id, reply, Launch::Restore),
            Msg::Status(id, reply) => {
                let v = match self.slots.get(&id) {
                    Some(s) => s.view(id),
                    None => Slot::new().view(id),
                };
                let _ = reply.send(v);
            }
            Msg::Send(id, job) => self.send(id, job),
            Msg::Logout(id, reply) => self.logout(id, reply),
            Msg::Count(reply) => {
                let sessions = self
                    .slots
                    .values()
                    .filter(|s| s.state != State::NotInitialized && s.browser_alive())
                    .count();
                let mut by_state = std::collections::BTreeMap::new();
                for slot in self.slots.values() {
                    *by_state.entry(slot.state.as_str().to_owned()).or_insert(0) += 1;
                }
                let _ = reply.send(Counts {
                    sessions,
                    records: self.slots.len(),
                    by_state,
                });
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
                if self.current(id, gen).is_none() {
                    return;
                }
                tracing::warn!(cliente_id = id, %error, "browser launch failed");
                self.browser_lost(id, error);
            }
            Msg::Exited { id, gen, reason } => {
                if self.current(id, gen).is_none() {
                    return;
                }
                tracing::warn!(cliente_id = id, %reason, "browser gone");
                self.browser_lost(id, reason);
            }
            Msg::Observed { id, gen, obs } => {
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
                let reason = match next {
                    State::DisconnectedBanned => Some("the page shows the banned screen"),
                    State::DisconnectedLogout => Some("the phone logged this session out"),
                    State::Reconnecting => Some("the session lost its link to the phone"),
                    _ => None,
                };
                if next != slot.state {
                    if let Some(r) = reason {
                        slot.last_error = Some(r.to_owned());
                    }
                    self.set_state(id, next);
                }
            }
            Msg::GraceOver { id, seq } => {
                let Some(slot) = self.slots.get(&id).filter(|s| s.seq == seq) else {
                    return;
                };
                if !slot.state.is_terminal() {
                    return;
                }
                tracing::info!(cliente_id = id, state = ?slot.state, "grace over, dropping the session");
                if let Some(w) = &slot.worker {
                    w.stop();
                    forget_when_done(&self.tx, w.done.clone(), id, slot.gen);
                } else {
                    self.slots.remove(&id);
                }
            }
            Msg::InitTimeout { id, seq } => {
                let timeout = self.cfg.init_timeout;
                let Some(slot) = self.slots.get_mut(&id).filter(|s| s.seq == seq) else {
                    return;
                };
                if !slot.state.is_starting() {
                    return;
                }
                let why = format!(
                    "stuck in {} for {timeout:?}: the page showed neither the QR code \
                     (WA_QR_SELECTOR) nor the chat list (WA_READY_SELECTOR)",
                    slot.state.as_str()
                );
                tracing::warn!(cliente_id = id, "{why}; closing the browser");
                if let Some(w) = &slot.worker {
                    w.stop();
                }
                if let Some(reply) = slot.pending_init.take() {
                    let _ = reply.send(InitOutcome::Failed(why.clone()));
                }
                slot.last_error = Some(why);
                self.set_state(id, State::Error);
            }
            Msg::ReconnectTick { id, seq } => self.reconnect_tick(id, seq),
            Msg::Forget { id, gen } => {
                let forget = self.slots.get(&id).is_some_and(|s| {
                    s.gen == gen
                        && (s.state.is_terminal() || s.state == State::NotInitialized)
                        && s.pending_init.is_none()
                        && !s.browser_alive()
                });
                if forget {
                    self.slots.remove(&id);
                    tracing::debug!(cliente_id = id, "record dropped");
                }
            }
        }
    }

    /// The slot when `gen` is its current generation.
    fn current(&mut self, id: u64, gen: u64) -> Option<&mut Slot> {
        self.slots.get_mut(&id).filter(|s| s.gen == gen)
    }

    /// The browser of the current generation died or never came up.
    fn browser_lost(&mut self, id: u64, why: String) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if let Some(reply) = slot.pending_init.take() {
            let _ = reply.send(InitOutcome::Failed(why.clone()));
        }
        slot.qr = None;
        match slot.state {
            // A linked session: retry by relaunching (next reconnect tick).
            State::Ready => {
                slot.last_error = Some(why);
                self.set_state(id, State::Reconnecting);
            }
            State::Reconnecting => slot.last_error = Some(why),
            s if s.is_terminal() || s == State::NotInitialized => {}
            _ => {
                slot.last_error = Some(why);
                self.set_state(id, State::Error);
            }
        }
    }

    /// Moves a session to `next` and arms what that state needs: the init
    /// timeout, the reconnection ladder, the grace before dropping, the
    /// linked marker.
    fn set_state(&mut self, id: u64, next: State) {
        let cfg = self.cfg.clone();
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let from = slot.state;
        slot.state = next;
        slot.seq += 1;
        let seq = slot.seq;
        tracing::info!(cliente_id = id, from = ?from, to = ?next, "session state");
        if next.is_starting() {
            schedule(&self.tx, cfg.init_timeout, Msg::InitTimeout { id, seq });
        }
        if next.is_terminal() {
            schedule(&self.tx, cfg.session_grace, Msg::GraceOver { id, seq });
        }
        match next {
            State::Ready => {
                slot.ever_ready = true;
                slot.reconnection_attempts = 0;
                slot.last_error = None;
                if !slot.linked {
                    slot.linked = true;
                    set_linked(&cfg.profile_dir(id), true);
                }
            }
            State::Reconnecting if from == State::Ready => {
                // First wait: the page may reconnect by itself.
                schedule(
                    &self.tx,
                    backoff(cfg.reconnect_backoff, 0),
                    Msg::ReconnectTick { id, seq },
                );
            }
            State::DisconnectedLogout | State::DisconnectedBanned => {
                slot.linked = false;
                set_linked(&cfg.profile_dir(id), false);
            }
            _ => {}
        }
    }

    /// A reconnection step: still not READY after the wait, so relaunch the
    /// browser on the same profile, or give up after the last attempt.
    fn reconnect_tick(&mut self, id: u64, seq: u64) {
        let backoff_base = self.cfg.reconnect_backoff;
        let Some(slot) = self.slots.get_mut(&id).filter(|s| s.seq == seq) else {
            return;
        };
        if slot.state != State::Reconnecting {
            return;
        }
        if self.shutting_down {
            return;
        }
        if slot.reconnection_attempts >= MAX_RECONNECTION_ATTEMPTS {
            let why = format!(
                "link lost and not back after {MAX_RECONNECTION_ATTEMPTS} reconnection attempts{}",
                slot.last_error
                    .as_deref()
                    .map(|e| format!(" (last: {e})"))
                    .unwrap_or_default()
            );
            tracing::warn!(cliente_id = id, "{why}");
            slot.last_error = Some(why);
            if let Some(w) = &slot.worker {
                w.stop();
            }
            self.set_state(id, State::Error);
            return;
        }
        slot.reconnection_attempts += 1;
        let attempt = slot.reconnection_attempts;
        tracing::info!(
            cliente_id = id,
            attempt,
            "reconnecting: relaunching the browser"
        );
        let Some(exe) = self.cfg.find_chromium() else {
            slot.last_error = Some("no Chromium found".into());
            schedule(
                &self.tx,
                backoff(backoff_base, attempt),
                Msg::ReconnectTick { id, seq },
            );
            return;
        };
        self.spawn_worker(id, exe);
        schedule(
            &self.tx,
            backoff(backoff_base, attempt),
            Msg::ReconnectTick { id, seq },
        );
    }

    fn init(&mut self, id: u64, reply: oneshot::Sender<InitOutcome>, how: Launch) {
        if self.shutting_down {
            let _ = reply.send(InitOutcome::ShuttingDown);
            return;
        }
        // Every refusal below happens before a record exists.
        let live = self.live_browsers();
        let mut own = 0;
        if let Some(slot) = self.slots.get(&id) {
            match slot.state {
                State::Initializing => {
                    let _ = reply.send(InitOutcome::InProgress);
                    return;
                }
                State::QrRequired | State::Authenticated | State::Ready | State::Reconnecting
                    if slot.browser_alive() || slot.state == State::Reconnecting =>
                {
                    let _ = reply.send(InitOutcome::NoActionNeeded(slot.view(id)));
                    return;
                }
                _ => {}
            }
            // A browser still dying for this customer is replaced, not added.
            own = usize::from(slot.browser_alive());
        }
        if live - own >= self.cfg.max_sessions {
            let _ = reply.send(InitOutcome::TooManySessions(self.cfg.max_sessions));
            return;
        }
        let Some(exe) = self.cfg.find_chromium() else {
            let _ = reply.send(InitOutcome::BrowserNotFound);
            return;
        };
        let slot = self.slots.entry(id).or_insert_with(Slot::new);
        if slot.state == State::Error && how == Launch::Init {
            slot.reconnection_attempts += 1;
        }
        // A reopened customer was linked: a QR now means the phone logged out.
        slot.ever_ready = how == Launch::Restore;
        slot.linked = how == Launch::Restore;
        slot.qr = None;
        slot.last_error = None;
        slot.pending_init = Some(reply);
        self.spawn_worker(id, exe);
        self.set_state(id, State::Initializing);
    }

    /// Starts a new generation of the customer's worker, chained after the previous one.
    fn spawn_worker(&mut self, id: u64, exe: PathBuf) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.gen += 1;
        let prev = slot.worker.take().map(|w| {
            w.stop();
            w.done
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (send_tx, send_rx) = mpsc::channel(self.cfg.send_queue);
        let (done_tx, done_rx) = watch::channel(false);
        slot.worker = Some(WorkerHandle {
            stop: Some(stop_tx),
            sends: Some(send_tx),
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
            ctx.run(stop_rx, send_rx).await;
            let _ = done_tx.send(true);
        });
    }

    fn send(&mut self, id: u64, job: SendJob) {
        let dry_run = self.cfg.dry_run;
        let Some(slot) = self.slots.get(&id) else {
            let _ = job.reply.send(SendOutcome::NotReady(State::NotInitialized));
            return;
        };
        let sends = slot.worker.as_ref().and_then(|w| w.sends.as_ref());
        match (slot.state, sends) {
            (State::Ready, _) if dry_run => {
                tracing::info!(
                    cliente_id = id,
                    phone = %job.phone,
                    chars = job.message.chars().count(),
                    "DRY_RUN: would send {:?}",
                    job.message.chars().take(200).collect::<String>()
                );
                let _ = job.reply.send(SendOutcome::Sent { dry_run: true });
            }
            (State::Ready, Some(sends)) => match sends.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(job)) => {
                    let _ = job.reply.send(SendOutcome::QueueFull(self.cfg.send_queue));
                }
                Err(mpsc::error::TrySendError::Closed(job)) => {
                    let _ = job.reply.send(SendOutcome::NotReady(slot.state));
                }
            },
            (s, _) => {
                let _ = job.reply.send(SendOutcome::NotReady(s));
            }
        }
    }

    fn logout(&mut self, id: u64, reply: oneshot::Sender<bool>) {
        let profile = self.cfg.profile_dir(id);
        let prev = match self.slots.get_mut(&id) {
            Some(slot) => {
                if let Some(r) = slot.pending_init.take() {
                    let _ = r.send(InitOutcome::Failed(
                        "logged out during initialization".into(),
                    ));
                }
                slot.worker.take().map(|w| {
                    w.stop();
                    w.done
                })
            }
            // Unknown id: nothing to do unless a profile is on disk (a linked
            // customer not reopened yet); no record for a refused logout.
            None if !profile.exists() => {
                let _ = reply.send(false);
                return;
            }
            None => None,
        };
        let slot = self.slots.entry(id).or_insert_with(Slot::new);
        slot.gen += 1;
        slot.state = State::NotInitialized;
        slot.seq += 1;
        slot.ever_ready = false;
        slot.linked = false;
        slot.qr = None;
        slot.last_error = None;
        slot.reconnection_attempts = 0;
        // The profile is deleted by a task in the customer's worker chain, so
        // a later init cannot launch on a half-deleted profile.
        let (done_tx, done_rx) = watch::channel(false);
        slot.worker = Some(WorkerHandle {
            stop: None,
            sends: None,
            done: done_rx.clone(),
            pid: None,
        });
        forget_when_done(&self.tx, done_rx, id, slot.gen);
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
            let _ = reply.send(true);
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

/// `base * 2^attempt`, capped at 16 times the base.
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(4))
}

/// Writes or removes the linked marker of a profile. Failures are logged, not
/// fatal: at worst a restart does not reopen this customer by itself.
fn set_linked(profile: &Path, linked: bool) {
    let marker = profile.join(LINKED_MARKER);
    let r = if linked {
        std::fs::write(&marker, b"linked\n")
    } else {
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    if let Err(e) = r {
        tracing::warn!("failed to update {}: {e}", marker.display());
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

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    // A dropped sender (actor gone) counts as a stop too.
    let _ = stop.wait_for(|s| *s).await;
}

/// Everything one worker needs.
struct WorkerCtx {
    cfg: Arc<Config>,
    id: u64,
    gen: u64,
    exe: PathBuf,
    instance: String,
    events: mpsc::Sender<Msg>,
}

impl WorkerCtx {
    async fn emit(&self, msg: Msg) {
        let _ = self.events.send(msg).await;
    }

    fn selectors(&self) -> Selectors<'_> {
        Selectors {
            qr: &self.cfg.qr_selector,
            ready: &self.cfg.ready_selector,
            logged_out: &self.cfg.logged_out_selector,
            banned: &self.cfg.banned_selector,
            disconnected: &self.cfg.disconnected_selector,
        }
    }

    /// Launches the browser, watches its page until stopped or dead, destroys it.
    async fn run(self, mut stop: watch::Receiver<bool>, mut sends: mpsc::Receiver<SendJob>) {
        let (id, gen) = (self.id, self.gen);
        if *stop.borrow() {
            return;
        }
        let profile = self.cfg.profile_dir(id);
        let ua = crate::browser::user_agent_for(&self.exe, self.cfg.user_agent.as_deref()).await;
        let mut browser =
            match Browser::spawn(&self.exe, &profile, id, &self.instance, ua.as_deref()) {
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
        let open = browser.open_page(self.cfg.wa_web_url.clone(), ua);
        let page = tokio::select! {
            r = open => r.map_err(|e| e.to_string()),
            st = browser.wait() => Err(format!("browser exited during launch ({st})")),
            () = wait_stop(&mut stop) => Err("stopped during launch".to_owned()),
        };
        let page = match page {
            Ok(p) => p,
            Err(error) => {
                self.emit(Msg::LaunchFailed { id, gen, error }).await;
                cancel_queued(&mut sends, "the browser failed to start");
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
        let gone = self.watch(&mut browser, &page, &mut stop, &mut sends).await;
        cancel_queued(
            &mut sends,
            gone.as_deref().unwrap_or("the session was stopped"),
        );
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
        stop: &mut watch::Receiver<bool>,
        sends: &mut mpsc::Receiver<SendJob>,
    ) -> Option<String> {
        let (id, gen) = (self.id, self.gen);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<PageObs> = None;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                // Stopping goes first: a logout or shutdown never waits behind sends.
                biased;
                () = wait_stop(stop) => return None,
                st = browser.wait() => return Some(format!("browser exited ({st})")),
                () = page.closed() => return Some("DevTools connection lost".into()),
                job = sends.recv() => {
                    let Some(job) = job else { continue };
                    if let Some(gone) = self.send(page, job, stop).await {
                        return gone;
                    }
                }
                _ = tick.tick() => {
                    match tokio::time::timeout(OBSERVE_TIMEOUT, page.observe(&self.selectors())).await {
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

    /// Runs one send unless its caller left; `Some(None)` when a stop came in
    /// meanwhile (the send is abandoned and the worker must stop).
    async fn send(
        &self,
        page: &Page,
        mut job: SendJob,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Option<String>> {
        let id = self.id;
        if job.reply.is_closed() {
            tracing::info!(
                cliente_id = id,
                "send skipped: its client went away while queued"
            );
            return None;
        }
        let r = tokio::select! {
            biased;
            () = wait_stop(stop) => {
                let _ = job.reply.send(SendOutcome::Cancelled("the session was stopped".into()));
                return Some(None);
            }
            () = job.reply.closed() => {
                tracing::info!(cliente_id = id, "send cancelled: its client went away");
                return None;
            }
            r = page.send_message(
                &self.cfg.wa_web_url,
                &job.phone,
                &job.message,
                &self.cfg.send_button_selector,
                SEND_TIMEOUT,
            ) => r,
        };
        let _ = job.reply.send(match r {
            Ok(()) => SendOutcome::Sent { dry_run: false },
            Err(e) => SendOutcome::Failed(e.to_string()),
        });
        None
    }
}

/// Answers every send still queued for a worker that is ending.
fn cancel_queued(sends: &mut mpsc::Receiver<SendJob>, why: &str) {
    sends.close();
    while let Ok(job) = sends.try_recv() {
        let _ = job
            .reply
            .send(SendOutcome::Cancelled(format!("not sent: {why}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(qr: Option<&str>, ready: bool) -> PageObs {
        PageObs {
            qr: qr.map(str::to_owned),
            ready,
            ..PageObs::default()
        }
    }

    fn screen(logged_out: bool, banned: bool, disconnected: bool) -> PageObs {
        PageObs {
            qr: None,
            ready: disconnected,
            logged_out,
            banned,
            disconnected,
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
            (Ready, true, obs(None, false), Reconnecting),
            (Ready, true, screen(false, false, true), Reconnecting),
            (Reconnecting, true, screen(false, false, true), Reconnecting),
            (Reconnecting, true, obs(None, true), Ready),
            (
                Reconnecting,
                true,
                obs(Some("q"), false),
                DisconnectedLogout,
            ),
            (Ready, true, screen(true, false, false), DisconnectedLogout),
            (Ready, true, screen(false, true, false), DisconnectedBanned),
            (
                QrRequired,
                false,
                screen(false, true, false),
                DisconnectedBanned,
            ),
            (
                Initializing,
                false,
                screen(false, false, true),
                Initializing,
            ),
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
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_secs(5);
        assert_eq!(backoff(b, 0), b);
        assert_eq!(backoff(b, 2), b * 4);
        assert_eq!(backoff(b, 40), b * 16);
    }

    #[test]
    fn linked_markers_are_found_by_id() {
        let dir = std::env::temp_dir().join(format!("sm-linked-{}", procs::random_hex()));
        for (name, linked) in [("12", true), ("3", true), ("4", false), ("x", true)] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            if linked {
                set_linked(&dir.join(name), true);
            }
        }
        assert_eq!(linked_customers(&dir), vec![3, 12]);
        set_linked(&dir.join("3"), false);
        assert_eq!(linked_customers(&dir), vec![12]);
        std::fs::remove_dir_all(&dir).unwrap();
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
        for st in [
            State::NotInitialized,
            State::QrRequired,
            State::DisconnectedBanned,
            State::Error,
        ] {
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
    }
}
