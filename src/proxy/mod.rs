//! The `ProxyHttp` implementation: each Pingora hook delegates to routing, selection,
//! health and logging; the policy lives in those modules.

pub mod client_ip;
pub mod ctx;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::{Config, ProxySettings, RouteAction};
use crate::edge::limits;
use crate::edge::rate_limit::{self, RateLimiter};
use crate::lifecycle::Draining;
use crate::metrics::{ErrorKind, Metrics};
use crate::routing::{self, Router};
use crate::selection::stats::Outcome;
use crate::selection::sticky::{backend_id, cookie_key};
use crate::selection::StrategyKind;
use crate::target_group::TargetGroup;
use ctx::{Attempt, RequestCtx, StickyKey};

/// Response header naming the backend that answered (with `decision_headers: true`).
pub const BACKEND_HEADER: &str = "x-switchyard-backend";
/// Response header with the inputs of the selection decision.
pub const DECISION_HEADER: &str = "x-switchyard-decision";

/// The load balancer's request handling.
pub struct Switchyard {
    router: Router,
    route_names: Vec<Arc<str>>,
    default_route_name: Arc<str>,
    groups: Vec<Arc<TargetGroup>>,
    settings: ProxySettings,
    /// Prebuilt `Via` value (cloning a HeaderValue does not copy it).
    via: Option<http::HeaderValue>,
    metrics: Option<Arc<Metrics>>,
    /// Rate limiter of each route (by route index).
    limiters: Vec<Option<Arc<RateLimiter>>>,
    draining: Draining,
}

impl Switchyard {
    pub fn new(
        config: &Config,
        groups: Vec<Arc<TargetGroup>>,
        metrics: Option<Arc<Metrics>>,
        draining: Draining,
    ) -> Self {
        let route_names = config
            .routes
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .collect();
        Self {
            router: Router::new(config.routes.clone(), config.default_action.clone()),
            route_names,
            default_route_name: Arc::from(routing::DEFAULT_ROUTE_NAME),
            groups,
            settings: config.proxy.clone(),
            via: config
                .proxy
                .via
                .as_ref()
                .and_then(|v| http::HeaderValue::from_str(&format!("1.1 {v}")).ok()),
            metrics,
            limiters: config
                .routes
                .iter()
                .map(|r| r.rate_limit.map(|l| Arc::new(RateLimiter::new(l))))
                .collect(),
            draining,
        }
    }

    /// Each rate-limited route's name and limiter, for metrics.
    pub fn rate_limiters(&self) -> Vec<(String, Arc<RateLimiter>)> {
        self.route_names
            .iter()
            .zip(&self.limiters)
            .filter_map(|(name, l)| l.as_ref().map(|l| (name.to_string(), l.clone())))
            .collect()
    }

    fn group(&self, ctx: &RequestCtx) -> pingora_error::Result<&Arc<TargetGroup>> {
        ctx.group
            .and_then(|i| self.groups.get(i))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no target group"))
    }

