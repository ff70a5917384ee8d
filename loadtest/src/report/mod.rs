//! The run's results: one summary, printed for people (`text`) or machines (`json`) — the same
//! numbers in both.

pub mod json;
pub mod text;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::record::Recorder;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Answers from one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendShare {
    pub backend: String,
    pub responses: u64,
    pub share: f64,
}

/// The summary of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub url: String,
    pub mode: String,
    pub connections: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub responses: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    /// Responses with a 2xx or 3xx status, per second.
    pub successes_per_second: f64,
    pub bytes_received: u64,
    pub latency: Latency,
    pub status_codes: BTreeMap<u16, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    pub backends: Vec<BackendShare>,
    /// Latency distribution: `[quantile, ms]` pairs from 0 to 1 (for CDF plots).
    pub cdf: Vec<[f64; 2]>,
}

impl Summary {
    /// Summarise `rec`, recorded over `elapsed`.
    pub fn new(
        url: &str,
        mode: String,
        connections: usize,
        elapsed: Duration,
        rec: &Recorder,
    ) -> Self {
        let h = &rec.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = if h.is_empty() {
            Latency {
                min_ms: 0.0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            }
        } else {
            Latency {
                min_ms: ms(h.min()),
                mean_ms: h.mean() / 1000.0,
                p50_ms: ms(h.value_at_quantile(0.50)),
                p90_ms: ms(h.value_at_quantile(0.90)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                p999_ms: ms(h.value_at_quantile(0.999)),
                max_ms: ms(h.max()),
            }
        };
        let status_codes: BTreeMap<u16, u64> = rec
            .statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s as u16, *n))
            .collect();
        let successes: u64 = status_codes
            .iter()
            .filter(|(s, _)| (200..400).contains(*s))
            .map(|(_, n)| n)
            .sum();
        let responses = rec.answers();
        let mut backends: Vec<BackendShare> = rec
            .backends
            .iter()
            .map(|(k, v)| BackendShare {
                backend: String::from_utf8_lossy(k).to_string(),
                responses: *v,
                share: if responses > 0 {
                    *v as f64 / responses as f64
                } else {
                    0.0
                },
            })
            .collect();
        backends.sort_by(|a, b| {
            b.responses
                .cmp(&a.responses)
                .then(a.backend.cmp(&b.backend))
        });
        let mut quantiles: Vec<f64> = (0..100).map(|q| q as f64 / 100.0).collect();
        quantiles.extend([0.995, 0.999, 0.9999, 1.0]);
        let cdf = if h.is_empty() {
            Vec::new()
        } else {
            quantiles
                .iter()
                .map(|q| [*q, ms(h.value_at_quantile(*q))])
                .collect()
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            url: url.to_string(),
            mode,
            connections,
            duration_s: secs,
            requests: responses + rec.failures(),
            responses,
            errors: rec.failures(),
            requests_per_second: (responses + rec.failures()) as f64 / secs,
            successes_per_second: successes as f64 / secs,
            bytes_received: rec.bytes,
            latency,
            status_codes,
            error_kinds: rec
                .errors
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), *v))
                .collect(),
            backends,
            cdf,
        }
    }
}
