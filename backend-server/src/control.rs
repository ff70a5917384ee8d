//! The run-time knobs of a demo backend and their validation.

use serde::{Deserialize, Serialize};

/// How a demo backend behaves: added latency, injected errors and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Fixed delay added before every answer (health checks included), in milliseconds.
    pub delay_ms: u64,
    /// Uniform random extra delay in `0..=jitter_ms` milliseconds.
    pub jitter_ms: u64,
    /// Probability in `0.0..=1.0` that a non-health request is answered with `error_status`.
    pub error_rate: f64,
    /// Status used for injected errors (default 500).
    pub error_status: u16,
    /// When false, `/health` answers 503 while other paths keep working.
    pub healthy: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            error_status: 500,
            healthy: true,
        }
    }
}

/// A partial update of [`Behaviour`] as sent to `PUT /_control`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

impl Behaviour {
    /// Check that the values make sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) || self.error_rate.is_nan() {
            return Err(format!(
                "error_rate must be within 0.0..=1.0, got {}",
                self.error_rate
            ));
        }
        if !(100..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be an HTTP status (100..=599), got {}",
                self.error_status
            ));
        }
        if self.delay_ms > 600_000 || self.jitter_ms > 600_000 {
            return Err("delay_ms and jitter_ms must be at most 600000".to_string());
        }
        Ok(())
    }

    /// This behaviour with `patch` applied, or why the result would be invalid.
    pub fn patched(&self, patch: &BehaviourPatch) -> Result<Behaviour, String> {
        let next = Behaviour {
            delay_ms: patch.delay_ms.unwrap_or(self.delay_ms),
            jitter_ms: patch.jitter_ms.unwrap_or(self.jitter_ms),
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
            error_status: patch.error_status.unwrap_or(self.error_status),
            healthy: patch.healthy.unwrap_or(self.healthy),
        };
        next.validate()?;
        Ok(next)
    }

    /// The delay to apply to one request, jitter included.
    pub fn sample_delay(&self) -> std::time::Duration {
        let jitter = if self.jitter_ms > 0 {
            fastrand::u64(0..=self.jitter_ms)
        } else {
            0
        };
        std::time::Duration::from_millis(self.delay_ms + jitter)
    }

    /// Whether this request should get an injected error.
    pub fn roll_error(&self) -> bool {
        self.error_rate > 0.0 && fastrand::f64() < self.error_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_keeps_absent_fields() {
        let b = Behaviour {
            delay_ms: 20,
            ..Behaviour::default()
        };
        let p = BehaviourPatch {
            healthy: Some(false),
            ..Default::default()
        };
        let n = b.patched(&p).unwrap();
        assert_eq!(n.delay_ms, 20);
        assert!(!n.healthy);
    }

    #[test]
    fn bad_error_rate_is_rejected() {
        let p = BehaviourPatch {
            error_rate: Some(1.5),
            ..Default::default()
        };
        let err = Behaviour::default().patched(&p).unwrap_err();
        assert!(err.contains("error_rate"), "{err}");
    }

    #[test]
    fn error_rate_one_always_errors() {
        let b = Behaviour {
            error_rate: 1.0,
            ..Behaviour::default()
        };
        assert!((0..100).all(|_| b.roll_error()));
        assert!(!(0..100).any(|_| Behaviour::default().roll_error()));
    }
}
