//! Smooth weighted round robin.
//!
//! Pingora's own weighted round robin repeats each backend `weight` times in a row, which
//! sends bursts to heavy backends (pingora#195). Here the order is precomputed once per
//! membership with earliest-deadline-first scheduling, which interleaves backends in
//! proportion to their weights (5:1:1 gives `a a b a c a a`-like spreads, never `a a a a a
//! b c`). The cursor lives in [`GroupShared`], so a rebuild does not restart the rotation.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;

use super::members::Members;
use super::{GroupShared, SharedConfig, Strategy};

/// Smooth weighted round robin over a fixed membership.
pub struct RoundRobin {
    members: Members,
    /// Member indices in serving order; its length is the sum of the (reduced) weights.
    sequence: Vec<u32>,
    shared: SharedConfig,
}

impl BackendSelection for RoundRobin {
    type Iter = RoundRobinIter;
    type Config = SharedConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &SharedConfig) -> Self {
        let members = Members::new(backends, &shared.registry);
        let weights: Vec<u64> = members
            .backends
            .iter()
            .map(|b| b.weight.max(1) as u64)
            .collect();
        Self {
            sequence: smooth_sequence(&weights),
            members,
            shared: shared.clone(),
        }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &GroupShared::standalone())
    }

    fn iter(self: &Arc<Self>, _key: &[u8]) -> RoundRobinIter {
        RoundRobinIter {
            sel: self.clone(),
            yielded: smallvec::SmallVec::new(),
            turns: 0,
        }
    }
}

impl Strategy for RoundRobin {
    const NAME: &'static str = "round_robin";
}

/// Yields the backend whose turn it is; if it cannot take the request, the next turn of the
/// shared rotation (so a skipped backend's share spreads over all the others instead of
/// doubling its neighbour's), and so on until every backend was offered once.
pub struct RoundRobinIter {
    sel: Arc<RoundRobin>,
    yielded: smallvec::SmallVec<[u32; 4]>,
    turns: usize,
}

impl BackendIter for RoundRobinIter {
    fn next(&mut self) -> Option<&Backend> {
        let seq = &self.sel.sequence;
        let n = self.sel.members.len();
        if seq.is_empty() || self.yielded.len() >= n {
            return None;
        }
        // Bounded: within one full sequence every member has a turn.
        while self.turns < seq.len() * 2 {
            self.turns += 1;
            let pos = self.sel.shared.rr_cursor.fetch_add(1, Relaxed);
            let i = seq[pos % seq.len()];
            if !self.yielded.contains(&i) {
                self.yielded.push(i);
                return self.sel.members.backends.get(i as usize);
            }
        }
        // Concurrent requests moved the cursor past our turns: offer the rest in order.
        let i = (0..n as u32).find(|i| !self.yielded.contains(i))?;
        self.yielded.push(i);
        self.sel.members.backends.get(i as usize)
    }
}

/// The serving order for `weights`: earliest deadline first, where member `i` is due at
/// `(k + 0.5) / w_i` for its `k`-th turn. Weights are divided by their GCD first.
pub fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let reduced: Vec<u64> = weights.iter().map(|w| w / g).collect();
    let total: u64 = reduced.iter().sum();
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::with_capacity(reduced.len());
    // Deadlines in integers: with `scale` a common multiple of the weights, the k-th turn
    // of member i, due at (k + 0.5) / w_i, is stored as (2k + 1) * scale / w_i.
    let scale: u64 = reduced.iter().copied().fold(1, lcm_capped);
    for (i, w) in reduced.iter().enumerate() {
        heap.push(Reverse((scale / w, i as u32)));
    }
    let mut out = Vec::with_capacity(total as usize);
    while (out.len() as u64) < total {
        let Reverse((due, i)) = heap.pop().expect("non-empty while total > 0");
        out.push(i);
        heap.push(Reverse((due + 2 * scale / reduced[i as usize], i)));
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Least common multiple, saturating well below overflow (precision then degrades gently).
fn lcm_capped(a: u64, b: u64) -> u64 {
    let l = a / gcd(a, b) * b;
    l.min(1 << 40)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn equal_weights_rotate_evenly() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(RoundRobin::build_with_config(
            &backends(3, &shared),
            &shared,
        ));
        let counts = tally(&sel, 300, b"");
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn weights_are_honoured_and_smooth() {
        assert_eq!(smooth_sequence(&[1, 1, 1]), vec![0, 1, 2]);
        let seq = smooth_sequence(&[5, 1, 1]);
        assert_eq!(seq.len(), 7);
        assert_eq!(seq.iter().filter(|&&i| i == 0).count(), 5);
        // Smooth: the heavy backend never runs more than 3 in a row.
        let longest = seq.windows(4).filter(|w| w.iter().all(|&i| i == 0)).count();
        assert_eq!(longest, 0, "{seq:?}");
        assert_eq!(
            smooth_sequence(&[2, 4]).len(),
            3,
            "weights are reduced by their gcd"
        );
    }

    #[test]
    fn fallbacks_cover_every_backend_once() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(RoundRobin::build_with_config(
            &backends(4, &shared),
            &shared,
        ));
        let mut it = sel.iter(b"");
        let mut seen = Vec::new();
        while let Some(b) = it.next() {
            seen.push(b.addr.clone());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn a_skipped_backend_shares_its_turns_evenly() {
        let shared = GroupShared::standalone();
        let set = backends(4, &shared);
        let sel = Arc::new(RoundRobin::build_with_config(&set, &shared));
        let mut counts = std::collections::HashMap::new();
        for _ in 0..3000 {
            let mut it = sel.iter(b"");
            // Backend 10001 is unavailable: take the first other one.
            let b = loop {
                let b = it.next().unwrap();
                if b.addr.as_inet().unwrap().port() != 10001 {
                    break b.addr.as_inet().unwrap().port();
                }
            };
            *counts.entry(b).or_insert(0) += 1;
        }
        assert_eq!(counts.get(&10001), None);
        for port in [10000, 10002, 10003] {
            let c = counts[&port];
            assert!((900..=1100).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn cursor_survives_rebuilds() {
        let shared = GroupShared::standalone();
        let set = backends(3, &shared);
        let a = Arc::new(RoundRobin::build_with_config(&set, &shared));
        let first = a.iter(b"").next().unwrap().addr.clone();
        let b = Arc::new(RoundRobin::build_with_config(&set, &shared));
        assert_ne!(b.iter(b"").next().unwrap().addr, first);
    }
}
