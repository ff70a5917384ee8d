//! One request on the own HTTP/1 path, as the hooks see it ([`Downstream`]).

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, DATE};
use pingora_core::protocols::http::date::get_cached_date;
use pingora_error::{Error, ErrorType, OrErr};
use pingora_http::{RequestHeader, ResponseHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::spelling::Spellings;
use crate::edge::slow_client::HeadDeadline;
use crate::proxy::downstream::{Downstream, RawHead};

/// A request head and the client connection it came on.
pub struct OwnSession<'a> {
    pub stream: &'a mut HeadDeadline,
    /// What was read from the client after this request's head: its body, then any requests
    /// pipelined behind it.
    pub read: &'a mut BytesMut,
    pub req: RequestHeader,
    raw: Bytes,
    /// The request's field names as the client spelt them (`header_case: preserve`).
    pub spellings: Option<Spellings>,
    /// The next response head's field names as the backend spelt them; taken when the head
    /// is written (a response the proxy makes has none).
    pub answer_spellings: Option<Spellings>,
    client_ip: Option<IpAddr>,
    tls: bool,
    shutting_down: bool,
    /// The status of the last response head written (a `1xx` too).
    status: Option<u16>,
    /// Whether the connection closes after this response.
    pub close: bool,
    /// The wait allowed for each read of the request body.
    pub read_timeout: Duration,
    /// The request body, whole (the path takes only bodies it can hold).
    pub body: Option<Bytes>,
    /// A response head serialized but not yet sent: it goes with the first body bytes.
    staged: BytesMut,
}

impl<'a> OwnSession<'a> {
    /// The session of `req` on `stream`.
    pub fn new(
        stream: &'a mut HeadDeadline,
        read: &'a mut BytesMut,
        req: super::parse::Request,
        shutting_down: bool,
    ) -> Self {
        let client_ip = stream.client_ip();
        let tls = stream.is_tls();
        Self {
            stream,
            read,
            req: req.header,
            raw: req.raw,
            spellings: req.spellings,
            answer_spellings: None,
            client_ip,
            tls,
            shutting_down,
            status: None,
            close: req.close,
            read_timeout: Duration::from_secs(60),
            body: None,
            staged: BytesMut::new(),
        }
    }

    /// Wait until the client closes its side of the connection (as Pingora's loop watches it
    /// while the backend works): then the request is abandoned. The first bytes the client
    /// sends meanwhile (a pipelined request) are kept, and the watch ends there.
    pub async fn client_left(&mut self) -> Box<Error> {
        self.read.reserve(1024);
        match self.stream.read_buf(self.read).await {
            Ok(0) => Error::explain(
                ErrorType::ConnectionClosed,
                "the client closed the connection before the response",
            ),
            Ok(_) => std::future::pending().await,
            Err(e) => Error::because(ErrorType::ReadError, "watching the client", e),
        }
        .into_down()
    }

    /// Whether a final (not `1xx`) response head was written.
    pub fn answered(&self) -> bool {
        self.status.is_some_and(|s| s >= 200)
    }

    /// Send what is staged, then `body`; flush when `end`.
    pub async fn send(&mut self, body: Bytes, end: bool) -> pingora_error::Result<()> {
        let mut out = std::mem::take(&mut self.staged).chain(body);
        self.stream
            .write_all_buf(&mut out)
            .await
            .or_err(ErrorType::WriteError, "writing to the client")?;
        if end {
            self.stream
                .flush()
                .await
                .or_err(ErrorType::WriteError, "flushing to the client")?;
        }
        Ok(())
    }
}

/// The head of `resp` as sent to the client, with `Date` and `Connection` as Pingora's
/// HTTP/1 server sets them, and the names spelt as in `spellings` when given.
fn serialize(
    resp: &mut ResponseHeader,
    close: bool,
    spellings: Option<Spellings>,
    out: &mut BytesMut,
) -> pingora_error::Result<()> {
    if !resp.status.is_informational() {
        resp.insert_header(DATE, get_cached_date())?;
        resp.insert_header(CONNECTION, if close { "close" } else { "keep-alive" })?;
    }
    out.reserve(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    if let Some(reason) = resp.get_reason_phrase() {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    match spellings {
        Some(spellings) => spellings.write_fields(&resp.headers, out),
        None => resp.header_to_h1_wire(out),
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

impl Downstream for OwnSession<'_> {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn raw_head(&self) -> Option<RawHead> {
        Some(RawHead {
            bytes: self.raw.clone(),
            line_escaped: false,
        })
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    fn is_tls(&self) -> bool {
        self.tls
    }

    fn is_http2(&self) -> bool {
        false
    }

    fn is_process_shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn response_status(&self) -> Option<u16> {
        self.status
    }

    fn body_outgrew_replay_buffer(&self) -> bool {
        false
    }

    fn replay_buffer(&self) -> Option<Bytes> {
        self.body.clone()
    }

    fn close_after_response(&mut self) {
        self.close = true;
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        self.read_timeout = timeout;
    }

    async fn write_response_header(
        &mut self,
        mut head: Box<ResponseHeader>,
        end: bool,
    ) -> pingora_error::Result<()> {
        if self.answered() {
            return Err(Error::explain(
                ErrorType::InternalError,
                "a response head was already sent",
            ));
        }
        let informational = head.status.is_informational();
        let spellings = self.answer_spellings.take();
        serialize(&mut head, self.close, spellings, &mut self.staged)?;
        self.status = Some(head.status.as_u16());
        if end || informational {
            self.send(Bytes::new(), true).await?;
        }
        Ok(())
    }

    fn write_response_body(
        &mut self,
        body: Bytes,
        end: bool,
    ) -> impl Future<Output = pingora_error::Result<()>> + Send {
        self.send(body, end)
    }
}
