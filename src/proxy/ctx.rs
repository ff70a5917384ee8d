//! Per-request state carried through Pingora's hooks.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::selection::stats::InflightGuard;

/// The key a sticky group hashes on.
#[derive(Debug, Clone, Copy, Default)]
pub enum StickyKey {
    #[default]
    None,
    /// IPv4 (4 bytes) or IPv6 (16 bytes).
    Ip([u8; 16], u8),
    /// A backend id from the LB cookie.
    Cookie([u8; 9]),
}

impl StickyKey {
    pub fn from_ip(ip: IpAddr) -> Self {
        let mut buf = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                StickyKey::Ip(buf, 4)
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::from_ip(IpAddr::V4(v4)),
                None => StickyKey::Ip(v6.octets(), 16),
            },
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            StickyKey::None => &[],
            StickyKey::Ip(b, len) => &b[..*len as usize],
            StickyKey::Cookie(b) => b,
        }
    }
}

/// One attempt at one backend; dropping it ends the backend's in-flight count.
#[derive(Debug)]
pub struct Attempt {
    pub backend: SocketAddr,
    pub guard: InflightGuard,
    pub sent_at: Instant,
    /// Whether this attempt's outcome was already fed to the stats.
    pub recorded: bool,
}

/// State of one request.
#[derive(Debug)]
pub struct RequestCtx {
    pub started: Instant,
    /// Name of the matched route (static, from the config).
    pub route_name: Option<std::sync::Arc<str>>,
    /// Index of the target group, when the route forwards.
    pub group: Option<usize>,
    /// Prefix to strip before forwarding.
    pub strip_prefix: Option<std::sync::Arc<str>>,
    pub sticky_key: StickyKey,
    /// Backend id the client's LB cookie named, if any.
    pub cookie_backend: Option<u64>,
    /// Backends already tried, so a retry goes elsewhere (inline: no allocation).
    pub tried: smallvec::SmallVec<[SocketAddr; 4]>,
    pub attempt: Option<Attempt>,
    /// The last backend chosen (kept after the attempt ends, for logs and headers).
    pub backend: Option<SocketAddr>,
    pub failed_open: bool,
    pub upstream_status: Option<u16>,
    /// Status of a response the proxy wrote itself.
    pub local_status: Option<u16>,
    /// The client's IP (socket peer, or from a trusted proxy's header).
    pub client_ip: Option<IpAddr>,
    /// Admission slot of an overload-limited group, held until the request ends.
    pub slot: Option<crate::edge::shed::Slot>,
    /// Request body bytes seen so far.
    pub body_bytes: u64,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            route_name: None,
            group: None,
            strip_prefix: None,
            sticky_key: StickyKey::None,
            cookie_backend: None,
            tried: smallvec::SmallVec::new(),
            attempt: None,
            backend: None,
            failed_open: false,
            upstream_status: None,
            local_status: None,
            client_ip: None,
            slot: None,
            body_bytes: 0,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.tried.len() as u32
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv6_keys_like_ipv4() {
        let a = StickyKey::from_ip("127.0.0.2".parse().unwrap());
        let b = StickyKey::from_ip("::ffff:127.0.0.2".parse().unwrap());
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.as_bytes().len(), 4);
    }
}
