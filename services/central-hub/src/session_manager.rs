//! HTTP client for session-manager, with a bound on every call.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a call to session-manager produced no answer. `Display` carries the transport's
/// detail for the log; [`UpstreamError::public`] is what a client may see.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("session-manager is unreachable: {0}")]
    Unreachable(String),
    #[error("session-manager did not answer within {0:?}")]
    Timeout(Duration),
}

impl UpstreamError {
    /// A sentence without the HTTP client's internals (addresses, errno, library wording).
    pub fn public(&self) -> String {
        match self {
            UpstreamError::Unreachable(_) => "session-manager is unreachable".to_owned(),
            UpstreamError::Timeout(t) => {
                format!("session-manager did not answer within {} ms", t.as_millis())
            }
        }
    }
}

/// A complete answer from session-manager.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// Client bound to `SESSION_MANAGER_BASE_URL`.
#[derive(Clone, Debug)]
pub struct SessionManagerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base_url: String,
    timeout: Duration,
}

impl SessionManagerClient {
    pub fn new(base_url: String, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            base_url,
            timeout,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one request for `cliente_id` (as `X-Cliente-Id`) within the configured timeout.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        cliente_id: Option<i64>,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call_within(method, path, cliente_id, content_type, body, self.timeout)
            .await
    }

    /// `POST /logout` for `cliente_id`: session-manager closes that customer's browser.
    pub async fn logout(
        &self,
        cliente_id: i64,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call_within(
            Method::POST,
            "/logout",
            Some(cliente_id),
            None,
            Bytes::new(),
            timeout,
        )
        .await
    }

    /// The bound on an ordinary proxied call (`SESSION_MANAGER_TIMEOUT`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET /health`, bounded by `timeout` (used by `/status`).
    pub async fn health(&self, timeout: Duration) -> Result<UpstreamResponse, UpstreamError> {
        self.call_within(Method::GET, "/health", None, None, Bytes::new(), timeout)
            .await
    }

    async fn call_within(
        &self,
        method: Method,
        path: &str,
        cliente_id: Option<i64>,
        content_type: Option<HeaderValue>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base_url, path));
        if let Some(id) = cliente_id {
            req = req.header("X-Cliente-Id", id);
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Unreachable(format!("bad request: {e}")))?;

        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| UpstreamError::Unreachable(describe(&e)))?;
            let status = resp.status();
            let content_type = resp.headers().get(CONTENT_TYPE).cloned();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| UpstreamError::Unreachable(format!("reading body: {e}")))?
                .to_bytes();
            Ok(UpstreamResponse {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }
}

/// The legacy client's error text is terse; include the cause chain.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}
