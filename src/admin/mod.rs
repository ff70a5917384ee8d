//! The admin listener: `/metrics` (Prometheus), `/status` (JSON), `/dashboard` (HTML).
//! It runs as its own Pingora service on its own address, never on the proxy port.

pub mod status;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::config::Config;
use crate::edge::rate_limit::RateLimiter;
use crate::metrics::Metrics;
use crate::target_group::TargetGroup;

/// The dashboard page: self-contained (no CDN), it polls `/status`.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Serves the admin endpoints.
pub struct AdminApp {
    groups: Vec<Arc<TargetGroup>>,
    limiters: Vec<(String, Arc<RateLimiter>)>,
    routes: serde_json::Value,
    metrics: Option<Arc<Metrics>>,
    started: Instant,
}

impl AdminApp {
    pub fn new(
        config: &Config,
        groups: Vec<Arc<TargetGroup>>,
        limiters: Vec<(String, Arc<RateLimiter>)>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            routes: status::route_table(config),
            groups,
            limiters,
            metrics,
            started: Instant::now(),
        }
    }

    fn metrics_text(&self) -> Response<Vec<u8>> {
        match &self.metrics {
            Some(m) => {
                m.refresh_gauges(&self.groups, &self.limiters);
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    m.encode(),
                )
            }
            None => reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"metrics are disabled (admin.metrics: false)\n".to_vec(),
            ),
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
                let body = status::status_json(&self.groups, &self.routes, self.started.elapsed());
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
