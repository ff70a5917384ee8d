//! The strict subset of HTTP/1.1 request heads Switchyard's own path serves.
//!
//! A head is taken only when nothing in it is open to two readings: HTTP/1.1 in origin form,
//! `\r\n` line ends, exactly one `Host`, no `Transfer-Encoding`, at most one `Content-Length`
//! of digits only, and no hop-by-hop field but `Connection: keep-alive` or `close`. Anything
//! else, broken or merely unusual, is [`Parsed::Outside`]: Pingora's HTTP/1 loop serves it
//! (and answers the broken ones with its 400), so the own path never has to guess.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST};
use pingora_core::protocols::http::authority::validate_request_authority;
use pingora_http::{IntoCaseHeaderName, RequestHeader};

use super::spelling::Spellings;

/// The most header fields in a head the own path takes.
pub const MAX_FIELDS: usize = 64;

/// Room left in a parsed head's map for the fields the proxy adds.
const ADDED_FIELDS: usize = 8;

/// One request head, parsed and owned.
pub struct Request {
    pub header: RequestHeader,
    /// The head's bytes as received.
    pub raw: Bytes,
    /// The body's length (0: none).
    pub body_len: u64,
    /// The client asked to close the connection after this response.
    pub close: bool,
    /// The field names as the client spelt them (`header_case: preserve`).
    pub spellings: Option<Spellings>,
}

/// What the start of a connection's buffer holds.
#[allow(clippy::large_enum_variant)] // made once per request and moved once: no box
pub enum Parsed {
    /// A complete head in the subset, taken out of the buffer.
    Own(Request),
    /// The head is not complete yet.
    Partial,
    /// A complete or broken head outside the subset; the buffer is left as it was.
    Outside,
    /// A head that passed the checks but whose field the header map refused; it was taken
    /// out of the buffer, so it can only be answered with 400.
    Invalid,
}

/// What the checks found in a head's fields.
struct Fields {
    /// Each field's name and value, as ranges of the head.
    ranges: Vec<(Range<usize>, Range<usize>)>,
    body_len: u64,
    close: bool,
    /// Index of a `Connection` field to leave out of the forwarded head.
    connection: Option<usize>,
}

/// Parse the request head at the start of `buf`; take it out of `buf` when it is in the
/// subset. Bodies longer than `max_body` are left to Pingora's loop, which streams them.
/// Unless `discard_case`, the names' spellings are kept beside the head.
pub fn request(buf: &mut BytesMut, max_body: u64, discard_case: bool) -> Parsed {
    // Left uninitialised: httparse writes the fields it finds (no 2 KB memset per request).
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Outside,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Outside;
    };
    if !path.starts_with('/') || method == "CONNECT" || has_bare_lf(&buf[..head_len]) {
        return Parsed::Outside;
    }
    let base = buf.as_ptr() as usize;
    let Some(checked) = check_fields(req.headers, base, max_body) else {
        return Parsed::Outside;
    };
    let Ok(mut header) = build(method, path.as_bytes(), req.headers.len()) else {
        return Parsed::Outside;
    };
    let raw = buf.split_to(head_len).freeze();
    for (i, (name, value)) in checked.ranges.iter().enumerate() {
        if Some(i) == checked.connection {
            continue;
        }
        let name = raw.slice(name.clone()).into_case_header_name();
        let Ok(value) = http::HeaderValue::from_maybe_shared(raw.slice(value.clone())) else {
            return Parsed::Invalid;
        };
        if header.append_header(name, value).is_err() {
            return Parsed::Invalid;
        }
    }
    // The same authority checks as Pingora's HTTP/1 server (userinfo in `Host`, a target whose
    // authority changes under normalisation): refused with 400 there too.
    if validate_request_authority(&header).is_err() {
        return Parsed::Invalid;
    }
    let spellings = (!discard_case).then(|| Spellings::new(raw.clone(), checked.ranges));
    Parsed::Own(Request {
        header,
        raw,
        body_len: checked.body_len,
        close: checked.close,
        spellings,
    })
}

/// An empty head without Pingora's second map of name spellings: the own path keeps them
/// as [`Spellings`].
fn build(method: &str, path: &[u8], fields: usize) -> pingora_error::Result<RequestHeader> {
    let hint = Some(fields + ADDED_FIELDS);
    let mut header = RequestHeader::build_no_case(method, path, hint)?;
    header.set_version(http::Version::HTTP_11);
    Ok(header)
}

