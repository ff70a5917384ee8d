//! Per-backend statistics shared by the proxy (which writes them) and the selectors (which
//! read them). The registry lives outside the selectors, so it survives the selector
//! rebuilds Pingora performs on every membership change.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use pingora_load_balancing::Backend;

use super::ewma::PeakEwma;
use crate::config::{LatencySettings, PassiveSettings};

/// Sentinel for "no probe result yet".
const NO_PROBE: u64 = u64::MAX;

/// What happened to one attempt, as far as load balancing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered with a status that says nothing bad about it.
    Success(Duration),
    /// Connect error, timeout, reset, or a 5xx/429 answer: the backend is struggling.
    Failure,
}

/// Counters and estimates for one backend.
#[derive(Debug)]
pub struct BackendStats {
    addr: SocketAddr,
    /// `addr` as text, for metric labels and logs without formatting per request.
    label: String,
    inflight: AtomicI64,
    ewma: Mutex<PeakEwma>,
    probe_latency_us: AtomicU64,
    probe_ok: AtomicBool,
    /// Consecutive passing probes.
    probe_streak: AtomicU32,
    /// Where the backend is in its life: see [`Lifecycle`].
    lifecycle: AtomicU8,
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the registry's epoch until which the backend is ejected (0 = never).
    ejected_until_ms: AtomicU64,
    /// Milliseconds since the epoch at which the backend left the membership (0 = member).
    removed_at_ms: AtomicU64,
    /// Samples of `requests` once a second, for "requests in the last minute".
    history: Mutex<VecDeque<(Instant, u64)>>,
    latency: LatencySettings,
    epoch: Instant,
}

/// How many one-second samples of the request counter are kept.
const HISTORY_SAMPLES: usize = 62;

impl BackendStats {
    fn new(
        addr: SocketAddr,
        latency: LatencySettings,
        seed: Duration,
        epoch: Instant,
        now: Instant,
    ) -> Self {
        Self {
            addr,
            label: addr.to_string(),
            inflight: AtomicI64::new(0),
            ewma: Mutex::new(PeakEwma::new(seed, latency.decay, now)),
            probe_latency_us: AtomicU64::new(NO_PROBE),
            probe_ok: AtomicBool::new(false),
            probe_streak: AtomicU32::new(0),
            lifecycle: AtomicU8::new(Lifecycle::Active as u8),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            removed_at_ms: AtomicU64::new(0),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_SAMPLES)),
            latency,
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

    /// Record the outcome of one request. Failures count as the failure penalty latency, so
    /// a backend that fails fast never looks fast. Returns true when this failure ejected
    /// the backend.
    pub fn record(&self, outcome: Outcome, now: Instant, passive: &PassiveSettings) -> bool {
        match outcome {
            Outcome::Success(rtt) => {
                self.ewma.lock().observe(rtt, now);
                self.consecutive_failures.store(0, Relaxed);
                false
            }
            Outcome::Failure => {
                self.ewma.lock().observe(self.latency.failure_penalty, now);
                self.failures.fetch_add(1, Relaxed);
                let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
                if passive.enabled && n >= passive.max_failures {
                    let until = self.millis(now + passive.ejection_time);
                    self.consecutive_failures.store(0, Relaxed);
                    if self.ejected_until_ms.swap(until, Relaxed) < self.millis(now) {
                        log::warn!(
                            "backend {} ejected for {} after {n} consecutive failed requests",
                            self.addr,
                            humantime::format_duration(passive.ejection_time)
                        );
                        return true;
                    }
                }
                false
            }
        }
    }

