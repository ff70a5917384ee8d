//! The validated configuration the rest of the program sees.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use super::policy::*;
use crate::edge::rate_limit::RateLimitSettings;
use crate::edge::shed::ShedSettings;
use crate::selection::StrategyKind;

/// Everything Switchyard needs, checked once.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub target_groups: Vec<TargetGroupConfig>,
    pub routes: Vec<Route>,
    /// What to do when no route matches (`None` → 404).
    pub default_action: Option<RouteAction>,
    pub proxy: ProxySettings,
    /// The admin listener, unless disabled.
    pub admin: Option<AdminSettings>,
}

/// The admin listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub address: SocketAddr,
    pub address_text: String,
    /// Record per-request metrics.
    pub metrics: bool,
    /// Whether the runtime API is served.
    pub api: bool,
    /// The bearer-token file that unlocks the runtime API's changes.
    pub token_file: Option<PathBuf>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub address: SocketAddr,
    /// The address as written, which Pingora uses as the key for graceful upgrades.
    pub address_text: String,
    pub kind: ListenerKind,
}

/// What a listener does with connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain HTTP, proxied.
    Plain,
    /// TLS terminated here, then proxied.
    Tls { cert: PathBuf, key: PathBuf },
    /// TLS with a self-signed certificate generated at start.
    SelfSignedTls,
    /// Plain HTTP answered with a redirect to HTTPS.
    RedirectHttps { port: u16, status: u16 },
}

/// Proxy-wide behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub decision_headers: bool,
    /// HTTP/2 without TLS on plain listeners.
    pub h2c: bool,
    pub access_log: bool,
    /// Keep HTTP/1.x header names' case as written (`header_case: preserve`).
    pub preserve_header_case: bool,
    /// Serve HTTP/1.1 requests in Switchyard's own loop (`http1_path: switchyard`, the default).
    pub own_http1_path: bool,
    pub via: Option<String>,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub client_ip: ClientIpSettings,
    /// The `Strict-Transport-Security` value for TLS responses, if enabled.
    pub hsts: Option<String>,
    /// Longest wait for the next bytes of a request body, and the body's initial allowance.
    pub client_body_timeout: Duration,
    /// Slowest accepted average body upload rate (bytes per second; 0 = no floor).
    pub client_body_min_rate: u64,
    /// Longest time to receive a request head, on every request of a connection.
    pub client_header_timeout: Duration,
}

/// Where the client IP comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientIpSettings {
    pub header: Option<String>,
    pub trusted_proxies: Vec<Cidr>,
}

/// One target group.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroupConfig {
    pub name: String,
    pub strategy: StrategyKind,
    /// Static backends (empty when discovered).
    pub backends: Vec<BackendSpec>,
    /// EC2 discovery, when configured instead of static backends.
    pub ec2: Option<Ec2Settings>,
    /// How long a backend that left discovery may finish its in-flight requests.
    pub deregistration_delay: Duration,
    pub health_check: HealthCheckSettings,
    pub passive: PassiveSettings,
    pub fail_open: bool,
    pub timeouts: UpstreamTimeouts,
    pub max_retries: u32,
    pub latency: LatencySettings,
    pub sticky: StickySettings,
    /// Overload shedding, when `max_inflight` is set.
    pub shed: Option<ShedSettings>,
    /// How to talk to the backends.
    pub upstream: UpstreamProtocol,
}

/// The protocol towards a group's backends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpstreamProtocol {
    /// TLS, when `protocol: https`.
    pub tls: Option<UpstreamTls>,
    pub version: ProtocolVersion,
}

/// The HTTP version towards the backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProtocolVersion {
    #[default]
    Http1,
    Http2,
    /// HTTP/2 carrying gRPC: failures are judged by `grpc-status`, health checks use
    /// `grpc.health.v1.Health/Check`, local errors are answered in gRPC form.
    Grpc,
}

impl ProtocolVersion {
    /// Whether it runs over HTTP/2.
    pub fn is_h2(self) -> bool {
        self != ProtocolVersion::Http1
    }
}

/// TLS towards the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA bundle (PEM); `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// SNI and verified name; `None`: the backend's IP address.
    pub server_name: Option<String>,
    /// Client certificate chain and key (mTLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub insecure_skip_verify: bool,
}

/// EC2 discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Settings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    /// (name, values) passed to DescribeInstances, plus `instance-state-name=running`.
    pub filters: Vec<(String, Vec<String>)>,
    pub port: u16,
    pub public_address: bool,
    pub refresh_interval: Duration,
    pub keep_last_on_empty: bool,
}

/// A configured backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub address: SocketAddr,
    pub weight: u32,
}

/// Timeouts towards the backends of a group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long an idle pooled connection is kept.
    pub idle: Duration,
}

/// Active HTTP health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSettings {
    pub enabled: bool,
    pub path: String,
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expected_status: StatusRanges,
}

/// A set of accepted HTTP status ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(pub Vec<(u16, u16)>);

impl StatusRanges {
    /// Whether `status` is accepted.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Passive ejection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassiveSettings {
    pub enabled: bool,
    pub max_failures: u32,
    pub ejection_time: Duration,
}

/// Latency tracking settings shared by the latency-aware strategies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySettings {
    pub decay: Duration,
    pub default_rtt: Duration,
    pub failure_penalty: Duration,
    pub p2c_threshold: usize,
}

impl Default for LatencySettings {
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            failure_penalty: Duration::from_secs(1),
            p2c_threshold: 32,
        }
    }
}

/// How `sticky` keys a client: the LB cookie if configured, else the client IP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StickySettings {
    pub lb_cookie: Option<LbCookie>,
}

/// An LB-generated stickiness cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct LbCookie {
    pub name: String,
    pub max_age: Duration,
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n`, `::1/128` or a bare address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{text}` has a bad prefix length (0..={max})"))?,
            None => max,
        };
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix_len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix_len),
            (IpAddr::V6(n), IpAddr::V4(a)) => {
                prefix_eq(&n.octets(), &a.to_ipv6_mapped().octets(), self.prefix_len)
            }
            (IpAddr::V4(_), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a4) => self.contains(IpAddr::V4(a4)),
                None => false,
            },
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Any path.
    Any,
    /// This exact path.
    Exact(String),
    /// This prefix on a segment boundary.
    Prefix(String),
}

/// One validated routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    pub strip_prefix: bool,
    pub action: RouteAction,
    pub rate_limit: Option<RateLimitSettings>,
    /// Shadow traffic.
    pub mirror: Option<MirrorSettings>,
    /// Fault injection.
    pub fault: Option<FaultSettings>,
}

/// Host matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: the stored suffix is `.example.com`.
    Suffix(String),
}

/// What a route does.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Proxy to the target group at this index of `Config::target_groups`.
    Forward(usize),
    /// Proxy to one of several groups, by weight.
    Split(SplitSettings),
    /// Answer with the load balancer's own health.
    StatusPage,
    /// Answer with a fixed response.
    Fixed {
        status: u16,
        body: String,
        content_type: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        let one = Cidr::parse("10.1.2.3").unwrap();
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        let odd = Cidr::parse("192.168.0.0/23").unwrap();
        assert!(odd.contains("192.168.1.9".parse().unwrap()));
        assert!(!odd.contains("192.168.2.1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        let v6 = Cidr::parse("::1/128").unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
    }

    #[test]
    fn status_ranges() {
        let r = StatusRanges(vec![(200, 399)]);
        assert!(r.contains(200) && r.contains(302));
        assert!(!r.contains(404));
    }
}
