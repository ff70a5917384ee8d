//! The `ProxyHttp` implementation: each Pingora hook delegates to routing, selection, health
//! and logging; the policy lives in those modules. A request runs on the configuration
//! snapshot current when it started ([`crate::runtime`]); each attempt at a backend is an
//! [`attempt::Attempt`] that records its own outcome once.

pub mod access_log;
pub mod attempt;
pub mod client_ip;
pub mod ctx;
pub mod forwarding;
pub mod grpc;
pub mod outcome;
pub mod policies;
pub mod respond;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::config::RouteAction;
use crate::edge::{limits, rate_limit, slow_client};
use crate::metrics::ErrorKind;
use crate::routing;
use crate::runtime::{Runtime, Snapshot};
use crate::selection::KeyInput;
use crate::shutdown::Leaving;
use attempt::Attempt;
use ctx::RequestCtx;

/// Response header naming the backend that answered (with `decision_headers: true`).
pub const BACKEND_HEADER: &str = "x-switchyard-backend";
/// Response header with the inputs of the selection decision.
pub const DECISION_HEADER: &str = "x-switchyard-decision";

/// Status recorded for a request whose client went away before it was answered (as nginx).
pub const CLIENT_CLOSED: u16 = 499;

/// The load balancer's request handling.
pub struct Switchyard {
    runtime: Arc<Runtime>,
    leaving: Leaving,
    /// `proxy.header_case: lowercase`, fixed at start like the listeners' own setting.
    discard_header_case: bool,
}

impl Switchyard {
    /// The proxy over `runtime`; `discard_header_case` as the listeners were started with.
    pub fn new(runtime: Arc<Runtime>, leaving: Leaving, discard_header_case: bool) -> Self {
        Self {
            runtime,
            leaving,
            discard_header_case,
        }
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
        if grpc::is_grpc(session.req_header()) {
            respond::grpc_error(session, grpc::status_for_http(status), message).await?;
        } else {
            respond::text_with(session, status, message, retry_after).await?;
        }
        Ok(true)
    }

    fn may_retry(ctx: &RequestCtx) -> bool {
        ctx.group.as_ref().is_some_and(|g| {
            ctx.attempts() <= g.config.max_retries && ctx.attempts() < g.member_count() as u32
        })
    }
}

/// The snapshot a request runs on (taken in `early_request_filter`, which always runs first).
fn snapshot_of(ctx: &RequestCtx) -> pingora_error::Result<Arc<Snapshot>> {
    ctx.snapshot
        .clone()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no configuration"))
}

/// JSON answer of the status route: overall state and each group's ready backends.
fn status_page(snapshot: &Snapshot) -> Bytes {
    let groups: Vec<serde_json::Value> = snapshot
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
    let degraded = snapshot.groups.iter().any(|g| g.healthy_count() == 0);
    let body = serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "service": "switchyard",
        "groups": groups,
    });
    Bytes::from(body.to_string())
}