/// Whether a line of `head` ends in `\n` alone (accepted by httparse, read differently by
/// other servers).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// The subset's rules on the fields; `None` when a field puts the head outside it.
fn check_fields(fields: &[httparse::Header<'_>], base: usize, max_body: u64) -> Option<Fields> {
    let mut out = Fields {
        ranges: Vec::with_capacity(fields.len()),
        body_len: 0,
        close: false,
        connection: None,
    };
    let (mut hosts, mut lengths) = (0, 0);
    for (i, f) in fields.iter().enumerate() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(HOST.as_str().as_bytes()) {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str().as_bytes()) {
            lengths += 1;
            out.body_len = content_length(f.value)?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if out.connection.is_some() {
                return None;
            }
            out.close = connection_close(f.value)?;
            out.connection = Some(i);
        } else if is_hop_by_hop(name) {
            return None;
        }
        let name_start = f.name.as_ptr() as usize - base;
        let value_start = f.value.as_ptr() as usize - base;
        out.ranges.push((
            name_start..name_start + name.len(),
            value_start..value_start + f.value.len(),
        ));
    }
    (hosts == 1 && lengths <= 1 && out.body_len <= max_body).then_some(out)
}

/// A `Content-Length` of digits only (no sign, no list, no spaces) that fits a `u64`; read the
/// same way in request and response heads.
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A `Connection` field of `keep-alive` or `close` only: whether it says `close`.
fn connection_close(value: &[u8]) -> Option<bool> {
    let value = std::str::from_utf8(value).ok()?.trim();
    if value.eq_ignore_ascii_case("close") {
        Some(true)
    } else if value.eq_ignore_ascii_case("keep-alive") {
        Some(false)
    } else {
        None
    }
}

/// Fields that speak of the connection rather than the request (RFC 9110 7.6.1), and those
/// that change how the body is framed or whether the connection changes protocol.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 10] = [
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"http2-settings",
        b"expect",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Parsed {
        request(&mut BytesMut::from(head), 65536, true)
    }

    fn own(head: &str) -> Request {
        match parse(head) {
            Parsed::Own(r) => r,
            Parsed::Partial => panic!("partial: {head:?}"),
            Parsed::Outside | Parsed::Invalid => panic!("not taken: {head:?}"),
        }
    }

    fn outside(head: &str) -> bool {
        matches!(parse(head), Parsed::Outside)
    }

    #[test]
    fn a_plain_get_is_taken_with_its_fields_and_nothing_after_it() {
        let mut buf = BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y: z\r\n\r\nGET /next");
        let Parsed::Own(r) = request(&mut buf, 0, true) else {
            panic!("not taken")
        };
        assert_eq!(r.header.uri.path(), "/a");
        assert_eq!(r.header.headers["x-y"], "z");
        assert_eq!(r.body_len, 0);
        assert!(!r.close);
        assert_eq!(
            &buf[..],
            b"GET /next",
            "the next request stays in the buffer"
        );
        assert!(r.raw.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn an_unfinished_head_waits_for_more() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn connection_keep_alive_or_close_is_read_and_not_forwarded() {
        let r = own("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(r.close);
        assert!(!r.header.headers.contains_key("connection"));
        assert!(!own("GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n").close);
    }

    #[test]
    fn a_body_framed_by_one_content_length_is_taken() {
        let r = own("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(r.body_len, 12);
    }

    #[test]
    fn heads_open_to_two_readings_go_to_pingora() {
        for head in [
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX : y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: y\r\n z\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(outside(head), "taken: {head:?}");
        }
    }

    #[test]
    fn an_ambiguous_authority_is_refused_as_pingora_refuses_it() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: user@x\r\n\r\n"),
            Parsed::Invalid
        ));
    }

    #[test]
    fn a_head_outside_the_subset_is_left_in_the_buffer() {
        let text = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
        let mut buf = BytesMut::from(text);
        assert!(matches!(request(&mut buf, 0, true), Parsed::Outside));
        assert_eq!(&buf[..], text.as_bytes());
    }

    #[test]
    fn names_keep_their_case_unless_discarded() {
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\nX-MiXed: 1\r\n\r\n");
        let Parsed::Own(r) = request(&mut buf, 0, false) else {
            panic!("not taken")
        };
        let mut wire = BytesMut::new();
        r.spellings
            .unwrap()
            .write_fields(&r.header.headers, &mut wire);
        assert!(wire.windows(7).any(|w| w == b"X-MiXed"), "{wire:?}");
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\nX-MiXed: 1\r\n\r\n");
        let Parsed::Own(r) = request(&mut buf, 0, true) else {
            panic!("not taken")
        };
        assert!(r.spellings.is_none());
    }
}
