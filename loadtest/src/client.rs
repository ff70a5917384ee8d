//! A lean HTTP/1.1 client: one keep-alive connection per worker, the request serialised once,
//! responses parsed with `httparse` straight from the read buffer (no per-request header
//! allocation). HTTPS through rustls.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// Where and what to send.
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The whole request, serialised once.
    pub request: Vec<u8>,
    /// HEAD responses have no body whatever their headers say.
    pub head: bool,
    /// Response header whose value names the backend (lower case).
    pub backend_header: String,
}

/// Why an attempt failed, as counted in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Io,
    Closed,
    Parse,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Closed => "closed",
            ErrorKind::Parse => "parse",
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One open connection and its read buffer.
pub struct Connection {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data not yet consumed.
    filled: usize,
    /// Start of unconsumed data in `buf`.
    start: usize,
    /// The backend header's value in the last response (reused, so no allocation).
    backend: Vec<u8>,
}

/// What a response said.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub keep_alive: bool,
    /// Whether the response named its backend (see [`Connection::backend`]).
    pub has_backend: bool,
    pub bytes: usize,
}

impl Connection {
    /// Open a connection to `target`.
    pub async fn open(target: &Target) -> Result<Self, ErrorKind> {
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &target.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| ErrorKind::Connect)?,
            ),
        };
        Ok(Self {
            io,
            buf: vec![0; 16 * 1024],
            filled: 0,
            start: 0,
            backend: Vec::with_capacity(64),
        })
    }

    /// The backend named by the last response.
    pub fn backend(&self) -> &[u8] {
        &self.backend
    }

    /// Send the target's request and read the whole response.
    pub async fn exchange(&mut self, target: &Target) -> Result<Answer, ErrorKind> {
        self.compact();
        self.io
            .write_all(&target.request)
            .await
            .map_err(|_| ErrorKind::Io)?;
        // Read until the header section is complete.
        let (status, header_len, body, keep_alive, backend) = loop {
            if let Some(parsed) = self.parse_head(&target.backend_header, target.head)? {
                break parsed;
            }
            self.read_more().await?;
        };
        self.backend.clear();
        if let Some((from, to)) = backend {
            self.backend.extend_from_slice(&self.buf[from..to]);
        }
        self.start += header_len;
        let body_bytes = match body {
            Body::Length(n) => {
                self.consume_exact(n).await?;
                n
            }
            Body::Chunked => self.consume_chunked().await?,
            Body::UntilClose => self.consume_until_close().await?,
        };
        Ok(Answer {
            status,
            keep_alive: keep_alive && !matches!(body, Body::UntilClose),
            has_backend: backend.is_some(),
            bytes: header_len + body_bytes,
        })
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
    }

    async fn read_more(&mut self) -> Result<(), ErrorKind> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= 1 << 20 {
                return Err(ErrorKind::Parse); // a header section over 1 MiB
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match self.io.read(&mut self.buf[self.filled..]).await {
            Ok(0) => Err(ErrorKind::Closed),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(_) => Err(ErrorKind::Io),
        }
    }

    #[allow(clippy::type_complexity)]
    fn parse_head(
        &self,
        backend_header: &str,
        head: bool,
    ) -> Result<Option<(u16, usize, Body, bool, Option<(usize, usize)>)>, ErrorKind> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let data = &self.buf[self.start..self.filled];
        let header_len = match resp.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ErrorKind::Parse),
        };
        let status = resp.code.ok_or(ErrorKind::Parse)?;
        let mut keep_alive = resp.version == Some(1);
        let mut body = Body::UntilClose;
        let mut backend = None;
        let base = data.as_ptr() as usize;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or(ErrorKind::Parse)?;
                body = Body::Length(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if h.value.eq_ignore_ascii_case(b"chunked") {
                    body = Body::Chunked;
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                if h.value.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            } else if h.name.eq_ignore_ascii_case(backend_header) {
                let from = h.value.as_ptr() as usize - base + self.start;
                backend = Some((from, from + h.value.len()));
            }
        }
        if head || status == 204 || status == 304 || (100..200).contains(&status) {
            body = Body::Length(0);
        }
        Ok(Some((status, header_len, body, keep_alive, backend)))
    }

    async fn consume_exact(&mut self, mut n: usize) -> Result<(), ErrorKind> {
        loop {
            let avail = self.filled - self.start;
            if avail >= n {
                self.start += n;
                return Ok(());
            }
            n -= avail;
            self.start = self.filled;
            self.compact();
            self.read_more().await?;
        }
    }

    async fn consume_chunked(&mut self) -> Result<usize, ErrorKind> {
        let mut total = 0;
        loop {
            // A chunk-size line.
            let line_end = loop {
                if let Some(pos) = self.buf[self.start..self.filled]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                {
                    break self.start + pos;
                }
                self.read_more().await?;
            };
            let line = std::str::from_utf8(&self.buf[self.start..line_end])
                .map_err(|_| ErrorKind::Parse)?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ErrorKind::Parse)?;
            self.start = line_end + 2;
            if size == 0 {
                // Trailers (none expected) end with an empty line.
                self.consume_exact(2).await?;
                return Ok(total);
            }
            self.consume_exact(size + 2).await?;
            total += size;
        }
    }

    async fn consume_until_close(&mut self) -> Result<usize, ErrorKind> {
        let mut total = self.filled - self.start;
        self.start = self.filled;
        loop {
            self.compact();
            match self.io.read(&mut self.buf[self.filled..]).await {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n;
                    self.filled += n;
                    self.start = self.filled;
                }
                Err(_) => return Err(ErrorKind::Io),
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A TLS client configuration: the system roots, a CA file, or no verification at all.
pub fn tls_config(
    insecure: bool,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Arc<ClientConfig>> {
    use anyhow::Context;
    use tokio_rustls::rustls::{self, RootCertStore};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots.add(cert?)?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate (`--insecure`, for self-signed test certificates).
#[derive(Debug)]
struct NoVerify(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Serialise a request.
pub fn serialize_request(
    method: &str,
    path_and_query: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path_and_query} HTTP/1.1\r\n").as_bytes());
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    if !has("user-agent") {
        out.extend_from_slice(b"User-Agent: switchyard-loadtest\r\n");
    }
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method.eq_ignore_ascii_case("POST") || method.eq_ignore_ascii_case("PUT")
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(responses: Vec<&'static [u8]>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            for r in responses {
                let _ = s.read(&mut buf).await;
                s.write_all(r).await.unwrap();
            }
        });
        addr
    }

    fn target(addr: SocketAddr) -> Target {
        Target {
            addr,
            tls: None,
            request: serialize_request("GET", "/", "x", &[], b""),
            head: false,
            backend_header: "x-backend".into(),
        }
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let addr = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nx-backend: b1\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\nX-Backend: b2\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
        ])
        .await;
        let t = target(addr);
        let mut c = Connection::open(&t).await.unwrap();
        let a = c.exchange(&t).await.unwrap();
        assert_eq!((a.status, a.keep_alive), (200, true));
        assert_eq!(c.backend(), b"b1");
        let b = c.exchange(&t).await.unwrap();
        assert_eq!(b.status, 503);
        assert_eq!(c.backend(), b"b2");
        let n = c.exchange(&t).await.unwrap();
        assert_eq!((n.status, n.keep_alive), (204, false));
    }

    #[tokio::test]
    async fn large_bodies_do_not_grow_the_buffer_without_bound() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body = vec![b'x'; 5 << 20];
            s.write_all(
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
            )
            .await
            .unwrap();
            s.write_all(&body).await.unwrap();
        });
        let t = target(addr);
        let mut c = Connection::open(&t).await.unwrap();
        let a = c.exchange(&t).await.unwrap();
        assert_eq!(a.status, 200);
        assert!(a.bytes > 5 << 20);
        assert!(c.buf.len() <= 64 * 1024, "{}", c.buf.len());
    }

    #[test]
    fn requests_carry_host_and_length() {
        let r = String::from_utf8(serialize_request(
            "POST",
            "/x?y=1",
            "h:1",
            &[("X-A".into(), "1".into())],
            b"ab",
        ))
        .unwrap();
        assert!(r.starts_with("POST /x?y=1 HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(r.contains("X-A: 1\r\n") && r.ends_with("Content-Length: 2\r\n\r\nab"));
    }
}
