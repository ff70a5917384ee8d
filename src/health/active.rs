//! Active health checks in the group's own protocol (HTTP/1.1 or HTTP/2, plain or TLS), each
//! on a new connection, so a check proves a client can connect now:
//!
//! - HTTP: `GET path` with the configured `Host`, passing when the status is accepted;
//! - gRPC: the standard health-checking protocol, `grpc.health.v1.Health/Check` for the whole
//!   server, passing when it answers `SERVING` with `grpc-status: 0`.
//!
//! The probe itself is all this module does; the group times it, keeps the rise/fall state in
//! each backend's stats ([`super::HealthState`]) and reports flips.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;

use crate::config::{HealthCheckSettings, StatusRanges};
use crate::edge::upstream_tls::UpstreamPeers;

/// The gRPC health-check method (grpc/grpc `doc/health-checking.md`).
pub const GRPC_HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// A `HealthCheckRequest` for the whole server (`service: ""`): an empty message, framed.
const GRPC_EMPTY_REQUEST: [u8; 5] = [0, 0, 0, 0, 0];

/// A probe of one group.
pub struct ProbeCheck {
    peers: Arc<UpstreamPeers>,
    connector: Arc<Connector>,
    host: String,
    path: String,
    expected: StatusRanges,
    grpc: bool,
    timeout: std::time::Duration,
}

impl ProbeCheck {
    /// A check for group `group` with `settings`, reaching backends through `peers`. The
    /// probe's `Host` header is the configured host or, as Envoy does, the group's name.
    pub fn new(
        group: &str,
        settings: &HealthCheckSettings,
        peers: Arc<UpstreamPeers>,
        grpc: bool,
    ) -> Self {
        Self {
            peers,
            connector: crate::edge::upstream_tls::shared_connector(),
            host: settings.host.clone().unwrap_or_else(|| group.to_string()),
            path: settings.path.clone(),
            expected: settings.expected_status.clone(),
            grpc,
            timeout: settings.timeout,
        }
    }

    async fn probe(&self, addr: SocketAddr) -> pingora_error::Result<()> {
        let mut peer = self.peers.peer(addr);
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeout);
        o.total_connection_timeout = Some(self.timeout);
        o.read_timeout = Some(self.timeout);
        o.write_timeout = Some(self.timeout);
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        session.set_write_timeout(Some(self.timeout));
        session.set_read_timeout(Some(self.timeout));
        if self.grpc {
            self.grpc_check(&mut session).await
        } else {
            self.http_check(&mut session).await
        }
    }

    async fn http_check(&self, session: &mut HttpSession) -> pingora_error::Result<()> {
        let mut req = RequestHeader::build("GET", self.path.as_bytes(), None)?;
        req.insert_header("host", &self.host)?;
        self.set_authority(&mut req, session);
        req.insert_header("user-agent", "switchyard-health-check")?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        while session.read_response_body().await?.is_some() {}
        if self.expected.contains(status) {
            Ok(())
        } else {
            Error::e_explain(
                ErrorType::CustomCode("unexpected health-check status", status),
                "during http health check",
            )
        }
    }

    /// HTTP/2 carries the host in the `:authority` pseudo-header, taken from the URI: as
    /// Pingora's proxy does, make the URI absolute (`scheme://host/path`).
    fn set_authority(&self, req: &mut RequestHeader, session: &HttpSession) {
        if !matches!(session, HttpSession::H2(_)) {
            return;
        }
        let scheme = if self.peers.is_tls() { "https" } else { "http" };
        let path = req
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        if let Ok(uri) = format!("{scheme}://{}{path}", self.host).parse() {
            req.set_uri(uri);
        }
    }

    async fn grpc_check(&self, session: &mut HttpSession) -> pingora_error::Result<()> {
        let mut req = RequestHeader::build("POST", GRPC_HEALTH_PATH.as_bytes(), None)?;
        req.insert_header("content-type", "application/grpc")?;
        req.insert_header("te", "trailers")?;
        req.insert_header("user-agent", "switchyard-health-check")?;
        self.set_authority(&mut req, session);
        session.write_request_header(Box::new(req)).await?;
        session
            .write_request_body(Bytes::from_static(&GRPC_EMPTY_REQUEST), true)
            .await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let head = session.response_header().cloned();
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
        }
        let trailers = match session {
            HttpSession::H2(h2) => h2.read_trailers().await?,
            _ => None,
        };
        let grpc_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.as_ref().and_then(|h| h.headers.get("grpc-status")))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        match (grpc_status, serving(&body)) {
            (Some(0), true) => Ok(()),
            (Some(0), false) => Error::e_explain(
                ErrorType::Custom("grpc health"),
                "the server is not SERVING",
            ),
            (code, _) => Error::e_explain(
                ErrorType::Custom("grpc health"),
                format!(
                    "grpc-status {}",
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "missing".into())
                ),
            ),
        }
    }
}

/// Whether a framed `HealthCheckResponse` says `SERVING` (field 1, varint 1).
fn serving(framed: &[u8]) -> bool {
    matches!(framed, [0, 0, 0, 0, 2, 0x08, 0x01, ..])
}

#[async_trait]
impl HealthCheck for ProbeCheck {
    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        let addr = target
            .addr
            .as_inet()
            .copied()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "not an IP backend"))?;
        match tokio::time::timeout(self.timeout, self.probe(addr)).await {
            Ok(result) => result,
            Err(_) => Error::e_explain(ErrorType::ConnectTimedout, "health check timed out"),
        }
    }

    /// Thresholds are applied by [`super::HealthState`]; each probe counts once here.
    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serving_passes() {
        assert!(serving(&[0, 0, 0, 0, 2, 0x08, 0x01]));
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08, 0x02]), "NOT_SERVING");
        assert!(!serving(&[0, 0, 0, 0, 0]), "UNKNOWN (default)");
    }
}
