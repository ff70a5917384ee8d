//! Where the proxy applies a route's traffic policies: the group of a split, injected faults,
//! canary measurements and shadow copies.

use std::sync::Arc;
use std::time::Duration;

use pingora_http::RequestHeader;

use super::ctx::RequestCtx;
use super::downstream::Downstream;
use super::forwarding;
use crate::config::{Route, RouteAction};
use crate::policy::fault::{self, Injected};
use crate::policy::mirror::Shadow;
use crate::runtime::{RouteRuntime, Snapshot};
use crate::target_group::TargetGroup;

/// The group a forwarding route sends this request to (choosing within a split).
pub fn target_group(
    snapshot: &Snapshot,
    action: &RouteAction,
    route: &RouteRuntime,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Option<Arc<TargetGroup>> {
    match action {
        RouteAction::Forward(g) => snapshot.groups.get(*g).cloned(),
        RouteAction::Split(settings) => {
            let split = route.split.as_ref()?;
            let choice = split.choose(req, ctx.client_ip);
            ctx.split = Some((split.clone(), choice));
            snapshot
                .groups
                .get(settings.targets[choice.position].group)
                .cloned()
        }
        _ => None,
    }
}

/// The faults to inject into this request on `route`, counted.
pub fn faults(
    route_config: &Route,
    route: &RouteRuntime,
    req: &RequestHeader,
    metrics: &crate::metrics::Metrics,
) -> Option<Injected> {
    let settings = route_config.fault.as_ref()?;
    let injected = fault::decide(settings, req, || fastrand::f64() * 100.0);
    if injected.delay.is_some() {
        metrics.fault(&route.name, "delay");
    }
    if injected.abort.is_some() {
        metrics.fault(&route.name, "abort");
    }
    (injected != Injected::default()).then_some(injected)
}

/// Feed the finished request to its split's canary analysis.
pub fn measure(ctx: &RequestCtx, status: u16, elapsed: Duration) {
    if let Some((split, choice)) = &ctx.split {
        if let Some(canary) = &split.canary {
            canary.record(choice.position, status, elapsed);
        }
    }
}

/// Queue a shadow copy of the finished request, when the route mirrors and samples it.
pub fn mirror(session: &impl Downstream, ctx: &RequestCtx, snapshot: &Snapshot, status: u16) {
    let Some(route) = ctx.route.and_then(|i| snapshot.routes.get(i)) else {
        return;
    };
    let Some(mirror) = &route.mirror else {
        return;
    };
    if !mirror.sampled() {
        return;
    }
    let req = session.req_header();
    let declares_body = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let body = if declares_body {
        match session.replay_buffer() {
            Some(b) if b.len() <= mirror.max_body_bytes() => Some(b),
            _ => {
                mirror.skipped();
                return;
            }
        }
    } else {
        None
    };
    let mut copy = req.clone();
    if forwarding::add_forwarding_headers(session, &mut copy, snapshot.via.as_ref()).is_err() {
        return;
    }
    if let Some(prefix) = &ctx.strip_prefix {
        if forwarding::strip_route_prefix(&mut copy, prefix).is_err() {
            return;
        }
    }
    if body.is_some() {
        // The body is sent whole, with its length.
        let _ = copy.remove_header(&http::header::TRANSFER_ENCODING);
        let len = body.as_ref().map(|b| b.len()).unwrap_or(0);
        let _ = copy.insert_header(http::header::CONTENT_LENGTH, len.to_string());
    }
    mirror.offer(Shadow {
        request: copy,
        body,
        primary_status: status,
    });
}
