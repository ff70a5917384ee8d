//! Request limits checked before anything is forwarded: header size, declared body size and
//! ambiguous framing.

use pingora_http::RequestHeader;

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 431: the header section is larger than allowed.
    HeadersTooLarge,
    /// 413: the declared body is larger than allowed.
    BodyTooLarge,
    /// 400: both `Content-Length` and `Transfer-Encoding`, several differing lengths, or a
    /// transfer coding other than a final `chunked` (request-smuggling shapes).
    AmbiguousFraming,
    /// 400: an HTTP/1.1 request without a `Host` field (RFC 9112 3.2 requires the 400).
    MissingHost,
    /// 400: a request line with a byte that is illegal in a target (`GET /a b`, which Pingora
    /// would forward as `/a%20b`), or a target in none of the forms a proxy forwards: not an
    /// absolute path, not absolute form, not `*` for `OPTIONS` (`GET a`).
    MalformedRequestLine,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::HeadersTooLarge => 431,
            Refusal::BodyTooLarge => 413,
            Refusal::AmbiguousFraming | Refusal::MissingHost | Refusal::MalformedRequestLine => 400,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::HeadersTooLarge => "request header fields too large",
            Refusal::BodyTooLarge => "request body too large",
            Refusal::AmbiguousFraming => {
                "bad request: ambiguous message framing (Content-Length / Transfer-Encoding)"
            }
            Refusal::MissingHost => "bad request: an HTTP/1.1 request needs a Host header",
            Refusal::MalformedRequestLine => {
                "bad request: malformed request line (the target must be an absolute path, with \
                 spaces and other such characters percent-encoded)"
            }
        }
    }
}

