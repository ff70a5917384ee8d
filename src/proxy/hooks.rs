//! What Switchyard does at each step of a request, over any [`Downstream`]: the policy behind
//! each `ProxyHttp` hook. The adapter in [`super`] calls these with Pingora's session; unit
//! tests call them with a plain one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::FailToProxy;

use super::attempt::Attempt;
use super::ctx::RequestCtx;
use super::downstream::Downstream;
use super::{
    access_log, client_ip, forwarding, grpc, outcome, policies, respond, snapshot_of, status_page,
    Switchyard, BACKEND_HEADER, CLIENT_CLOSED, DECISION_HEADER,
};
use crate::config::RouteAction;
use crate::edge::{limits, rate_limit};
use crate::metrics::ErrorKind;
use crate::routing;
use crate::selection::KeyInput;

impl Switchyard {
    /// Answer with `status` and a short text, remembering the status for logs and metrics.
    async fn refuse(
        &self,
        session: &mut impl Downstream,
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

    /// A request's head arrived: it runs on the configuration current now.
    pub(super) fn begin(&self, session: &mut impl Downstream, ctx: &mut RequestCtx) {
        let snapshot = self.runtime.snapshot();
        // Bound each wait for request-body bytes (and see `check_body` for the rate).
        session.set_read_timeout(snapshot.config.proxy.client_body_timeout);
        ctx.snapshot = Some(snapshot);
    }

    /// Limits, routing, rate limits, faults and admission. `Ok(true)` when the proxy answered
    /// the request itself; `Ok(false)` when it goes to `ctx.group`.
    pub(super) async fn admit(
        &self,
        session: &mut impl Downstream,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let snapshot = snapshot_of(ctx)?;
        let settings = &snapshot.config.proxy;
        let raw = session.raw_head();
        let raw_head = raw.as_ref().map(|head| limits::RawHead {
            bytes: &head.bytes,
            line_escaped: head.line_escaped,
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
            session.close_after_response();
            return self
                .refuse(session, ctx, refusal.status(), refusal.message(), None)
                .await;
        }
        if routing::has_dot_segment(req.uri.path()) {
            let msg = "bad request: dot segments and encoded slashes are not allowed in the path";
            return self.refuse(session, ctx, 400, msg, None).await;
        }
        ctx.client_ip = session
            .client_ip()
            .map(|ip| client_ip::resolve(ip, req, &settings.client_ip));
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
            if let Some(injected) = policies::faults(
                route_config,
                route,
                session.req_header(),
                &self.runtime.metrics,
            ) {
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
                let group =
                    policies::target_group(&snapshot, action, route, session.req_header(), ctx)
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

    /// Count a piece of request body against the size limit and the minimum upload rate.
    pub(super) fn check_body(
        &self,
        session: &mut impl Downstream,
        body: Option<&Bytes>,
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
        session.set_read_timeout(left.min(settings.client_body_timeout));
        Ok(())
    }

    /// Pick the backend for the next attempt; a retry ends the previous attempt first.
    pub(super) fn choose_peer(&self, ctx: &mut RequestCtx) -> pingora_error::Result<Box<HttpPeer>> {
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

    /// The attempt could not connect: record it, and retry elsewhere when allowed.
    pub(super) fn connect_failed(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
        if let Some(a) = ctx.attempt.as_mut() {
            a.failed(outcome::connect_error_kind(&e));
        }
        // Nothing was sent: retrying elsewhere is always safe.
        e.set_retry(Self::may_retry(ctx));
        e
    }

    /// The attempt failed after connecting: record it, and retry only what can be replayed.
    pub(super) fn proxy_failed(
        session: &impl Downstream,
        peer: &HttpPeer,
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
            && !session.body_outgrew_replay_buffer()
            && session.response_status().is_none();
        if replayable && e.esource() == &ErrorSource::Upstream && Self::may_retry(ctx) {
            e.set_retry(true);
        } else if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        e
    }

    /// The forwarding headers, and the route's prefix stripped.
    pub(super) fn prepare_upstream_request(
        session: &impl Downstream,
        upstream: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> pingora_error::Result<()> {
        let snapshot = snapshot_of(ctx)?;
        forwarding::add_forwarding_headers(session, upstream, snapshot.via.as_ref())?;
        if let Some(prefix) = &ctx.strip_prefix {
            forwarding::strip_route_prefix(upstream, prefix)?;
        }
        Ok(())
    }

    /// The backend's response head arrived: the attempt's status and latency.
    pub(super) fn upstream_responded(resp: &ResponseHeader, ctx: &mut RequestCtx) {
        let status = resp.status.as_u16();
        if status < 200 {
            return; // informational: the real answer is still to come
        }
        if let Some(a) = ctx.attempt.as_mut() {
            a.responded(status, Instant::now());
            // A trailers-only gRPC answer carries its status in the head.
            if grpc::status_of(&resp.headers).is_some_and(grpc::is_failing) {
                a.failed(ErrorKind::GrpcStatus);
            }
        }
    }

    /// The backend's trailers arrived: a failing gRPC status fails the attempt.
    pub(super) fn upstream_trailers(trailers: &http::HeaderMap, ctx: &mut RequestCtx) {
        if grpc::status_of(trailers).is_some_and(grpc::is_failing) {
            if let Some(a) = ctx.attempt.as_mut() {
                a.failed(ErrorKind::GrpcStatus);
            }
        }
    }

    /// The response head on its way to the client: version, `Via`, `Connection: close` when
    /// leaving, HSTS, cookies and the decision headers.
    pub(super) fn prepare_response(
        &self,
        session: &mut impl Downstream,
        resp: &mut ResponseHeader,
        ctx: &RequestCtx,
    ) -> pingora_error::Result<()> {
        let snapshot = snapshot_of(ctx)?;
        let settings = &snapshot.config.proxy;
        if !session.is_http2() {
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
                session.close_after_response();
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
            session.close_after_response();
        }
        if let Some(hsts) = &settings.hsts {
            if session.is_tls() {
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

    /// The request failed without a response from a backend: answer with the status the
    /// failure maps to, unless a response has already begun.
    pub(super) async fn answer_failure(
        session: &mut impl Downstream,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = outcome::status_for(e);
        if code > 0 && session.response_status().is_none() {
            ctx.local_status = Some(code);
            // Pingora closes the client connection after a failed proxy attempt (the answer
            // below says it cannot be reused): the response must say so, or a client sends its
            // next request on a connection that is being closed.
            session.close_after_response();
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

    /// The request ended: its attempt's outcome, metrics, canary, shadow copy and access log.
    pub(super) fn finish(
        &self,
        session: &impl Downstream,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
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
            .or_else(|| session.response_status())
            .unwrap_or(CLIENT_CLOSED);
        let elapsed = ctx.started.elapsed();
        if self.runtime.metrics.enabled() {
            let group = ctx.group_name().unwrap_or("");
            let backend = ctx.backend_label().unwrap_or("");
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
            access_log::log(session.req_header(), ctx, status, e);
        }
    }
}

#[cfg(test)]
mod tests;
