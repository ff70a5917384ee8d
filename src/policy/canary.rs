//! A progressive canary inside the load balancer (what Flagger or Argo Rollouts do from the
//! outside with Prometheus queries): the canary group's weight steps up on a schedule while its
//! error rate and p99 latency, measured by Switchyard on this route over each step, stay within
//! bounds of the baseline group's; on a breach the canary goes to 0 % at once, and the rollout
//! stops.
//!
//! - Errors (5xx answers, including the proxy's own 502/503/504) are checked continuously once
//!   the step has `min_requests` canary requests: a failing canary is rolled back within its
//!   step, not at the end of it.
//! - p99 latency is compared at the end of each step (a p99 needs a window of samples).
//! - A step with fewer than `min_requests` canary requests is extended, not judged.
//!
//! All decisions take `now`, so the rules are tested without sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{CanarySettings, SplitTarget};

/// Where the rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Progressing,
    Promoted,
    RolledBack,
}

/// One event of the rollout, for `/status`, the dashboard and the log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix time in seconds.
    pub at: u64,
    /// The canary's weight before and after, in percent.
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// What one step measured for one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

impl Measured {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Requests of one group in the current step.
struct Window {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
        }
    }

    fn measured(&self) -> Measured {
        Measured {
            requests: self.requests,
            errors: self.errors,
            p99_ms: self.latency_us.value_at_quantile(0.99) as f64 / 1e3,
        }
    }
}

struct Run {
    phase: Phase,
    step: usize,
    step_started: Instant,
    history: Vec<Event>,
}

/// What the analysis decided at a tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep going: the step is not over (or not judged yet).
    Wait,
    /// Move the canary to this weight (the next step).
    Step(u32),
    /// Send nothing more to the canary.
    RollBack(String),
}

/// A canary rollout on a split.
pub struct Canary {
    pub settings: CanarySettings,
    pub route: Arc<str>,
    pub baseline_name: String,
    pub canary_name: String,
    run: Mutex<Run>,
    /// The current step's measurements: [baseline, canary].
    windows: [Mutex<Window>; 2],
}

