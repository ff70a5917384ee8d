//! The configuration file as the user writes it: serde structs that mirror the YAML.
//!
//! Pingora's own server keys live at the top level beside ours. Pingora ignores unknown keys,
//! so a typo there would pass silently; we list Pingora's keys here and deny everything else,
//! which makes a misspelt key an error that names the key and its line.

use std::time::Duration;

use serde::Deserialize;

pub use super::policy_file::*;

/// Pingora's `ServerConf` keys, read by Pingora itself from the same file. Pingora ignores
/// unknown keys, so a typo there would pass silently: every top-level key must be one of these
/// or one of [`SWITCHYARD_KEYS`].
pub const PINGORA_KEYS: &[&str] = &[
    "version",
    "daemon",
    "error_log",
    "pid_file",
    "upgrade_sock",
    "user",
    "group",
    "working_directory",
    "threads",
    "listener_tasks_per_fd",
    "work_stealing",
    "runtime_enable_alt_timer",
    "runtime_global_queue_interval",
    "ca_file",
    "grace_period_seconds",
    "graceful_shutdown_timeout_seconds",
    "client_bind_to_ipv4",
    "client_bind_to_ipv6",
    "upstream_keepalive_pool_size",
    "upstream_connect_offload_threadpools",
    "upstream_connect_offload_thread_per_pool",
    "downstream_tls_offload_threadpools",
    "downstream_tls_offload_thread_per_pool",
    "upstream_debug_ssl_keylog",
    "max_retries",
    "upgrade_sock_connect_accept_max_retries",
    "max_blocking_threads",
    "blocking_threads_ttl_seconds",
    "fast_timeout_to_tokio_threshold_seconds",
    "runtime_metrics_poll_time_histogram",
    "runtime_metrics_poll_time_histogram_scale",
    "runtime_metrics_poll_time_histogram_resolution_micros",
    "runtime_metrics_poll_time_histogram_buckets",
    "daemon_wait_for_ready",
    "daemon_ready_timeout_seconds",
    "daemon_notify_timeout_seconds",
];

/// Switchyard's own top-level keys.
pub const SWITCHYARD_KEYS: &[&str] = &[
    "listeners",
    "target_groups",
    "routes",
    "default_target_group",
    "proxy",
    "admin",
];

/// Switchyard's part of the file, read section by section (and list item by list item) so
/// that one bad item does not hide the errors of the others. Each item keeps its index in the
/// file for error paths.
#[derive(Debug, Default)]
pub struct FileConfig {
    /// Where the proxy accepts client traffic.
    pub listeners: Vec<(usize, ListenerFile)>,
    /// Whether a `listeners` list was given at all (possibly with bad items).
    pub listeners_given: usize,
    /// Named pools of backends.
    pub target_groups: Vec<(usize, TargetGroupFile)>,
    /// Names of groups whose item could not be read: routes naming them are not flagged too.
    pub unreadable_groups: Vec<String>,
    /// Ordered routing rules; the first match wins.
    pub routes: Vec<(usize, RouteFile)>,
    /// Group for requests that match no route; without it they get 404.
    pub default_target_group: Option<String>,
    /// Proxy-wide behaviour.
    pub proxy: ProxyFile,
    /// The admin listener: metrics, status API and dashboard.
    pub admin: AdminFile,
}

/// The admin listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Serve the admin endpoints at all (default true).
    pub enabled: Option<bool>,
    /// `ip:port` (default `127.0.0.1:9091`); never one of the proxy listeners.
    pub address: Option<String>,
    /// Record per-request metrics (default true).
    pub metrics: Option<bool>,
    /// The runtime API (reload, drain, weights, backends) on the admin listener (default
    /// true; it needs `token_file` to accept any change).
    pub api: Option<bool>,
    /// A file holding the bearer token that every change through the runtime API must carry.
    pub token_file: Option<String>,
}

