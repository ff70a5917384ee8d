//! What Switchyard's hooks need from the client's side of a request, as one small trait.
//!
//! The hooks in [`super`] reach the client connection only through [`Downstream`], never
//! through Pingora's `Session` directly. Pingora's session implements it here; a test can
//! implement it over plain values, so the hooks' decisions (which status, which headers,
//! whether the connection stays open, whether a failed attempt is retried) are unit-tested
//! without a connection. Connection plumbing that only Pingora's HTTP/1 loop has (pipelining,
//! the slow-client head deadline) stays in the `ProxyHttp` adapter.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora_core::protocols::http::server::Session as HttpSession;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// An HTTP/1 request head as the client sent it.
pub struct RawHead {
    /// The head's bytes as received.
    pub bytes: Bytes,
    /// Whether the request line parsed only after the server percent-encoded bytes illegal in
    /// a target (`GET /a b`).
    pub line_escaped: bool,
}

/// The client's side of one request.
pub trait Downstream: Send + Sync {
    /// The request head as parsed.
    fn req_header(&self) -> &RequestHeader;

    /// The HTTP/1 head's raw bytes, for the limits that need them; `None` over HTTP/2.
    fn raw_head(&self) -> Option<RawHead>;

    /// The client's address, when it is an IP socket.
    fn client_ip(&self) -> Option<IpAddr>;

    /// Whether the client connection is TLS.
    fn is_tls(&self) -> bool;

    /// Whether the client speaks HTTP/2.
    fn is_http2(&self) -> bool;

    /// Whether the process is handing over or stopping.
    fn is_process_shutting_down(&self) -> bool;

    /// The status of the response head already sent to the client, if any.
    fn response_status(&self) -> Option<u16>;

    /// Whether the request body outgrew the buffer kept for replaying it to another backend.
    fn body_outgrew_replay_buffer(&self) -> bool;

    /// The request body as buffered for replay (`None` when there is none or it outgrew the
    /// buffer).
    fn replay_buffer(&self) -> Option<Bytes>;

    /// Close the client connection after this response (HTTP/1; HTTP/2 streams ignore it).
    fn close_after_response(&mut self);

    /// Bound each wait for more request-body bytes.
    fn set_read_timeout(&mut self, timeout: Duration);

    /// Send a response head to the client; `end` when no body follows.
    fn write_response_header(
        &mut self,
        head: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = pingora_error::Result<()>> + Send;

    /// Send a response body to the client; `end` when it is the last of it.
    fn write_response_body(
        &mut self,
        body: Bytes,
        end: bool,
    ) -> impl Future<Output = pingora_error::Result<()>> + Send;
}

impl Downstream for Session {
    fn req_header(&self) -> &RequestHeader {
        self.as_downstream().req_header()
    }

    fn raw_head(&self) -> Option<RawHead> {
        match self.as_downstream() {
            HttpSession::H1(h1) => Some(RawHead {
                bytes: h1.get_headers_raw_bytes(),
                line_escaped: h1.request_line_escaped(),
            }),
            _ => None,
        }
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
    }

    fn is_tls(&self) -> bool {
        self.digest().is_some_and(|d| d.ssl_digest.is_some())
    }

    fn is_http2(&self) -> bool {
        self.as_downstream().is_http2()
    }

    fn is_process_shutting_down(&self) -> bool {
        Session::is_process_shutting_down(self)
    }

    fn response_status(&self) -> Option<u16> {
        self.response_written().map(|r| r.status.as_u16())
    }

    fn body_outgrew_replay_buffer(&self) -> bool {
        self.as_downstream().retry_buffer_truncated()
    }

    fn replay_buffer(&self) -> Option<Bytes> {
        let downstream = self.as_downstream();
        if downstream.retry_buffer_truncated() {
            return None;
        }
        downstream.get_retry_buffer()
    }

    fn close_after_response(&mut self) {
        self.as_downstream_mut().set_keepalive(None);
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        self.as_downstream_mut().set_read_timeout(Some(timeout));
    }

    fn write_response_header(
        &mut self,
        head: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = pingora_error::Result<()>> + Send {
        Session::write_response_header(self, head, end)
    }

    fn write_response_body(
        &mut self,
        body: Bytes,
        end: bool,
    ) -> impl Future<Output = pingora_error::Result<()>> + Send {
        Session::write_response_body(self, Some(body), end)
    }
}
