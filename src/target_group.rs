//! A target group at run time: its backends, health, selector and stats, and the rules for
//! picking a backend for one attempt (health, passive ejection, retries, fail-open).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_load_balancing::{Backend, Backends};

use crate::config::TargetGroupConfig;
use crate::discovery::{Ec2Discovery, StaticList};
use crate::edge::shed::Admission;
use crate::health::ProbeCheck;
use crate::metrics::Metrics;
use crate::selection::stats::{stats_of, BackendStats, Lifecycle, StatsRegistry};
use crate::selection::{GroupSelector, GroupShared, Selected};
use pingora_load_balancing::discovery::ServiceDiscovery;

/// How long the stats of a backend that left the group are kept in case it comes back.
pub const STATS_RETENTION: Duration = Duration::from_secs(300);

/// One target group.
pub struct TargetGroup {
    pub config: TargetGroupConfig,
    pub registry: Arc<StatsRegistry>,
    selector: Arc<dyn GroupSelector>,
    failing_open: AtomicBool,
    metrics: Option<Arc<Metrics>>,
    /// Overload shedding, when `max_inflight` is configured.
    pub admission: Option<Admission>,
}

/// A backend's state as shown by the status API, the dashboard and the metrics.
#[derive(Debug, Clone)]
pub struct BackendView {
    pub addr: SocketAddr,
    pub weight: usize,
    pub healthy: bool,
    pub ejected: bool,
    pub inflight: i64,
    pub ewma: Duration,
    pub probe: Option<Duration>,
    pub probe_ok: Option<bool>,
    pub requests: u64,
    pub failures: u64,
    pub requests_last_minute: u64,
    /// `active`, `initial` (waiting for health checks) or `draining`.
    pub lifecycle: Lifecycle,
}

/// The backend chosen for one attempt.
pub struct Pick {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    /// Chosen although unhealthy, because the whole group is down and it fails open.
    pub failed_open: bool,
}

impl TargetGroup {
    /// Build the group from its configuration (backends are discovered by [`Self::refresh`]).
    pub fn new(config: TargetGroupConfig, metrics: Option<Arc<Metrics>>) -> Self {
        let registry = Arc::new(StatsRegistry::new(config.latency));
        let discovery: Box<dyn ServiceDiscovery + Send + Sync> = match &config.ec2 {
            Some(ec2) => Box::new(Ec2Discovery::new(
                ec2.clone(),
                config.deregistration_delay,
                registry.clone(),
            )),
            None => Box::new(StaticList::new(config.backends.clone(), registry.clone())),
        };
        let mut backends = Backends::new(discovery);
        if config.health_check.enabled {
            let check = ProbeCheck::new(
                &config.name,
                &config.health_check,
                registry.clone(),
                metrics.clone(),
            );
            backends.set_health_check(Box::new(check));
        }
        let selector = config
            .strategy
            .build(backends, GroupShared::new(registry.clone()));
        let admission = config.shed.map(Admission::new);
        Self {
            config,
            registry,
            selector,
            failing_open: AtomicBool::new(false),
            metrics,
            admission,
        }
    }

    /// The metrics this group records into, if enabled.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Pick a backend not in `tried` for the request keyed `key`.
    ///
    /// In order: a healthy, non-ejected backend; else a healthy one even if passively
    /// ejected (ejection must never take a whole group down); else, when the group fails
    /// open, any backend.
    pub fn pick(&self, key: &[u8], tried: &[SocketAddr], now: Instant) -> Option<Pick> {
        let untried = |b: &Backend| b.addr.as_inet().is_some_and(|a| !tried.contains(a));
        let not_ejected = |b: &Backend| stats_of(b).is_none_or(|s| !s.is_ejected(now));
        let chosen = self
            .selector
            .select(key, &|b, healthy| healthy && untried(b) && not_ejected(b))
            .or_else(|| {
                self.selector
                    .select(key, &|b, healthy| healthy && untried(b))
            });
        if let Some(b) = chosen {
            if self.failing_open.swap(false, Relaxed) {
                log::info!(
                    "group {}: a backend is healthy again; no longer failing open",
                    self.config.name
                );
            }
            return self.to_pick(b, false);
        }
        if !self.config.fail_open {
            return None;
        }
        // Failing open never reaches a backend that left discovery.
        let not_draining =
            |b: &Backend| stats_of(b).is_none_or(|s| s.lifecycle() != Lifecycle::Draining);
        let b = self
            .selector
            .select(key, &|b, _| untried(b) && not_draining(b))?;
        if self.healthy_count() == 0 && !self.failing_open.swap(true, Relaxed) {
            log::warn!(
                "group {}: every backend is unhealthy; failing open and sending to all of them",
                self.config.name
            );
        }
        self.to_pick(b, true)
    }

