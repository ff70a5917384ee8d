//! One attempt at a backend on the own HTTP/1 path: the request out, the response back.

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::http_req_header_to_wire;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType, OrErr};
use pingora_http::{IntoCaseHeaderName, ResponseHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::Chunked;
use super::session::OwnSession;
use super::spelling::Spellings;
use super::timed;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::downstream::Downstream;
use crate::proxy::Switchyard;

/// The most header fields read in a response head.
const MAX_FIELDS: usize = 128;
/// The largest response head read, in bytes.
const MAX_HEAD: usize = 64 * 1024;
/// How much is read from the backend at once.
const READ_SIZE: usize = 16 * 1024;

/// Why an attempt failed, and at which stage.
pub enum Failure {
    /// No connection was made: nothing was sent.
    Connect(Box<Error>),
    /// The exchange failed; `reused` when the connection came from the pool.
    Proxy { error: Box<Error>, reused: bool },
}

/// How the response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// To the end of the backend's connection; the client (HTTP/1.1, as every client of this
    /// path) gets it chunked, as from Pingora's loop, and keeps its connection.
    Close,
}

/// Make the attempt at `peer`: send the request, forward the response to the client.
pub async fn attempt(
    proxy: &Switchyard,
    connector: &TransportConnector,
    session: &mut OwnSession<'_>,
    peer: &HttpPeer,
    ctx: &mut RequestCtx,
) -> Result<(), Failure> {
    let (mut up, reused) = match connector.reused_stream(peer).await {
        Some(stream) => (stream, true),
        // Boxed: connecting (TLS included) is a large future, and rare once the pool is warm;
        // inline, it would size (and be copied with) every request's state.
        None => match Box::pin(connector.new_stream(peer)).await {
            Ok(stream) => (stream, false),
            Err(e) => return Err(Failure::Connect(e.into_up())),
        },
    };
    let failed = |error: Box<Error>| Failure::Proxy { error, reused };
    send_request(session, &mut up, peer, ctx)
        .await
        .map_err(|e| failed(e.into_up()))?;
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let limit = peer.options.read_timeout;
    let reusable = loop {
        let head = read_response_head(&mut up, &mut buf, limit, proxy.discard_header_case);
        let (mut resp, spellings) = tokio::select! {
            head = head => head.map_err(|e| failed(e.into_up()))?,
            gone = session.client_left() => return Err(failed(gone)),
        };
        Switchyard::upstream_responded(&resp, ctx);
        let informational = resp.status.is_informational();
        let framing = framing(&resp, &session.req).map_err(|e| failed(e.into_up()))?;
        let backend_closes = wants_close(&resp);
        match framing {
            Framing::Chunked => {
                resp.remove_header(&CONTENT_LENGTH);
            }
            Framing::Close => {
                resp.remove_header(&CONTENT_LENGTH);
                resp.insert_header(TRANSFER_ENCODING, "chunked")
                    .map_err(|e| failed(e.into_up()))?;
            }
            Framing::None | Framing::Length(_) => {}
        }
        proxy
            .prepare_response(session, &mut resp, ctx)
            .map_err(&failed)?;
        let end = framing == Framing::None;
        session.answer_spellings = spellings;
        session
            .write_response_header(Box::new(resp), end)
            .await
            .map_err(|e| failed(e.into_down()))?;
        if informational {
            continue;
        }
        forward_body(session, &mut up, &mut buf, framing, limit)
            .await
            .map_err(failed)?;
        break !backend_closes && framing != Framing::Close && buf.is_empty();
    };
    if reusable {
        connector.release_stream(up, peer.reuse_hash(), peer.idle_timeout());
    }
    Ok(())
}

/// Whether the backend said it closes the connection after this response: a `close` among
/// the `Connection` options (a list, as in `Connection: close, x-trace`), or HTTP/1.0.
fn wants_close(resp: &ResponseHeader) -> bool {
    resp.headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
        || resp.version == http::Version::HTTP_10
}

/// The request head (after the upstream hooks) and its body, sent in one write.
async fn send_request(
    session: &OwnSession<'_>,
    up: &mut Stream,
    peer: &HttpPeer,
    ctx: &RequestCtx,
) -> pingora_error::Result<()> {
    let mut head = session.req.clone();
    Switchyard::prepare_upstream_request(session, &mut head, ctx)?;
    let wire = request_wire(&head, session.spellings.as_ref())
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "request head not sendable"))?;
    let mut out = bytes::Buf::chain(wire, session.body.clone().unwrap_or_default());
    let write = async {
        up.write_all_buf(&mut out).await?;
        up.flush().await
    };
    let to_backend = "writing to the backend";
    timed(
        peer.options.write_timeout,
        ErrorType::WriteTimedout,
        to_backend,
        write,
    )
    .await?
    .or_err(ErrorType::WriteError, "sending the request to the backend")
}

