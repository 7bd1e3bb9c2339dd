//! A local stand-in for WhatsApp Web's login, served by the test itself.
//!
//! The page polls `/api/state` every 250 ms and renders:
//! - not linked: `<div data-ref="QR">` with a QR string that changes every 2 s;
//! - linked: `<div id="pane-side">`, and on `/send?phone=&text=` also a
//!   `<span data-icon="send">` whose click POSTs `{phone,text}` to `/api/sent`.
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
  try { st = await (await fetch('/api/state', {cache: 'no-store'})).json(); } catch (e) { return; }
  let saved = localStorage.getItem('tok');
  if (saved && saved !== st.token) { localStorage.removeItem('tok'); saved = null; }
  if (!saved && st.token) { localStorage.setItem('tok', st.token); saved = st.token; }
  if (saved) {
    let html = '<div id="pane-side">chats</div>';
    if (location.pathname === '/send') html += '<span data-icon="send">send</span>';
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
            .route("/send", get(|| async { Html(PAGE) }))
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

    pub fn served_qrs(&self) -> Vec<String> {
        self.inner.lock().unwrap().served_qrs.clone()
    }

    pub fn sent(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().sent.clone()
    }
}

async fn state(State(fx): State<Fixture>) -> Json<Value> {
    let qr = fx.current_qr();
    let mut i = fx.inner.lock().unwrap();
    if !i.served_qrs.contains(&qr) {
        i.served_qrs.push(qr.clone());
    }
    Json(json!({ "qr": qr, "token": i.token }))
}

async fn sent(State(fx): State<Fixture>, Json(v): Json<Value>) -> Json<Value> {
    let phone = v["phone"].as_str().unwrap_or_default().to_owned();
    let text = v["text"].as_str().unwrap_or_default().to_owned();
    fx.inner.lock().unwrap().sent.push((phone, text));
    Json(json!({ "ok": true }))
}
