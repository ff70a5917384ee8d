//! What the proxy adds to a request on its way to a backend: `X-Forwarded-For` (appended),
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via`, and the route's prefix stripped.

use std::net::IpAddr;

use pingora_error::{Error, ErrorType};
use pingora_http::{PreparedHeaderName, RequestHeader};

use super::downstream::Downstream;
use crate::routing;

// Parsed once: adding them to every request then parses and allocates nothing for the name.
static X_FORWARDED_FOR: PreparedHeaderName = PreparedHeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: PreparedHeaderName = PreparedHeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: PreparedHeaderName = PreparedHeaderName::from_static("x-forwarded-host");
/// `Via`, added to requests and responses.
pub static VIA: PreparedHeaderName = PreparedHeaderName::from_static("via");

/// `https` when the client connection is TLS, else `http`.
pub fn downstream_scheme(session: &impl Downstream) -> &'static str {
    if session.is_tls() {
        "https"
    } else {
        "http"
    }
}

/// Add the forwarding headers to `upstream`, the request about to be sent.
pub fn add_forwarding_headers(
    session: &impl Downstream,
    upstream: &mut RequestHeader,
    via: Option<&http::HeaderValue>,
) -> pingora_error::Result<()> {
    if let Some(ip) = session.client_ip() {
        let xff = forwarded_for(upstream.headers.get(X_FORWARDED_FOR.name()), ip);
        upstream.insert_header(&X_FORWARDED_FOR, xff)?;
    }
    let proto = http::HeaderValue::from_static(downstream_scheme(session));
    upstream.insert_header(&X_FORWARDED_PROTO, proto)?;
    let req = session.req_header();
    if let Some(host) = req.headers.get(http::header::HOST).cloned() {
        upstream.insert_header(&X_FORWARDED_HOST, host)?;
    } else if let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string()) {
        upstream.insert_header(&X_FORWARDED_HOST, authority)?;
    }
    if let Some(via) = via {
        upstream.append_header(&VIA, via.clone())?;
    }
    Ok(())
}

/// `X-Forwarded-For` with `ip` appended to what the request carried (without going through
/// `format!`: this runs for every request).
fn forwarded_for(previous: Option<&http::HeaderValue>, ip: IpAddr) -> http::HeaderValue {
    let mut out = Vec::with_capacity(64);
    if let Some(prev) = previous
        .map(|v| v.as_bytes())
        .filter(|v| !v.trim_ascii().is_empty())
    {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    write_ip(&mut out, ip);
    // Previous values were valid header bytes and an address is ASCII. The buffer becomes the
    // value as it is, not a copy.
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_address() {
        let v4: IpAddr = "10.0.12.255".parse().unwrap();
        assert_eq!(forwarded_for(None, v4), "10.0.12.255");
        let zero: IpAddr = "0.9.100.1".parse().unwrap();
        assert_eq!(forwarded_for(None, zero), "0.9.100.1");
        let prev = http::HeaderValue::from_static("203.0.113.7");
        assert_eq!(forwarded_for(Some(&prev), v4), "203.0.113.7, 10.0.12.255");
        let blank = http::HeaderValue::from_static("  ");
        assert_eq!(forwarded_for(Some(&blank), v4), "10.0.12.255");
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(forwarded_for(Some(&prev), v6), "203.0.113.7, ::1");
    }
}
