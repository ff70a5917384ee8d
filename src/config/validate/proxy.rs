//! `proxy:`: headers, limits, client timeouts, client IP, HSTS.

use std::time::Duration;

use super::super::file::{ClientIpFile, HeaderCaseFile, Http1PathFile, ProxyFile};
use super::super::model::{Cidr, ClientIpSettings, ProxySettings};
use super::Checker;

/// Default floor of a request body's upload rate, in bytes per second (Apache's `MinRate`).
pub const DEFAULT_BODY_MIN_RATE: u64 = 500;

pub(super) fn validate(c: &mut Checker, p: &ProxyFile) -> ProxySettings {
    let max_header_bytes = p.max_header_bytes.unwrap_or(32 * 1024);
    if max_header_bytes == 0 {
        c.error("proxy.max_header_bytes", "must be greater than zero");
    }
    let max_body_bytes = p.max_body_bytes.unwrap_or(10 * 1024 * 1024);
    if max_body_bytes == 0 {
        c.error("proxy.max_body_bytes", "must be greater than zero");
    }
    ProxySettings {
        decision_headers: p.decision_headers,
        h2c: p.h2c,
        access_log: p.access_log.unwrap_or(true),
        preserve_header_case: p.header_case != Some(HeaderCaseFile::Lowercase),
        own_http1_path: p.http1_path != Some(Http1PathFile::Pingora),
        via: match p.via.as_deref() {
            None => Some("switchyard".to_string()),
            Some("") => None,
            Some(v) => {
                if http::HeaderValue::from_str(&format!("1.1 {v}")).is_err() {
                    c.error("proxy.via", format!("`{v}` cannot be a header value"));
                }
                Some(v.to_string())
            }
        },
        max_header_bytes,
        max_body_bytes,
        client_ip: client_ip(c, &p.client_ip),
        client_header_timeout: c.nonzero(
            "proxy.client_header_timeout",
            p.client_header_timeout.unwrap_or(Duration::from_secs(10)),
        ),
        client_body_timeout: c.nonzero(
            "proxy.client_body_timeout",
            p.client_body_timeout.unwrap_or(Duration::from_secs(30)),
        ),
        client_body_min_rate: p.client_body_min_rate.unwrap_or(DEFAULT_BODY_MIN_RATE),
        hsts: p.hsts.as_ref().map(|h| {
            let mut v = format!("max-age={}", h.max_age.as_secs());
            if h.include_subdomains {
                v.push_str("; includeSubDomains");
            }
            v
        }),
    }
}

fn client_ip(c: &mut Checker, f: &ClientIpFile) -> ClientIpSettings {
    let trusted_proxies = f
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match Cidr::parse(t) {
            Ok(cidr) => Some(cidr),
            Err(m) => {
                c.error(format!("proxy.client_ip.trusted_proxies[{i}]"), m);
                None
            }
        })
        .collect::<Vec<_>>();
    if let Some(h) = &f.header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            c.error(
                "proxy.client_ip.header",
                format!("`{h}` is not a valid header name"),
            );
        }
        if f.trusted_proxies.is_empty() {
            c.error(
                "proxy.client_ip.trusted_proxies",
                "a client IP header needs trusted_proxies: any client could otherwise choose its own IP",
            );
        }
    }
    ClientIpSettings {
        header: f.header.clone(),
        trusted_proxies,
    }
}
