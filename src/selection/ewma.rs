//! Peak EWMA of request latency, after Finagle's `PeakEwma` and tower's `peak_ewma`.
//!
//! A sample above the current estimate is taken at once (react to a slowdown immediately);
//! a lower sample is blended in with a weight that grows with the time since the previous
//! sample (recover slowly and cautiously). Between samples the estimate decays towards zero,
//! so a backend that stopped receiving traffic because it looked slow is eventually tried
//! again. All methods take `now`, so tests drive time exactly.

use std::time::{Duration, Instant};

/// A time-decayed peak-sensitive moving average of latency, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    /// Start at `initial` (the default RTT for a backend never measured) as of `now`.
    pub fn new(initial: Duration, decay: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: initial.as_nanos() as f64,
            stamp: now,
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// Fold in one latency sample observed at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt_ns = rtt.as_nanos() as f64;
        if rtt_ns > self.estimate_ns {
            // Peak: a slowdown is believed at once.
            self.estimate_ns = rtt_ns;
        } else {
            // Blend with a weight that grows with the time since the previous sample.
            let decay = self.decay_factor(now);
            self.estimate_ns = self.estimate_ns * decay + rtt_ns * (1.0 - decay);
        }
        self.stamp = self.stamp.max(now);
    }

    /// The estimate as of `now`, decayed towards zero since the last sample.
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        self.estimate_ns * self.decay_factor(now)
    }

    /// Take `rtt` only if it is above the estimate (a lower bound on a latency, such as the
    /// wait of a client that gave up).
    pub fn observe_peak(&mut self, rtt: Duration, now: Instant) {
        if rtt.as_nanos() as f64 > self.estimate_ns(now) {
            self.estimate_ns = rtt.as_nanos() as f64;
            self.stamp = self.stamp.max(now);
        }
    }

    /// Use another decay time from now on (a reload changed it), keeping the estimate.
    pub fn set_decay(&mut self, decay: Duration) {
        self.decay_ns = decay.as_nanos().max(1) as f64;
    }

    fn decay_factor(&self, now: Instant) -> f64 {
        let elapsed_ns = now.saturating_duration_since(self.stamp).as_nanos() as f64;
        (-elapsed_ns / self.decay_ns).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn ewma(initial_ms: u64, t0: Instant) -> PeakEwma {
        PeakEwma::new(
            Duration::from_millis(initial_ms),
            Duration::from_secs(10),
            t0,
        )
    }

    #[test]
    fn starts_at_the_default_rtt() {
        let t0 = Instant::now();
        assert_eq!(ewma(30, t0).estimate_ns(t0), 30.0 * MS);
    }

    #[test]
    fn a_peak_is_taken_at_once() {
        let t0 = Instant::now();
        let mut e = ewma(5, t0);
        e.observe(Duration::from_millis(200), t0 + Duration::from_millis(1));
        assert_eq!(e.estimate_ns(t0 + Duration::from_millis(1)), 200.0 * MS);
    }

    #[test]
    fn a_lower_sample_is_blended_by_elapsed_time() {
        let t0 = Instant::now();
        let mut e = ewma(100, t0);
        // After one decay period the old value keeps weight e^-1.
        let t1 = t0 + Duration::from_secs(10);
        e.observe(Duration::from_millis(10), t1);
        let w = (-1.0f64).exp();
        let expected = 100.0 * MS * w + 10.0 * MS * (1.0 - w);
        assert!(
            (e.estimate_ns(t1) - expected).abs() < 1.0,
            "{}",
            e.estimate_ns(t1)
        );
    }

    #[test]
    fn frequent_low_samples_recover_slowly() {
        let t0 = Instant::now();
        let mut e = ewma(100, t0);
        let t1 = t0 + Duration::from_millis(1);
        e.observe(Duration::from_millis(1), t1);
        // 1 ms after a 100 ms estimate, one fast sample barely moves it.
        assert!(e.estimate_ns(t1) > 99.0 * MS);
    }

    #[test]
    fn decays_towards_zero_without_samples() {
        let t0 = Instant::now();
        let e = ewma(100, t0);
        let later = e.estimate_ns(t0 + Duration::from_secs(10) * 3);
        let expected = 100.0 * MS * (-3.0f64).exp();
        assert!((later - expected).abs() < 1.0);
        // Half-life is decay * ln 2.
        let half = e.estimate_ns(t0 + Duration::from_secs_f64(10.0 * std::f64::consts::LN_2));
        assert!((half - 50.0 * MS).abs() < 1.0);
    }

    #[test]
    fn time_never_runs_backwards() {
        let t0 = Instant::now();
        let mut e = ewma(10, t0 + Duration::from_secs(1));
        // A sample stamped before the last one must not raise the decay above 1.
        e.observe(Duration::from_millis(5), t0);
        assert!(e.estimate_ns(t0) <= 10.0 * MS);
    }
}
