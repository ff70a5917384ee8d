//! The checked model of a route's traffic policies (see [`super::policy_file`] for the YAML).

use std::time::Duration;

/// A weighted split over target groups.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSettings {
    pub targets: Vec<SplitTarget>,
    pub stickiness: Option<SplitStickiness>,
    pub canary: Option<CanarySettings>,
}

/// One group of a split: index into `Config::target_groups`, its name, and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTarget {
    pub group: usize,
    pub name: String,
    pub weight: u32,
}

/// Split stickiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitStickiness {
    pub duration: Duration,
    pub by: StickyBy,
    pub cookie: String,
}

/// What split stickiness is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyBy {
    Cookie,
    ClientIp,
}

/// A progressive canary: positions in the split's `targets` and the analysis rules.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySettings {
    pub baseline: usize,
    pub canary: usize,
    pub steps: Vec<u32>,
    pub interval: Duration,
    pub max_error_rate_increase: f64,
    pub max_p99_ratio: f64,
    pub min_requests: u64,
}

/// Shadow traffic of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorSettings {
    pub group: usize,
    pub group_name: String,
    /// Share of requests copied, 0..=100.
    pub percent: f64,
    pub max_body_bytes: usize,
    pub queue: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// Fault injection of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSettings {
    /// Percent of requests delayed, and by how much.
    pub delay: Option<(f64, Duration)>,
    /// Percent of requests aborted, and with which status.
    pub abort: Option<(f64, u16)>,
    /// Only requests carrying this header (lower case) are touched.
    pub header: Option<String>,
}

impl SplitSettings {
    /// Whether `other` is the same split, whatever the groups' positions in the file (a
    /// reload keeps the running split, weights and canary progress included, when it is).
    pub fn same_as(&self, other: &SplitSettings) -> bool {
        let named = |s: &SplitSettings| -> Vec<(String, u32)> {
            s.targets
                .iter()
                .map(|t| (t.name.clone(), t.weight))
                .collect()
        };
        named(self) == named(other)
            && self.stickiness == other.stickiness
            && self.canary == other.canary
    }
}

impl MirrorSettings {
    /// Whether `other` mirrors the same way, whatever the group's position in the file.
    pub fn same_as(&self, other: &MirrorSettings) -> bool {
        MirrorSettings {
            group: other.group,
            ..self.clone()
        } == *other
    }
}
