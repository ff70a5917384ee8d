//! floor-proxy: about the least work a tokio HTTP/1.1 reverse proxy can do per request.
//!
//! It is not part of Switchyard. It answers one question for bench/README.md: how far below
//! Switchyard's CPU per request could a redesigned HTTP/1 data path on tokio go? So it does what
//! such a data path could not avoid and nothing else:
//!
//! - one task per client connection, no channels, no per-request allocation;
//! - both heads parsed with `httparse`, but forwarded as the bytes received (no header maps);
//! - an `X-Forwarded-For` field added to every request;
//! - round robin over the upstreams, with a shared keep-alive pool per upstream;
//! - a stale pooled connection (closed by the upstream) retried once on a new one;
//! - with `--read-timeout-ms`, a tokio timer on every read, as a real proxy needs;
//! - with `--header-maps`, both heads also built as `http::HeaderMap`s (names and values
//!   checked, `X-Forwarded-For` inserted in the map) and written out from them, as a data path
//!   that hands typed heads to filters would (this parses each head a second time, a few
//!   hundred instructions).
//!
//! What a real proxy needs and this one leaves out: chunked bodies, health checks, routing,
//! limits, metrics, logging, TLS, HTTP/2.
//!
//! Usage: `floor-proxy --listen 127.0.0.1:18120 --upstreams A,B,C [--runtime current|multi]
//! [--read-timeout-ms N] [--header-maps]` (`multi`: tokio's multi-thread runtime with one worker, as Pingora's
//! default; `current`: a current-thread runtime). Loopback use only; it runs until killed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request or response head accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The most header fields parsed in one head.
const MAX_HEADERS: usize = 64;

/// The time one read may wait, if `--read-timeout-ms` was given.
static READ_TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();

/// Awaits one read, under the read timeout if there is one.
async fn under_read_timeout(read: impl Future<Output = io::Result<usize>>) -> io::Result<usize> {
    match READ_TIMEOUT.get().copied().flatten() {
        None => read.await,
        Some(limit) => tokio::time::timeout(limit, read)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?,
    }
}

/// Whether heads go through `http::HeaderMap`s (`--header-maps`).
static HEADER_MAPS: OnceLock<bool> = OnceLock::new();