    /// JSON answer of the status route: overall state and each group's healthy backends.
    fn status_page(&self) -> Bytes {
        let groups: Vec<serde_json::Value> = self
            .groups
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.config.name,
                    "strategy": g.config.strategy.name(),
                    "healthy": g.healthy_count(),
                    "total": g.member_count(),
                    "failing_open": g.is_failing_open(),
                })
            })
            .collect();
        let degraded = self.groups.iter().any(|g| g.healthy_count() == 0);
        let body = serde_json::json!({
            "status": if degraded { "degraded" } else { "ok" },
            "service": "switchyard",
            "groups": groups,
        });
        Bytes::from(body.to_string())
    }

    /// The sticky key of this request for `group`: the LB cookie's backend, or the client IP.
    fn sticky_key(
        &self,
        session: &Session,
        group: &TargetGroup,
        ctx: &mut RequestCtx,
    ) -> StickyKey {
        if let Some(cookie) = &group.config.sticky.lb_cookie {
            let id = read_cookie(session.req_header(), &cookie.name)
                .and_then(|v| u64::from_str_radix(v, 16).ok());
            if let Some(id) = id {
                ctx.cookie_backend = Some(id);
                return StickyKey::Cookie(cookie_key(id));
            }
        }
        ctx.client_ip.map(StickyKey::from_ip).unwrap_or_default()
    }

    /// Answer with `status` and a short text, remembering the status for logs and metrics.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        message: &str,
        retry_after: Option<u64>,
    ) -> pingora_error::Result<bool> {
        ctx.local_status = Some(status);
        respond::text_with(session, status, message, retry_after).await?;
        Ok(true)
    }

    /// Feed the current attempt's outcome to its backend's stats (once per attempt) and
    /// count a failure by kind.
    fn record(&self, ctx: &mut RequestCtx, outcome: Outcome, kind: Option<ErrorKind>) {
        let Some(group) = ctx.group.and_then(|i| self.groups.get(i)) else {
            return;
        };
        let Some(attempt) = ctx.attempt.as_mut() else {
            return;
        };
        if attempt.recorded {
            return;
        }
        attempt.recorded = true;
        let stats = attempt.guard.stats();
        let ejected = stats.record(outcome, Instant::now(), &group.config.passive);
        if let Some(m) = &self.metrics {
            if let Some(kind) = kind {
                m.upstream_error(&group.config.name, stats.label(), kind);
            }
            if ejected {
                m.ejection(&group.config.name, stats.label());
            }
        }
    }

    fn may_retry(&self, ctx: &RequestCtx) -> bool {
        self.group(ctx).is_ok_and(|g| {
            ctx.attempts() <= g.config.max_retries && ctx.attempts() < g.member_count() as u32
        })
    }
}

fn read_cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| {
            line.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v.trim())
            })
        })
}

fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

fn is_failure_status(status: u16) -> bool {
    status >= 500 || status == 429
}

fn downstream_scheme(session: &Session) -> &'static str {
    match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        Some(_) => "https",
        None => "http",
    }
}