/// Size of the request line and header section as received (approximately: CRLFs and
/// separators included).
pub fn header_bytes(req: &RequestHeader) -> usize {
    let target = req
        .uri
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(1)
        + req.uri.authority().map(|a| a.as_str().len()).unwrap_or(0)
        + req.uri.scheme_str().map(|s| s.len() + 3).unwrap_or(0);
    let line = req.method.as_str().len() + target + 12;
    line + req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

/// Whether the raw header section has a `Content-Length` field. Pingora drops
/// `Content-Length` when `Transfer-Encoding` is present (RFC 9112 6.3 allows that); we
/// refuse such requests outright, so the raw bytes are checked.
pub fn raw_has_content_length(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

/// Whether `req`'s target, as it will be forwarded, is in origin form (an absolute path), in
/// absolute form (`http://host/path`, whose authority Pingora checks against `Host`), or `*`
/// for `OPTIONS`. Pingora routes any other target as `/` but forwards its bytes unchanged, so
/// `GET admin` or `GET %20/admin` would be routed as one path and read by the backend as
/// another.
fn target_is_valid(req: &RequestHeader) -> bool {
    let target = req.raw_path();
    let absolute_form = |scheme: &[u8]| {
        target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    target.starts_with(b"/")
        || absolute_form(b"http://")
        || absolute_form(b"https://")
        || (target == b"*" && req.method == http::Method::OPTIONS)
}

/// What the HTTP/1 parser saw of a request, beyond the parsed header.
#[derive(Debug, Clone, Copy)]
pub struct RawHead<'a> {
    /// The head's bytes as received.
    pub bytes: &'a [u8],
    /// Whether the request line parsed only after Pingora percent-encoded bytes illegal in a
    /// target (`GET /a b`).
    pub line_escaped: bool,
}

/// Check `req` (with its raw head, when known) against the limits.
pub fn check(
    req: &RequestHeader,
    raw: Option<RawHead<'_>>,
    max_header_bytes: usize,
    max_body_bytes: u64,
) -> Result<(), Refusal> {
    if raw.is_some_and(|r| r.line_escaped) {
        // Refused, as NGINX and HAProxy do, rather than guessed at.
        return Err(Refusal::MalformedRequestLine);
    }
    if header_bytes(req) > max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    if !target_is_valid(req) {
        return Err(Refusal::MalformedRequestLine);
    }
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return Err(Refusal::MissingHost);
    }
    let te = req.headers.get_all(http::header::TRANSFER_ENCODING);
    let cl = req.headers.get_all(http::header::CONTENT_LENGTH);
    let has_cl = cl.iter().next().is_some();
    if te.iter().next().is_some() {
        if has_cl || raw.is_some_and(|r| raw_has_content_length(r.bytes)) {
            return Err(Refusal::AmbiguousFraming);
        }
        // Only `chunked` as the final coding frames a request body (RFC 9112 6.3).
        let mut chunked = 0;
        let mut last_is_chunked = false;
        for coding in te.iter().flat_map(|v| v.as_bytes().split(|b| *b == b',')) {
            let coding = coding.trim_ascii();
            last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            chunked += last_is_chunked as u32;
        }
        if !last_is_chunked || chunked > 1 {
            return Err(Refusal::AmbiguousFraming);
        }
    }
    if has_cl {
        let mut value: Option<u64> = None;
        for part in cl.iter().flat_map(|v| v.as_bytes().split(|b| *b == b',')) {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(|b| b.is_ascii_digit()) {
                return Err(Refusal::AmbiguousFraming);
            }
            let n = part
                .iter()
                .fold(0u64, |acc, d| acc * 10 + (d - b'0') as u64);
            if value.is_some_and(|v| v != n) {
                return Err(Refusal::AmbiguousFraming);
            }
            value = Some(n);
        }
        if value.is_some_and(|v| v > max_body_bytes) {
            return Err(Refusal::BodyTooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
        r.append_header("host", "example.test").unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn framing_rules() {
        assert_eq!(
            check(&req(&[("content-length", "5")]), None, 1 << 20, 100),
            Ok(())
        );
        assert_eq!(
            check(
                &req(&[("transfer-encoding", "chunked")]),
                None,
                1 << 20,
                100
            ),
            Ok(())
        );
        let both = req(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
        assert_eq!(
            check(&both, None, 1 << 20, 100),
            Err(Refusal::AmbiguousFraming)
        );
        assert_eq!(
            check(
                &req(&[("content-length", "5"), ("content-length", "6")]),
                None,
                1 << 20,
                100
            ),
            Err(Refusal::AmbiguousFraming)
        );
        assert_eq!(
            check(&req(&[("content-length", "5, 5")]), None, 1 << 20, 100),
            Ok(())
        );
        assert_eq!(
            check(&req(&[("content-length", "+5")]), None, 1 << 20, 100),
            Err(Refusal::AmbiguousFraming)
        );
        assert_eq!(
            check(
                &req(&[("transfer-encoding", "chunked, gzip")]),
                None,
                1 << 20,
                100
            ),
            Err(Refusal::AmbiguousFraming)
        );
        assert_eq!(
            check(
                &req(&[("transfer-encoding", "xchunked")]),
                None,
                1 << 20,
                100
            ),
            Err(Refusal::AmbiguousFraming)
        );
    }

    #[test]
    fn content_length_removed_by_the_parser_is_still_seen() {
        let raw = RawHead {
            bytes: b"POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            line_escaped: false,
        };
        let te_only = req(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            check(&te_only, Some(raw), 1 << 20, 100),
            Err(Refusal::AmbiguousFraming)
        );
        assert!(!raw_has_content_length(
            b"POST / HTTP/1.1\r\nX-Content-Length: 5\r\n\r\n"
        ));
    }

    #[test]
    fn http_1_1_needs_a_host_and_http_1_0_does_not() {
        let mut no_host = RequestHeader::build("GET", b"/x", None).unwrap();
        no_host.set_version(http::Version::HTTP_11);
        assert_eq!(
            check(&no_host, None, 1 << 20, 100),
            Err(Refusal::MissingHost)
        );
        no_host.set_version(http::Version::HTTP_10);
        assert_eq!(check(&no_host, None, 1 << 20, 100), Ok(()));
        // HTTP/2 carries the authority in `:authority`, not in a Host field.
        no_host.set_version(http::Version::HTTP_2);
        assert_eq!(check(&no_host, None, 1 << 20, 100), Ok(()));
    }

    #[test]
    fn a_request_line_pingora_had_to_escape_is_refused() {
        let escaped = RawHead {
            bytes: b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            line_escaped: true,
        };
        assert_eq!(
            check(&req(&[]), Some(escaped), 1 << 20, 100),
            Err(Refusal::MalformedRequestLine)
        );
        let plain = RawHead {
            line_escaped: false,
            ..escaped
        };
        assert_eq!(check(&req(&[]), Some(plain), 1 << 20, 100), Ok(()));
    }

    #[test]
    fn targets_that_are_not_absolute_paths_are_refused() {
        let relative = RequestHeader::build("GET", b"index.html", None).unwrap();
        assert_eq!(
            check(&relative, None, 1 << 20, 100),
            Err(Refusal::MalformedRequestLine)
        );
        let escaped_space = RequestHeader::build("GET", b"%20/admin", None).unwrap();
        assert_eq!(
            check(&escaped_space, None, 1 << 20, 100),
            Err(Refusal::MalformedRequestLine)
        );
        let mut absolute = RequestHeader::build("GET", b"HTTP://x/a", None).unwrap();
        absolute.append_header("host", "x").unwrap();
        assert_eq!(check(&absolute, None, 1 << 20, 100), Ok(()));
        let mut star = RequestHeader::build("OPTIONS", b"*", None).unwrap();
        star.append_header("host", "x").unwrap();
        assert_eq!(check(&star, None, 1 << 20, 100), Ok(()));
        let mut star_get = RequestHeader::build("GET", b"*", None).unwrap();
        star_get.append_header("host", "x").unwrap();
        assert_eq!(
            check(&star_get, None, 1 << 20, 100),
            Err(Refusal::MalformedRequestLine)
        );
    }

    #[test]
    fn size_limits() {
        assert_eq!(
            check(&req(&[("content-length", "101")]), None, 1 << 20, 100),
            Err(Refusal::BodyTooLarge)
        );
        let big = "a".repeat(5000);
        assert_eq!(
            check(&req(&[("x-big", &big)]), None, 4096, 100),
            Err(Refusal::HeadersTooLarge)
        );
    }
}
