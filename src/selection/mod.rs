//! Backend selection: one file per strategy, each a Pingora `BackendSelection` (the ranking)
//! plus a [`Strategy`] (what the proxy needs to know about it: the request key it selects by
//! and how it explains a decision), and the shared stats registry that carries feedback from
//! finished requests back to the selectors.
//!
//! | strategy      | first choice                                         | per request |
//! |---------------|------------------------------------------------------|-------------|
//! | `round_robin` | smooth weighted round robin                          | O(1)        |
//! | `least_conn`  | fewest in-flight requests per weight, random ties     | O(n), P2C above `p2c_threshold` |
//! | `sticky`      | consistent hash of the client IP (or LB cookie)      | O(log n)    |
//! | `adaptive`    | lowest peak-EWMA latency × (in-flight + 1) / weight  | O(n), P2C above `p2c_threshold` |
//! | `p2c`         | the better of two random backends by the same score  | O(1)        |
//! | `fastest`     | lowest latency measured by the active probes         | O(n), cached ranking above `p2c_threshold` |
//!
//! Adding a strategy means one file here and one arm in [`StrategyKind`].

pub mod adaptive;
pub mod ewma;
pub mod fastest;
pub mod least_conn;
pub mod members;
pub mod p2c;
pub mod round_robin;
pub mod stats;
pub mod sticky;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora_http::RequestHeader;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;

use crate::config::{LatencySettings, TargetGroupConfig};
use stats::{BackendStats, StatsRegistry};

/// The configured strategy of a target group (`strategy:` in YAML, snake_case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    #[default]
    RoundRobin,
    LeastConn,
    Sticky,
    Adaptive,
    P2c,
    Fastest,
}

impl StrategyKind {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastConn => "least_conn",
            Self::Sticky => "sticky",
            Self::Adaptive => "adaptive",
            Self::P2c => "p2c",
            Self::Fastest => "fastest",
        }
    }

    /// Build the group selector for this strategy.
    pub fn build(self, shared: SharedConfig) -> Arc<dyn GroupSelector> {
        match self {
            Self::RoundRobin => Balancer::<round_robin::RoundRobin>::new(shared),
            Self::LeastConn => Balancer::<least_conn::LeastConn>::new(shared),
            Self::Sticky => Balancer::<sticky::Sticky>::new(shared),
            Self::Adaptive => Balancer::<adaptive::Adaptive>::new(shared),
            Self::P2c => Balancer::<p2c::P2c>::new(shared),
            Self::Fastest => Balancer::<fastest::Fastest>::new(shared),
        }
    }
}

/// One load-balancing strategy: a Pingora `BackendSelection` that ranks a group's members,
/// plus what the proxy needs to know about it.
pub trait Strategy:
    BackendSelection<Config = SharedConfig, Iter: BackendIter> + Send + Sync + 'static
{
    /// The strategy's name in the configuration and in decision headers.
    const NAME: &'static str;

    /// The key this strategy selects by for one request (keyless by default).
    fn request_key(_request: &KeyInput<'_>) -> SelectionKey {
        SelectionKey::default()
    }

    /// The `x-switchyard-decision` text for a backend picked with `inputs`.
    fn explain(inputs: &PickInputs) -> String {
        format!("strategy={}; weight={}", Self::NAME, inputs.weight)
    }

    /// A cookie to set on the response after `picked` served a request keyed `key`.
    fn response_cookie(
        _settings: &TargetGroupConfig,
        _picked: SocketAddr,
        _key: &SelectionKey,
    ) -> Option<String> {
        None
    }
}

/// What a strategy may read to key a request.
pub struct KeyInput<'a> {
    pub request: &'a RequestHeader,
    pub client_ip: Option<IpAddr>,
    pub settings: &'a TargetGroupConfig,
}

/// A selection key held inline (an IPv6 address or a cookie id fits): no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SelectionKey {
    buf: [u8; 17],
    len: u8,
}