/// A view of a canary for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryView {
    pub baseline: String,
    pub canary: String,
    pub phase: Phase,
    pub step: usize,
    pub steps: Vec<u32>,
    pub weight: u32,
    pub step_seconds_left: u64,
    pub baseline_measured: Measured,
    pub canary_measured: Measured,
    pub history: Vec<Event>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Canary {
    pub fn new(settings: CanarySettings, route: Arc<str>, targets: &[SplitTarget]) -> Self {
        let first = settings.steps[0];
        let run = Run {
            phase: if settings.steps.len() == 1 {
                Phase::Promoted
            } else {
                Phase::Progressing
            },
            step: 0,
            step_started: Instant::now(),
            history: vec![Event {
                at: unix_now(),
                from: 0,
                to: first,
                reason: "rollout started".to_string(),
            }],
        };
        Self {
            baseline_name: targets[settings.baseline].name.clone(),
            canary_name: targets[settings.canary].name.clone(),
            settings,
            route,
            run: Mutex::new(run),
            windows: [Mutex::new(Window::new()), Mutex::new(Window::new())],
        }
    }

    /// Count one finished request of split position `position`.
    pub fn record(&self, position: usize, status: u16, latency: Duration) {
        let arm = if position == self.settings.canary {
            1
        } else if position == self.settings.baseline {
            0
        } else {
            return;
        };
        if self.run.lock().phase != Phase::Progressing {
            return;
        }
        let mut w = self.windows[arm].lock();
        w.requests += 1;
        if status >= 500 {
            w.errors += 1;
        }
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = w.latency_us.record(us);
    }

    /// The canary's weight in percent now.
    pub fn weight(&self) -> u32 {
        let run = self.run.lock();
        match run.phase {
            Phase::Progressing => self.settings.steps[run.step],
            Phase::Promoted => 100,
            Phase::RolledBack => 0,
        }
    }

    /// Analyse at `now`: what to do, with the measurements it was based on.
    pub fn decide(&self, now: Instant) -> Decision {
        let run = self.run.lock();
        if run.phase != Phase::Progressing {
            return Decision::Wait;
        }
        let base = self.windows[0].lock().measured();
        let canary = self.windows[1].lock().measured();
        let s = &self.settings;
        if canary.requests >= s.min_requests
            && canary.error_rate() - base.error_rate() > s.max_error_rate_increase
        {
            return Decision::RollBack(format!(
                "canary error rate {:.1} % vs baseline {:.1} % ({} of {} canary requests failed)",
                canary.error_rate() * 100.0,
                base.error_rate() * 100.0,
                canary.errors,
                canary.requests
            ));
        }
        if now.saturating_duration_since(run.step_started) < s.interval
            || canary.requests < s.min_requests
        {
            return Decision::Wait;
        }
        if base.requests >= s.min_requests && canary.p99_ms > base.p99_ms * s.max_p99_ratio {
            return Decision::RollBack(format!(
                "canary p99 {:.1} ms above {:.1} × baseline p99 {:.1} ms",
                canary.p99_ms, s.max_p99_ratio, base.p99_ms
            ));
        }
        Decision::Step(s.steps.get(run.step + 1).copied().unwrap_or(100))
    }

    /// Apply `decision` at `now`; returns the canary's new weight when it changed.
    pub fn apply(&self, decision: &Decision, now: Instant) -> Option<u32> {
        let mut run = self.run.lock();
        if run.phase != Phase::Progressing {
            return None;
        }
        let from = self.settings.steps[run.step];
        let (to, reason) = match decision {
            Decision::Wait => return None,
            Decision::RollBack(reason) => {
                run.phase = Phase::RolledBack;
                (0, format!("rolled back: {reason}"))
            }
            Decision::Step(to) => {
                let base = self.windows[0].lock().measured();
                let canary = self.windows[1].lock().measured();
                let reason = format!(
                    "step passed: canary {} requests, {:.1} % errors, p99 {:.1} ms; baseline {:.1} % errors, p99 {:.1} ms",
                    canary.requests,
                    canary.error_rate() * 100.0,
                    canary.p99_ms,
                    base.error_rate() * 100.0,
                    base.p99_ms
                );
                run.step = (run.step + 1).min(self.settings.steps.len() - 1);
                if run.step == self.settings.steps.len() - 1 {
                    // The last step sends everything to the canary: the rollout is done.
                    run.phase = Phase::Promoted;
                }
                (*to, reason)
            }
        };
        run.step_started = now;
        run.history.push(Event {
            at: unix_now(),
            from,
            to,
            reason,
        });
        *self.windows[0].lock() = Window::new();
        *self.windows[1].lock() = Window::new();
        Some(to)
    }

    /// The state for `/status` at `now`.
    pub fn view(&self, now: Instant) -> CanaryView {
        let run = self.run.lock();
        let left = self
            .settings
            .interval
            .saturating_sub(now.saturating_duration_since(run.step_started));
        CanaryView {
            baseline: self.baseline_name.clone(),
            canary: self.canary_name.clone(),
            phase: run.phase,
            step: run.step,
            steps: self.settings.steps.clone(),
            weight: match run.phase {
                Phase::Progressing => self.settings.steps[run.step],
                Phase::Promoted => 100,
                Phase::RolledBack => 0,
            },
            step_seconds_left: if run.phase == Phase::Progressing {
                left.as_secs()
            } else {
                0
            },
            baseline_measured: self.windows[0].lock().measured(),
            canary_measured: self.windows[1].lock().measured(),
            history: run.history.clone(),
        }
    }

    /// The last event's text (for logs).
    pub fn last_reason(&self) -> String {
        self.run
            .lock()
            .history
            .last()
            .map(|e| e.reason.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(steps: &[u32]) -> Canary {
        let targets = vec![
            SplitTarget {
                group: 0,
                name: "v1".into(),
                weight: 0,
            },
            SplitTarget {
                group: 1,
                name: "v2".into(),
                weight: 0,
            },
        ];
        Canary::new(
            CanarySettings {
                baseline: 0,
                canary: 1,
                steps: steps.to_vec(),
                interval: Duration::from_secs(10),
                max_error_rate_increase: 0.01,
                max_p99_ratio: 1.5,
                min_requests: 10,
            },
            Arc::from("r"),
            &targets,
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_healthy_canary_steps_up_to_promotion() {
        let c = canary(&[10, 50, 100]);
        let mut now = Instant::now();
        for expected in [50, 100] {
            for _ in 0..20 {
                c.record(0, 200, 10 * MS);
                c.record(1, 200, 11 * MS);
            }
            assert_eq!(c.decide(now), Decision::Wait, "not before the interval");
            now += Duration::from_secs(10);
            let d = c.decide(now);
            assert_eq!(d, Decision::Step(expected));
            c.apply(&d, now);
        }
        assert_eq!(c.view(now).phase, Phase::Promoted);
        assert_eq!(c.weight(), 100);
    }

    #[test]
    fn errors_roll_back_within_the_step() {
        let c = canary(&[10, 50, 100]);
        let now = Instant::now();
        for _ in 0..9 {
            c.record(1, 503, MS);
        }
        assert_eq!(c.decide(now), Decision::Wait, "fewer than min_requests");
        c.record(1, 503, MS);
        c.record(0, 200, MS);
        let d = c.decide(now);
        assert!(matches!(d, Decision::RollBack(_)), "{d:?}");
        assert_eq!(c.apply(&d, now), Some(0));
        assert_eq!(c.weight(), 0);
        assert_eq!(c.view(now).phase, Phase::RolledBack);
        assert!(c.last_reason().contains("error rate"));
        // Stopped: nothing moves any more.
        assert_eq!(c.decide(now + Duration::from_secs(60)), Decision::Wait);
    }

    #[test]
    fn a_slow_canary_rolls_back_at_the_end_of_the_step() {
        let c = canary(&[10, 100]);
        let now = Instant::now();
        for _ in 0..50 {
            c.record(0, 200, 10 * MS);
            c.record(1, 200, 40 * MS);
        }
        assert_eq!(c.decide(now), Decision::Wait);
        let d = c.decide(now + Duration::from_secs(10));
        assert!(
            matches!(&d, Decision::RollBack(r) if r.contains("p99")),
            "{d:?}"
        );
    }

    #[test]
    fn a_quiet_step_is_extended_not_judged() {
        let c = canary(&[10, 100]);
        let now = Instant::now();
        c.record(1, 200, MS);
        assert_eq!(c.decide(now + Duration::from_secs(30)), Decision::Wait);
    }
}
