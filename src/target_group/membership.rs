//! A group's membership over time: what discovery (plus run-time changes) says the backends
//! are, and what happens to backends that appear or vanish, the same for every source.
//!
//! - A backend that appears starts `initial` (no traffic until it passes `healthy_threshold`
//!   checks), except in the group's very first membership from a static list, which serves at
//!   once as configured.
//! - A backend that vanishes is `draining`: no new requests, in-flight ones finish; it leaves
//!   when it has none left or after the deregistration delay (an ALB's default is 300 s).
//! - A draining backend that comes back is active again.
//!
//! All functions take `now`, so the rules are tested without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::selection::stats::{Lifecycle, StatsRegistry};

/// Address → weight.
pub type Weights = BTreeMap<SocketAddr, usize>;

/// The membership state of one group; handed over to the group that replaces it on reload.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    /// Members after the last reconciliation, draining ones included.
    pub current: Weights,
    /// Draining members and since when.
    pub draining: HashMap<SocketAddr, Instant>,
    /// What discovery answered last (before run-time changes are applied).
    pub discovered: Weights,
    /// Whether a first membership exists (before it, static backends start active).
    pub initialized: bool,
}

/// What a reconciliation changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub joined: Vec<SocketAddr>,
    pub draining: Vec<SocketAddr>,
    pub left: Vec<SocketAddr>,
}

impl Membership {
    /// Reconcile with `wanted` (discovery plus run-time changes) at `now`. New backends start
    /// `initial`, or `active` in a first membership when `first_active`; returns whether the
    /// member set (addresses and weights) changed, and what happened.
    pub fn reconcile(
        &mut self,
        wanted: &Weights,
        first_active: bool,
        registry: &StatsRegistry,
        deregistration_delay: Duration,
        now: Instant,
    ) -> (bool, Changes) {
        let mut changes = Changes::default();
        let start_state = if !self.initialized && first_active {
            Lifecycle::Active
        } else {
            Lifecycle::Initial
        };
        for addr in wanted.keys() {
            let stats = registry.get_or_insert(*addr, now);
            if self.draining.remove(addr).is_some() {
                stats.set_lifecycle(Lifecycle::Active);
            } else if !self.current.contains_key(addr) {
                stats.set_lifecycle(start_state);
                changes.joined.push(*addr);
            }
        }
        for addr in self.current.keys() {
            if !wanted.contains_key(addr) && !self.draining.contains_key(addr) {
                self.draining.insert(*addr, now);
                if let Some(s) = registry.get(addr) {
                    s.set_lifecycle(Lifecycle::Draining);
                }
                changes.draining.push(*addr);
            }
        }
        self.draining.retain(|addr, since| {
            let busy = registry.get(addr).is_some_and(|s| s.inflight() > 0);
            let keep = busy && now.saturating_duration_since(*since) < deregistration_delay;
            if !keep {
                changes.left.push(*addr);
            }
            keep
        });
        let mut next = wanted.clone();
        for addr in self.draining.keys() {
            if let Some(w) = self.current.get(addr) {
                next.insert(*addr, *w);
            }
        }
        let changed = next != self.current || !self.initialized;
        self.current = next;
        self.initialized = true;
        (changed, changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LatencySettings;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn weights(ports: &[u16]) -> Weights {
        ports.iter().map(|p| (addr(*p), 1)).collect()
    }

    const DELAY: Duration = Duration::from_secs(300);

    #[test]
    fn a_first_static_membership_serves_at_once_and_later_ones_wait_for_checks() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let mut m = Membership::default();
        let t0 = Instant::now();
        let (changed, c) = m.reconcile(&weights(&[1, 2]), true, &reg, DELAY, t0);
        assert!(changed);
        assert_eq!(c.joined, vec![addr(1), addr(2)]);
        assert_eq!(reg.get(&addr(1)).unwrap().lifecycle(), Lifecycle::Active);
        let (_, c) = m.reconcile(&weights(&[1, 2, 3]), true, &reg, DELAY, t0);
        assert_eq!(c.joined, vec![addr(3)]);
        assert_eq!(reg.get(&addr(3)).unwrap().lifecycle(), Lifecycle::Initial);
    }

    #[test]
    fn discovered_backends_start_initial_even_the_first_time() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let mut m = Membership::default();
        m.reconcile(&weights(&[1]), false, &reg, DELAY, Instant::now());
        assert_eq!(reg.get(&addr(1)).unwrap().lifecycle(), Lifecycle::Initial);
    }

    #[test]
    fn a_vanished_backend_drains_until_idle_or_the_delay() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let mut m = Membership::default();
        let t0 = Instant::now();
        m.reconcile(&weights(&[1, 2]), true, &reg, DELAY, t0);
        let busy = reg.get(&addr(2)).unwrap().start_request();
        let (changed, c) = m.reconcile(&weights(&[1]), true, &reg, DELAY, t0);
        assert!(!changed, "a draining backend stays a member");
        assert_eq!(c.draining, vec![addr(2)]);
        assert_eq!(reg.get(&addr(2)).unwrap().lifecycle(), Lifecycle::Draining);
        // Still busy: it stays until the delay passes.
        let (_, c) = m.reconcile(
            &weights(&[1]),
            true,
            &reg,
            DELAY,
            t0 + Duration::from_secs(10),
        );
        assert!(c.left.is_empty());
        let (changed, c) = m.reconcile(&weights(&[1]), true, &reg, DELAY, t0 + DELAY);
        assert!(changed);
        assert_eq!(c.left, vec![addr(2)]);
        drop(busy);
        // An idle backend leaves at the next reconciliation.
        m.reconcile(&weights(&[1, 3]), true, &reg, DELAY, t0 + DELAY);
        let (_, c) = m.reconcile(&weights(&[1]), true, &reg, DELAY, t0 + DELAY);
        assert_eq!(c.left, vec![addr(3)]);
    }

    #[test]
    fn a_draining_backend_that_returns_is_active_again() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let mut m = Membership::default();
        let t0 = Instant::now();
        m.reconcile(&weights(&[1, 2]), true, &reg, DELAY, t0);
        let _busy = reg.get(&addr(2)).unwrap().start_request();
        m.reconcile(&weights(&[1]), true, &reg, DELAY, t0);
        let (_, c) = m.reconcile(&weights(&[1, 2]), true, &reg, DELAY, t0);
        assert!(c.joined.is_empty());
        assert_eq!(reg.get(&addr(2)).unwrap().lifecycle(), Lifecycle::Active);
    }

    #[test]
    fn a_weight_change_is_a_membership_change() {
        let reg = StatsRegistry::new(LatencySettings::default());
        let mut m = Membership::default();
        let t0 = Instant::now();
        m.reconcile(&weights(&[1, 2]), true, &reg, DELAY, t0);
        let mut w = weights(&[1, 2]);
        w.insert(addr(2), 3);
        let (changed, c) = m.reconcile(&w, true, &reg, DELAY, t0);
        assert!(changed);
        assert_eq!(c, Changes::default());
    }
}
