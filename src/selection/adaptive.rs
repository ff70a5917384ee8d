//! Adaptive: lowest peak-EWMA latency × (in-flight + 1), per unit of weight.
//!
//! The cost model of Finagle and Linkerd: latency is tracked with a peak-sensitive EWMA
//! (see [`super::ewma`]) fed by every finished request, and multiplied by the queue the
//! backend already has, so a fast backend is not buried. Failed requests are recorded as a
//! penalty latency, so a backend answering quick 503s does not look fast, and a new backend
//! starts at the group's mean (or the default RTT), so it does not swallow all traffic.
//! Up to `p2c_threshold` backends every request scans all of them; above, two are sampled.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use pingora_load_balancing::selection::BackendSelection;
use pingora_load_balancing::Backend;

use super::members::{Members, Scored, ScoredIter};
use super::{GroupShared, PickInputs, SharedConfig, Strategy};

/// Latency-aware selection by peak EWMA and in-flight load.
pub struct Adaptive {
    members: Members,
    p2c: bool,
}

impl Adaptive {
    /// Build over `backends`, sampling two backends instead of scanning when `p2c` is set.
    pub fn with_mode(backends: &BTreeSet<Backend>, shared: &SharedConfig, p2c: bool) -> Self {
        Self {
            members: Members::new(backends, &shared.registry),
            p2c,
        }
    }
}

/// The adaptive cost: EWMA latency × (in-flight + 1) / weight.
pub fn cost_of(ewma_ns: f64, inflight: i64, weight: usize) -> f64 {
    ewma_ns.max(1.0) * (inflight.max(0) as f64 + 1.0) / weight.max(1) as f64
}

/// The adaptive cost of member `i` at `now`.
pub fn cost(members: &Members, i: usize, now: Instant) -> f64 {
    let stats = &members.stats[i];
    cost_of(
        stats.ewma_ns(now),
        stats.inflight(),
        members.backends[i].weight,
    )
}

/// The decision text of the adaptive cost model, shared with `p2c`.
pub fn explain_cost(name: &str, inputs: &PickInputs) -> String {
    let score_ms = cost_of(
        inputs.ewma.as_nanos() as f64,
        inputs.inflight,
        inputs.weight,
    ) / 1e6;
    format!(
        "strategy={name}; ewma_ms={:.2}; inflight={}; weight={}; score={score_ms:.2}",
        inputs.ewma_ms(),
        inputs.inflight,
        inputs.weight
    )
}

impl Strategy for Adaptive {
    const NAME: &'static str = "adaptive";

    fn explain(inputs: &PickInputs) -> String {
        explain_cost(Self::NAME, inputs)
    }
}

impl BackendSelection for Adaptive {
    type Iter = ScoredIter<Adaptive>;
    type Config = SharedConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &SharedConfig) -> Self {
        let p2c = backends.len() > shared.latency.p2c_threshold;
        Self::with_mode(backends, shared, p2c)
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &GroupShared::standalone())
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        ScoredIter::new(self.clone())
    }
}

impl Scored for Adaptive {
    fn members(&self) -> &Members {
        &self.members
    }

    fn score(&self, i: usize, now: Instant) -> f64 {
        cost(&self.members, i, now)
    }

    fn use_p2c(&self) -> bool {
        self.p2c
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::PassiveSettings;
    use std::time::Duration;

    fn passive() -> PassiveSettings {
        PassiveSettings {
            enabled: false,
            max_failures: 5,
            ejection_time: Duration::from_secs(1),
        }
    }

    fn observe(sel: &Adaptive, i: usize, ms: u64) {
        sel.members.stats[i].record_success(Duration::from_millis(ms), Instant::now());
    }

    #[test]
    fn prefers_the_fastest_backend() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(Adaptive::build_with_config(&backends(3, &shared), &shared));
        observe(&sel, 0, 5);
        observe(&sel, 1, 100);
        observe(&sel, 2, 50);
        // Peaks are taken at once; 5 ms was a drop from the 30 ms seed, so wait it out.
        sel.members.stats[0].record_success(
            Duration::from_millis(5),
            Instant::now() + Duration::from_secs(100),
        );
        let counts = tally(&sel, 100, b"");
        assert_eq!(counts.get(&10000), Some(&100), "{counts:?}");
    }

    #[test]
    fn load_spreads_requests_off_a_busy_fast_backend() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(Adaptive::build_with_config(&backends(2, &shared), &shared));
        // Both at the 30 ms seed; backend 0 has 3 in flight, so 30*4 > 30*1.
        let _g: Vec<_> = (0..3)
            .map(|_| sel.members.stats[0].start_request())
            .collect();
        let counts = tally(&sel, 50, b"");
        assert_eq!(counts.get(&10001), Some(&50));
    }

    #[test]
    fn fast_failures_do_not_attract_traffic() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(Adaptive::build_with_config(&backends(2, &shared), &shared));
        let now = Instant::now();
        sel.members.stats[0].record_failure(now, &passive());
        observe(&sel, 1, 50);
        let counts = tally(&sel, 50, b"");
        assert_eq!(counts.get(&10001), Some(&50), "{counts:?}");
    }
}
