//! What the proxy adds to a request on its way to a backend: `X-Forwarded-For` (appended),
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via`, and the route's prefix stripped.

use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use crate::routing;

/// `https` when the client connection is TLS, else `http`.
pub fn downstream_scheme(session: &Session) -> &'static str {
    match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        Some(_) => "https",
        None => "http",
    }
}

/// Add the forwarding headers to `upstream`, the request about to be sent.
pub fn add_forwarding_headers(
    session: &Session,
    upstream: &mut RequestHeader,
    via: Option<&http::HeaderValue>,
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
    let req = session.req_header();
    if let Some(host) = req.headers.get(http::header::HOST).cloned() {
        upstream.insert_header("x-forwarded-host", host)?;
    } else if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) {
        upstream.insert_header("x-forwarded-host", authority)?;
    }
    if let Some(via) = via {
        upstream.append_header("via", via.clone())?;
    }
    Ok(())
}

/// Remove `prefix` from the path of `upstream`.
pub fn strip_route_prefix(upstream: &mut RequestHeader, prefix: &str) -> pingora_error::Result<()> {
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
    Ok(())
}

/// The request's host: the `Host` header, or the URI's authority (HTTP/2).
pub fn host_of(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}