/// The request head as sent to the backend: as Pingora's client writes it, with the names
/// spelt as the client spelt them when `spellings` are kept. `None` when it is not sendable.
fn request_wire(
    head: &pingora_http::RequestHeader,
    spellings: Option<&Spellings>,
) -> Option<BytesMut> {
    let Some(spellings) = spellings else {
        return http_req_header_to_wire(head);
    };
    let version: &[u8] = match head.version {
        http::Version::HTTP_10 => b"HTTP/1.0",
        http::Version::HTTP_11 => b"HTTP/1.1",
        _ => return None,
    };
    let path = head.raw_path();
    // The bytes Pingora's client refuses in a target (RFC 9112 3.2).
    if path
        .iter()
        .any(|&b| matches!(b, b'\0' | b'\n' | b'\r' | b' '))
    {
        return None;
    }
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(path);
    out.extend_from_slice(b" ");
    out.extend_from_slice(version);
    out.extend_from_slice(b"\r\n");
    spellings.write_fields(&head.headers, &mut out);
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// Read from the backend into `buf`; 0 at its end.
async fn read_backend(
    up: &mut Stream,
    buf: &mut BytesMut,
    limit: Option<Duration>,
) -> pingora_error::Result<usize> {
    buf.reserve(READ_SIZE);
    let from_backend = "reading from the backend";
    timed(
        limit,
        ErrorType::ReadTimedout,
        from_backend,
        up.read_buf(buf),
    )
    .await?
    .or_err(ErrorType::ReadError, "reading from the backend")
}

/// Read and parse the next response head; its bytes leave `buf`.
async fn read_response_head(
    up: &mut Stream,
    buf: &mut BytesMut,
    limit: Option<Duration>,
    discard_case: bool,
) -> pingora_error::Result<(ResponseHeader, Option<Spellings>)> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_response_head(buf, discard_case)? {
                return Ok(head);
            }
            if buf.len() > MAX_HEAD {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "response head too large");
            }
        }
        if read_backend(up, buf, limit).await? == 0 {
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "the backend closed the connection before answering",
            );
        }
    }
}

/// The response head at the start of `buf`, taken out of it, with its names' spellings
/// unless `discard_case`; `None` when incomplete.
fn parse_response_head(
    buf: &mut BytesMut,
    discard_case: bool,
) -> pingora_error::Result<Option<(ResponseHeader, Option<Spellings>)>> {
    // Left uninitialised: httparse writes the fields it finds (no 4 KB memset per response).
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let mut parser = httparse::ParserConfig::default();
    parser.allow_spaces_after_header_name_in_responses(true);
    let len = match parser.parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, format!("response head: {e}"))
        }
    };
    let code = resp.code.unwrap_or(0);
    let version = match resp.version {
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let reason = resp.reason.filter(|r| !r.is_empty()).map(str::to_string);
    let base = buf.as_ptr() as usize;
    let ranges: Vec<_> = resp
        .headers
        .iter()
        .map(|f| {
            let name = f.name.as_ptr() as usize - base;
            let value = f.value.as_ptr() as usize - base;
            (name..name + f.name.len(), value..value + f.value.len())
        })
        .collect();
    let head = buf.split_to(len).freeze();
    let hint = Some(ranges.len() + 8);
    // Without Pingora's second map of spellings: they are kept as `Spellings`.
    let mut header = ResponseHeader::build_no_case(code, hint)?;
    header.set_version(version);
    if let Some(reason) = reason {
        if header.status.canonical_reason() != Some(reason.as_str()) {
            header.set_reason_phrase(Some(&reason))?;
        }
    }
    for (name, value) in &ranges {
        let value = http::HeaderValue::from_maybe_shared(head.slice(value.clone()))
            .or_err(ErrorType::InvalidHTTPHeader, "response field value")?;
        header.append_header(head.slice(name.clone()).into_case_header_name(), value)?;
    }
    let spellings = (!discard_case).then(|| Spellings::new(head, ranges));
    Ok(Some((header, spellings)))
}

/// How the body of `resp` to `req` is framed (RFC 9112 6.3).
fn framing(
    resp: &ResponseHeader,
    req: &pingora_http::RequestHeader,
) -> pingora_error::Result<Framing> {
    let status = resp.status.as_u16();
    if req.method == http::Method::HEAD || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    if let Some(te) = resp.headers.get(TRANSFER_ENCODING) {
        let chunked = te
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(
            if chunked && resp.headers.get_all(TRANSFER_ENCODING).iter().count() == 1 {
                Framing::Chunked
            } else {
                Framing::Close
            },
        );
    }
    let mut lengths = resp.headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(Framing::Close);
    };
    if lengths.any(|other| other != first) {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "conflicting content-length");
    }
    let len = super::parse::content_length(first.as_bytes())
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "invalid content-length"))?;
    Ok(if len == 0 {
        Framing::None
    } else {
        Framing::Length(len)
    })
}

