//! A listener that answers every plain-HTTP request with a permanent redirect to HTTPS:
//! same host, path and query, on the TLS port.

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

/// Redirects to `https://host[:port]/path?query`.
pub struct RedirectApp {
    /// The HTTPS port (omitted from the Location when 443).
    pub https_port: u16,
    /// 301 or 308 (308 keeps the method and body, so it is the default).
    pub status: u16,
}

impl RedirectApp {
    /// The Location for a request to `host` and `path_and_query`, if the host is usable.
    pub fn location(&self, host: &str, path_and_query: &str) -> Option<String> {
        let host = host.trim();
        let name = if host.starts_with('[') {
            &host[..=host.find(']')?]
        } else {
            host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        {
            return None;
        }
        let port = if self.https_port == 443 {
            String::new()
        } else {
            format!(":{}", self.https_port)
        };
        Some(format!("https://{name}{port}{path_and_query}"))
    }
}

#[async_trait]
impl ServeHttp for RedirectApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        match host.and_then(|h| self.location(h, pq)) {
            Some(location) => Response::builder()
                .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::PERMANENT_REDIRECT))
                .header(header::LOCATION, location)
                .header(header::CONTENT_LENGTH, 0)
                .body(Vec::new())
                .expect("valid redirect"),
            None => Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(b"a valid Host header is required\n".to_vec())
                .expect("valid response"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_host_path_and_query_and_swaps_the_port() {
        let r = RedirectApp {
            https_port: 8443,
            status: 308,
        };
        assert_eq!(
            r.location("example.com:8080", "/a/b?c=1").unwrap(),
            "https://example.com:8443/a/b?c=1"
        );
        assert_eq!(
            r.location("[::1]:8080", "/").unwrap(),
            "https://[::1]:8443/"
        );
        let std = RedirectApp {
            https_port: 443,
            status: 301,
        };
        assert_eq!(
            std.location("example.com", "/x").unwrap(),
            "https://example.com/x"
        );
        assert!(r.location("evil.com/@x", "/").is_none());
        assert!(r.location("", "/").is_none());
    }
}
