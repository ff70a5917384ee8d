//! Per-backend statistics shared by the proxy (which writes them through the attempt guard)
//! and the selectors (which read them). The registry lives outside the selectors and the
//! group objects, keyed by address, so it survives selector rebuilds on membership changes
//! and group rebuilds on configuration reloads.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use pingora_load_balancing::Backend;

use super::ewma::PeakEwma;
use crate::config::{LatencySettings, PassiveSettings};
use crate::health::passive::Ejection;
use crate::health::HealthState;

/// Sentinel for "no probe result yet".
const NO_PROBE: u64 = u64::MAX;

/// How many one-second samples of the request counter are kept.
const HISTORY_SAMPLES: usize = 62;

/// Counters and estimates for one backend.
#[derive(Debug)]
pub struct BackendStats {
    addr: SocketAddr,
    /// `addr` as text, for metric labels and logs without formatting per request.
    label: String,
    inflight: AtomicI64,
    ewma: Mutex<PeakEwma>,
    /// Latency charged for a failed request, in nanoseconds (the group's setting).
    failure_penalty_ns: AtomicU64,
    probe_latency_us: AtomicU64,
    probe_ok: AtomicBool,
    /// Active health checks: healthy or not, with the current streak.
    pub health: HealthState,
    /// Passive health: consecutive failed requests and ejection.
    pub ejection: Ejection,
    /// Where the backend is in its life: see [`Lifecycle`].
    lifecycle: AtomicU8,
    /// Drained by an operator: no new requests until undrained.
    drained: AtomicBool,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Samples of `requests` once a second, for "requests in the last minute".
    history: Mutex<VecDeque<(Instant, u64)>>,
    epoch: Instant,
}

