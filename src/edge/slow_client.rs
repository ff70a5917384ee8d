//! A deadline for every request head of a connection (slowloris defence).
//!
//! Pingora's HTTP/1 reader applies its read timeout per `read()`, so a client sending one
//! byte every few seconds keeps a connection (and a file descriptor) forever. Here each
//! accepted HTTP/1 stream is wrapped: until the end of a request head (`\r\n\r\n`) arrives,
//! reads fail once `client_header_timeout` has passed, and Pingora drops the connection.
//!
//! As in NGINX, the first head's clock starts when the connection is accepted; on a kept-alive
//! connection, the next head's clock starts with its first byte (the idle wait in between is
//! Pingora's keep-alive timeout). The proxy tells the stream a request ended
//! ([`request_finished`]). Bodies are bounded by `client_body_timeout` and a minimum rate
//! (see the proxy's body filter). HTTP/2 connections (binary frames) are not wrapped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use memchr::memmem;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::proxy::h1::{Http1Path, Served};

/// A stream whose request heads have a deadline.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Whether the deadline runs (from accept, or from the first byte of a later head).
    armed: bool,
    head_done: bool,
    /// Set when a request ended: the next bytes start a new head.
    next_head: AtomicBool,
    /// Set when the proxy has a request's head. A pipelined head can arrive whole with the
    /// request before it and be parsed without a read of its own; the reads after it are
    /// then its body, not a head.
    head_seen: AtomicBool,
    /// The last bytes seen, to find `\r\n\r\n` across reads.
    tail: [u8; 3],
    /// Bytes already read from the client that the next reads give back first: what
    /// Switchyard's own HTTP/1 path read before handing the connection to Pingora's loop.
    unread: Option<Box<BytesMut>>,
}

impl HeadDeadline {
    /// Wrap a newly accepted stream: its first head must arrive within `timeout`.
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            armed: true,
            head_done: false,
            next_head: AtomicBool::new(false),
            head_seen: AtomicBool::new(false),
            tail: [0; 3],
            unread: None,
        }
    }

    /// Give `bytes`, already read from the client, back to the next reads.
    pub fn unread(&mut self, bytes: BytesMut) {
        if !bytes.is_empty() {
            self.unread = Some(Box::new(bytes));
        }
    }

    /// The client's IP address, when it connected over IP.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        let digest = self.inner.get_socket_digest()?;
        digest.peer_addr()?.as_inet().map(|a| a.ip())
    }

    /// Whether the client connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.inner.get_ssl_digest().is_some()
    }

    /// Copy what is left of the unread bytes into `buf`.
    fn read_unread(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some(unread) = self.unread.as_mut() else {
            return false;
        };
        let n = unread.len().min(buf.remaining());
        buf.put_slice(&unread.split_to(n));
        if unread.is_empty() {
            self.unread = None;
        }
        true
    }

    /// The proxy has this request's head: reads until [`Self::request_finished`] are its body.
    pub fn head_received(&self) {
        self.head_seen.store(true, Ordering::Relaxed);
    }

    /// A request on this connection ended; the next bytes read start a new head.
    pub fn request_finished(&self) {
        self.head_seen.store(false, Ordering::Relaxed);
        self.next_head.store(true, Ordering::Relaxed);
    }
}

/// The wrapped stream of `session`, if it is an HTTP/1 connection with a head deadline.
fn head_deadline(session: &pingora_proxy::Session) -> Option<&HeadDeadline> {
    match session.as_downstream() {
        pingora_core::protocols::http::server::Session::H1(h1) => {
            let stream: &Stream = h1.stream();
            (**stream).as_any().downcast_ref::<HeadDeadline>()
        }
        _ => None,
    }
}

/// Tell the wrapped stream of `session` (if any) that its request's head has been read, so
/// the reads of its body are not held to the head's deadline.
pub fn head_received(session: &pingora_proxy::Session) {
    if let Some(wrapped) = head_deadline(session) {
        wrapped.head_received();
    }
}

/// Tell the wrapped stream of `session` (if any) that its request ended, so the next request
/// head on the kept-alive connection gets a deadline too.
pub fn request_finished(session: &pingora_proxy::Session) {
    if let Some(wrapped) = head_deadline(session) {
        wrapped.request_finished();
    }
}

/// The end of a request head.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// A searcher for [`HEAD_END`], built once (`memchr`'s vectorised substring search).
static HEAD_END_FINDER: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(HEAD_END));

/// Whether `new` completes a request head (`\r\n\r\n`), given the last three bytes seen
/// before it in `tail`; updates `tail`.
///
/// Runs on every read of a head. A head that arrives whole in one read ends the read (a
/// request without a body), so that is checked first; a head followed by a body or by
/// pipelined requests is found by a vectorised search.
fn completes_head(tail: &mut [u8; 3], new: &[u8]) -> bool {
    if new.ends_with(HEAD_END) {
        return true;
    }
    let mut edge = [0u8; 6];
    let k = new.len().min(3);
    edge[..3].copy_from_slice(tail);
    edge[3..3 + k].copy_from_slice(&new[..k]);
    if edge[..3 + k].windows(4).any(|w| w == HEAD_END) || HEAD_END_FINDER.find(new).is_some() {
        return true;
    }
    for &b in &new[new.len() - k..] {
        *tail = [tail[1], tail[2], b];
    }
    false
}

