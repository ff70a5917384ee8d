//! A target group at run time: its members, their health, its selector and stats, and the
//! rules for picking a backend for one attempt (health, passive ejection, operator drains,
//! retries, fail-open).
//!
//! Everything learned about a backend (latency, probes, health, ejection, in-flight) lives in
//! its stats in the group's [`StatsRegistry`], which a reload hands to the group that replaces
//! this one; the group object itself holds only what the configuration says plus membership.

mod changes;
mod health_pass;
pub mod membership;
pub mod overrides;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

use crate::config::TargetGroupConfig;
use crate::discovery::static_list::backend_for;
use crate::discovery::{Ec2Discovery, StaticList};
use crate::edge::shed::Admission;
use crate::edge::upstream_tls::UpstreamPeers;
use crate::health::ProbeCheck;
use crate::metrics::{ErrorKind, Metrics};
use crate::selection::stats::{stats_of, BackendStats, Lifecycle, StatsRegistry};
use crate::selection::{GroupSelector, GroupShared, PickInputs, Selected};
use membership::{Changes, Membership, Weights};
use overrides::Overrides;

/// How long the stats of a backend that left the group are kept in case it comes back.
pub const STATS_RETENTION: Duration = Duration::from_secs(300);

/// One target group.
pub struct TargetGroup {
    pub config: TargetGroupConfig,
    pub registry: Arc<StatsRegistry>,
    selector: Arc<dyn GroupSelector>,
    /// How the backends are reached (protocol, TLS, timeouts).
    pub peers: Arc<UpstreamPeers>,
    discovery: Box<dyn ServiceDiscovery + Send + Sync>,
    probe: Option<ProbeCheck>,
    /// Current members (draining ones included), each with its stats attached.
    members: ArcSwap<Vec<Backend>>,
    /// Whether this group has yet to build its selector (a group taking over the membership
    /// of the one it replaces builds it even when the member set did not change).
    unbuilt: AtomicBool,
    membership: Mutex<Membership>,
    overrides: Mutex<Overrides>,
    failing_open: AtomicBool,
    metrics: Arc<Metrics>,
    /// Overload shedding, when `max_inflight` is configured.
    pub admission: Option<Admission>,
    /// Whether an upkeep pass (discovery + checks) is running, and when the last one began.
    upkeep_running: AtomicBool,
    upkeep_started: Mutex<Option<Instant>>,
}

/// A backend's state as shown by the status API, the dashboard and the metrics.
#[derive(Debug, Clone)]
pub struct BackendView {
    pub addr: SocketAddr,
    pub weight: usize,
    pub healthy: bool,
    pub ejected: bool,
    pub drained: bool,
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

impl BackendView {
    /// The state shown to operators: an operator's drain counts as draining.
    pub fn state(&self) -> &'static str {
        if self.drained && self.lifecycle == Lifecycle::Active {
            "draining"
        } else {
            self.lifecycle.as_str()
        }
    }
}

/// How an attempt ended, as load balancing sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// A complete, non-failing answer; the latency is the time to its response head.
    Success(Duration),
    /// The backend failed: connect error, timeout, reset, broken body, 5xx or 429.
    Failure(ErrorKind),
    /// The client left first: not the backend's fault, not a success; it waited this long.
    Abandoned(Duration),
}

impl std::fmt::Debug for TargetGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TargetGroup({})", self.config.name)
    }
}

/// The backend chosen for one attempt.
pub struct Pick {
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    /// Chosen although unhealthy, because the whole group is down and it fails open.
    pub failed_open: bool,
    /// The decision's inputs at pick time, when asked for.
    pub inputs: Option<PickInputs>,
}

/// Why a run-time change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// No such backend in the group.
    UnknownBackend(SocketAddr),
    /// The backend is already a member.
    AlreadyMember(SocketAddr),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::UnknownBackend(a) => write!(f, "no backend {a} in this group"),
            ChangeError::AlreadyMember(a) => write!(f, "backend {a} is already in this group"),
        }
    }
}

