//! The admin listener: `/metrics` (Prometheus), `/status` (JSON), `/dashboard` (HTML), open
//! to read; and the runtime API ([`api`]: reload, drain, weights, backends), which changes
//! nothing without the bearer token ([`auth`]). It runs as its own Pingora service on its own
//! address, never on the proxy port.

pub mod api;
pub mod auth;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::reload::Reloader;
use crate::runtime::Runtime;

/// The dashboard page: self-contained (no CDN), it polls `/status`.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Serves the admin endpoints.
pub struct AdminApp {
    runtime: Arc<Runtime>,
    /// The runtime API, unless `admin.api: false`.
    reloader: Option<Arc<Reloader>>,
    started: Instant,
}

impl AdminApp {
    pub fn new(reloader: Arc<Reloader>, api: bool) -> Self {
        Self {
            runtime: reloader.runtime.clone(),
            reloader: api.then_some(reloader),
            started: Instant::now(),
        }
    }

    fn metrics_text(&self) -> Response<Vec<u8>> {
        let m = &self.runtime.metrics;
        if m.enabled() {
            let snapshot = self.runtime.snapshot();
            m.refresh_gauges(&snapshot.groups, &snapshot.limiters());
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                m.encode(),
            )
        } else {
            reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"metrics are disabled (admin.metrics: false)\n".to_vec(),
            )
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("valid response")
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if let Some(call) = api::parse(&req.method, req.uri.path()) {
            let (status, body) = match (call, &self.reloader) {
                (_, None) => (
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "the runtime API is off (admin.api: false)"}),
                ),
                (Err(answer), _) => answer,
                (Ok(change), Some(reloader)) => api::serve(reloader, session, change).await,
            };
            let mut resp = reply(status, "application/json", format!("{body}\n").into_bytes());
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            return resp;
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                b"only GET and HEAD\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/metrics" => self.metrics_text(),
            "/status" => {
                let body = status::status_json(&self.runtime.snapshot(), self.started.elapsed());
                reply(
                    StatusCode::OK,
                    "application/json",
                    body.to_string().into_bytes(),
                )
            }
            "/" | "/dashboard" => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                DASHBOARD_HTML.as_bytes().to_vec(),
            ),
            "/healthz" => reply(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok\n".to_vec(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"not found: try /metrics, /status or /dashboard\n".to_vec(),
            ),
        }
    }
}
