//! A local stand-in for WhatsApp Web's login, served by the test itself.
//!
//! The page polls `/api/state` every 250 ms and renders:
//! - not linked: `<div data-ref="QR">` with a QR string that changes every 2 s;
//! - linked: `<div id="pane-side">`, and on `/send?phone=&text=` also a
//!   `<span data-icon="send">` whose click POSTs `{phone,text}` to `/api/sent`.
//!
//! Other screens, switched by `set_screen`: `stuck` (neither QR nor chats,
//! a page that never finishes loading), `disconnected` (the "phone not
//! connected" screen instead of the chats), `logged_out`, `banned`.
//! `set_send_delay` makes the send button appear late, to keep a send busy.
//! Every `/api/state` poll records its User-Agent header and what the page's
//! script sees (`navigator.userAgent`, `navigator.userAgentData.brands`).
//!
//! "Linking" is a token: `scan()` creates one, the next browser that polls
//! without a saved token stores it in localStorage (so it survives a browser
//! restart on the same profile), and `logout()` drops it, so the page of a
//! linked browser falls back to the QR, like WhatsApp after a phone logout.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Inner {
    token: Option<String>,
    scans: u32,
    served_qrs: Vec<String>,
    sent: Vec<(String, String)>,
    screen: String,
    send_delay_ms: u64,
    user_agents: Vec<String>,
    send_pages: u32,
}

#[derive(Clone)]
pub struct Fixture {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

const PAGE: &str = r#"<!doctype html>
<html><head><title>fixture</title></head><body><div id="app"></div><script>
const app = document.getElementById('app');
function render(html) { if (app.innerHTML !== html) app.innerHTML = html; }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
document.addEventListener('click', ev => {
  if (!ev.target.closest('span[data-icon="send"]')) return;
  const q = new URLSearchParams(location.search);
  fetch('/api/sent', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({phone: q.get('phone'), text: q.get('text')})});
});
async function tick() {
  let st;
  const who = navigator.userAgent + ' | ' + JSON.stringify(navigator.userAgentData ? navigator.userAgentData.brands : null);
  try { st = await (await fetch('/api/state?who=' + encodeURIComponent(who), {cache: 'no-store'})).json(); } catch (e) { return; }
  if (st.screen === 'stuck') { render('<div id="startup">loading</div>'); return; }
  if (st.screen === 'banned') { render('<div data-testid="banned">This account is not allowed to use WhatsApp</div>'); return; }
  if (st.screen === 'logged_out') { render('<div data-testid="logged-out">You have been logged out</div>'); return; }
  let saved = localStorage.getItem('tok');
  if (saved && saved !== st.token) { localStorage.removeItem('tok'); saved = null; }
  if (!saved && st.token) { localStorage.setItem('tok', st.token); saved = st.token; }
  if (saved && st.screen === 'disconnected') {
    render('<div data-testid="disconnected">Phone not connected</div>');
  } else if (saved) {
    let html = '<div id="pane-side">chats</div>';
    if (location.pathname === '/send' && performance.now() >= st.send_delay_ms) html += '<span data-icon="send">send</span>';
    render(html);
  } else {
    render('<div data-ref="' + esc(st.qr) + '">scan me</div>');
  }
}
tick();
setInterval(tick, 250);
</script></body></html>"#;

impl Fixture {
    pub async fn start() -> Fixture {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fx = Fixture {
            url,
            inner: Arc::default(),
            started: Instant::now(),
        };
        let app = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/send", get(send_page))
            .route("/api/state", get(state))
            .route("/api/sent", post(sent))
            .with_state(fx.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fx
    }

    fn current_qr(&self) -> String {
        let epoch = self.started.elapsed().as_millis() / 2000;
        format!(
            "2@fixture-qr-{epoch},Zm9vYmFyYmF6,{}",
            self.url.len() as u128 * 7 + epoch
        )
    }

    /// The phone scans: the next browser that polls becomes linked.
    pub fn scan(&self) {
        let mut i = self.inner.lock().unwrap();
        i.scans += 1;
        i.token = Some(format!("tok-{}", i.scans));
    }

    /// The phone logs the session out.
    pub fn logout(&self) {
        self.inner.lock().unwrap().token = None;
    }

    /// Switches the page to one screen: normal, stuck, disconnected, logged_out, banned.
    pub fn set_screen(&self, screen: &str) {
        self.inner.lock().unwrap().screen = screen.to_owned();
    }

    /// The send button appears this long after the send page loaded.
    pub fn set_send_delay(&self, d: std::time::Duration) {
        self.inner.lock().unwrap().send_delay_ms = d.as_millis() as u64;
    }

    /// How many times a browser opened the send page.
    pub fn send_pages(&self) -> u32 {
        self.inner.lock().unwrap().send_pages
    }

    /// User-Agent headers seen on `/api/state`.
    pub fn user_agents(&self) -> Vec<String> {
        self.inner.lock().unwrap().user_agents.clone()
    }

    pub fn served_qrs(&self) -> Vec<String> {
        self.inner.lock().unwrap().served_qrs.clone()
    }

    pub fn sent(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().sent.clone()
    }
}

async fn state(
    State(fx): State<Fixture>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let qr = fx.current_qr();
    let mut i = fx.inner.lock().unwrap();
    if !i.served_qrs.contains(&qr) {
        i.served_qrs.push(qr.clone());
    }
    let ua = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // The header, then what the page's script sees (navigator.userAgent | brands).
    let ua = format!(
        "{ua} || {}",
        q.get("who").map(String::as_str).unwrap_or("-")
    );
    if !i.user_agents.contains(&ua) {
        i.user_agents.push(ua);
    }
    Json(
        json!({ "qr": qr, "token": i.token, "screen": i.screen, "send_delay_ms": i.send_delay_ms }),
    )
}

async fn send_page(State(fx): State<Fixture>) -> Html<&'static str> {
    fx.inner.lock().unwrap().send_pages += 1;
    Html(PAGE)
}

async fn sent(State(fx): State<Fixture>, Json(v): Json<Value>) -> Json<Value> {
    let phone = v["phone"].as_str().unwrap_or_default().to_owned();
    let text = v["text"].as_str().unwrap_or_default().to_owned();
    fx.inner.lock().unwrap().sent.push((phone, text));
    Json(json!({ "ok": true }))
}