#[async_trait]
impl ProxyHttp for Switchyard {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        // Bound each wait for request-body bytes, so a client trickling its body is dropped.
        session.set_read_timeout(Some(self.settings.client_body_timeout));
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let raw = match session.as_downstream() {
            pingora_core::protocols::http::server::Session::H1(h1) => {
                Some(h1.get_headers_raw_bytes())
            }
            _ => None,
        };
        let req = session.req_header();
        if let Err(refusal) = limits::check(
            req,
            raw.as_deref(),
            self.settings.max_header_bytes,
            self.settings.max_body_bytes,
        ) {
            return self
                .refuse(session, ctx, refusal.status(), refusal.message(), None)
                .await;
        }
        if routing::has_dot_segment(req.uri.path()) {
            let msg = "bad request: dot segments and encoded slashes are not allowed in the path";
            return self.refuse(session, ctx, 400, msg, None).await;
        }
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| client_ip::resolve(a.ip(), req, &self.settings.client_ip));
        let Some(matched) = self.router.route(host_of(req), req.uri.path()) else {
            return self
                .refuse(session, ctx, 404, "no route for this request", None)
                .await;
        };
        ctx.route_name = Some(match matched.index {
            Some(i) => self.route_names[i].clone(),
            None => self.default_route_name.clone(),
        });
        ctx.strip_prefix = matched.strip_prefix.map(Arc::from);
        let action = matched.action.clone();
        if let Some(limiter) = matched.index.and_then(|i| self.limiters[i].as_ref()) {
            if let Err(wait) = limiter.check(ctx.client_ip, Instant::now()) {
                if let (Some(m), Some(route)) = (&self.metrics, &ctx.route_name) {
                    m.rate_limited(route);
                }
                let secs = rate_limit::retry_after_secs(wait);
                return self
                    .refuse(session, ctx, 429, "too many requests", Some(secs))
                    .await;
            }
        }
        match action {
            RouteAction::Forward(g) => {
                ctx.group = Some(g);
                let group = self.groups[g].clone();
                if group.config.strategy == StrategyKind::Sticky {
                    ctx.sticky_key = self.sticky_key(session, &group, ctx);
                }
                if let Some(admission) = &group.admission {
                    match admission.admit().await {
                        Ok(slot) => ctx.slot = Some(slot),
                        Err(_) => {
                            if let Some(m) = &self.metrics {
                                m.shed(&group.config.name);
                            }
                            return self
                                .refuse(session, ctx, 503, "overloaded: try again shortly", Some(1))
                                .await;
                        }
                    }
                }
                Ok(false)
            }
            RouteAction::StatusPage => {
                ctx.local_status = Some(200);
                respond::write(session, 200, "application/json", self.status_page()).await?;
                Ok(true)
            }
            RouteAction::Fixed {
                status,
                body,
                content_type,
            } => {
                ctx.local_status = Some(status);
                respond::write(session, status, &content_type, Bytes::from(body)).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        // Chunked bodies declare no length up front: count as they stream.
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > self.settings.max_body_bytes {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body too large",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let group = self.group(ctx)?.clone();
        // A retry ends the previous attempt (and its in-flight count) first.
        ctx.attempt = None;
        let now = Instant::now();
        if let (Some(m), false) = (&self.metrics, ctx.tried.is_empty()) {
            m.retry(&group.config.name);
        }
        let Some(pick) = group.pick(ctx.sticky_key.as_bytes(), &ctx.tried, now) else {
            if let Some(m) = &self.metrics {
                m.no_backend(&group.config.name);
            }
            let mut e = Error::explain(
                ErrorType::HTTPStatus(503),
                format!("no available backend in group {}", group.config.name),
            );
            e.set_retry(false);
            return Err(e);
        };
        ctx.tried.push(pick.addr);
        ctx.backend = Some(pick.addr);
        ctx.failed_open |= pick.failed_open;
        ctx.attempt = Some(Attempt {
            backend: pick.addr,
            guard: pick.stats.start_request(),
            sent_at: now,
            recorded: false,
        });
        let t = group.config.timeouts;
        let mut peer = HttpPeer::new(pick.addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent: retrying elsewhere is always safe.
        self.record(ctx, Outcome::Failure, Some(ErrorKind::ConnectFailure));
        e.set_retry(self.may_retry(ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if e.esource() == &ErrorSource::Upstream {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => ErrorKind::Timeout,
                _ => ErrorKind::ConnectionError,
            };
            self.record(ctx, Outcome::Failure, Some(kind));
        }
        // Retry only what can be replayed: an idempotent request whose body is still
        // buffered, to which no response byte has been sent yet.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if replayable && e.esource() == &ErrorSource::Upstream && self.may_retry(ctx) {
            e.set_retry(true);
        } else if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if let Some(ip) = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            let xff = match upstream
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
                _ => ip.to_string(),
            };
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        upstream.insert_header("x-forwarded-proto", downstream_scheme(session))?;
        if let Some(host) = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned()
        {
            upstream.insert_header("x-forwarded-host", host)?;
        } else if let Some(authority) = session
            .req_header()
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
        {
            upstream.insert_header("x-forwarded-host", authority)?;
        }
        if let Some(via) = &self.via {
            upstream.append_header("via", via.clone())?;
        }
        if let Some(prefix) = &ctx.strip_prefix {
            let pq = upstream
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let rewritten = routing::strip_prefix(pq, prefix);
            let uri = rewritten.parse().map_err(|_| {
                Error::explain(ErrorType::InternalError, "stripped path is not a valid URI")
            })?;
            upstream.set_uri(uri);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let status = resp.status.as_u16();
        if status < 200 {
            return Ok(()); // informational: the real answer is still to come
        }
        ctx.upstream_status = Some(status);
        let (outcome, kind) = match ctx.attempt.as_ref() {
            Some(_) if status == 429 => (Outcome::Failure, Some(ErrorKind::Http429)),
            Some(_) if is_failure_status(status) => (Outcome::Failure, Some(ErrorKind::Http5xx)),
            Some(a) => (Outcome::Success(a.sent_at.elapsed()), None),
            None => return Ok(()),
        };
        self.record(ctx, outcome, kind);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if self.draining.is_draining() || session.is_process_shutting_down() {
            // Handing over: tell the client not to reuse this connection.
            resp.insert_header("connection", "close")?;
            session.set_keepalive(None);
        }
        if let Some(hsts) = &self.settings.hsts {
            if downstream_scheme(session) == "https" {
                resp.insert_header("strict-transport-security", hsts.as_str())?;
            }
        }
        if let Some(via) = &self.via {
            resp.append_header("via", via.clone())?;
        }
        let (Some(group), Some(backend)) =
            (ctx.group.and_then(|i| self.groups.get(i)), ctx.backend)
        else {
            return Ok(());
        };
        if self.settings.decision_headers {
            resp.insert_header(BACKEND_HEADER, backend.to_string())?;
            if let Some(a) = &ctx.attempt {
                let mut why = group
                    .config
                    .strategy
                    .explain(a.guard.stats(), Instant::now());
                if ctx.attempts() > 1 {
                    why.push_str(&format!("; attempts={}", ctx.attempts()));
                }
                if ctx.failed_open {
                    why.push_str("; failed_open=true");
                }
                resp.insert_header(DECISION_HEADER, why)?;
            }
        }
        if let Some(cookie) = &group.config.sticky.lb_cookie {
            let id = backend_id(&backend);
            if ctx.cookie_backend != Some(id) {
                let value = format!(
                    "{}={id:016x}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
                    cookie.name,
                    cookie.max_age.as_secs()
                );
                resp.append_header("set-cookie", value)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    ErrorType::ReadTimedout => 408,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            ctx.local_status = Some(code);
            let message = match code {
                503 => "no backend available",
                504 => "upstream timed out",
                502 => "upstream failed",
                400 => "bad request",
                408 => "request timeout: the request body arrived too slowly",
                413 => "request body too large",
                _ => "error",
            };
            let _ = respond::text(session, code, message).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(err) = e {
            if err.esource() == &ErrorSource::Upstream {
                self.record(ctx, Outcome::Failure, Some(ErrorKind::ConnectionError));
            }
        }
        if let Some(m) = &self.metrics {
            let status = session
                .response_written()
                .map(|r| r.status.as_u16())
                .or(ctx.local_status)
                .unwrap_or(0);
            let group = ctx
                .group
                .and_then(|i| self.groups.get(i))
                .map(|g| g.config.name.as_str())
                .unwrap_or("");
            let backend = ctx
                .attempt
                .as_ref()
                .map(|a| a.guard.stats().label())
                .unwrap_or("");
            let route = ctx.route_name.as_deref().unwrap_or("");
            m.observe_request(route, group, backend, status, ctx.started.elapsed());
        }
        // End the attempt now: the response is complete or abandoned.
        ctx.attempt = None;
        if self.settings.access_log
            && log::log_enabled!(target: "switchyard::access", log::Level::Info)
        {
            log_access(session, ctx, self.groups.as_slice(), e);
        }
    }
}

fn log_access(session: &Session, ctx: &RequestCtx, groups: &[Arc<TargetGroup>], e: Option<&Error>) {
    let req = session.req_header();
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0);
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "-".into());
    let group = ctx
        .group
        .and_then(|i| groups.get(i))
        .map(|g| g.config.name.as_str())
        .unwrap_or("-");
    let backend = ctx
        .backend
        .map(|b: SocketAddr| b.to_string())
        .unwrap_or_else(|| "-".into());
    let duration: Duration = ctx.started.elapsed();
    let error = e
        .map(|e| format!(" error=\"{}\"", e.etype().as_str()))
        .unwrap_or_default();
    log::info!(
        target: "switchyard::access",
        "{client} \"{} {}\" {status} route={} group={group} backend={backend} attempts={} duration_ms={:.2}{error}",
        req.method,
        req.uri,
        ctx.route_name.as_deref().unwrap_or("-"),
        ctx.attempts(),
        duration.as_secs_f64() * 1e3,
    );
}