impl AsyncRead for HeadDeadline {
    /// The deadline costs nothing while heads arrive whole: the clock is read only when a head
    /// is split across reads, and the timer is polled (registered) only when the read would
    /// wait with a head still incomplete, which is also when a trickling client is caught.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.read_unread(buf) {
            // Bytes this guard already saw, when they were first read.
            return Poll::Ready(Ok(()));
        }
        if this.next_head.swap(false, Ordering::Relaxed) {
            // A kept-alive connection: the next head's clock starts with its first byte.
            this.head_done = false;
            this.armed = false;
            this.tail = [0; 3];
        }
        if this.head_seen.swap(false, Ordering::Relaxed) {
            // The head came without a read of its own (pipelined behind the previous request).
            this.head_done = true;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.head_done {
            return res;
        }
        match &res {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    if completes_head(&mut this.tail, new) {
                        this.head_done = true;
                    } else if !this.armed {
                        this.armed = true;
                        let at = Instant::now() + this.timeout;
                        this.deadline.as_mut().reset(at);
                    }
                }
            }
            Poll::Pending if this.armed && this.deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request head took too long",
                )));
            }
            _ => {}
        }
        res
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora_core::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if let Some(unread) = &self.unread {
            let n = unread.len().min(buf.len());
            buf[..n].copy_from_slice(&unread[..n]);
            return Ok(n == buf.len());
        }
        self.inner.try_peek(buf).await
    }

    /// The wrapped stream's: a kept-alive connection waits for its next request holding only
    /// the stream (vendor patch 0018), and no head deadline runs while it is idle.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.unread.is_some() {
            return Poll::Ready(Ok(true));
        }
        self.inner.poll_read_ready(cx)
    }
}

/// A server app that puts [`HeadDeadline`] on every new HTTP/1 connection of `inner`, with
/// the header timeout of the configuration current when the connection is accepted. Every
/// client connection passes through it, so it also counts them open
/// ([`super::idle::OpenConnection`]) for as long as `inner` serves them.
///
/// With `own` (`proxy.http1_path: switchyard`), HTTP/1 connections are served by Switchyard's
/// own loop until a request outside its subset hands them to `inner`. Not the plain ones when
/// `h2c` is on: their first bytes may be an HTTP/2 preface, which `inner` looks for.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    runtime: Arc<crate::runtime::Runtime>,
    own: Option<Arc<Http1Path>>,
    h2c: bool,
}

impl<A> GuardedApp<A> {
    pub fn new(
        inner: A,
        runtime: Arc<crate::runtime::Runtime>,
        own: Option<Arc<Http1Path>>,
        h2c: bool,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            runtime,
            own,
            h2c,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = super::idle::OpenConnection::new();
        if session.selected_alpn_proto() == Some(ALPN::H2) {
            return self.inner.process_new(session, shutdown).await;
        }
        let plain = session.get_ssl_digest().is_none();
        let timeout = self.runtime.snapshot().config.proxy.client_header_timeout;
        let mut guarded = Box::new(HeadDeadline::new(session, timeout));
        if let Some(own) = self.own.as_ref().filter(|_| !(plain && self.h2c)) {
            // Boxed, so a connection on Pingora's loop does not carry its state.
            match Box::pin(own.serve(&mut guarded, shutdown)).await {
                Served::Closed => return None,
                Served::HandOver(read) => guarded.unread(read),
            }
        }
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_end_is_found_across_reads() {
        let mut tail = [0u8; 3];
        assert!(!completes_head(&mut tail, b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!completes_head(&mut tail, b"\n\r"));
        assert!(completes_head(&mut tail, b"\n"));
        let mut fresh = [0u8; 3];
        assert!(completes_head(&mut fresh, b"GET / HTTP/1.1\r\n\r\n"));
        let mut slow = [0u8; 3];
        assert!(!b"GET / HTTP/1.1\r\nX: y\r\n"
            .iter()
            .any(|b| completes_head(&mut slow, &[*b])));
        assert!(!completes_head(&mut slow, b"\r"));
        assert!(completes_head(&mut slow, b"\n"));
    }

    #[test]
    fn the_head_end_is_found_before_a_body_or_a_pipelined_request() {
        let mut tail = [0u8; 3];
        assert!(completes_head(
            &mut tail,
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
        ));
        let mut tail = [0u8; 3];
        assert!(completes_head(
            &mut tail,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n"
        ));
        let mut tail = [0u8; 3];
        assert!(!completes_head(
            &mut tail,
            b"GET /a HTTP/1.1\r\nHost: x\r\n\rX: y\r\n\n"
        ));
    }
}
