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

use crate::config::file::StrategyFile;
use crate::config::LatencySettings;
use stats::{BackendStats, StatsRegistry};

/// The configured strategy of a target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    RoundRobin,
    LeastConn,
    Sticky,
    Adaptive,
    P2c,
    Fastest,
}

impl From<StrategyFile> for StrategyKind {
    fn from(s: StrategyFile) -> Self {
        match s {
            StrategyFile::RoundRobin => Self::RoundRobin,
            StrategyFile::LeastConn => Self::LeastConn,
            StrategyFile::Sticky => Self::Sticky,
            StrategyFile::Adaptive => Self::Adaptive,
            StrategyFile::P2c => Self::P2c,
            StrategyFile::Fastest => Self::Fastest,
        }
    }
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
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend>;
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
    fn select(&self, key: &[u8], accept: &dyn Fn(&Backend, bool) -> bool) -> Option<Backend> {
        let selector = self.selector.load();
        let mut iter = selector.iter(key);
        while let Some(b) = iter.next() {
            if accept(b, self.backends.ready(b)) {
                return Some(b.clone());
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
