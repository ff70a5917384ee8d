//! A deadline for the first request head of a connection (slowloris defence).
//!
//! Pingora's HTTP/1 reader applies its read timeout per `read()`, so a client sending one
//! byte every few seconds keeps a connection (and a file descriptor) forever. Here each
//! accepted HTTP/1 stream is wrapped: until the end of the first request head (`\r\n\r\n`)
//! arrives, reads fail once `client_header_timeout` has passed since the connection was
//! accepted, and Pingora drops the connection. Later requests on a kept-alive connection are
//! bounded by Pingora's keep-alive timeout, bodies by `client_body_timeout`. HTTP/2
//! connections (binary frames) are not wrapped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose first request head has a deadline.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    deadline: Pin<Box<Sleep>>,
    head_done: bool,
    /// The last bytes seen, to find `\r\n\r\n` across reads.
    tail: [u8; 3],
}

impl HeadDeadline {
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(Instant::now() + timeout)),
            head_done: false,
            tail: [0; 3],
        }
    }
}

/// Whether `new` completes a request head (`\r\n\r\n`), given the last three bytes seen
/// before it in `tail`; updates `tail`.
fn completes_head(tail: &mut [u8; 3], new: &[u8]) -> bool {
    let mut edge = [0u8; 6];
    let k = new.len().min(3);
    edge[..3].copy_from_slice(tail);
    edge[3..3 + k].copy_from_slice(&new[..k]);
    if edge[..3 + k].windows(4).any(|w| w == b"\r\n\r\n")
        || new.windows(4).any(|w| w == b"\r\n\r\n")
    {
        return true;
    }
    for &b in &new[new.len() - k..] {
        *tail = [tail[1], tail[2], b];
    }
    false
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.head_done && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request head took too long",
            )));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.head_done {
            if let Poll::Ready(Ok(())) = &res {
                let new = &buf.filled()[before..];
                if !new.is_empty() && completes_head(&mut this.tail, new) {
                    this.head_done = true;
                }
            }
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
        self.inner.try_peek(buf).await
    }
}

/// A server app that puts [`HeadDeadline`] on every new HTTP/1 connection of `inner`.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    timeout: Duration,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(inner),
            timeout,
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
        let session: Stream = if session.selected_alpn_proto() == Some(ALPN::H2) {
            session
        } else {
            Box::new(HeadDeadline::new(session, self.timeout))
        };
        self.inner.process_new(session, shutdown).await
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
}
