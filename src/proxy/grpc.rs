//! gRPC on the request path: which answers are failures (by `grpc-status`, since a failing
//! gRPC call is usually an HTTP 200), and how the proxy's own errors are told to gRPC clients
//! (HTTP 200 with `grpc-status` and `grpc-message`, as a trailers-only response).

use http::header::HeaderName;
use http::HeaderMap;
use pingora_http::RequestHeader;

/// `grpc-status`, parsed once: a lookup by a string would parse the name on every response.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// gRPC status codes that say the backend (not the request) is failing: DEADLINE_EXCEEDED,
/// RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
pub const FAILING: [u32; 5] = [4, 8, 13, 14, 15];

/// Whether the request is a gRPC call.
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` in `headers`, if any.
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `code` says the backend is failing.
pub fn is_failing(code: u32) -> bool {
    FAILING.contains(&code)
}

/// The gRPC status for an HTTP status the proxy answers with itself.
pub fn status_for_http(status: u16) -> u32 {
    match status {
        400 => 3,        // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        404 => 12,       // UNIMPLEMENTED
        408 | 504 => 4,  // DEADLINE_EXCEEDED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        502 | 503 => 14, // UNAVAILABLE
        500 => 13,       // INTERNAL
        _ => 2,          // UNKNOWN
    }
}

/// `message` percent-encoded as `grpc-message` wants it (everything outside printable ASCII,
/// and `%` itself).
pub fn encode_message(message: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(message, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_errors_map_to_grpc_codes() {
        assert_eq!(status_for_http(503), 14);
        assert_eq!(status_for_http(429), 8);
        assert_eq!(status_for_http(504), 4);
        assert!(is_failing(14) && is_failing(8) && !is_failing(5) && !is_failing(0));
        assert_eq!(encode_message("no backend: 100%"), "no backend: 100%25");
    }

    #[test]
    fn statuses_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(status_of(&h), Some(14));
    }
}