impl BackendStats {
    fn new(
        addr: SocketAddr,
        latency: &LatencySettings,
        seed: Duration,
        epoch: Instant,
        now: Instant,
    ) -> Self {
        Self {
            addr,
            label: addr.to_string(),
            inflight: AtomicI64::new(0),
            ewma: Mutex::new(PeakEwma::new(seed, latency.decay, now)),
            failure_penalty_ns: AtomicU64::new(latency.failure_penalty.as_nanos() as u64),
            probe_latency_us: AtomicU64::new(NO_PROBE),
            probe_ok: AtomicBool::new(false),
            health: HealthState::default(),
            ejection: Ejection::default(),
            lifecycle: AtomicU8::new(Lifecycle::Active as u8),
            drained: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_SAMPLES)),
            epoch,
        }
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address as text.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Requests currently sent to this backend and not yet finished.
    pub fn inflight(&self) -> i64 {
        self.inflight.load(Relaxed)
    }

    /// Start counting one request as in flight; the guard stops counting when dropped.
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        InflightGuard(self.clone())
    }

    /// Peak-EWMA latency in nanoseconds as of `now`.
    pub fn ewma_ns(&self, now: Instant) -> f64 {
        self.ewma.lock().estimate_ns(now)
    }

    /// The latency charged for a failed request.
    pub fn failure_penalty(&self) -> Duration {
        Duration::from_nanos(self.failure_penalty_ns.load(Relaxed))
    }

    /// A request answered well after `rtt` (time to its response head).
    pub fn record_success(&self, rtt: Duration, now: Instant) {
        self.ewma.lock().observe(rtt, now);
        self.ejection.on_success();
    }

    /// A request failed: it counts as the failure penalty latency, so a backend that fails
    /// fast never looks fast. Returns true when this failure ejected the backend.
    pub fn record_failure(&self, now: Instant, passive: &PassiveSettings) -> bool {
        self.ewma.lock().observe(self.failure_penalty(), now);
        self.failures.fetch_add(1, Relaxed);
        self.ejection.on_failure(self.millis(now), passive)
    }

    /// The client went away after waiting `elapsed` for this backend: neither a success nor
    /// the backend's fault, but it took at least that long, so a longer wait than the
    /// estimate is taken as a peak.
    pub fn record_abort(&self, elapsed: Duration, now: Instant) {
        self.ewma.lock().observe_peak(elapsed, now);
    }

    /// Whether passive health has ejected this backend at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejection.is_ejected(self.millis(now))
    }

    /// Whether new requests may go here: healthy, active and not drained by an operator.
    pub fn is_ready(&self) -> bool {
        self.health.is_healthy() && self.lifecycle() == Lifecycle::Active && !self.is_drained()
    }

    /// Record an active probe's result; returns the new health state when it flipped.
    pub fn record_probe(&self, latency: Duration, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        self.probe_latency_us.store(
            latency.as_micros().min(u64::MAX as u128 - 1) as u64,
            Relaxed,
        );
        self.probe_ok.store(ok, Relaxed);
        self.health.record(ok, rise, fall)
    }

    /// Latency of the last probe, if any, and whether it passed.
    pub fn last_probe(&self) -> Option<(Duration, bool)> {
        match self.probe_latency_us.load(Relaxed) {
            NO_PROBE => None,
            us => Some((Duration::from_micros(us), self.probe_ok.load(Relaxed))),
        }
    }

    /// The backend's lifecycle state.
    pub fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Relaxed) {
            1 => Lifecycle::Initial,
            2 => Lifecycle::Draining,
            _ => Lifecycle::Active,
        }
    }

    /// Move the backend to another lifecycle state.
    pub fn set_lifecycle(&self, state: Lifecycle) {
        self.lifecycle.store(state as u8, Relaxed);
    }

    /// Whether an operator drained this backend.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Relaxed)
    }

    /// Drain (true) or undrain (false); returns the previous value.
    pub fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Relaxed)
    }

    /// Requests ever started to this backend.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Failed requests ever recorded for this backend.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// Remember the request counter as of `now` (called about once a second).
    pub fn sample(&self, now: Instant) {
        let mut h = self.history.lock();
        h.push_back((now, self.requests()));
        while h.len() > HISTORY_SAMPLES {
            h.pop_front();
        }
    }

    /// Requests started within `window` before `now`, from the one-second samples.
    pub fn requests_within(&self, window: Duration, now: Instant) -> u64 {
        let cutoff = now.checked_sub(window);
        let h = self.history.lock();
        let baseline = match cutoff {
            Some(cutoff) => h
                .iter()
                .rev()
                .find(|(t, _)| *t <= cutoff)
                .map(|(_, n)| *n)
                .unwrap_or(0),
            None => 0,
        };
        self.requests().saturating_sub(baseline)
    }

    fn apply_latency(&self, latency: &LatencySettings) {
        self.ewma.lock().set_decay(latency.decay);
        self.failure_penalty_ns
            .store(latency.failure_penalty.as_nanos() as u64, Relaxed);
    }

    fn millis(&self, t: Instant) -> u64 {
        // +1 keeps 0 free as the "never" sentinel.
        t.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }
}

/// Where a backend is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    /// Serving.
    Active = 0,
    /// Newly added (discovered, added at run time or by a reload): no traffic until it
    /// passes its health checks.
    Initial = 1,
    /// Gone from the group: no new requests; in-flight ones finish.
    Draining = 2,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Initial => "initial",
            Lifecycle::Draining => "draining",
        }
    }
}

/// Counts one request as in flight until dropped, however the request ends.
#[derive(Debug)]
pub struct InflightGuard(Arc<BackendStats>);

