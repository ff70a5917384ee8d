//! Backend selection: one file per strategy, all behind Pingora's `BackendSelection` and
//! `BackendIter` traits, plus the shared stats registry that carries feedback from finished
//! requests back to the selectors.
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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::{Backend, Backends};

use crate::config::LatencySettings;
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

    /// Build the group selector for this strategy over `backends`.
    pub fn build(self, backends: Backends, shared: SharedConfig) -> Arc<dyn GroupSelector> {
        match self {
            Self::RoundRobin => {
                Arc::new(Balancer::<round_robin::RoundRobin>::new(backends, shared))
            }
            Self::LeastConn => Arc::new(Balancer::<least_conn::LeastConn>::new(backends, shared)),
            Self::Sticky => Arc::new(Balancer::<sticky::Sticky>::new(backends, shared)),
            Self::Adaptive => Arc::new(Balancer::<adaptive::Adaptive>::new(backends, shared)),
            Self::P2c => Arc::new(Balancer::<p2c::P2c>::new(backends, shared)),
            Self::Fastest => Arc::new(Balancer::<fastest::Fastest>::new(backends, shared)),
        }
    }

    /// The inputs of this strategy's decision for `stats`, for the decision header.
    pub fn explain(self, stats: &BackendStats, now: Instant) -> String {
        let ewma_ms = stats.ewma_ns(now) / 1e6;
        let inflight = stats.inflight();
        match self {
            Self::RoundRobin | Self::Sticky => format!("strategy={}", self.name()),
            Self::LeastConn => format!("strategy=least_conn; inflight={inflight}"),
            Self::Adaptive | Self::P2c => format!(
                "strategy={}; ewma_ms={ewma_ms:.2}; inflight={inflight}; score={:.2}",
                self.name(),
                ewma_ms * (inflight as f64 + 1.0)
            ),
            Self::Fastest => match stats.last_probe() {
                Some((d, ok)) => format!(
                    "strategy=fastest; probe_ms={:.2}; probe_ok={ok}",
                    d.as_secs_f64() * 1e3
                ),
                None => "strategy=fastest; probe_ms=none".to_string(),
            },
        }
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone)]
pub struct Selected {
    pub addr: std::net::SocketAddr,
    /// The backend's stats, when attached by discovery.
    pub stats: Option<Arc<BackendStats>>,
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
    pub fn new(registry: Arc<StatsRegistry>) -> Arc<Self> {
        let latency = *registry.latency();
        Arc::new(Self {
            registry,
            latency,
            rr_cursor: AtomicUsize::new(0),
        })
    }

    /// A standalone instance for selectors built without configuration (tests, benches).
    pub fn standalone() -> Arc<Self> {
        Self::new(Arc::new(StatsRegistry::new(LatencySettings::default())))
    }
}

/// The `Config` every strategy receives on every rebuild.
pub type SharedConfig = Arc<GroupShared>;

/// A group's selector with its membership and health, whatever the strategy.
#[async_trait]
pub trait GroupSelector: Send + Sync {
    /// The first backend, in strategy order, that `accept(backend, healthy)` takes.
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Selected>;
    /// Membership and health.
    fn backends(&self) -> &Backends;
    /// Run discovery; rebuild the selector if membership changed. Returns whether it did.
    async fn update(&self) -> pingora_error::Result<bool>;
}

/// Pingora's `Backends` (discovery + health) plus a selector of strategy `S` that is
/// rebuilt on membership changes. Unlike `LoadBalancer`, selection walks the strategy's
/// iterator directly: our iterators never repeat a backend, so no de-duplication set is
/// allocated per request.
pub struct Balancer<S: BackendSelection> {
    backends: Backends,
    selector: ArcSwap<S>,
    config: S::Config,
}

impl<S> Balancer<S>
where
    S: BackendSelection<Config = SharedConfig> + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    /// A balancer over `backends` (already discovered or not).
    pub fn new(backends: Backends, config: SharedConfig) -> Self {
        let selector =
            ArcSwap::from_pointee(S::build_with_config(&backends.get_backend(), &config));
        Self {
            backends,
            selector,
            config,
        }
    }
}