/// One listening socket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// `ip:port` to bind, e.g. `0.0.0.0:8080` or `[::1]:8080`.
    pub address: String,
    /// Terminate TLS on this listener.
    pub tls: Option<ListenerTlsFile>,
    /// Answer every request with a permanent redirect to HTTPS instead of proxying.
    pub redirect_https: Option<RedirectFile>,
}

/// TLS settings of a listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key.
    pub key: Option<String>,
    /// Generate a self-signed certificate for localhost at start (development only).
    #[serde(default)]
    pub self_signed: bool,
}

/// Redirect settings of a plain-HTTP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectFile {
    /// The HTTPS port to send clients to (default 443).
    pub port: Option<u16>,
    /// 301 or 308 (default 308: permanent, keeps method and body).
    pub status: Option<u16>,
}

/// Proxy-wide settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// Add `x-switchyard-backend` and `x-switchyard-decision` to responses (default false).
    #[serde(default)]
    pub decision_headers: bool,
    /// Accept HTTP/2 without TLS (h2c, prior knowledge) on plain listeners, e.g. for gRPC
    /// clients inside a network (default false: plain listeners speak HTTP/1.1).
    #[serde(default)]
    pub h2c: bool,
    /// Write one access-log line per request through the `log` crate (default true).
    pub access_log: Option<bool>,
    /// How HTTP/1.x header names are written when forwarded: `preserve` (default) as the
    /// client or backend wrote them; `lowercase` in lowercase as HAProxy and Envoy send them
    /// (but for a dozen names Pingora writes in their usual case: `Host`, `Content-Length`,
    /// `Content-Type`, `Date`, `Server`, `Set-Cookie`, …), which saves a second header map
    /// per request and per response. Fixed at start.
    pub header_case: Option<HeaderCaseFile>,
    /// Which code serves HTTP/1.x requests: `switchyard` (default), Switchyard's own lean loop
    /// for a strict subset of HTTP/1.1 (no body or a small one framed by `Content-Length`, to
    /// target groups that speak HTTP/1), which hands any other request, and the rest of its
    /// connection, to Pingora's loop; or `pingora`, Pingora's HTTP/1 proxy loop for every
    /// request. Fixed at start.
    pub http1_path: Option<Http1PathFile>,
    /// Value of the `Via` header added upstream and downstream (default `switchyard`;
    /// empty string disables it).
    pub via: Option<String>,
    /// Largest request header section accepted, in bytes (default 32768); larger gets 431.
    pub max_header_bytes: Option<usize>,
    /// Largest request body accepted, in bytes (default 10485760); larger gets 413.
    pub max_body_bytes: Option<u64>,
    /// How to find the client's IP behind other proxies.
    #[serde(default)]
    pub client_ip: ClientIpFile,
    /// Add `Strict-Transport-Security` to responses sent over TLS.
    pub hsts: Option<HstsFile>,
    /// Longest time from connecting to the end of the first request head (default 10s);
    /// slower clients (slowloris) are disconnected.
    #[serde(default, with = "humantime_serde")]
    pub client_header_timeout: Option<Duration>,
    /// Longest wait for the next bytes of a request body (default 30s); slower clients get 408.
    #[serde(default, with = "humantime_serde")]
    pub client_body_timeout: Option<Duration>,
    /// Slowest accepted average upload rate of a request body, in bytes per second (default
    /// 500, as Apache's `MinRate`): the body's deadline is `client_body_timeout` plus one
    /// second per this many bytes received. 0 turns the rate floor off.
    pub client_body_min_rate: Option<u64>,
}

/// Where the client IP comes from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpFile {
    /// Header carrying the client IP (e.g. `X-Forwarded-For`), honoured only from
    /// `trusted_proxies`.
    pub header: Option<String>,
    /// CIDRs of proxies allowed to set `header`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// HTTP Strict Transport Security.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsFile {
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(default)]
    pub include_subdomains: bool,
}