impl InflightGuard {
    /// The stats of the backend this request went to.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// An entry of the registry: the stats, and since when the backend is no member (if so).
#[derive(Debug)]
struct Entry {
    stats: Arc<BackendStats>,
    removed_at: Option<Instant>,
}

/// All backends' stats of one target group, keyed by address.
#[derive(Debug)]
pub struct StatsRegistry {
    map: RwLock<HashMap<SocketAddr, Entry>>,
    latency: RwLock<LatencySettings>,
    epoch: Instant,
    /// Bumped whenever a probe result is recorded, so probe-ranked selectors know to re-rank.
    probe_generation: AtomicU64,
}

impl StatsRegistry {
    /// An empty registry whose new entries use `latency`.
    pub fn new(latency: LatencySettings) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            latency: RwLock::new(latency),
            epoch: Instant::now(),
            probe_generation: AtomicU64::new(0),
        }
    }

    /// The stats for `addr`, created on first use. A new backend is seeded with the mean of
    /// the group's current estimates (or the default RTT for the first one), so that it
    /// neither swallows traffic nor starves.
    pub fn get_or_insert(&self, addr: SocketAddr, now: Instant) -> Arc<BackendStats> {
        if let Some(e) = self.map.read().get(&addr) {
            return e.stats.clone();
        }
        let mut map = self.map.write();
        if let Some(e) = map.get(&addr) {
            return e.stats.clone();
        }
        let latency = *self.latency.read();
        let seed = seed_latency(&map, &latency, now);
        let stats = Arc::new(BackendStats::new(addr, &latency, seed, self.epoch, now));
        map.insert(
            addr,
            Entry {
                stats: stats.clone(),
                removed_at: None,
            },
        );
        stats
    }

    /// The stats for `addr`, if it is known.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<BackendStats>> {
        self.map.read().get(addr).map(|e| e.stats.clone())
    }

    /// Snapshot of every entry.
    pub fn all(&self) -> Vec<Arc<BackendStats>> {
        self.map.read().values().map(|e| e.stats.clone()).collect()
    }

    /// Note the current membership: entries not in it are marked removed, and entries removed
    /// for longer than `retention` with no request in flight are dropped for good.
    pub fn retain_members(&self, members: &[SocketAddr], retention: Duration, now: Instant) {
        let mut map = self.map.write();
        map.retain(|addr, e| {
            if members.contains(addr) {
                e.removed_at = None;
                return true;
            }
            let since = *e.removed_at.get_or_insert(now);
            now.saturating_duration_since(since) < retention || e.stats.inflight() > 0
        });
    }

    /// Attach this registry's stats to each backend (in `Backend::ext`), so the proxy and the
    /// selectors reach them without a lookup.
    pub fn attach(&self, backend: &mut Backend, now: Instant) {
        if let Some(addr) = backend.addr.as_inet() {
            let stats = self.get_or_insert(*addr, now);
            backend.ext.insert(stats);
        }
    }

    /// Note that a probe result was recorded.
    pub fn probe_recorded(&self) {
        self.probe_generation.fetch_add(1, Relaxed);
    }

    /// Changes whenever a probe result is recorded.
    pub fn probe_generation(&self) -> u64 {
        self.probe_generation.load(Relaxed)
    }

    /// Latency settings of the group.
    pub fn latency(&self) -> LatencySettings {
        *self.latency.read()
    }

    /// Apply new latency settings (a reload) to every backend, keeping their estimates.
    pub fn set_latency(&self, latency: LatencySettings) {
        *self.latency.write() = latency;
        for e in self.map.read().values() {
            e.stats.apply_latency(&latency);
        }
    }
}

fn seed_latency(
    map: &HashMap<SocketAddr, Entry>,
    latency: &LatencySettings,
    now: Instant,
) -> Duration {
    let members: Vec<f64> = map
        .values()
        .filter(|e| e.removed_at.is_none())
        .map(|e| e.stats.ewma_ns(now))
        .collect();
    if members.is_empty() {
        return latency.default_rtt;
    }
    let mean = members.iter().sum::<f64>() / members.len() as f64;
    Duration::from_nanos(mean.max(1.0) as u64)
}