/// Builds a typed header map from parsed fields; `None` if a name or value is invalid.
fn header_map(fields: &[httparse::Header<'_>]) -> Option<http::HeaderMap> {
    let mut map = http::HeaderMap::with_capacity(fields.len() + 2);
    for f in fields {
        let name = http::HeaderName::from_bytes(f.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(f.value).ok()?;
        map.append(name, value);
    }
    Some(map)
}

fn write_fields(map: &http::HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in map {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the request head in `head` to `out` through a typed header map, with
/// `X-Forwarded-For` set to `client_ip`.
fn typed_request_head(
    head: &[u8],
    client_ip: &http::HeaderValue,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    req.parse(head).map_err(|_| invalid("request head"))?;
    let mut map = header_map(req.headers).ok_or_else(|| invalid("request field"))?;
    map.append(
        http::header::HeaderName::from_static("x-forwarded-for"),
        client_ip.clone(),
    );
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(&map, out);
    Ok(())
}

/// Writes the response head in `head` to `out` through a typed header map.
fn typed_response_head(head: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    resp.parse(head).map_err(|_| invalid("response head"))?;
    let map = header_map(resp.headers).ok_or_else(|| invalid("response field"))?;
    let status =
        http::StatusCode::from_u16(resp.code.unwrap_or(502)).map_err(|_| invalid("status"))?;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(&map, out);
    Ok(())
}

/// What the proxy needs to know about a parsed head.
#[derive(Clone, Copy, Debug)]
struct Head {
    /// Length of the head, including the empty line that ends it.
    len: usize,
    /// Length of the body that follows; `None`: until the connection closes.
    body: Option<u64>,
    /// The connection must not be used for another message after this one.
    close: bool,
}

/// The upstream servers, the next one's index and their idle keep-alive connections.
struct Upstreams {
    addrs: Vec<SocketAddr>,
    idle: Vec<Mutex<Vec<TcpStream>>>,
    next: AtomicUsize,
}

impl Upstreams {
    fn new(addrs: Vec<SocketAddr>) -> Self {
        let idle = addrs.iter().map(|_| Mutex::new(Vec::new())).collect();
        Upstreams {
            addrs,
            idle,
            next: AtomicUsize::new(0),
        }
    }

    fn pick_round_robin(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len()
    }

    /// An idle connection to upstream `i` (`true`: reused), or a new one.
    async fn connection(&self, i: usize) -> io::Result<(TcpStream, bool)> {
        let pooled = self.idle[i].lock().expect("pool lock").pop();
        if let Some(stream) = pooled {
            return Ok((stream, true));
        }
        Ok((connect(self.addrs[i]).await?, false))
    }

    fn give_back(&self, i: usize, stream: TcpStream) {
        self.idle[i].lock().expect("pool lock").push(stream);
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Content-Length, Transfer-Encoding and Connection: what the framing of a message needs.
fn framing(headers: &[httparse::Header<'_>], http10: bool) -> io::Result<(Option<u64>, bool)> {
    let mut length = None;
    let mut close = http10;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| invalid("content-length"))?;
            let n: u64 = text.trim().parse().map_err(|_| invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("two content-lengths"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("transfer-encoding is not supported here"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = h.value;
            if v.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if v.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    Ok((length, close))
}

fn parse_request(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf).map_err(|_| invalid("request head"))? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => {
            let (length, close) = framing(req.headers, req.version == Some(0))?;
            Ok(Some(Head {
                len,
                body: Some(length.unwrap_or(0)),
                close,
            }))
        }
    }
}

fn parse_response(buf: &[u8]) -> io::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf).map_err(|_| invalid("response head"))? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => {
            let code = resp.code.unwrap_or(0);
            if code < 200 {
                return Err(invalid("1xx responses are not supported here"));
            }
            let (length, close) = framing(resp.headers, resp.version == Some(0))?;
            let body = if code == 204 || code == 304 {
                Some(0)
            } else {
                length
            };
            Ok(Some(Head {
                len,
                body,
                close: close || body.is_none(),
            }))
        }
    }
}

/// Reads until `buf` holds a whole head. `None`: the peer closed before sending a byte of it.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    parse: fn(&[u8]) -> io::Result<Option<Head>>,
) -> io::Result<Option<Head>> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse(buf)? {
                return Ok(Some(head));
            }
            if buf.len() >= MAX_HEAD {
                return Err(invalid("head too large"));
            }
        }
        if under_read_timeout(stream.read_buf(buf)).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// Copies `n` more body bytes (`None`: until end of stream) from `from` to `to`.
async fn copy_body<R, W>(
    from: &mut R,
    to: &mut W,
    n: Option<u64>,
    chunk: &mut [u8],
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = n.unwrap_or(u64::MAX);
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = under_read_timeout(from.read(&mut chunk[..want])).await?;
        if got == 0 {
            return if n.is_none() {
                Ok(())
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        to.write_all(&chunk[..got]).await?;
        left -= got as u64;
    }
    Ok(())
}

/// Buffers one client connection keeps across its requests.
struct Buffers {
    client: Vec<u8>,
    upstream: Vec<u8>,
    out: Vec<u8>,
    chunk: Vec<u8>,
}

/// Serves one client connection's requests in order until it closes.
async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    upstreams: Arc<Upstreams>,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    let forwarded_for = format!("X-Forwarded-For: {}\r\n\r\n", peer.ip());
    let client_ip = http::HeaderValue::from_str(&peer.ip().to_string()).expect("an address");
    let typed = HEADER_MAPS.get().copied().unwrap_or(false);
    let mut b = Buffers {
        client: Vec::with_capacity(MAX_HEAD),
        upstream: Vec::with_capacity(MAX_HEAD),
        out: Vec::with_capacity(MAX_HEAD),
        chunk: vec![0; MAX_HEAD],
    };
    while let Some(req) = read_head(&mut client, &mut b.client, parse_request).await? {
        let body_len = req.body.unwrap_or(0);
        let buffered = b
            .client
            .len()
            .saturating_sub(req.len)
            .min(body_len as usize);
        b.out.clear();
        if typed {
            typed_request_head(&b.client[..req.len], &client_ip, &mut b.out)?;
        } else {
            b.out.extend_from_slice(&b.client[..req.len - 2]);
            b.out.extend_from_slice(forwarded_for.as_bytes());
        }
        b.out
            .extend_from_slice(&b.client[req.len..req.len + buffered]);
        b.client.drain(..req.len + buffered);
        let rest_of_body = body_len - buffered as u64;

        let i = upstreams.pick_round_robin();
        let (mut up, resp) = exchange(&upstreams, i, &mut client, rest_of_body, &mut b).await?;
        let in_buffer = b.upstream.len() - resp.len;
        let body_in_buffer = resp.body.map_or(in_buffer, |n| in_buffer.min(n as usize));
        if typed {
            b.out.clear();
            typed_response_head(&b.upstream[..resp.len], &mut b.out)?;
            b.out
                .extend_from_slice(&b.upstream[resp.len..resp.len + body_in_buffer]);
            client.write_all(&b.out).await?;
        } else {
            client
                .write_all(&b.upstream[..resp.len + body_in_buffer])
                .await?;
        }
        let rest = resp.body.map(|n| n - body_in_buffer as u64);
        copy_body(&mut up, &mut client, rest, &mut b.chunk).await?;
        if !resp.close && in_buffer == body_in_buffer {
            upstreams.give_back(i, up);
        }
        if req.close || resp.body.is_none() {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends the request in `b.out` (and `rest_of_body` more bytes from the client) to upstream `i`
/// and reads the response head into `b.upstream`. A pooled connection the upstream had closed
/// is replaced by a new one once, if no body bytes had to be streamed.
async fn exchange(
    upstreams: &Upstreams,
    i: usize,
    client: &mut TcpStream,
    rest_of_body: u64,
    b: &mut Buffers,
) -> io::Result<(TcpStream, Head)> {
    let (mut up, mut reused) = upstreams.connection(i).await?;
    loop {
        b.upstream.clear();
        let sent = up.write_all(&b.out).await;
        let head = match sent {
            Ok(()) => {
                copy_body(client, &mut up, Some(rest_of_body), &mut b.chunk).await?;
                read_head(&mut up, &mut b.upstream, parse_response).await
            }
            Err(e) => Err(e),
        };
        match head {
            Ok(Some(head)) => return Ok((up, head)),
            Ok(None) | Err(_) if reused && rest_of_body == 0 => {
                up = connect(upstreams.addrs[i]).await?;
                reused = false;
            }
            Ok(None) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Err(e) => return Err(e),
        }
    }
}

struct Args {
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
    multi_thread: bool,
    read_timeout: Option<Duration>,
    header_maps: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut upstreams = Vec::new();
    let mut multi_thread = false;
    let mut read_timeout = None;
    let mut header_maps = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--header-maps" {
            header_maps = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen: {e}"))?),
            "--upstreams" => {
                for a in value.split(',') {
                    upstreams.push(a.parse().map_err(|e| format!("--upstreams {a}: {e}"))?);
                }
            }
            "--runtime" => {
                multi_thread = match value.as_str() {
                    "multi" => true,
                    "current" => false,
                    other => return Err(format!("--runtime: {other}: expected current or multi")),
                }
            }
            "--read-timeout-ms" => {
                let ms: u64 = value
                    .parse()
                    .map_err(|e| format!("--read-timeout-ms: {e}"))?;
                read_timeout = Some(Duration::from_millis(ms));
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    if upstreams.is_empty() {
        return Err("--upstreams is required".into());
    }
    Ok(Args {
        listen,
        upstreams,
        multi_thread,
        read_timeout,
        header_maps,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("floor-proxy: {e}");
            std::process::exit(2);
        }
    };
    READ_TIMEOUT.set(args.read_timeout).expect("set once");
    HEADER_MAPS.set(args.header_maps).expect("set once");
    let runtime = if args.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let upstreams = Arc::new(Upstreams::new(args.upstreams));
    let result: io::Result<()> = runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen).await?;
        loop {
            let (stream, peer) = listener.accept().await?;
            let upstreams = upstreams.clone();
            tokio::spawn(async move {
                let _ = serve(stream, peer, upstreams).await;
            });
        }
    });
    if let Err(e) = result {
        eprintln!("floor-proxy: {e}");
        std::process::exit(1);
    }
}
