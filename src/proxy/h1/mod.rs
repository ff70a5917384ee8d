//! Switchyard's own HTTP/1 data path (`proxy.http1_path: switchyard`).
//!
//! One task per client connection, no channels: the task reads a request head, runs the same
//! hooks as Pingora's loop ([`super::hooks`], over [`session::OwnSession`]), takes a pooled
//! backend connection from Pingora's connector, sends the request, and forwards the response
//! as it comes. It serves a strict subset of HTTP/1.1 ([`parse`]): requests with no body or
//! one framed by a single `Content-Length` it can hold for replay, to target groups that speak
//! HTTP/1. The first request outside it hands the connection, with the bytes already read, to
//! Pingora's HTTP/1 loop ([`Served::HandOver`]), so no request changes behaviour: it is
//! served by this path or by Pingora's. The design and its measurements:
//! `docs/http1-data-path.md`.

mod chunked;
mod parse;
mod session;
mod spelling;
mod upstream;

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::{Peek, Shutdown};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType, OrErr};
use pingora_proxy::ProxyHttp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ctx::RequestCtx;
use super::downstream::Downstream;
use super::Switchyard;
use crate::config::ProtocolVersion;
use crate::edge::slow_client::HeadDeadline;
use crate::runtime::Snapshot;
use parse::Parsed;
use session::OwnSession;
use upstream::Failure;

/// How long a kept-alive client connection may wait for its next request (Pingora's HTTP/1
/// server default).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// The largest request body this path holds (and replays to another backend on a retry);
/// larger bodies go to Pingora's loop, which streams them.
const MAX_HELD_BODY: u64 = 64 * 1024;

/// How much is read from the client at once.
const READ_SIZE: usize = 4096;

/// How a connection left the own path.
pub enum Served {
    /// It is closed, or is to be.
    Closed,
    /// A request outside the subset arrived: Pingora's loop serves the connection from here,
    /// starting with these bytes.
    HandOver(BytesMut),
}

/// The own HTTP/1 path.
pub struct Http1Path {
    proxy: Switchyard,
    connector: TransportConnector,
}

impl Http1Path {
    /// The path for `proxy`, with a backend connection pool configured as Pingora's.
    pub fn new(proxy: Switchyard, conf: &ServerConf) -> Self {
        Self {
            proxy,
            connector: TransportConnector::new(Some(ConnectorOptions::from_server_conf(conf))),
        }
    }

    /// Serve `stream` until it closes or a request outside the subset arrives.
    pub async fn serve(&self, stream: &mut HeadDeadline, shutdown: &ShutdownWatch) -> Served {
        let mut buf = BytesMut::new();
        let mut first = true;
        let mut shutdown = shutdown.clone();
        loop {
            let (serves, max_body, max_head) = {
                let snapshot = self.proxy.runtime.snapshot();
                let settings = &snapshot.config.proxy;
                let max_body = MAX_HELD_BODY.min(settings.max_body_bytes);
                (serves(&snapshot), max_body, settings.max_header_bytes)
            };
            if !serves {
                return self.hand_over(buf, "backend_protocol");
            }
            match parse::request(&mut buf, max_body, self.proxy.discard_header_case) {
                Parsed::Own(req) => {
                    let shutting_down = *shutdown.borrow();
                    // Boxed: the connection's task holds a request's state only while the
                    // request runs, not through the idle waits between requests.
                    let keep = Box::pin(self.serve_one(stream, req, &mut buf, shutting_down)).await;
                    stream.request_finished();
                    if !keep {
                        Shutdown::shutdown(stream).await;
                        return Served::Closed;
                    }
                    first = false;
                }
                Parsed::Outside => return self.hand_over(buf, "outside_subset"),
                Parsed::Invalid => {
                    if stream.write_all(BAD_REQUEST).await.is_ok() {
                        Shutdown::shutdown(stream).await;
                    }
                    return Served::Closed;
                }
                Parsed::Partial => {
                    if buf.len() > max_head {
                        // Pingora's loop answers an oversized head as it always has.
                        return self.hand_over(buf, "head_too_large");
                    }
                    if !read_more(stream, &mut buf, first, &mut shutdown).await {
                        return Served::Closed;
                    }
                }
            }
        }
    }

    /// Hand the connection to Pingora's loop, counted by `reason`.
    fn hand_over(&self, read: BytesMut, reason: &str) -> Served {
        self.proxy.runtime.metrics.http1_handover(reason);
        Served::HandOver(read)
    }

    /// Serve `req`; whether the connection stays open for the next request.
    async fn serve_one(
        &self,
        stream: &mut HeadDeadline,
        req: parse::Request,
        buf: &mut BytesMut,
        shutting_down: bool,
    ) -> bool {
        let body_len = req.body_len;
        let mut session = OwnSession::new(stream, buf, req, shutting_down);
        self.serve_request(&mut session, body_len).await
    }