/// A named pool of backends and how to choose among them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroupFile {
    pub name: String,
    #[serde(default)]
    pub strategy: crate::selection::StrategyKind,
    /// Static backends (or use `ec2`).
    #[serde(default)]
    pub backends: Vec<BackendFile>,
    /// Discover backends among EC2 instances instead of listing them.
    pub ec2: Option<Ec2File>,
    /// How long a backend that left discovery keeps finishing its in-flight requests
    /// (default 300s, as an ALB's deregistration delay).
    #[serde(default, with = "humantime_serde")]
    pub deregistration_delay: Option<Duration>,
    #[serde(default)]
    pub health_check: HealthCheckFile,
    #[serde(default)]
    pub passive_health: PassiveHealthFile,
    /// Send to every backend when none is healthy (default true, as an ALB does).
    pub fail_open: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Extra attempts on other backends after a failed one (default 2).
    pub max_retries: Option<u32>,
    /// Latency tracking for `adaptive`, `p2c` and `fastest`.
    #[serde(default)]
    pub latency: LatencyFile,
    /// Options of the `sticky` strategy.
    #[serde(default)]
    pub sticky: StickyFile,
    /// At most this many requests in flight to the group; more wait in `queue` or get 503.
    pub max_inflight: Option<usize>,
    /// The wait queue used with `max_inflight`.
    pub queue: Option<QueueFile>,
    /// `http` (default) or `https` to the backends.
    pub protocol: Option<ProtocolFile>,
    /// `http1` (default), `http2` (over TLS by ALPN, or cleartext h2c) or `grpc`.
    pub protocol_version: Option<ProtocolVersionFile>,
    /// How to verify the backends (and show who we are) with `protocol: https`.
    pub tls: Option<BackendTlsFile>,
}

/// Which code serves HTTP/1.x requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Http1PathFile {
    Pingora,
    Switchyard,
}

/// How forwarded HTTP/1.x header names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderCaseFile {
    Preserve,
    Lowercase,
}

/// The transport to the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolFile {
    Http,
    Https,
}

/// The HTTP version to the backends (names as an ALB's target groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolVersionFile {
    Http1,
    Http2,
    Grpc,
}

/// TLS towards the backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsFile {
    /// PEM bundle of the CAs that sign the backends' certificates (default: the system's).
    pub ca_file: Option<String>,
    /// Name sent as SNI and verified in the backends' certificates (default: the backend's
    /// IP address).
    pub server_name: Option<String>,
    /// PEM certificate chain presented to backends that ask for one (mTLS).
    pub client_cert: Option<String>,
    /// Its private key.
    pub client_key: Option<String>,
    /// Do not verify the backends' certificates at all: development only (`-t` warns).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A bounded wait queue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    /// Requests allowed to wait (default 0: reject at once).
    pub size: Option<usize>,
    /// Longest wait before 503 (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// EC2 discovery, in the spirit of Prometheus' `ec2_sd_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2File {
    /// AWS region (default: the SDK's default chain).
    pub region: Option<String>,
    /// Endpoint override, e.g. an EC2 API emulator for tests.
    pub endpoint: Option<String>,
    /// Named profile from the shared AWS config files.
    pub profile: Option<String>,
    /// Role to assume with STS.
    pub role_arn: Option<String>,
    /// DescribeInstances filters, e.g. `{name: "tag:Cluster", values: ["Cluster1"]}`.
    #[serde(default)]
    pub filters: Vec<Ec2FilterFile>,
    /// Port of the service on each instance (default 80).
    pub port: Option<u16>,
    /// `private` (default) or `public` IP address.
    pub address: Option<Ec2AddressFile>,
    /// How often to call DescribeInstances (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub refresh_interval: Option<Duration>,
    /// Keep the last good set when an answer is empty (default true).
    pub keep_last_on_empty: Option<bool>,
}

/// One DescribeInstances filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2FilterFile {
    pub name: String,
    pub values: Vec<String>,
}

/// Which instance address to use.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ec2AddressFile {
    Private,
    Public,
}

/// One backend address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// `ip:port`.
    pub address: String,
    /// Relative share of traffic (default 1).
    pub weight: Option<u32>,
}

