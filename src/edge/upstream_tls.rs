//! How the proxy reaches a group's backends: plain or TLS, HTTP/1.1 or HTTP/2 (and gRPC),
//! with the group's timeouts. One [`UpstreamPeers`] per group builds the Pingora peer of every
//! attempt, every health probe and every shadow copy, so all three speak the same protocol.
//!
//! TLS is verified by default, against the system's roots or the group's `ca_file`, for the
//! group's `server_name` or else the backend's IP address (never without a name: Pingora would
//! then verify nothing). A client certificate is presented when configured (mTLS).
//! `insecure_skip_verify` turns verification off (and `-t` says so).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{CertKey, WrappedX509};

use crate::config::{ProtocolVersion, TargetGroupConfig, UpstreamTls};

/// The connector that health probes and shadow copies share (the proxy's own attempts use
/// Pingora's). Building one loads the system's root certificates, about 10 ms: once per
/// process rather than per group at every start and reload, or on a mirrored request.
pub fn shared_connector() -> Arc<Connector> {
    static SHARED: OnceLock<Arc<Connector>> = OnceLock::new();
    SHARED
        .get_or_init(|| Arc::new(Connector::new(None)))
        .clone()
}

/// Streams multiplexed on one HTTP/2 connection to a backend.
pub const H2_STREAMS: usize = 100;

/// The peers of one group.
pub struct UpstreamPeers {
    template: HttpPeer,
    tls: bool,
    /// The name verified; `None`: each backend's IP address.
    server_name: Option<String>,
}

impl UpstreamPeers {
    /// The peer template of `config`; reads its CA bundle and client certificate.
    pub fn load(config: &TargetGroupConfig) -> anyhow::Result<Self> {
        let tls = config.upstream.tls.as_ref();
        let mut template = HttpPeer::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            tls.is_some(),
            String::new(),
        );
        let t = config.timeouts;
        let o = &mut template.options;
        o.connection_timeout = Some(t.connect);
        o.total_connection_timeout = Some(t.connect);
        o.read_timeout = Some(t.read);
        o.write_timeout = Some(t.write);
        o.idle_timeout = Some(t.idle);
        if config.upstream.version.is_h2() {
            // Over TLS: ALPN h2; over plain TCP: h2c with prior knowledge.
            o.alpn = ALPN::H2;
            o.max_h2_streams = H2_STREAMS;
        } else {
            o.alpn = ALPN::H1;
        }
        if let Some(tls) = tls {
            apply_tls(&mut template, tls)
                .with_context(|| format!("group {}: backend TLS", config.name))?;
        }
        Ok(Self {
            tls: tls.is_some(),
            server_name: tls.and_then(|t| t.server_name.clone()),
            template,
        })
    }

    /// Whether backends are reached over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The peer for `addr`.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = self.template.clone();
        peer._address = pingora_core::protocols::l4::socket::SocketAddr::Inet(addr);
        if self.tls {
            peer.sni = match &self.server_name {
                Some(name) => name.clone(),
                None => addr.ip().to_string(),
            };
        }
        peer
    }

    /// Whether the group speaks gRPC (from `config`).
    pub fn is_grpc(config: &TargetGroupConfig) -> bool {
        config.upstream.version == ProtocolVersion::Grpc
    }
}

fn apply_tls(peer: &mut HttpPeer, tls: &UpstreamTls) -> anyhow::Result<()> {
    if tls.insecure_skip_verify {
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
    } else {
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
    }
    if let Some(ca) = &tls.ca_file {
        let certs: Vec<WrappedX509> = read_certs(ca)?
            .into_iter()
            .map(|der| WrappedX509::new(der, pingora_core::utils::tls::parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(certs.into_boxed_slice()));
    }
    if let Some((cert, key)) = &tls.client_cert {
        let chain = read_certs(cert)?;
        let key = read_key(key)?;
        peer.client_cert_key = Some(Arc::new(CertKey::new(chain, key)));
    }
    Ok(())
}

/// Every certificate of a PEM file, as DER, each checked to parse (Pingora would panic).
fn read_certs(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs: Vec<Vec<u8>> = rustls_pemfile::certs(&mut bytes.as_slice())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    for der in &certs {
        x509_parser::parse_x509_certificate(der).map_err(|e| {
            anyhow::anyhow!("{}: a certificate does not parse: {e}", path.display())
        })?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(key)) => Ok(key.secret_der().to_vec()),
        Ok(None) => anyhow::bail!("{} holds no PEM private key", path.display()),
        Err(e) => anyhow::bail!("{} is not a PEM key file: {e}", path.display()),
    }
}

/// Check the PEM file of `key` (`ca_file`, `client_cert` or `client_key`) for the validation
/// pass.
pub fn check_pem(path: &Path, key: &str) -> Result<(), String> {
    let result = if key == "client_key" {
        read_key(path).map(|_| ())
    } else {
        read_certs(path).map(|_| ())
    };
    result.map_err(|e| format!("{e:#}"))
}
