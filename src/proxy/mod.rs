//! The `ProxyHttp` implementation: a thin adapter. Each Pingora hook calls one step in
//! `hooks`, which works over any [`downstream::Downstream`] and delegates to routing,
//! selection, health and logging; the policy lives in those modules. A request runs on the
//! configuration snapshot current when it started ([`crate::runtime`]); each attempt at a
//! backend is an [`attempt::Attempt`] that records its own outcome once.

pub mod access_log;
pub mod attempt;
pub mod client_ip;
pub mod ctx;
pub mod downstream;
pub mod forwarding;
pub mod grpc;
pub mod h1;
mod hooks;
pub mod outcome;
pub mod policies;
pub mod respond;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};

use crate::edge::slow_client;
use crate::runtime::{Runtime, Snapshot};
use crate::shutdown::Leaving;
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
}

/// The snapshot a request runs on (taken in `early_request_filter`, which always runs first).
fn snapshot_of(ctx: &RequestCtx) -> pingora_error::Result<Arc<Snapshot>> {
    ctx.snapshot
        .clone()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no configuration"))
}

/// Log a failed request once, as a warning. A client closing its connection is normal (the
/// access log has it); failures the proxy answered itself (502/503/504) are logged: the load
/// balancer handled them.
fn log_failure(req: &RequestHeader, e: &Error, ctx: &RequestCtx) {
    if !outcome::is_client_gone(e) {
        log::warn!(
            "request {} {} failed after {} attempt(s): {e}",
            req.method,
            req.uri,
            ctx.attempts()
        );
    }
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
        self.begin(session, ctx);
        // Requests a client sends before reading the previous answer (RFC 9112 9.3.2) are
        // answered in order, as NGINX and HAProxy do. Pingora's default closes the connection
        // after the first answer and drops the rest.
        if let HttpSession::H1(h1) = session.as_downstream_mut() {
            h1.set_pipelining_enabled(true);
        }
        slow_client::head_received(session);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        self.admit(session, ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        self.check_body(session, body.as_ref(), end_of_stream, ctx)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        self.choose_peer(ctx)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        Self::connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        Self::proxy_failed(session, peer, e, ctx, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        Self::prepare_upstream_request(session, upstream, ctx)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        Self::upstream_responded(resp, ctx);
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        Self::upstream_trailers(trailers, ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        self.prepare_response(session, resp, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        Self::answer_failure(session, e, ctx).await
    }

    fn suppress_error_log(&self, session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        log_failure(session.req_header(), e, ctx);
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
        self.finish(session, e, ctx);
        slow_client::request_finished(session);
    }
}
