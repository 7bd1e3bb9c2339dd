//! `lmctl monit`: a full-screen live view. Every second one `status` request (and a `show`
//! of the selected service, for its process tree); both answer from what the daemon already
//! measured. The log tail is one `logs --follow` connection, replaced when the selection
//! changes. Actions (restart, stop/start) run on their own threads so the view stays live.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::{Ctx, Outcome};
use crate::config::units::{human_bytes, human_duration};
use crate::control::client;
use crate::control::proto::{
    Envelope, LogsRequest, ProcInfo, Request, Response, ServiceStatus, StreamFilter,
    PROTOCOL_VERSION,
};

const REFRESH: Duration = Duration::from_secs(1);
/// Memory samples kept per service: 5 minutes at one a second.
const HISTORY: usize = 300;
/// Log lines kept for the tail panel.
const LOG_LINES: usize = 500;
const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub(crate) fn monit(ctx: &Ctx) -> anyhow::Result<Outcome> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!(
            "lmctl: monit is a full-screen view and needs a terminal (stdin and stdout are \
             not both one). For a plain table reprinted every interval, use \
             `lmctl status --watch [INTERVAL]`"
        );
        return Ok(Outcome::Usage);
    }
    let socket = ctx.socket()?;
    // Before touching the terminal, so "no daemon" reads like any other lmctl error.
    let first = client::request(&socket, Request::Status)?;
    let mut app = App::new(socket, color_wanted());
    app.take_status(first);
    let mut term = ratatui::try_init()?;
    let _restore = Restore;
    app.run(&mut term)?;
    Ok(Outcome::Ok)
}

/// Colours unless `NO_COLOR` is set or the terminal is dumb (stdout is a terminal here).
fn color_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// Leaves the alternate screen, raw mode off, cursor back: on return, error or panic
/// (ratatui's panic hook does the same before the message).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        let mut out = std::io::stdout();
        let _ = ratatui::crossterm::execute!(out, ratatui::crossterm::cursor::Show);
        let _ = out.flush();
    }
}

/// A `logs --follow` connection feeding the tail panel; dropping it hangs up, which ends
/// its reader thread.
struct Follower {
    target: Option<String>,
    conn: UnixStream,
    rx: mpsc::Receiver<String>,
}

impl Follower {
    fn start(socket: &Path, target: Option<String>) -> Option<Follower> {
        let mut conn = client::connect(socket).ok()?;
        let mut line = serde_json::to_vec(&Envelope {
            version: PROTOCOL_VERSION,
            request: Request::Logs(LogsRequest {
                service: target.clone(),
                lines: 100,
                follow: true,
                stream: StreamFilter::Both,
                since_ms: None,
            }),
        })
        .ok()?;
        line.push(b'\n');
        conn.write_all(&line).ok()?;
        let reader = conn.try_clone().ok()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(reader).lines().map_while(Result::ok) {
                let text = match serde_json::from_str::<Response>(&l) {
                    Ok(Response::LogLine { line }) => line,
                    Ok(Response::Error { message, .. }) => format!("[lmctl] {message}"),
                    _ => continue,
                };
                if tx.send(text).is_err() {
                    break;
                }
            }
        });
        Some(Follower { target, conn, rx })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
    }
}

struct App {
    socket: PathBuf,
    color: bool,
    services: Vec<ServiceStatus>,
    memory: HashMap<String, VecDeque<u64>>,
    selected: Option<String>,
    tree: Vec<ProcInfo>,
    filter: String,
    editing_filter: bool,
    show_logs: bool,
    logs: VecDeque<String>,
    follower: Option<Follower>,
    message: Option<(String, Instant)>,
    actions: (mpsc::Sender<String>, mpsc::Receiver<String>),
    last_refresh: Instant,
    daemon_error: Option<String>,
}

impl App {
    fn new(socket: PathBuf, color: bool) -> App {
        App {
            socket,
            color,
            services: Vec::new(),
            memory: HashMap::new(),
            selected: None,
            tree: Vec::new(),
            filter: String::new(),
            editing_filter: false,
            show_logs: true,
            logs: VecDeque::new(),
            follower: None,
            message: None,
            actions: mpsc::channel(),
            last_refresh: Instant::now(),
            daemon_error: None,
        }
    }

