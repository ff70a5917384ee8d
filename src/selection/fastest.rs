//! Fastest: the lowest latency measured by the active probes (a latency scoreboard).
//!
//! The health checker times every probe and records it in the stats registry. A backend
//! whose last probe failed scores its latency plus the failure penalty; one never probed
//! scores the default RTT. Up to `p2c_threshold` backends each request scans the scoreboard;
//! above, a ranking is cached and rebuilt only when a new probe result arrives, so a
//! request costs O(1).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;

use super::members::{Members, Scored, ScoredIter};
use super::{GroupShared, PickInputs, SharedConfig, Strategy};

/// Lowest probed latency wins.
pub struct Fastest {
    members: Members,
    shared: SharedConfig,
    cached: bool,
    ranking: ArcSwap<Vec<u32>>,
    ranked_generation: AtomicU64,
    rerank: Mutex<()>,
    started: Instant,
}

impl Fastest {
    fn probe_score(&self, i: usize, now: Instant) -> f64 {
        let latency = &self.shared.latency;
        let stats = &self.members.stats[i];
        let probed = match stats.last_probe() {
            Some((d, true)) => d.as_nanos() as f64,
            Some((d, false)) => (d + latency.failure_penalty).as_nanos() as f64,
            None => latency.default_rtt.as_nanos() as f64,
        };
        // Probes can pass while live requests fail (a healthy /health, a broken app): while
        // the live peak EWMA carries failure penalties, the backend pays the penalty too. The
        // EWMA decays, so the backend is tried again later.
        let penalty_ns = latency.failure_penalty.as_nanos() as f64;
        if stats.ewma_ns(now) >= penalty_ns / 2.0 {
            probed + penalty_ns
        } else {
            probed
        }
    }

    /// The cached ranking, rebuilt if a probe result arrived since it was made.
    fn ranking(&self) -> Arc<Vec<u32>> {
        // Re-rank on new probe results, and at least every second for live failures.
        let generation =
            self.shared.registry.probe_generation() ^ (self.started.elapsed().as_secs() << 40);
        if self.ranked_generation.load(Relaxed) != generation {
            let now = Instant::now();
            // One request re-ranks; the others keep using the previous ranking meanwhile.
            if let Some(_guard) = self.rerank.try_lock() {
                let mut order: Vec<u32> = (0..self.members.len() as u32).collect();
                let scores: Vec<f64> = (0..self.members.len())
                    .map(|i| self.probe_score(i, now))
                    .collect();
                order.sort_by(|a, b| scores[*a as usize].total_cmp(&scores[*b as usize]));
                self.ranking.store(Arc::new(order));
                self.ranked_generation.store(generation, Relaxed);
            }
        }
        self.ranking.load_full()
    }
}

impl BackendSelection for Fastest {
    type Iter = FastestIter;
    type Config = SharedConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &SharedConfig) -> Self {
        let members = Members::new(backends, &shared.registry);
        let cached = members.len() > shared.latency.p2c_threshold;
        Self {
            members,
            shared: shared.clone(),
            cached,
            ranking: ArcSwap::from_pointee(Vec::new()),
            // Differs from any real generation, so the first request ranks.
            ranked_generation: AtomicU64::new(u64::MAX),
            rerank: Mutex::new(()),
            started: Instant::now(),
        }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &GroupShared::standalone())
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> FastestIter {
        if self.cached {
            let ranking = self.ranking();
            FastestIter::Ranked {
                sel: self.clone(),
                ranking,
                pos: 0,
            }
        } else {
            FastestIter::Scan(ScoredIter::new(self.clone()))
        }
    }
}

impl Strategy for Fastest {
    const NAME: &'static str = "fastest";

    fn explain(inputs: &PickInputs) -> String {
        match inputs.probe {
            Some((d, ok)) => format!(
                "strategy=fastest; probe_ms={:.2}; probe_ok={ok}; ewma_ms={:.2}",
                d.as_secs_f64() * 1e3,
                inputs.ewma_ms()
            ),
            None => format!(
                "strategy=fastest; probe_ms=none; ewma_ms={:.2}",
                inputs.ewma_ms()
            ),
        }
    }
}

impl Scored for Fastest {
    fn members(&self) -> &Members {
        &self.members
    }

    fn score(&self, i: usize, now: Instant) -> f64 {
        self.probe_score(i, now)
    }

    fn use_p2c(&self) -> bool {
        false
    }
}

/// Scan for small groups, cached ranking for large ones.
pub enum FastestIter {
    Scan(ScoredIter<Fastest>),
    Ranked {
        sel: Arc<Fastest>,
        ranking: Arc<Vec<u32>>,
        pos: usize,
    },
}

impl BackendIter for FastestIter {
    fn next(&mut self) -> Option<&Backend> {
        match self {
            FastestIter::Scan(it) => it.next(),
            FastestIter::Ranked { sel, ranking, pos } => {
                let i = *ranking.get(*pos)? as usize;
                *pos += 1;
                sel.members.backends.get(i)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use std::time::Duration;

    fn probe(shared: &GroupShared, port: u16, ms: u64, ok: bool) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stats = shared.registry.get(&addr).expect("a member");
        stats.record_probe(Duration::from_millis(ms), ok, 1, 1);
        shared.registry.probe_recorded();
    }

    #[test]
    fn follows_the_probe_scoreboard() {
        for n in [3u16, 50] {
            let shared = GroupShared::standalone();
            let sel = Arc::new(Fastest::build_with_config(&backends(n, &shared), &shared));
            for p in 0..n {
                probe(&shared, 10000 + p, 20, true);
            }
            probe(&shared, 10001, 2, true);
            assert_eq!(tally(&sel, 20, b"").get(&10001), Some(&20), "n={n}");
            // Backend 1 slows down, backend 2 becomes fastest.
            probe(&shared, 10001, 80, true);
            probe(&shared, 10002, 1, true);
            assert_eq!(tally(&sel, 20, b"").get(&10002), Some(&20), "n={n}");
            // A failed probe is penalised even if it failed fast.
            probe(&shared, 10002, 0, false);
            assert_eq!(tally(&sel, 20, b"").get(&10002), None, "n={n}");
        }
    }

    #[test]
    fn passing_probes_do_not_hide_failing_requests() {
        use crate::config::PassiveSettings;
        let shared = GroupShared::standalone();
        let sel = Arc::new(Fastest::build_with_config(&backends(3, &shared), &shared));
        for p in 0..3 {
            probe(&shared, 10000 + p, 20, true);
        }
        probe(&shared, 10001, 1, true);
        assert_eq!(tally(&sel, 10, b"").get(&10001), Some(&10));
        // Its /health stays fast, but live requests fail.
        let passive = PassiveSettings {
            enabled: false,
            max_failures: 5,
            ejection_time: Duration::from_secs(1),
        };
        sel.members.stats[1].record_failure(Instant::now(), &passive);
        assert_eq!(tally(&sel, 10, b"").get(&10001), None);
    }
}