    fn to_pick(&self, chosen: Selected, failed_open: bool) -> Option<Pick> {
        let Selected { addr, stats } = chosen;
        let stats = stats.unwrap_or_else(|| self.registry.get_or_insert(addr, Instant::now()));
        Some(Pick {
            addr,
            stats,
            failed_open,
        })
    }

    /// Current members.
    pub fn members(&self) -> Vec<Backend> {
        self.selector
            .backends()
            .get_backend()
            .iter()
            .cloned()
            .collect()
    }

    /// Every member's live state.
    pub fn backend_views(&self, now: Instant) -> Vec<BackendView> {
        let backends = self.selector.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                let stats = stats_of(b)?;
                let probe = stats.last_probe();
                Some(BackendView {
                    addr: stats.addr(),
                    weight: b.weight,
                    healthy: backends.ready(b),
                    ejected: stats.is_ejected(now),
                    inflight: stats.inflight(),
                    ewma: Duration::from_nanos(stats.ewma_ns(now) as u64),
                    probe: probe.map(|p| p.0),
                    probe_ok: probe.map(|p| p.1),
                    requests: stats.requests(),
                    failures: stats.failures(),
                    requests_last_minute: stats.requests_within(Duration::from_secs(60), now),
                    lifecycle: stats.lifecycle(),
                })
            })
            .collect()
    }

    /// Sample every member's request counter (called once a second).
    pub fn sample_history(&self, now: Instant) {
        for b in self.selector.backends().get_backend().iter() {
            if let Some(s) = stats_of(b) {
                s.sample(now);
            }
        }
    }

    /// Number of current members.
    pub fn member_count(&self) -> usize {
        self.selector.backends().get_backend().len()
    }

    /// Members passing their health checks.
    pub fn healthy_count(&self) -> usize {
        let backends = self.selector.backends();
        backends
            .get_backend()
            .iter()
            .filter(|b| backends.ready(b))
            .count()
    }

    /// Whether the group is sending to unhealthy backends because none is healthy.
    pub fn is_failing_open(&self) -> bool {
        self.failing_open.load(Relaxed)
    }

    /// Run discovery, rebuild the selector on change, and forget long-gone backends' stats.
    pub async fn refresh(&self) -> pingora_error::Result<bool> {
        let result = self.selector.update().await;
        if let Some(m) = &self.metrics {
            m.discovery_refresh(&self.config.name, result.is_ok());
        }
        let changed = result?;
        let members: Vec<SocketAddr> = self
            .selector
            .backends()
            .get_backend()
            .iter()
            .filter_map(|b| b.addr.as_inet().copied())
            .collect();
        self.registry
            .retain_members(&members, STATS_RETENTION, Instant::now());
        if changed {
            log::info!(
                "group {}: {} backend(s) now",
                self.config.name,
                members.len()
            );
        }
        Ok(changed)
    }

    /// One pass of active health checks over every member, in parallel; then newly
    /// discovered backends that passed `healthy_threshold` checks start taking traffic.
    pub async fn run_health_checks(&self) {
        if self.config.health_check.enabled {
            self.selector.backends().run_health_check(true).await;
        }
        self.promote_initial();
    }

    /// Enable `initial` backends that passed enough checks (at once without checks).
    fn promote_initial(&self) {
        let backends = self.selector.backends();
        let needed = if self.config.health_check.enabled {
            self.config.health_check.healthy_threshold
        } else {
            0
        };
        for b in backends.get_backend().iter() {
            let Some(s) = stats_of(b) else { continue };
            if s.lifecycle() == Lifecycle::Initial && s.probe_streak() >= needed {
                s.set_lifecycle(Lifecycle::Active);
                backends.set_enable(b, true);
                log::info!(
                    "group {}: backend {} passed its health checks and takes traffic",
                    self.config.name,
                    s.addr()
                );
            }
        }
    }
}
