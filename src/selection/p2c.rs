//! Power of two choices over peak EWMA (Finagle's and Linkerd's `p2cPeakEwma`).
//!
//! Same cost as [`super::adaptive`], but every request compares only two random backends,
//! whatever the group size: O(1), and less herding onto one backend when many proxies share
//! the same view of latency.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use pingora_load_balancing::selection::BackendSelection;
use pingora_load_balancing::Backend;

use super::adaptive::{cost, explain_cost, Adaptive};
use super::members::{Members, Scored, ScoredIter};
use super::{GroupShared, PickInputs, SharedConfig, Strategy};

/// P2C over peak-EWMA cost.
pub struct P2c(Adaptive);

impl BackendSelection for P2c {
    type Iter = ScoredIter<P2c>;
    type Config = SharedConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &SharedConfig) -> Self {
        P2c(Adaptive::with_mode(backends, shared, true))
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &GroupShared::standalone())
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> Self::Iter {
        ScoredIter::new(self.clone())
    }
}

impl Strategy for P2c {
    const NAME: &'static str = "p2c";

    fn explain(inputs: &PickInputs) -> String {
        explain_cost(Self::NAME, inputs)
    }
}

impl Scored for P2c {
    fn members(&self) -> &Members {
        self.0.members()
    }

    fn score(&self, i: usize, now: Instant) -> f64 {
        cost(self.members(), i, now)
    }

    fn use_p2c(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn the_most_loaded_backend_is_never_chosen_first() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(P2c::build_with_config(&backends(5, &shared), &shared));
        let _g: Vec<_> = (0..10)
            .map(|_| sel.members().stats[3].start_request())
            .collect();
        let counts = tally(&sel, 1000, b"");
        assert_eq!(counts.get(&10003), None, "{counts:?}");
        assert_eq!(counts.len(), 4);
    }
}