#[async_trait]
impl ProxyHttp for Switchyard {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds a response-compression module, disabled,
    /// which Switchyard never enables; it would still be built, boxed and called for every
    /// request (three allocations each).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        let mut ctx = RequestCtx::new();
        ctx.serving = Some(self.leaving.serving());
        ctx
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let snapshot = self.runtime.snapshot();
        // Bound each wait for request-body bytes (and see `request_body_filter` for the rate).
        session.set_read_timeout(Some(snapshot.config.proxy.client_body_timeout));
        // Requests a client sends before reading the previous answer (RFC 9112 9.3.2) are
        // answered in order, as NGINX and HAProxy do. Pingora's default closes the connection
        // after the first answer and drops the rest.
        if let HttpSession::H1(h1) = session.as_downstream_mut() {
            h1.set_pipelining_enabled(true);
        }
        slow_client::head_received(session);
        ctx.snapshot = Some(snapshot);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let snapshot = snapshot_of(ctx)?;
        let settings = &snapshot.config.proxy;
        let (raw, line_escaped) = match session.as_downstream() {
            HttpSession::H1(h1) => (Some(h1.get_headers_raw_bytes()), h1.request_line_escaped()),
            _ => (None, false),
        };
        let raw_head = raw.as_deref().map(|bytes| limits::RawHead {
            bytes,
            line_escaped,
        });
        let req = session.req_header();
        if let Err(refusal) = limits::check(
            req,
            raw_head,
            settings.max_header_bytes,
            settings.max_body_bytes,
        ) {
            // Where this request ends is unknown or not worth reading: nothing after it on
            // this connection may be taken for a request.
            session.set_keepalive(None);
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
            .map(|a| client_ip::resolve(a.ip(), req, &settings.client_ip));
        let Some(matched) = snapshot
            .router
            .route(forwarding::host_of(req), req.uri.path())
        else {
            return self
                .refuse(session, ctx, 404, "no route for this request", None)
                .await;
        };
        let route = match matched.index {
            Some(i) => &snapshot.routes[i],
            None => &snapshot.default_route,
        };
        ctx.route = matched.index;
        ctx.route_name = Some(route.name.clone());
        ctx.strip_prefix = matched.strip_prefix.map(Arc::from);
        if let Some(limiter) = &route.limiter {
            if let Err(wait) = limiter.check(ctx.client_ip, Instant::now()).await {
                self.runtime.metrics.rate_limited(&route.name);
                let secs = rate_limit::retry_after_secs(wait);
                return self
                    .refuse(session, ctx, 429, "too many requests", Some(secs))
                    .await;
            }
        }
        let action = matched.action;
        if let Some(route_config) = matched.index.map(|i| &snapshot.config.routes[i]) {
            if let Some(injected) =
                policies::faults(route_config, route, session, &self.runtime.metrics)
            {
                ctx.fault = Some(injected);
                if let Some(delay) = injected.delay {
                    tokio::time::sleep(delay).await;
                }
                if let Some(status) = injected.abort {
                    return self
                        .refuse(session, ctx, status, "fault injected", None)
                        .await;
                }
            }
        }
        match action {
            RouteAction::Forward(_) | RouteAction::Split(_) => {
                let group = policies::target_group(&snapshot, action, route, session, ctx)
                    .ok_or_else(|| {
                        Error::explain(ErrorType::InternalError, "route without its group")
                    })?;
                ctx.key = group.selector().request_key(&KeyInput {
                    request: session.req_header(),
                    client_ip: ctx.client_ip,
                    settings: &group.config,
                });
                ctx.group = Some(group.clone());
                if let Some(admission) = &group.admission {
                    match admission.admit().await {
                        Ok(slot) => ctx.slot = Some(slot),
                        Err(_) => {
                            self.runtime.metrics.shed(&group.config.name);
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
                respond::write(session, 200, "application/json", status_page(&snapshot)).await?;
                Ok(true)
            }
            RouteAction::Fixed {
                status,
                body,
                content_type,
            } => {
                ctx.local_status = Some(*status);
                respond::write(session, *status, content_type, Bytes::from(body.clone())).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let snapshot = snapshot_of(ctx)?;
        let settings = &snapshot.config.proxy;
        // Chunked bodies declare no length up front: count as they stream.
        if let Some(chunk) = body {
            ctx.body.bytes += chunk.len() as u64;
            if ctx.body.bytes > settings.max_body_bytes {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body too large",
                ));
            }
        }
        if end_of_stream || settings.client_body_min_rate == 0 {
            return Ok(());
        }
        // A minimum upload rate (Apache's MinRate): the body's deadline grows by one second
        // per `min_rate` bytes received, so a client trickling bytes cannot hold the
        // connection forever even though each single wait stays under the timeout.
        let since = *ctx.body.since.get_or_insert(ctx.started);
        let allowance = settings.client_body_timeout
            + Duration::from_secs_f64(ctx.body.bytes as f64 / settings.client_body_min_rate as f64);
        let left = (since + allowance).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::explain(
                ErrorType::HTTPStatus(408),
                "request body arrived below the minimum rate",
            ));
        }
        session.set_read_timeout(Some(left.min(settings.client_body_timeout)));
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let snapshot = snapshot_of(ctx)?;
        let group = ctx.group.clone().ok_or_else(|| {
            Error::explain(ErrorType::InternalError, "request has no target group")
        })?;
        // A retry ends the previous attempt first (its outcome is recorded now).
        ctx.attempt = None;
        let now = Instant::now();
        if !ctx.tried.is_empty() {
            self.runtime.metrics.retry(&group.config.name);
        }
        let explain = snapshot.config.proxy.decision_headers;
        let Some(pick) = group.pick(ctx.key.as_bytes(), &ctx.tried, now, explain) else {
            self.runtime.metrics.no_backend(&group.config.name);
            let mut e = Error::explain(
                ErrorType::HTTPStatus(503),
                format!("no available backend in group {}", group.config.name),
            );
            e.set_retry(false);
            return Err(e);
        };
        ctx.tried.push(pick.addr);
        ctx.backend = Some(pick.stats.clone());
        ctx.failed_open |= pick.failed_open;
        ctx.attempt = Some(Attempt::start(group.clone(), &pick.stats, pick.inputs, now));
        let mut peer = group.peers.peer(pick.addr);
        peer.options.h1_discard_header_case = self.discard_header_case;
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(a) = ctx.attempt.as_mut() {
            a.failed(outcome::connect_error_kind(&e));
        }
        // Nothing was sent: retrying elsewhere is always safe.
        e.set_retry(Self::may_retry(ctx));
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
        if let Some(a) = ctx.attempt.as_mut() {
            if e.esource() == &ErrorSource::Upstream {
                a.failed(outcome::upstream_error_kind(&e));
            } else if outcome::is_client_gone(&e) {
                a.client_gone();
            }
        }
        // Retry only what can be replayed: an idempotent request whose body is still
        // buffered, to which no response byte has been sent yet.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        if replayable && e.esource() == &ErrorSource::Upstream && Self::may_retry(ctx) {
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
        let snapshot = snapshot_of(ctx)?;
        forwarding::add_forwarding_headers(session, upstream, snapshot.via.as_ref())?;
        if let Some(prefix) = &ctx.strip_prefix {
            forwarding::strip_route_prefix(upstream, prefix)?;
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
        if let Some(a) = ctx.attempt.as_mut() {
            a.responded(status, Instant::now());
            // A trailers-only gRPC answer carries its status in the head.
            if grpc::status_of(&resp.headers).is_some_and(grpc::is_failing) {
                a.failed(ErrorKind::GrpcStatus);
            }
        }
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if grpc::status_of(trailers).is_some_and(grpc::is_failing) {
            if let Some(a) = ctx.attempt.as_mut() {
                a.failed(ErrorKind::GrpcStatus);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let snapshot = snapshot_of(ctx)?;
        let settings = &snapshot.config.proxy;
        if !session.as_downstream().is_http2() {
            // A proxy sends its own HTTP version (RFC 9110 2.5): an HTTP/1.0 backend's answer
            // reaches an HTTP/1.1 client as HTTP/1.1.
            resp.set_version(http::Version::HTTP_11);
            let old_client = matches!(
                session.req_header().version,
                http::Version::HTTP_10 | http::Version::HTTP_09
            );
            if old_client && resp.headers.contains_key(http::header::TRANSFER_ENCODING) {
                // An HTTP/1.0 client does not know chunked (RFC 9112 6.1): the body goes as it
                // is and ends with the connection.
                resp.remove_header(&http::header::TRANSFER_ENCODING);
                session.set_keepalive(None);
            }
        }
        if let Some(via) = &snapshot.via {
            resp.append_header(&forwarding::VIA, via.clone())?;
        }
        if resp.status.is_informational() {
            // A `100 Continue` or `103 Early Hints`: the final answer carries the rest.
            return Ok(());
        }
        if self.leaving.is_leaving() || session.is_process_shutting_down() {
            // Handing over or stopping: tell the client not to reuse this connection.
            resp.insert_header("connection", "close")?;
            session.set_keepalive(None);
        }
        if let Some(hsts) = &settings.hsts {
            if forwarding::downstream_scheme(session) == "https" {
                resp.insert_header("strict-transport-security", hsts.as_str())?;
            }
        }
        let (Some(group), Some(backend)) = (&ctx.group, ctx.backend_addr()) else {
            return Ok(());
        };
        if let Some((split, choice)) = &ctx.split {
            if let Some(cookie) = split.cookie(*choice) {
                resp.append_header("set-cookie", cookie)?;
            }
        }
        if settings.decision_headers {
            resp.insert_header(BACKEND_HEADER, backend.to_string())?;
            if let Some(inputs) = ctx.attempt.as_ref().and_then(|a| a.inputs) {
                let mut why = String::new();
                if let Some((split, choice)) = &ctx.split {
                    let weights = split.weights();
                    why.push_str(&format!(
                        "target_group={} (split weight {} of {}); ",
                        group.config.name,
                        weights[choice.position],
                        weights.iter().sum::<u32>()
                    ));
                }
                why.push_str(&group.selector().explain(&inputs));
                if ctx.attempts() > 1 {
                    why.push_str(&format!("; attempts={}", ctx.attempts()));
                }
                if ctx.failed_open {
                    why.push_str("; failed_open=true");
                }
                resp.insert_header(DECISION_HEADER, why)?;
            }
        }
        if let Some(cookie) = group
            .selector()
            .response_cookie(&group.config, backend, &ctx.key)
        {
            resp.append_header("set-cookie", cookie)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = outcome::status_for(e);
        if code > 0 && session.response_written().is_none() {
            ctx.local_status = Some(code);
            // Pingora closes the client connection after a failed proxy attempt (the answer
            // below says it cannot be reused): the response must say so, or a client sends its
            // next request on a connection that is being closed.
            session.set_keepalive(None);
            let message = outcome::message_for(code);
            let _ = if grpc::is_grpc(session.req_header()) {
                respond::grpc_error(session, grpc::status_for_http(code), message).await
            } else {
                respond::text(session, code, message).await
            };
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        // A client closing its connection is normal; the access log has it. Failures the
        // proxy answered itself (502/503/504) are logged here once, as warnings: the load
        // balancer handled them.
        if !outcome::is_client_gone(e) {
            log::warn!(
                "request {} {} failed after {} attempt(s): {e}",
                session.req_header().method,
                session.req_header().uri,
                ctx.attempts()
            );
        }
        true
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        e: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        // Retries are counted (lb_retries_total) and shown in the access log's attempts.
        log::debug!("attempt {} failed, retrying elsewhere: {e}", ctx.attempts());
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(a) = ctx.attempt.as_mut() {
            match e {
                None => a.finished(),
                Some(err) if err.esource() == &ErrorSource::Upstream => {
                    a.failed(outcome::upstream_error_kind(err))
                }
                Some(_) => a.client_gone(),
            }
        }
        // End the attempt now: the response is complete or abandoned.
        ctx.attempt = None;
        // What the proxy answered itself first (a gRPC error is an HTTP 200 on the wire but
        // a 429 or 503 for the logs and metrics).
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(CLIENT_CLOSED);
        let elapsed = ctx.started.elapsed();
        if self.runtime.metrics.enabled() {
            let group = ctx
                .group
                .as_ref()
                .map(|g| g.config.name.as_str())
                .unwrap_or("");
            let backend = ctx.backend.as_ref().map(|b| b.label()).unwrap_or("");
            let route = ctx.route_name.as_deref().unwrap_or("");
            self.runtime
                .metrics
                .observe_request(route, group, backend, status, elapsed);
        }
        policies::measure(ctx, status, elapsed);
        if let Some(snapshot) = ctx.snapshot.clone() {
            policies::mirror(session, ctx, &snapshot, status);
        }
        let access_log = ctx
            .snapshot
            .as_ref()
            .is_some_and(|s| s.config.proxy.access_log);
        if access_log && log::log_enabled!(target: "switchyard::access", log::Level::Info) {
            access_log::log(session, ctx, status, e);
        }
        slow_client::request_finished(session);
    }
}