impl SelectionKey {
    /// A key of these bytes (at most 17; longer input is cut).
    pub fn new(bytes: &[u8]) -> Self {
        let mut k = Self::default();
        let n = bytes.len().min(k.buf.len());
        k.buf[..n].copy_from_slice(&bytes[..n]);
        k.len = n as u8;
        k
    }

    /// The key of a client address (IPv4-mapped IPv6 keyed like IPv4).
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::new(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::new(&v4.octets()),
                None => Self::new(&v6.octets()),
            },
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// The inputs of a decision, captured when the backend is picked (before the request is
/// counted in flight), for the decision header.
#[derive(Debug, Clone, Copy)]
pub struct PickInputs {
    pub ewma: Duration,
    pub inflight: i64,
    pub weight: usize,
    pub probe: Option<(Duration, bool)>,
}

impl PickInputs {
    /// Capture `stats` of a backend of `weight` as of `now`.
    pub fn capture(stats: &BackendStats, weight: usize, now: Instant) -> Self {
        Self {
            ewma: Duration::from_nanos(stats.ewma_ns(now) as u64),
            inflight: stats.inflight(),
            weight,
            probe: stats.last_probe(),
        }
    }

    /// The EWMA in milliseconds.
    pub fn ewma_ms(&self) -> f64 {
        self.ewma.as_secs_f64() * 1e3
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone)]
pub struct Selected {
    pub addr: SocketAddr,
    pub weight: usize,
    pub stats: Arc<BackendStats>,
}

/// State shared by every selector a group ever builds: it survives rebuilds.
#[derive(Debug)]
pub struct GroupShared {
    pub registry: Arc<StatsRegistry>,
    pub latency: LatencySettings,
    /// Round-robin position, kept across rebuilds so a membership change does not restart it.
    pub rr_cursor: AtomicUsize,
}

impl GroupShared {
    pub fn new(registry: Arc<StatsRegistry>, latency: LatencySettings) -> Arc<Self> {
        Arc::new(Self {
            registry,
            latency,
            rr_cursor: AtomicUsize::new(0),
        })
    }

    /// A standalone instance for selectors built without configuration (tests, benches).
    pub fn standalone() -> Arc<Self> {
        let latency = LatencySettings::default();
        Self::new(Arc::new(StatsRegistry::new(latency)), latency)
    }
}

/// The `Config` every strategy receives on every rebuild.
pub type SharedConfig = Arc<GroupShared>;

/// A group's selector, whatever the strategy.
pub trait GroupSelector: Send + Sync {
    /// The first backend, in strategy order, that `accept` takes.
    fn select(&self, key: &[u8], accept: &dyn Fn(&BackendStats) -> bool) -> Option<Selected>;
    /// Rebuild the ranking over a new membership.
    fn rebuild(&self, members: &BTreeSet<Backend>);
    /// The strategy's key for a request.
    fn request_key(&self, request: &KeyInput<'_>) -> SelectionKey;
    /// The strategy's decision text.
    fn explain(&self, inputs: &PickInputs) -> String;
    /// The strategy's response cookie, if any.
    fn response_cookie(
        &self,
        settings: &TargetGroupConfig,
        picked: SocketAddr,
        key: &SelectionKey,
    ) -> Option<String>;
}

/// A selector of strategy `S`, swapped whole on membership changes. Unlike Pingora's
/// `LoadBalancer`, selection walks the strategy's iterator directly: our iterators never
/// repeat a backend, so no de-duplication set is allocated per request.
pub struct Balancer<S: Strategy> {
    selector: ArcSwap<S>,
    config: SharedConfig,
}

impl<S: Strategy> Balancer<S> {
    /// A balancer with no members yet, as the group's selector.
    #[allow(clippy::new_ret_no_self)] // built only to be used behind the trait
    pub fn new(config: SharedConfig) -> Arc<dyn GroupSelector> {
        let selector = ArcSwap::from_pointee(S::build_with_config(&BTreeSet::new(), &config));
        Arc::new(Self { selector, config })
    }
}

impl<S: Strategy> GroupSelector for Balancer<S> {
    fn select(&self, key: &[u8], accept: &dyn Fn(&BackendStats) -> bool) -> Option<Selected> {
        let selector = self.selector.load();
        let mut iter = selector.iter(key);
        while let Some(b) = iter.next() {
            let Some(stats) = stats::stats_of(b) else {
                continue;
            };
            if accept(stats) {
                // Only the address and the stats handle leave: cloning the whole `Backend`
                // would also clone its extension map (an allocation per request).
                return Some(Selected {
                    addr: stats.addr(),
                    weight: b.weight,
                    stats: stats.clone(),
                });
            }
        }
        None
    }