/// Forward the response body from the backend to the client as it arrives.
async fn forward_body(
    session: &mut OwnSession<'_>,
    up: &mut Stream,
    buf: &mut BytesMut,
    framing: Framing,
    limit: Option<Duration>,
) -> pingora_error::Result<()> {
    let mut left = match framing {
        Framing::None => return Ok(()),
        Framing::Length(n) => n,
        Framing::Chunked | Framing::Close => u64::MAX,
    };
    let mut chunked = (framing == Framing::Chunked).then(Chunked::default);
    loop {
        if buf.is_empty()
            && read_backend(up, buf, limit)
                .await
                .map_err(|e| e.into_up())?
                == 0
        {
            if framing == Framing::Close {
                return session
                    .send(Bytes::from_static(b"0\r\n\r\n"), true)
                    .await
                    .map_err(|e| e.into_down());
            }
            return Error::e_explain(ErrorType::ConnectionClosed, "backend closed mid-body")
                .map_err(|e| e.into_up());
        }
        let take = match chunked.as_mut() {
            Some(c) => c.feed(buf).map_err(|_| {
                Error::explain(ErrorType::InvalidHTTPHeader, "malformed chunked body").into_up()
            })?,
            None => buf.len().min(left.min(usize::MAX as u64) as usize),
        };
        let piece: Bytes = buf.split_to(take).freeze();
        left -= piece.len() as u64;
        if framing == Framing::Close {
            session
                .send(chunk_of(piece), false)
                .await
                .map_err(|e| e.into_down())?;
            continue;
        }
        let end = left == 0 || chunked.as_ref().is_some_and(Chunked::is_done);
        session.send(piece, end).await.map_err(|e| e.into_down())?;
        if end {
            return Ok(());
        }
    }
}

/// `piece` as one chunk of a chunked body.
fn chunk_of(piece: Bytes) -> Bytes {
    let mut chunk = BytesMut::with_capacity(piece.len() + 12);
    chunk.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
    chunk.extend_from_slice(&piece);
    chunk.extend_from_slice(b"\r\n");
    chunk.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ResponseHeader {
        parse_response_head(&mut BytesMut::from(text), false)
            .unwrap()
            .unwrap()
            .0
    }

    fn get() -> pingora_http::RequestHeader {
        pingora_http::RequestHeader::build("GET", b"/", None).unwrap()
    }

    #[test]
    fn the_body_framing_follows_rfc_9112() {
        let req = get();
        let f = |t: &str| framing(&head(t), &req).ok();
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Some(Framing::Length(5))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Some(Framing::None)
        );
        assert_eq!(f("HTTP/1.1 204 No Content\r\n\r\n"), Some(Framing::None));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            Some(Framing::Chunked)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(Framing::Close)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Some(Framing::Close));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            None
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), None);
        let head_req = pingora_http::RequestHeader::build("HEAD", b"/", None).unwrap();
        assert_eq!(
            framing(
                &head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
                &head_req
            )
            .ok(),
            Some(Framing::None)
        );
    }

    #[test]
    fn close_among_the_connection_options_ends_the_backend_connection() {
        let closes = |t: &str| wants_close(&head(t));
        assert!(closes("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
        assert!(closes(
            "HTTP/1.1 200 OK\r\nConnection: x-trace, Close\r\n\r\n"
        ));
        assert!(closes(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"
        ));
        assert!(closes("HTTP/1.0 200 OK\r\n\r\n"));
        assert!(!closes(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, closed\r\n\r\n"
        ));
        assert!(!closes("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn a_request_head_is_sent_with_the_clients_spellings() {
        let mut buf = BytesMut::from("GET /a?b HTTP/1.1\r\nHost: x\r\nX-MiXed: 1\r\n\r\n");
        let super::super::parse::Parsed::Own(r) = super::super::parse::request(&mut buf, 0, false)
        else {
            panic!("not taken")
        };
        let mut req = r.header;
        req.insert_header("via", "1.1 s").unwrap();
        let wire = request_wire(&req, r.spellings.as_ref()).unwrap();
        assert_eq!(
            &wire[..],
            b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-MiXed: 1\r\nvia: 1.1 s\r\n\r\n"
        );
        let lowercase = request_wire(&req, None).unwrap();
        assert!(
            lowercase.windows(9).any(|w| w == b"x-mixed: "),
            "{lowercase:?}"
        );
    }

    #[test]
    fn a_response_head_keeps_its_reason_and_leaves_the_body_in_the_buffer() {
        let mut buf = BytesMut::from("HTTP/1.1 200 Fine\r\nX-A: 1\r\n\r\nbody");
        let (resp, _) = parse_response_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(resp.get_reason_phrase(), Some("Fine"));
        assert_eq!(resp.headers["x-a"], "1");
        assert_eq!(&buf[..], b"body");
        assert!(
            parse_response_head(&mut BytesMut::from("HTTP/1.1 200 OK\r\n"), false)
                .unwrap()
                .is_none()
        );
    }
}