    /// Whether passive health has ejected this backend at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && until > self.millis(now)
    }

    /// Record an active probe's result.
    pub fn record_probe(&self, latency: Duration, ok: bool) {
        self.probe_latency_us.store(
            latency.as_micros().min(u64::MAX as u128 - 1) as u64,
            Relaxed,
        );
        self.probe_ok.store(ok, Relaxed);
        if ok {
            self.probe_streak.fetch_add(1, Relaxed);
        } else {
            self.probe_streak.store(0, Relaxed);
        }
    }

    /// Consecutive passing probes so far.
    pub fn probe_streak(&self) -> u32 {
        self.probe_streak.load(Relaxed)
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

    /// Latency of the last probe, if any, and whether it passed.
    pub fn last_probe(&self) -> Option<(Duration, bool)> {
        match self.probe_latency_us.load(Relaxed) {
            NO_PROBE => None,
            us => Some((Duration::from_micros(us), self.probe_ok.load(Relaxed))),
        }
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

    fn millis(&self, t: Instant) -> u64 {
        // +1 keeps 0 free as the "never" sentinel.
        t.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }
}

/// Where a discovered backend is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    /// Serving (static backends are always active).
    Active = 0,
    /// Newly discovered: no traffic until it passes its health checks.
    Initial = 1,
    /// Gone from discovery: no new requests; in-flight ones finish.
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

/// All backends' stats of one target group, keyed by address.
#[derive(Debug)]
pub struct StatsRegistry {
    map: RwLock<HashMap<SocketAddr, Arc<BackendStats>>>,
    latency: LatencySettings,
    epoch: Instant,
    /// Bumped whenever a probe result is recorded, so probe-ranked selectors know to re-rank.
    probe_generation: AtomicU64,
}

impl StatsRegistry {
    /// An empty registry whose new entries use `latency`.
    pub fn new(latency: LatencySettings) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            latency,
            epoch: Instant::now(),
            probe_generation: AtomicU64::new(0),
        }
    }

    /// The stats for `addr`, created on first use. A new backend is seeded with the mean of
    /// the group's current estimates (or the default RTT for the first one), so that it
    /// neither swallows traffic nor starves.
    pub fn get_or_insert(&self, addr: SocketAddr, now: Instant) -> Arc<BackendStats> {
        if let Some(s) = self.map.read().get(&addr) {
            s.removed_at_ms.store(0, Relaxed);
            return s.clone();
        }
        let mut map = self.map.write();
        if let Some(s) = map.get(&addr) {
            return s.clone();
        }
        let seed = self.seed_latency(&map, now);
        let stats = Arc::new(BackendStats::new(addr, self.latency, seed, self.epoch, now));
        map.insert(addr, stats.clone());
        stats
    }

    fn seed_latency(&self, map: &HashMap<SocketAddr, Arc<BackendStats>>, now: Instant) -> Duration {
        let members: Vec<f64> = map
            .values()
            .filter(|s| s.removed_at_ms.load(Relaxed) == 0)
            .map(|s| s.ewma_ns(now))
            .collect();
        if members.is_empty() {
            return self.latency.default_rtt;
        }
        let mean = members.iter().sum::<f64>() / members.len() as f64;
        Duration::from_nanos(mean.max(1.0) as u64)
    }

    /// The stats for `addr`, if it is known.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<BackendStats>> {
        self.map.read().get(addr).cloned()
    }

    /// Snapshot of every entry.
    pub fn all(&self) -> Vec<Arc<BackendStats>> {
        self.map.read().values().cloned().collect()
    }

    /// Note the current membership: entries not in it are marked removed, and entries removed
    /// for longer than `retention` with no request in flight are dropped for good.
    pub fn retain_members(&self, members: &[SocketAddr], retention: Duration, now: Instant) {
        let now_ms = (now.saturating_duration_since(self.epoch).as_millis() as u64).max(1);
        let retention_ms = retention.as_millis() as u64;
        let mut map = self.map.write();
        map.retain(|addr, s| {
            if members.contains(addr) {
                s.removed_at_ms.store(0, Relaxed);
                return true;
            }
            let removed = s.removed_at_ms.load(Relaxed);
            if removed == 0 {
                s.removed_at_ms.store(now_ms, Relaxed);
                return true;
            }
            now_ms.saturating_sub(removed) < retention_ms || s.inflight() > 0
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

    /// Record a probe result for `addr`.
    pub fn record_probe(&self, addr: &SocketAddr, latency: Duration, ok: bool) {
        if let Some(s) = self.get(addr) {
            s.record_probe(latency, ok);
            self.probe_generation.fetch_add(1, Relaxed);
        }
    }

    /// Changes whenever a probe result is recorded.
    pub fn probe_generation(&self) -> u64 {
        self.probe_generation.load(Relaxed)
    }

    /// Latency settings of the group.
    pub fn latency(&self) -> &LatencySettings {
        &self.latency
    }
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
        s.record(Outcome::Success(Duration::from_millis(1)), t0, &passive());
        s.record(Outcome::Failure, t0, &passive());
        assert!(s.ewma_ns(t0) >= 1e9, "a fast failure must not look fast");
    }

    #[test]
    fn consecutive_failures_eject_for_a_while() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let s = reg.get_or_insert(addr(1), t0);
        let p = passive();
        s.record(Outcome::Failure, t0, &p);
        s.record(Outcome::Failure, t0, &p);
        s.record(Outcome::Success(Duration::from_millis(1)), t0, &p);
        s.record(Outcome::Failure, t0, &p);
        s.record(Outcome::Failure, t0, &p);
        assert!(!s.is_ejected(t0), "a success resets the count");
        s.record(Outcome::Failure, t0, &p);
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
        a.record(Outcome::Success(Duration::from_millis(100)), t0, &passive());
        let b = reg.get_or_insert(addr(2), t0);
        assert_eq!(b.ewma_ns(t0), 100e6);
    }

    #[test]
    fn stats_survive_removal_within_retention_then_go() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let t0 = Instant::now();
        let a = reg.get_or_insert(addr(1), t0);
        a.record(Outcome::Success(Duration::from_millis(100)), t0, &passive());
        drop(a);
        let retention = Duration::from_secs(60);
        reg.retain_members(&[], retention, t0 + Duration::from_secs(1));
        reg.retain_members(&[], retention, t0 + Duration::from_secs(30));
        let back = reg.get_or_insert(addr(1), t0 + Duration::from_secs(30));
        assert_eq!(back.requests(), 0);
        assert!(back.ewma_ns(t0 + Duration::from_secs(30)) > 0.0);
        reg.retain_members(&[], retention, t0 + Duration::from_secs(31));
        reg.retain_members(&[], retention, t0 + Duration::from_secs(200));
        assert!(reg.get(&addr(1)).is_none());
    }
}