    fn rebuild(&self, members: &BTreeSet<Backend>) {
        self.selector
            .store(Arc::new(S::build_with_config(members, &self.config)));
    }

    fn request_key(&self, request: &KeyInput<'_>) -> SelectionKey {
        S::request_key(request)
    }

    fn explain(&self, inputs: &PickInputs) -> String {
        S::explain(inputs)
    }

    fn response_cookie(
        &self,
        settings: &TargetGroupConfig,
        picked: SocketAddr,
        key: &SelectionKey,
    ) -> Option<String> {
        S::response_cookie(settings, picked, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PassiveSettings;

    fn set(registry: &StatsRegistry, ports: &[u16]) -> BTreeSet<Backend> {
        ports
            .iter()
            .map(|p| {
                let mut b = Backend::new(&format!("127.0.0.1:{p}")).unwrap();
                registry.attach(&mut b, Instant::now());
                b
            })
            .collect()
    }

    #[test]
    fn stats_survive_membership_changes() {
        let shared = GroupShared::standalone();
        let registry = shared.registry.clone();
        let balancer = StrategyKind::Adaptive.build(shared);
        balancer.rebuild(&set(&registry, &[1, 2]));

        // Backend 1 is measured slow and has a request in flight.
        let one = registry.get(&"127.0.0.1:1".parse().unwrap()).unwrap();
        let passive = PassiveSettings {
            enabled: false,
            max_failures: 5,
            ejection_time: Duration::from_secs(1),
        };
        one.record_failure(Instant::now(), &passive);
        let guard = one.start_request();

        // A backend joins: the selector is rebuilt, the stats are the same objects.
        balancer.rebuild(&set(&registry, &[1, 2, 3]));
        let after = registry.get(&"127.0.0.1:1".parse().unwrap()).unwrap();
        assert!(Arc::ptr_eq(&one, &after));
        assert_eq!(after.inflight(), 1);
        // The rebuilt selector still avoids the slow backend.
        for _ in 0..20 {
            let b = balancer.select(b"", &|_| true).unwrap();
            assert_ne!(b.addr.port(), 1);
        }
        drop(guard);
        assert_eq!(one.inflight(), 0);
    }

    #[test]
    fn keys_hold_addresses_inline() {
        let v4 = SelectionKey::from_ip("127.0.0.2".parse().unwrap());
        let mapped = SelectionKey::from_ip("::ffff:127.0.0.2".parse().unwrap());
        assert_eq!(v4, mapped);
        assert_eq!(v4.as_bytes().len(), 4);
        let v6 = SelectionKey::from_ip("2001:db8::1".parse().unwrap());
        assert_eq!(v6.as_bytes().len(), 16);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// `n` backends on 127.0.0.1:10000.. with stats attached from `shared`'s registry.
    pub fn backends(n: u16, shared: &GroupShared) -> BTreeSet<Backend> {
        (0..n)
            .map(|i| {
                let mut b = Backend::new(&format!("127.0.0.1:{}", 10000 + i)).unwrap();
                shared.registry.attach(&mut b, Instant::now());
                b
            })
            .collect()
    }

    /// Pick `rounds` times and count picks per port.
    pub fn tally<S>(
        sel: &Arc<S>,
        rounds: usize,
        key: &[u8],
    ) -> std::collections::HashMap<u16, usize>
    where
        S: BackendSelection,
        S::Iter: BackendIter,
    {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..rounds {
            let mut it = sel.iter(key);
            let b = it.next().expect("a backend");
            *counts.entry(b.addr.as_inet().unwrap().port()).or_default() += 1;
        }
        counts
    }
}
