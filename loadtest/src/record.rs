//! Per-worker recording: an hdrhistogram of latencies, status and error counts, and answers
//! per backend. The hot loop only increments; merging and formatting happen at the end.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::ErrorKind;

/// What one worker saw.
pub struct Recorder {
    /// Latency in microseconds, 1 µs .. 1 h, 3 significant digits.
    pub latency_us: Histogram<u64>,
    pub statuses: Vec<u64>,
    pub errors: HashMap<ErrorKind, u64>,
    pub backends: HashMap<Vec<u8>, u64>,
    pub bytes: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            statuses: vec![0; 600],
            errors: HashMap::new(),
            backends: HashMap::new(),
            bytes: 0,
        }
    }

    /// A response with `status`, `latency`, and the backend that sent it (if named).
    pub fn answer(&mut self, status: u16, latency: Duration, backend: Option<&[u8]>, bytes: usize) {
        self.latency_us
            .saturating_record(latency.as_micros().max(1) as u64);
        if let Some(slot) = self.statuses.get_mut(status as usize) {
            *slot += 1;
        }
        self.bytes += bytes as u64;
        if let Some(name) = backend {
            match self.backends.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    self.backends.insert(name.to_vec(), 1);
                }
            }
        }
    }

    /// A failed attempt. Its latency counts too (a timeout is a very slow answer).
    pub fn error(&mut self, kind: ErrorKind, latency: Duration) {
        self.latency_us
            .saturating_record(latency.as_micros().max(1) as u64);
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// Fold another worker's recording into this one.
    pub fn merge(&mut self, other: Recorder) {
        self.latency_us
            .add(&other.latency_us)
            .expect("same histogram bounds");
        for (a, b) in self.statuses.iter_mut().zip(other.statuses) {
            *a += b;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.backends {
            *self.backends.entry(k).or_insert(0) += v;
        }
        self.bytes += other.bytes;
    }

    /// Responses received (any status).
    pub fn answers(&self) -> u64 {
        self.statuses.iter().sum()
    }

    /// Failed attempts.
    pub fn failures(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_everything() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        a.answer(200, Duration::from_millis(1), Some(b"x"), 10);
        b.answer(200, Duration::from_millis(3), Some(b"x"), 10);
        b.answer(503, Duration::from_millis(2), Some(b"y"), 10);
        b.error(ErrorKind::Timeout, Duration::from_secs(1));
        a.merge(b);
        assert_eq!(a.answers(), 3);
        assert_eq!(a.statuses[200], 2);
        assert_eq!(a.backends[&b"x".to_vec()], 2);
        assert_eq!(a.failures(), 1);
        assert_eq!(a.latency_us.len(), 4);
        assert_eq!(a.bytes, 30);
    }
}