/// Active HTTP health check settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    /// Host header of the probe (default: the backend address).
    pub host: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    /// Accepted statuses, e.g. `"200-399"` or `"200,204"`.
    pub expected_status: Option<String>,
}

/// Passive ejection of backends that fail live requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthFile {
    pub enabled: Option<bool>,
    /// Consecutive failed requests (connect errors, timeouts, 502/503/504) before ejection.
    pub max_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub ejection_time: Option<Duration>,
}

/// Latency tracking settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyFile {
    /// Peak-EWMA decay time (default 10s, as Finagle and Linkerd).
    #[serde(default, with = "humantime_serde")]
    pub decay: Option<Duration>,
    /// Latency assumed for a backend never measured (default 30ms, as Linkerd).
    #[serde(default, with = "humantime_serde")]
    pub default_rtt: Option<Duration>,
    /// Latency charged for a failed request (connect error, timeout, 5xx, 429) (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub failure_penalty: Option<Duration>,
    /// Above this many backends, `adaptive` and `least_conn` sample two backends (P2C)
    /// instead of scanning all (default 32).
    pub p2c_threshold: Option<usize>,
}

/// How `sticky` identifies a client (by default the client IP, see `proxy.client_ip`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    /// ALB-style LB cookie instead of the client IP.
    pub lb_cookie: Option<LbCookieFile>,
}

/// A load-balancer-generated stickiness cookie.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbCookieFile {
    /// Cookie name (default `SWITCHYARD`).
    pub name: Option<String>,
    /// Lifetime (default 1 day, as an ALB).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// One routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name shown in logs and metrics (default: derived from the match).
    pub name: Option<String>,
    /// Host to match (case-insensitive, port ignored); `*.example.com` matches subdomains.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries: `/api` matches `/api` and `/api/x`,
    /// not `/apix`.
    pub path_prefix: Option<String>,
    /// Exact path.
    pub path: Option<String>,
    /// Send matching requests to this target group.
    pub target_group: Option<String>,
    /// Remove the matched prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Answer with the load balancer's own health status.
    #[serde(default)]
    pub status_page: bool,
    /// Answer with a fixed response.
    pub fixed_response: Option<FixedResponseFile>,
    /// Token-bucket rate limit for this route.
    pub rate_limit: Option<RateLimitFile>,
    /// Split requests over several target groups by weight (instead of `target_group`).
    pub forward: Option<Vec<ForwardFile>>,
    /// With `forward`: keep each client on the group it was given.
    pub stickiness: Option<StickinessFile>,
    /// With a two-group `forward`: shift weight to the canary step by step while it is as
    /// healthy as the baseline; roll back at once when it is not.
    pub canary: Option<CanaryFile>,
    /// Copy a share of the requests to another group (shadow traffic).
    pub mirror: Option<MirrorFile>,
    /// Inject delays and errors (chaos testing).
    pub fault: Option<FaultFile>,
}

/// A route's rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Requests per second (token refill rate).
    pub rate: f64,
    /// Requests allowed at once after a quiet period (default: `rate`, at least 1).
    pub burst: Option<f64>,
    /// `client_ip` (default) or `global`.
    pub key: Option<RateKeyFile>,
    /// Bound on client buckets kept in memory (default 100000).
    pub max_keys: Option<usize>,
    /// Share the buckets with every node using this store: `redis://host:port/db`.
    pub store: Option<String>,
    /// Longest wait for the store on the request path (default 50ms); then local buckets.
    #[serde(default, with = "humantime_serde")]
    pub store_timeout: Option<Duration>,
    /// Nodes sharing the limit (default 1): each node's fallback gets `rate / expected_nodes`.
    pub expected_nodes: Option<u32>,
}

/// What a rate limit is keyed by.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKeyFile {
    ClientIp,
    Global,
}

/// A fixed answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedResponseFile {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    pub content_type: Option<String>,
}
