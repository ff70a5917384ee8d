//! Least connections: the backend with the fewest requests in flight, per unit of weight.
//!
//! The in-flight counts come from the stats registry, where the proxy's guard increments a
//! backend's count when a request is sent and decrements it however the request ends. Ties
//! are broken at random so that idle equal backends share traffic evenly. Above
//! `p2c_threshold` backends the choice is the better of two random backends (as Envoy's
//! `LEAST_REQUEST` and HAProxy's `random(2)`), which keeps selection O(1).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use pingora_load_balancing::selection::BackendSelection;
use pingora_load_balancing::Backend;

use super::members::{Members, Scored, ScoredIter};
use super::{GroupShared, PickInputs, SharedConfig, Strategy};

/// Least outstanding requests.
pub struct LeastConn {
    members: Members,
    p2c: bool,
}

impl BackendSelection for LeastConn {
    type Iter = ScoredIter<LeastConn>;
    type Config = SharedConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &SharedConfig) -> Self {
        let members = Members::new(backends, &shared.registry);
        let p2c = members.len() > shared.latency.p2c_threshold;
        Self { members, p2c }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &GroupShared::standalone())
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        ScoredIter::new(self.clone())
    }
}

impl Strategy for LeastConn {
    const NAME: &'static str = "least_conn";

    fn explain(inputs: &PickInputs) -> String {
        format!(
            "strategy=least_conn; inflight={}; weight={}; score={:.3}",
            inputs.inflight,
            inputs.weight,
            (inputs.inflight.max(0) as f64 + 1.0) / inputs.weight.max(1) as f64
        )
    }
}

impl Scored for LeastConn {
    fn members(&self) -> &Members {
        &self.members
    }

    fn score(&self, i: usize, _now: Instant) -> f64 {
        let weight = self.members.backends[i].weight.max(1) as f64;
        (self.members.stats[i].inflight().max(0) as f64 + 1.0) / weight
    }

    fn use_p2c(&self) -> bool {
        self.p2c
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use pingora_load_balancing::selection::BackendIter;

    #[test]
    fn picks_the_least_loaded() {
        let shared = GroupShared::standalone();
        let set = backends(3, &shared);
        let sel = Arc::new(LeastConn::build_with_config(&set, &shared));
        let stats = &sel.members.stats;
        let _busy = [
            stats[0].start_request(),
            stats[0].start_request(),
            stats[1].start_request(),
        ];
        let b = sel.iter(b"").next().unwrap().clone();
        assert_eq!(b.addr.as_inet().unwrap().port(), 10002);
    }

    #[test]
    fn ties_are_shared_evenly() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(LeastConn::build_with_config(&backends(4, &shared), &shared));
        let counts = tally(&sel, 4000, b"");
        assert_eq!(counts.len(), 4);
        for c in counts.values() {
            assert!((800..=1200).contains(c), "{counts:?}");
        }
    }

    #[test]
    fn large_groups_use_two_choices() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(LeastConn::build_with_config(
            &backends(100, &shared),
            &shared,
        ));
        assert!(sel.use_p2c());
        // Load one backend heavily: P2C must almost never choose it.
        let _g: Vec<_> = (0..50)
            .map(|_| sel.members.stats[7].start_request())
            .collect();
        let counts = tally(&sel, 2000, b"");
        assert!(
            counts.get(&10007).copied().unwrap_or(0) < 10,
            "{:?}",
            counts.get(&10007)
        );
    }
}
