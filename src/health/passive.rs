//! Passive health: a backend that fails `max_failures` live requests in a row (connect
//! errors, timeouts, resets, 5xx and 429 answers) is ejected for `ejection_time`, like
//! Envoy's outlier detection and HAProxy's `observe layer7`. Ejection never takes a whole
//! group down: when only ejected backends are left, they are used anyway (see
//! [`crate::target_group`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::config::PassiveSettings;

/// The passive-health state of one backend. Times are milliseconds on the owning
/// registry's clock (never 0, which means "never").
#[derive(Debug, Default)]
pub struct Ejection {
    consecutive_failures: AtomicU32,
    ejected_until_ms: AtomicU64,
}

impl Ejection {
    /// A request succeeded: the failure streak ends.
    pub fn on_success(&self) {
        self.consecutive_failures.store(0, Relaxed);
    }

    /// A request failed at `now_ms`; returns true when this failure ejected the backend.
    pub fn on_failure(&self, now_ms: u64, settings: &PassiveSettings) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if !settings.enabled || n < settings.max_failures {
            return false;
        }
        self.consecutive_failures.store(0, Relaxed);
        let until = now_ms + settings.ejection_time.as_millis() as u64;
        self.ejected_until_ms.swap(until, Relaxed) < now_ms
    }

    /// Whether the backend is ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Relaxed) > now_ms
    }

    /// End an ejection at once (a reload that turned passive health off, for one).
    pub fn clear(&self) {
        self.ejected_until_ms.store(0, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> PassiveSettings {
        PassiveSettings {
            enabled: true,
            max_failures: 3,
            ejection_time: Duration::from_secs(30),
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_while() {
        let e = Ejection::default();
        let p = settings();
        assert!(!e.on_failure(1, &p));
        assert!(!e.on_failure(1, &p));
        e.on_success();
        assert!(!e.on_failure(1, &p));
        assert!(!e.on_failure(1, &p));
        assert!(!e.is_ejected(1), "a success resets the count");
        assert!(e.on_failure(1, &p), "the third failure in a row ejects");
        assert!(e.is_ejected(29_000));
        assert!(!e.is_ejected(30_002));
    }

    #[test]
    fn disabled_passive_health_never_ejects() {
        let e = Ejection::default();
        let p = PassiveSettings {
            enabled: false,
            ..settings()
        };
        assert!((0..10).all(|_| !e.on_failure(5, &p)));
        assert!(!e.is_ejected(5));
    }
}
