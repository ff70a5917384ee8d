//! The YAML surface of a route's traffic policies: weighted splits with stickiness and a
//! progressive canary, shadow traffic, fault injection.

use std::time::Duration;

use serde::Deserialize;

/// One target group of a weighted split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardFile {
    pub target_group: String,
    /// Relative share (0..=1000); 0 sends nothing. Left out with a `canary`, whose steps
    /// set the weights.
    pub weight: Option<u32>,
}

/// A client stays on the group it was given (ALB's target-group stickiness).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickinessFile {
    /// How long a client stays, with a cookie (1s..=7d; default 1d, as an ALB).
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// `cookie` (default) or `client_ip` (a hash of the client's address: the same on every
    /// node, and a client keeps its group while the weights stay).
    pub by: Option<StickyByFile>,
    /// Cookie name (default `SWITCHYARD-GROUP`).
    pub cookie: Option<String>,
}

/// What split stickiness is keyed by.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyByFile {
    Cookie,
    ClientIp,
}

/// A progressive canary on a two-group split.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryFile {
    /// The group that serves today (one of the split's groups).
    pub baseline: String,
    /// The group being rolled out (the split's other group).
    pub canary: String,
    /// The canary's weight in percent at each step (increasing, ending at 100).
    pub steps: Vec<u32>,
    /// How long each step is analysed before the next.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How much higher the canary's error rate may be than the baseline's (absolute, 0..1;
    /// default 0.01).
    pub max_error_rate_increase: Option<f64>,
    /// How many times the baseline's p99 latency the canary's may be (default 1.5).
    pub max_p99_ratio: Option<f64>,
    /// Canary requests needed before a step is judged (default 20).
    pub min_requests: Option<u64>,
}

/// Shadow traffic: a copy of some requests to another group, answers discarded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFile {
    pub target_group: String,
    /// Share of requests copied, in percent (default 100).
    pub percent: Option<f64>,
    /// Requests with a larger body (or one not fully buffered) are not copied (default 64 KiB).
    pub max_body_bytes: Option<usize>,
    /// Copies waiting to be sent; more are dropped and counted (default 1000).
    pub queue: Option<usize>,
    /// Copies in flight at once (default 32).
    pub concurrency: Option<usize>,
    /// Longest wait for a shadow answer (default 2s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// Fault injection for chaos testing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFile {
    pub delay: Option<FaultDelayFile>,
    pub abort: Option<FaultAbortFile>,
    /// Only requests carrying this header are touched (so a tester can target themselves).
    pub header: Option<String>,
}

/// Delay a share of requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelayFile {
    pub percent: f64,
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// Answer a share of requests with an error status at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbortFile {
    pub percent: f64,
    pub status: u16,
}