#[async_trait]
impl<S> GroupSelector for Balancer<S>
where
    S: BackendSelection<Config = SharedConfig> + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Selected> {
        let selector = self.selector.load();
        let mut iter = selector.iter(key);
        while let Some(b) = iter.next() {
            if accept(b, self.backends.ready(b)) {
                // Only the address and the stats handle leave: cloning the whole `Backend`
                // would also clone its extension map (an allocation per request).
                let addr = *b.addr.as_inet()?;
                return Some(Selected {
                    addr,
                    stats: stats::stats_of(b).cloned(),
                });
            }
        }
        None
    }

    fn backends(&self) -> &Backends {
        &self.backends
    }

    async fn update(&self) -> pingora_error::Result<bool> {
        let changed = AtomicBool::new(false);
        self.backends
            .update(|new| {
                self.selector
                    .store(Arc::new(S::build_with_config(&new, &self.config)));
                changed.store(true, Ordering::Relaxed);
            })
            .await?;
        Ok(changed.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::stats::Outcome;
    use super::*;
    use crate::config::{BackendSpec, PassiveSettings};
    use crate::discovery::StaticList;
    use std::collections::{BTreeSet, HashMap};
    use std::time::Duration;

    /// A discovery whose membership the test changes, like EC2 discovery would.
    struct Changing {
        specs: parking_lot::Mutex<Vec<BackendSpec>>,
        registry: Arc<StatsRegistry>,
    }

    #[async_trait]
    impl pingora_load_balancing::discovery::ServiceDiscovery for Changing {
        async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
            let specs = self.specs.lock().clone();
            StaticList::new(specs, self.registry.clone())
                .discover()
                .await
        }
    }

    fn spec(port: u16) -> BackendSpec {
        BackendSpec {
            address: ([127, 0, 0, 1], port).into(),
            weight: 1,
        }
    }

    #[tokio::test]
    async fn stats_survive_membership_changes() {
        let registry = Arc::new(StatsRegistry::new(LatencySettings::default()));
        let discovery = Arc::new(Changing {
            specs: parking_lot::Mutex::new(vec![spec(1), spec(2)]),
            registry: registry.clone(),
        });
        struct Shared(Arc<Changing>);
        #[async_trait]
        impl pingora_load_balancing::discovery::ServiceDiscovery for Shared {
            async fn discover(
                &self,
            ) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
                self.0.discover().await
            }
        }
        let backends = Backends::new(Box::new(Shared(discovery.clone())));
        let balancer = StrategyKind::Adaptive.build(backends, GroupShared::new(registry.clone()));
        assert!(balancer.update().await.unwrap());

        // Backend 1 is measured slow and has a request in flight.
        let one = registry.get(&spec(1).address).unwrap();
        let passive = PassiveSettings {
            enabled: false,
            max_failures: 5,
            ejection_time: Duration::from_secs(1),
        };
        one.record(
            Outcome::Success(Duration::from_millis(400)),
            std::time::Instant::now(),
            &passive,
        );
        let guard = one.start_request();

        // A backend joins: the selector is rebuilt, the stats are the same objects.
        discovery.specs.lock().push(spec(3));
        assert!(balancer.update().await.unwrap(), "membership changed");
        let after = registry.get(&spec(1).address).unwrap();
        assert!(Arc::ptr_eq(&one, &after));
        assert_eq!(after.inflight(), 1);
        assert!(after.ewma_ns(std::time::Instant::now()) > 300e6);
        // The rebuilt selector still avoids the slow backend.
        for _ in 0..20 {
            let b = balancer.select(b"", &|_, _| true).unwrap();
            assert_ne!(b.addr.port(), 1);
        }
        // A backend leaves and comes back within the retention: its stats are kept.
        discovery.specs.lock().retain(|s| s.address.port() != 1);
        assert!(balancer.update().await.unwrap());
        registry.retain_members(
            &[spec(2).address, spec(3).address],
            Duration::from_secs(300),
            std::time::Instant::now(),
        );
        drop(guard);
        discovery.specs.lock().push(spec(1));
        assert!(balancer.update().await.unwrap());
        assert!(Arc::ptr_eq(&one, &registry.get(&spec(1).address).unwrap()));
        assert_eq!(one.inflight(), 0);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::collections::BTreeSet;

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