impl TargetGroup {
    /// Build the group from its configuration, keeping what `registry` learned. `previous`
    /// is the group this one replaces on a reload: its membership carries over, so backends
    /// new to the group start `initial` and vanished ones drain. Backends are discovered by
    /// [`Self::refresh`].
    pub fn new(
        config: TargetGroupConfig,
        registry: Arc<StatsRegistry>,
        previous: Option<&TargetGroup>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let peers = Arc::new(UpstreamPeers::load(&config)?);
        registry.set_latency(config.latency);
        let discovery: Box<dyn ServiceDiscovery + Send + Sync> = match &config.ec2 {
            Some(ec2) => Box::new(Ec2Discovery::new(
                ec2.clone(),
                &config.name,
                metrics.clone(),
            )),
            None => Box::new(StaticList::new(config.backends.clone())),
        };
        let probe = config.health_check.enabled.then(|| {
            ProbeCheck::new(
                &config.name,
                &config.health_check,
                peers.clone(),
                UpstreamPeers::is_grpc(&config),
            )
        });
        let selector = config
            .strategy
            .build(GroupShared::new(registry.clone(), config.latency));
        let membership = previous
            .map(|p| p.membership.lock().clone())
            .unwrap_or_default();
        let admission = config.shed.map(Admission::new);
        Ok(Self {
            config,
            registry,
            selector,
            peers,
            discovery,
            probe,
            members: ArcSwap::from_pointee(Vec::new()),
            unbuilt: AtomicBool::new(true),
            membership: Mutex::new(membership),
            overrides: Mutex::new(Overrides::default()),
            failing_open: AtomicBool::new(false),
            metrics,
            admission,
            upkeep_running: AtomicBool::new(false),
            upkeep_started: Mutex::new(None),
        })
    }

    /// The strategy's selector (request keys, decision texts, cookies).
    pub fn selector(&self) -> &dyn GroupSelector {
        self.selector.as_ref()
    }

    /// The metrics this group records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Pick a backend not in `tried` for the request keyed `key`, capturing the decision's
    /// inputs when `explain` is set.
    ///
    /// In order: a ready (healthy, active, not drained) backend that is not ejected; else a
    /// ready one even if passively ejected (ejection must never take a whole group down);
    /// else, when the group fails open, any backend that is not leaving.
    pub fn pick(
        &self,
        key: &[u8],
        tried: &[SocketAddr],
        now: Instant,
        explain: bool,
    ) -> Option<Pick> {
        let untried = |s: &BackendStats| !tried.contains(&s.addr());
        let chosen = self
            .selector
            .select(key, &|s| s.is_ready() && untried(s) && !s.is_ejected(now))
            .or_else(|| self.selector.select(key, &|s| s.is_ready() && untried(s)));
        if let Some(b) = chosen {
            if self.failing_open.swap(false, Relaxed) {
                log::info!(
                    "group {}: a backend is healthy again; no longer failing open",
                    self.config.name
                );
            }
            return Some(to_pick(b, false, explain, now));
        }
        if !self.config.fail_open {
            return None;
        }
        let staying = |s: &BackendStats| s.lifecycle() != Lifecycle::Draining && !s.is_drained();
        let b = self.selector.select(key, &|s| untried(s) && staying(s))?;
        if !self.failing_open.swap(true, Relaxed) {
            log::warn!(
                "group {}: no backend is healthy; failing open and sending to all of them",
                self.config.name
            );
        }
        Some(to_pick(b, true, explain, now))
    }