/// The stats attached to `backend`, if any.
pub fn stats_of(backend: &Backend) -> Option<&Arc<BackendStats>> {
    backend.ext.get::<Arc<BackendStats>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn passive() -> PassiveSettings {
        PassiveSettings {
            enabled: true,
            max_failures: 3,
            ejection_time: Duration::from_secs(30),
        }
    }

    #[test]
    fn inflight_guard_counts_until_dropped() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let s = reg.get_or_insert(addr(1), Instant::now());
        let g1 = s.start_request();
        let g2 = s.start_request();
        assert_eq!(s.inflight(), 2);
        drop(g1);
        assert_eq!(s.inflight(), 1);
        // A panicking path still drops the guard.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _g = g2;
            panic!("request handler failed");
        }));
        assert!(r.is_err());
        assert_eq!(s.inflight(), 0);
        assert_eq!(s.requests(), 2);
    }

    #[test]
    fn failures_count_as_penalty_latency() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let s = reg.get_or_insert(addr(1), t0);
        s.record_success(Duration::from_millis(1), t0);
        s.record_failure(t0, &passive());
        assert!(s.ewma_ns(t0) >= 1e9, "a fast failure must not look fast");
    }

    #[test]
    fn an_abort_only_ever_raises_the_estimate() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let s = reg.get_or_insert(addr(1), t0);
        s.record_abort(Duration::from_millis(1), t0);
        assert_eq!(s.ewma_ns(t0), 30e6, "a quick abort says nothing");
        s.record_abort(Duration::from_millis(500), t0);
        assert_eq!(s.ewma_ns(t0), 500e6, "a long wait is a peak");
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_them() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let s = reg.get_or_insert(addr(1), t0);
        let p = passive();
        assert!(!s.record_failure(t0, &p));
        assert!(!s.record_failure(t0, &p));
        s.record_success(Duration::from_millis(1), t0);
        assert!(!s.record_failure(t0, &p));
        assert!(!s.record_failure(t0, &p));
        assert!(s.record_failure(t0, &p));
        assert!(s.is_ejected(t0 + Duration::from_secs(29)));
        assert!(!s.is_ejected(t0 + Duration::from_secs(31)));
    }

    #[test]
    fn requests_within_a_window_come_from_the_samples() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let s = reg.get_or_insert(addr(1), t0);
        for _ in 0..5 {
            drop(s.start_request());
        }
        s.sample(t0 + Duration::from_secs(1));
        for _ in 0..3 {
            drop(s.start_request());
        }
        s.sample(t0 + Duration::from_secs(2));
        assert_eq!(
            s.requests_within(Duration::from_secs(60), t0 + Duration::from_secs(2)),
            8
        );
        // One minute after the first sample, only what came later counts.
        assert_eq!(
            s.requests_within(Duration::from_secs(60), t0 + Duration::from_secs(61)),
            3
        );
        assert_eq!(
            s.requests_within(Duration::from_secs(60), t0 + Duration::from_secs(62)),
            0
        );
    }

    #[test]
    fn new_backends_are_seeded_with_the_group_mean() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let a = reg.get_or_insert(addr(1), t0);
        assert_eq!(a.ewma_ns(t0), 30e6, "the first gets the default RTT");
        a.record_success(Duration::from_millis(100), t0);
        let b = reg.get_or_insert(addr(2), t0);
        assert_eq!(b.ewma_ns(t0), 100e6);
    }

    #[test]
    fn stats_survive_removal_within_retention_then_go() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let a = reg.get_or_insert(addr(1), t0);
        a.record_success(Duration::from_millis(100), t0);
        drop(a);
        let retention = Duration::from_secs(60);
        reg.retain_members(&[], retention, t0 + Duration::from_secs(1));
        reg.retain_members(&[], retention, t0 + Duration::from_secs(30));
        let back = reg.get(&addr(1)).expect("kept within the retention");
        assert!(back.ewma_ns(t0 + Duration::from_secs(30)) > 0.0);
        drop(back);
        reg.retain_members(&[], retention, t0 + Duration::from_secs(200));
        assert!(reg.get(&addr(1)).is_none());
    }

    #[test]
    fn new_latency_settings_apply_to_known_backends() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let a = reg.get_or_insert(addr(1), t0);
        reg.set_latency(LatencySettings {
            failure_penalty: Duration::from_secs(3),
            ..LatencySettings::default()
        });
        a.record_failure(t0, &passive());
        assert_eq!(a.ewma_ns(t0), 3e9);
    }
}