    /// Serve one request; whether the connection stays open for the next.
    async fn serve_request(&self, session: &mut OwnSession<'_>, body_len: u64) -> bool {
        session.stream.head_received();
        let mut ctx = self.proxy.new_ctx();
        self.proxy.begin(session, &mut ctx);
        let error = match self.proxy.admit(session, &mut ctx).await {
            Ok(true) => {
                if body_len > 0 {
                    // The unread body would be taken for the next request.
                    session.close = true;
                }
                None
            }
            Ok(false) => match self.read_body(session, body_len, &mut ctx).await {
                Ok(()) => self.forward(session, &mut ctx).await,
                Err(e) => Some(e),
            },
            Err(e) => Some(e),
        };
        if let Some(e) = &error {
            Switchyard::answer_failure(session, e, &mut ctx).await;
            session.close = true;
            super::log_failure(&session.req, e, &ctx);
        }
        self.proxy.finish(session, error.as_deref(), &mut ctx);
        !session.close
    }

    /// Read the request body (at most [`MAX_HELD_BODY`]) into the session, counting it
    /// against the body limits as it arrives.
    async fn read_body(
        &self,
        session: &mut OwnSession<'_>,
        len: u64,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let len = len as usize;
        let mut body = BytesMut::with_capacity(len);
        while body.len() < len {
            if session.read.is_empty() {
                session.read.reserve(READ_SIZE.min(len - body.len()));
                let read = session.stream.read_buf(session.read);
                let limit = Some(session.read_timeout);
                let what = "reading the request body";
                let n = timed(limit, ErrorType::ReadTimedout, what, read)
                    .await
                    .and_then(|r| r.or_err(ErrorType::ReadError, what))
                    .map_err(|e| e.into_down())?;
                if n == 0 {
                    return Err(Error::explain(ErrorType::ConnectionClosed, what).into_down());
                }
            }
            let take = session.read.len().min(len - body.len());
            let piece = session.read.split_to(take).freeze();
            let end = body.len() + piece.len() == len;
            self.proxy.check_body(session, Some(&piece), end, ctx)?;
            body.extend_from_slice(&piece);
        }
        session.body = Some(body.freeze());
        Ok(())
    }

    /// Try backends until one answers or no retry is allowed; the error that ended it.
    async fn forward(
        &self,
        session: &mut OwnSession<'_>,
        ctx: &mut RequestCtx,
    ) -> Option<Box<Error>> {
        loop {
            let peer = match self.proxy.choose_peer(ctx) {
                Ok(peer) => peer,
                Err(e) => return Some(e),
            };
            let e = match upstream::attempt(&self.proxy, &self.connector, session, &peer, ctx).await
            {
                Ok(()) => return None,
                Err(Failure::Connect(e)) => Switchyard::connect_failed(ctx, e),
                Err(Failure::Proxy { error, reused }) => {
                    Switchyard::proxy_failed(session, &peer, error, ctx, reused)
                }
            };
            let client_gone = super::outcome::is_client_gone(&e);
            if client_gone || !e.retry() || session.response_status().is_some() {
                return Some(e);
            }
        }
    }
}

/// Await `io` within `limit`, if any; past it, an error of type `on_timeout` about `what`.
async fn timed<T>(
    limit: Option<Duration>,
    on_timeout: ErrorType,
    what: &'static str,
    io: impl Future<Output = T>,
) -> pingora_error::Result<T> {
    match limit {
        None => Ok(io.await),
        Some(limit) => tokio::time::timeout(limit, io)
            .await
            .or_err(on_timeout, what),
    }
}

/// The answer to a head that cannot be read as one request.
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 12\r\nconnection: close\r\n\r\nbad request\n";

/// Whether this path serves requests under `snapshot`: every target group speaks HTTP/1.
fn serves(snapshot: &Snapshot) -> bool {
    snapshot
        .groups
        .iter()
        .all(|g| g.config.upstream.version == ProtocolVersion::Http1)
}

/// Read more of a head into `buf`. Between requests, wait for the client's next bytes holding
/// no buffer, for at most [`KEEPALIVE_IDLE`] and not past shutdown. `false`: the connection
/// is done (closed, timed out, failed or shutting down).
async fn read_more(
    stream: &mut HeadDeadline,
    buf: &mut BytesMut,
    first: bool,
    shutdown: &mut ShutdownWatch,
) -> bool {
    if buf.is_empty() && !first {
        if *shutdown.borrow() {
            return false;
        }
        *buf = BytesMut::new();
        let ready = std::future::poll_fn(|cx| stream.poll_read_ready(cx));
        tokio::select! {
            r = tokio::time::timeout(KEEPALIVE_IDLE, ready) => {
                if !matches!(r, Ok(Ok(_))) {
                    return false;
                }
            }
            _ = shutdown.changed() => return false,
        }
    }
    buf.reserve(READ_SIZE);
    matches!(stream.read_buf(buf).await, Ok(n) if n > 0)
}