    /// Record how an attempt at `stats` ended: latency estimate, passive health, metrics.
    pub fn record(&self, stats: &BackendStats, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Success(rtt) => stats.record_success(rtt, now),
            Outcome::Abandoned(waited) => stats.record_abort(waited, now),
            Outcome::Failure(kind) => {
                self.metrics
                    .upstream_error(&self.config.name, stats.label(), kind);
                if stats.record_failure(now, &self.config.passive) {
                    self.metrics.ejection(&self.config.name, stats.label());
                    log::warn!(
                        "group {}: backend {} ejected for {} after {} consecutive failed requests",
                        self.config.name,
                        stats.addr(),
                        humantime::format_duration(self.config.passive.ejection_time),
                        self.config.passive.max_failures
                    );
                }
            }
        }
    }

    /// Current members, draining ones included.
    pub fn members(&self) -> Arc<Vec<Backend>> {
        self.members.load_full()
    }

    /// The stats of member `addr`.
    pub fn member(&self, addr: &SocketAddr) -> Option<Arc<BackendStats>> {
        self.members
            .load()
            .iter()
            .find(|b| b.addr.as_inet() == Some(addr))
            .and_then(|b| stats_of(b).cloned())
    }

    /// Every member's live state.
    pub fn backend_views(&self, now: Instant) -> Vec<BackendView> {
        self.members
            .load()
            .iter()
            .filter_map(|b| {
                let stats = stats_of(b)?;
                let probe = stats.last_probe();
                Some(BackendView {
                    addr: stats.addr(),
                    weight: b.weight,
                    healthy: stats.health.is_healthy(),
                    ejected: stats.is_ejected(now),
                    drained: stats.is_drained(),
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
        for b in self.members.load().iter() {
            if let Some(s) = stats_of(b) {
                s.sample(now);
            }
        }
    }

    /// Number of current members.
    pub fn member_count(&self) -> usize {
        self.members.load().len()
    }

    /// Members ready for new requests.
    pub fn healthy_count(&self) -> usize {
        self.members
            .load()
            .iter()
            .filter_map(crate::selection::stats::stats_of)
            .filter(|s| s.is_ready())
            .count()
    }

    /// Whether the group is sending to unhealthy backends because none is healthy.
    pub fn is_failing_open(&self) -> bool {
        self.failing_open.load(Relaxed)
    }

    /// Run discovery and apply its answer. On a discovery error the membership stays as it
    /// was (the last good set keeps serving) and the error is returned.
    pub async fn refresh(&self) -> pingora_error::Result<()> {
        let (set, _) = self.discovery.discover().await?;
        let discovered: Weights = set
            .iter()
            .filter_map(|b| b.addr.as_inet().map(|a| (*a, b.weight)))
            .collect();
        self.membership.lock().discovered = discovered;
        self.reconcile(Instant::now());
        Ok(())
    }

    /// Apply discovery's last answer plus run-time changes to the membership.
    fn reconcile(&self, now: Instant) {
        let wanted = self
            .overrides
            .lock()
            .apply(&self.membership.lock().discovered);
        let mut membership = self.membership.lock();
        let (changed, changes) = membership.reconcile(
            &wanted,
            self.config.ec2.is_none(),
            &self.registry,
            self.config.deregistration_delay,
            now,
        );
        self.log_changes(&changes, membership.current.len());
        if changed | self.unbuilt.swap(false, Relaxed) {
            let set: BTreeSet<Backend> = membership
                .current
                .iter()
                .map(|(addr, weight)| {
                    let mut b = backend_for(&crate::config::BackendSpec {
                        address: *addr,
                        weight: *weight as u32,
                    });
                    self.registry.attach(&mut b, now);
                    b
                })
                .collect();
            self.selector.rebuild(&set);
            let addrs: Vec<SocketAddr> = membership.current.keys().copied().collect();
            self.registry.retain_members(&addrs, STATS_RETENTION, now);
            for a in &addrs {
                self.metrics.init_backend(&self.config.name, &a.to_string());
            }
            self.members.store(Arc::new(set.into_iter().collect()));
        }
    }

    fn log_changes(&self, changes: &Changes, members: usize) {
        let name = &self.config.name;
        for a in &changes.draining {
            log::info!("group {name}: backend {a} left the group: draining its in-flight requests");
        }
        for a in &changes.left {
            log::info!("group {name}: backend {a} finished draining and is gone");
        }
        if members == changes.joined.len() {
            return; // the first membership: the start-up log lists the group
        }
        for a in &changes.joined {
            log::info!("group {name}: backend {a} joined: waiting for its health checks");
        }
    }

    /// Whether an upkeep pass is due at `now`; marks it started if so.
    pub fn begin_upkeep(&self, now: Instant) -> bool {
        let mut started = self.upkeep_started.lock();
        let due = started
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.health_check.interval);
        if !due || self.upkeep_running.swap(true, Relaxed) {
            return false;
        }
        *started = Some(now);
        true
    }

    /// One upkeep pass: discovery, then active checks, then promotion of new backends.
    pub async fn upkeep(&self) {
        if let Err(e) = self.refresh().await {
            log::debug!("group {}: discovery: {e}", self.config.name);
        }
        self.run_health_checks().await;
        self.upkeep_running.store(false, Relaxed);
    }
}

fn to_pick(selected: Selected, failed_open: bool, explain: bool, now: Instant) -> Pick {
    let inputs = explain.then(|| PickInputs::capture(&selected.stats, selected.weight, now));
    Pick {
        addr: selected.addr,
        stats: selected.stats,
        failed_open,
        inputs,
    }
}
