//! Backend health: active checks with rise/fall thresholds ([`active`] probes, [`HealthState`]
//! counts), passive ejection of backends that fail live requests ([`passive`]), and fail-open
//! when a whole group is down (in [`crate::target_group`]).
//!
//! The state lives in each backend's stats, outside any selector or group object, so it
//! survives membership changes and configuration reloads.

pub mod active;
pub mod passive;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

pub use active::ProbeCheck;

/// A backend's active-health state: healthy or not, and the current streak of probe results.
///
/// A healthy backend turns unhealthy after `fall` consecutive failed probes, an unhealthy one
/// healthy after `rise` consecutive passes (HAProxy's `rise`/`fall`). Backends start healthy,
/// as in HAProxy and Pingora, so a configured backend serves from the first request.
#[derive(Debug)]
pub struct HealthState {
    healthy: AtomicBool,
    passes: AtomicU32,
    fails: AtomicU32,
}

impl Default for HealthState {
    fn default() -> Self {
        Self {
            healthy: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
        }
    }
}

impl HealthState {
    /// Whether the backend currently passes its checks.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Consecutive passing probes so far.
    pub fn passes(&self) -> u32 {
        self.passes.load(Relaxed)
    }

    /// Record one probe result; returns the new state when it flipped.
    pub fn record(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        let healthy = self.is_healthy();
        if ok {
            self.fails.store(0, Relaxed);
            let n = self.passes.fetch_add(1, Relaxed).saturating_add(1);
            if !healthy && n >= rise {
                self.healthy.store(true, Relaxed);
                return Some(true);
            }
        } else {
            self.passes.store(0, Relaxed);
            let n = self.fails.fetch_add(1, Relaxed).saturating_add(1);
            if healthy && n >= fall {
                self.healthy.store(false, Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Force a state (health checks turned off: every backend counts as healthy).
    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let h = HealthState::default();
        assert!(h.is_healthy());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(
            h.record(true, 2, 3),
            None,
            "a pass resets the failure streak"
        );
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(false));
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(true));
        assert_eq!(h.passes(), 2);
    }
}
