//! One access-log line per request (target `switchyard::access`).

use std::time::Duration;

use pingora_error::Error;
use pingora_http::RequestHeader;

use super::ctx::RequestCtx;

/// Log the finished request with the status the client got.
pub fn log(req: &RequestHeader, ctx: &RequestCtx, status: u16, e: Option<&Error>) {
    let client = ctx
        .client_ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "-".into());
    let group = ctx.group_name().unwrap_or("-");
    let backend = ctx.backend_label().unwrap_or("-");
    let duration: Duration = ctx.started.elapsed();
    let error = e
        .map(|e| format!(" error=\"{}\"", e.etype().as_str()))
        .unwrap_or_default();
    let fault = ctx
        .fault
        .map(|f| format!(" fault=\"{}\"", f.describe()))
        .unwrap_or_default();
    log::info!(
        target: "switchyard::access",
        "{client} \"{} {}\" {status} route={} group={group} backend={backend} attempts={} duration_ms={:.2}{error}{fault}",
        req.method,
        req.uri,
        ctx.route_name.as_deref().unwrap_or("-"),
        ctx.attempts(),
        duration.as_secs_f64() * 1e3,
    );
}