    fn run(&mut self, term: &mut ratatui::DefaultTerminal) -> anyhow::Result<()> {
        loop {
            if self.last_refresh.elapsed() >= REFRESH {
                self.refresh();
            }
            self.sync_follower();
            if let Some(f) = &self.follower {
                while let Ok(l) = f.rx.try_recv() {
                    self.logs.push_back(l);
                }
                while self.logs.len() > LOG_LINES {
                    self.logs.pop_front();
                }
            }
            while let Ok(m) = self.actions.1.try_recv() {
                self.message = Some((m, Instant::now()));
                // Show the effect at once rather than up to a second later.
                self.refresh();
            }
            term.draw(|f| self.draw(f))?;
            let wait = REFRESH
                .saturating_sub(self.last_refresh.elapsed())
                .min(Duration::from_millis(200));
            if event::poll(wait)? {
                if let Event::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press && !self.key(k.code, k.modifiers) {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn refresh(&mut self) {
        self.last_refresh = Instant::now();
        match client::request(&self.socket, Request::Status) {
            Ok(r) => self.take_status(r),
            Err(e) => self.daemon_error = Some(e.to_string()),
        }
        self.tree.clear();
        if let Some(name) = self.selected_name() {
            if let Ok(Response::Show { service }) =
                client::request(&self.socket, Request::Show { service: name })
            {
                self.tree = service.tree;
            }
        }
    }

    fn take_status(&mut self, resp: Response) {
        match resp {
            Response::Status { services } => {
                self.daemon_error = None;
                for s in &services {
                    let h = self.memory.entry(s.name.clone()).or_default();
                    h.push_back(if s.pid.is_some() { s.memory_bytes } else { 0 });
                    while h.len() > HISTORY {
                        h.pop_front();
                    }
                }
                self.services = services;
            }
            Response::Error { message, .. } => self.daemon_error = Some(message),
            _ => {}
        }
    }

    /// Services shown: those whose name contains the filter.
    fn visible(&self) -> Vec<&ServiceStatus> {
        self.services
            .iter()
            .filter(|s| s.name.contains(&self.filter))
            .collect()
    }

    /// The selected service, if it is visible.
    fn selected_name(&self) -> Option<String> {
        let name = self.selected.as_ref()?;
        self.visible()
            .iter()
            .any(|s| &s.name == name)
            .then(|| name.clone())
    }

    /// Follows the selected service's log, or the merged log with none selected.
    fn sync_follower(&mut self) {
        let target = self.selected_name();
        if self.follower.as_ref().is_some_and(|f| f.target == target) {
            return;
        }
        self.logs.clear();
        self.follower = Follower::start(&self.socket, target);
    }

    fn move_selection(&mut self, delta: isize) {
        let names: Vec<String> = self.visible().iter().map(|s| s.name.clone()).collect();
        if names.is_empty() {
            self.selected = None;
            return;
        }
        let current = self
            .selected
            .as_ref()
            .and_then(|n| names.iter().position(|x| x == n));
        let next = match current {
            None if delta < 0 => names.len() - 1,
            None => 0,
            Some(i) => (i as isize + delta).clamp(0, names.len() as isize - 1) as usize,
        };
        self.selected = Some(names[next].clone());
        self.tree.clear();
        // The tree of the new selection without waiting for the next second.
        self.last_refresh = Instant::now() - REFRESH;
    }

    /// Handles a key; false to quit.
    fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        if mods.contains(KeyModifiers::CONTROL) && code == KeyCode::Char('c') {
            return false;
        }
        if self.editing_filter {
            match code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') => return false,
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Home => {
                self.selected = None;
                self.move_selection(1);
            }
            KeyCode::Esc => {
                self.selected = None;
                self.filter.clear();
            }
            KeyCode::Char('l') => self.show_logs = !self.show_logs,
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            KeyCode::Char('r') => self.act(|name| Request::Restart {
                services: vec![name],
            }),
            KeyCode::Char('s') => {
                let running = self
                    .selected_name()
                    .and_then(|n| self.services.iter().find(|s| s.name == n))
                    .is_some_and(|s| !s.state.is_down());
                if running {
                    self.act(|name| Request::Stop {
                        services: vec![name],
                    });
                } else {
                    self.act(|name| Request::Start {
                        services: vec![name],
                    });
                }
            }
            _ => {}
        }
        true
    }

    /// Sends a request about the selected service on its own thread; the answer comes back
    /// as the status line message.
    fn act(&mut self, req: impl FnOnce(String) -> Request) {
        let Some(name) = self.selected_name() else {
            self.message = Some(("select a service first (↑/↓)".to_string(), Instant::now()));
            return;
        };
        let req = req(name.clone());
        let verb = match &req {
            Request::Restart { .. } => "restart",
            Request::Stop { .. } => "stop",
            _ => "start",
        };
        self.message = Some((format!("{verb} {name}…"), Instant::now()));
        let socket = self.socket.clone();
        let tx = self.actions.0.clone();
        std::thread::spawn(move || {
            let text = match client::request(&socket, req) {
                Ok(Response::Outcomes { outcomes, .. }) if !outcomes.is_empty() => outcomes
                    .iter()
                    .map(|o| format!("{}: {:?}", o.service, o.outcome).to_lowercase())
                    .collect::<Vec<_>>()
                    .join("; "),
                Ok(Response::Error { message, .. }) => format!("{verb} {name} failed: {message}"),
                Ok(_) => format!("{verb} {name}: done"),
                Err(e) => format!("{verb} {name} failed: {e}"),
            };
            let _ = tx.send(text);
        });
    }

    fn style(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    fn state_style(&self, state: &str) -> Style {
        match state {
            "ready" | "running" => self.style(Color::Green),
            "starting" | "backoff" | "stopping" | "unhealthy" => self.style(Color::Yellow),
            "failed" => self.style(Color::Red),
            _ => Style::default(),
        }
    }

    fn draw(&self, f: &mut Frame) {
        let area = f.area();
        let visible = self.visible();
        let table_h = (visible.len() as u16 + 1).clamp(2, (area.height / 2).max(2));
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Length(table_h),
                Constraint::Min(3),
                Constraint::Length(1),
            ])
            .split(area);
        self.draw_title(f, rows[0]);
        self.draw_table(f, rows[1], &visible);
        self.draw_lower(f, rows[2]);
        self.draw_help(f, rows[3]);
    }

    fn draw_title(&self, f: &mut Frame, area: Rect) {
        let up = self
            .services
            .iter()
            .filter(|s| matches!(s.state.as_str(), "ready" | "running"))
            .count();
        let mut spans = vec![
            Span::styled("lmctl monit", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  {up}/{} up  {}",
                self.services.len(),
                chrono::Local::now().format("%H:%M:%S")
            )),
        ];
        if !self.filter.is_empty() || self.editing_filter {
            spans.push(Span::raw(format!("  filter: {}", self.filter)));
            if self.editing_filter {
                spans.push(Span::styled(
                    "_",
                    Style::default().add_modifier(Modifier::SLOW_BLINK),
                ));
            }
        }
        if let Some(e) = &self.daemon_error {
            spans.push(Span::styled(
                format!("  daemon: {e}"),
                self.style(Color::Red),
            ));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn draw_table(&self, f: &mut Frame, area: Rect, visible: &[&ServiceStatus]) {
        let name_w = visible
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 15) as u16;
        let header = Row::new([
            "NAME",
            "STATE",
            "PID",
            "UPTIME",
            "↺",
            "CPU%",
            "MEMORY",
            "TREND",
            "PR",
            "HEALTH",
            "LAST REASON",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD));
        let rows: Vec<Row> = visible
            .iter()
            .map(|s| {
                let running = s.pid.is_some();
                let dash = || "-".to_string();
                // Short words, so the row fits 80 columns.
                let health = if !s.has_health {
                    "-"
                } else {
                    match s.health.as_str() {
                        "healthy" => "ok",
                        "unhealthy" => "failing",
                        _ => "?",
                    }
                };
                let detail = s
                    .last_error
                    .clone()
                    .or_else(|| s.last_exit.map(|e| e.to_string()))
                    .unwrap_or_default();
                // Why it was last restarted (crash, memory, health, watchdog, user) first.
                let reason = match s.last_restart_reason {
                    Some(r) if s.restarts > 0 => format!("{}: {detail}", r.as_str()),
                    _ => detail,
                };
                Row::new([
                    Cell::from(s.name.clone()),
                    Cell::from(s.state.as_str()).style(self.state_style(s.state.as_str())),
                    Cell::from(s.pid.map(|p| p.to_string()).unwrap_or_else(dash)),
                    Cell::from(if running {
                        human_duration(Duration::from_millis(s.uptime_ms))
                    } else {
                        dash()
                    }),
                    Cell::from(s.restarts.to_string()),
                    Cell::from(if running {
                        format!("{:.1}", s.cpu_percent)
                    } else {
                        dash()
                    }),
                    Cell::from(if running {
                        compact_bytes(s.memory_bytes)
                    } else {
                        dash()
                    }),
                    Cell::from(spark(self.memory.get(&s.name), 6)).style(self.style(Color::Cyan)),
                    Cell::from(s.processes.to_string()),
                    Cell::from(health).style(match health {
                        "ok" => self.style(Color::Green),
                        "failing" => self.style(Color::Red),
                        _ => Style::default(),
                    }),
                    Cell::from(reason),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(name_w),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(3),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(3),
            Constraint::Length(7),
            Constraint::Min(0),
        ];
        let mut state = TableState::default();
        if let Some(name) = &self.selected {
            state.select(visible.iter().position(|s| &s.name == name));
        }
        let table = Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol(">");
        f.render_stateful_widget(table, area, &mut state);
    }

    fn draw_lower(&self, f: &mut Frame, area: Rect) {
        let selected = self
            .selected_name()
            .and_then(|n| self.services.iter().find(|s| s.name == n));
        let panes = if self.show_logs {
            let (a, b) = if area.width < 100 { (45, 55) } else { (40, 60) };
            Layout::default()
                .direction(Direction::Horizontal)
                .constraints([Constraint::Percentage(a), Constraint::Percentage(b)])
                .split(area)
        } else {
            Layout::default()
                .constraints([Constraint::Percentage(100)])
                .split(area)
        };
        // Left: the selected service's memory history and process tree.
        match selected {
            Some(s) => {
                let block = Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" {} ", s.name));
                let inner = block.inner(panes[0]);
                f.render_widget(block, panes[0]);
                let parts = Layout::default()
                    .direction(Direction::Vertical)
                    .constraints([
                        Constraint::Length(1),
                        Constraint::Length(2),
                        Constraint::Min(1),
                    ])
                    .split(inner);
                let reason = s
                    .last_error
                    .clone()
                    .or_else(|| s.last_exit.map(|e| format!("last exit: {e}")))
                    .unwrap_or_else(|| "no restart so far".into());
                f.render_widget(Paragraph::new(reason), parts[0]);
                let data: Vec<u64> = self
                    .memory
                    .get(&s.name)
                    .map(|h| {
                        h.iter()
                            .rev()
                            .take(parts[1].width as usize)
                            .rev()
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default();
                f.render_widget(
                    Sparkline::default()
                        .data(&data)
                        .style(self.style(Color::Cyan)),
                    parts[1],
                );
                let mut lines = vec![Line::styled(
                    format!("{:>7} {:>7} {:>9}  COMMAND", "PID", "PPID", "RSS"),
                    Style::default().add_modifier(Modifier::BOLD),
                )];
                for p in &self.tree {
                    lines.push(Line::raw(format!(
                        "{:>7} {:>7} {:>9}  {}",
                        p.pid,
                        p.ppid,
                        human_bytes(p.rss_bytes),
                        p.command
                    )));
                }
                f.render_widget(Paragraph::new(lines), parts[2]);
            }
            None => {
                let hint = Paragraph::new(vec![
                    Line::raw("No service selected."),
                    Line::raw("↑/↓ selects one: its process tree,"),
                    Line::raw("memory history and own log show here."),
                ])
                .block(Block::default().borders(Borders::ALL).title(" tree "));
                f.render_widget(hint, panes[0]);
            }
        }
        if self.show_logs {
            let title = match &selected {
                Some(s) => format!(" log: {} ", s.name),
                None => " log: all services ".to_string(),
            };
            let block = Block::default().borders(Borders::ALL).title(title);
            let inner = block.inner(panes[1]);
            let lines: Vec<Line> = self
                .logs
                .iter()
                .rev()
                .take(inner.height as usize)
                .rev()
                .map(|l| Line::raw(short_time(l)))
                .collect();
            f.render_widget(Paragraph::new(lines).block(block), panes[1]);
        }
    }

    fn draw_help(&self, f: &mut Frame, area: Rect) {
        let fresh = self
            .message
            .as_ref()
            .filter(|(_, at)| at.elapsed() < Duration::from_secs(8));
        let line = match (fresh, self.editing_filter) {
            (_, true) => "type to filter  enter keep  esc clear".to_string(),
            (Some((m, _)), _) => m.clone(),
            _ => "↑↓ select  r restart  s stop/start  l logs  / filter  esc clear  q quit"
                .to_string(),
        };
        f.render_widget(
            Paragraph::new(line).style(Style::default().add_modifier(Modifier::REVERSED)),
            area,
        );
    }
}

/// The last samples as block characters, scaled to their own maximum; older samples are
/// averaged so `width` characters cover the whole history.
fn spark(history: Option<&VecDeque<u64>>, width: usize) -> String {
    let Some(h) = history.filter(|h| !h.is_empty()) else {
        return String::new();
    };
    let per = h.len().div_ceil(width).max(1);
    let values: Vec<u64> = h
        .iter()
        .copied()
        .collect::<Vec<_>>()
        .chunks(per)
        .map(|c| c.iter().sum::<u64>() / c.len() as u64)
        .collect();
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|v| BARS[((v * 8).div_ceil(max)).min(8) as usize])
        .collect()
}

/// "12.0 MiB" → "12.0M", for the narrow memory column.
fn compact_bytes(n: u64) -> String {
    let h = human_bytes(n);
    match h.split_once(' ') {
        Some((v, unit)) if unit != "B" => format!("{v}{}", &unit[..1]),
        Some((v, _)) => format!("{v}B"),
        None => h,
    }
}

/// A log line with its date cut to the time of day, to fit the panel.
fn short_time(line: &str) -> String {
    match line.split_once('T') {
        Some((date, rest)) if date.len() == 10 && date.as_bytes()[4] == b'-' => {
            let (time, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            format!("{} {tail}", time.get(..8).unwrap_or(time))
        }
        _ => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::proto::{Health, MemorySource, StateName, TreeKind};

    #[test]
    fn sparkline_scales_and_compresses() {
        let h: VecDeque<u64> = (1..=16).collect();
        let s = spark(Some(&h), 8);
        assert_eq!(s.chars().count(), 8);
        assert!(s.ends_with('█'));
        assert_eq!(spark(None, 8), "");
        let flat: VecDeque<u64> = [0, 0].into_iter().collect();
        assert_eq!(spark(Some(&flat), 8), "  ");
    }

    #[test]
    fn log_lines_lose_their_date() {
        assert_eq!(
            short_time("2026-01-01T12:34:56.789+00:00 web|out hi"),
            "12:34:56 web|out hi"
        );
        assert_eq!(short_time("[lmctl] note"), "[lmctl] note");
    }

    /// The whole view fits 80×24 with every column header up to HEALTH.
    #[test]
    fn renders_in_80_by_24() {
        let mut app = App::new(PathBuf::from("/nonexistent"), false);
        let svc = |name: &str, state: StateName| ServiceStatus {
            name: name.into(),
            state,
            pid: Some(4242),
            uptime_ms: 65_000,
            restarts: 2,
            last_exit: None,
            cpu_percent: 1.5,
            memory_bytes: 12 << 20,
            processes: 3,
            health: Health::Healthy,
            last_error: Some("exited with code 1".into()),
            log_dropped: 0,
            waiting_for: vec![],
            status_text: None,
            tree: TreeKind::Cgroup,
            memory_source: MemorySource::Pss,
            backoff_ms: None,
            last_restart_reason: None,
            last_stop: None,
            has_health: true,
        };
        app.take_status(Response::Status {
            services: vec![
                svc("session-manager", StateName::Ready),
                svc("central-hub", StateName::Backoff),
            ],
        });
        app.selected = Some("central-hub".into());
        app.logs
            .push_back("2026-01-01T12:34:56.789+00:00 central-hub|out hello".into());
        let backend = ratatui::backend::TestBackend::new(80, 24);
        let mut term = ratatui::Terminal::new(backend).expect("terminal");
        term.draw(|f| app.draw(f)).expect("draw");
        let buf = term.backend().buffer();
        let text: String = (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    + "\n"
            })
            .collect();
        for word in [
            "NAME",
            "STATE",
            "PID",
            "CPU%",
            "MEMORY",
            "HEALTH",
            "4242",
            "12.0M",
            "q quit",
            "session-manager",
            "COMMAND",
        ] {
            assert!(text.contains(word), "{word} missing:\n{text}");
        }
        assert!(text.contains("12:34:56 central-hub|out hello"), "{text}");
        assert!(text.contains(">central-hub"), "{text}");
    }
}
