//! What to send and when to stop: a stop rule (count or deadline) and a pacing (closed loop
//! with fixed concurrency, or open loop at a fixed arrival rate).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// When the run ends. Every run has one, so a run can never go on forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests.
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each connection sends its next request when the previous answer arrives.
    Closed,
    /// Requests are due at a fixed rate (per second), whatever the answers do. Latency is
    /// measured from each request's due time, so stalls are not hidden (coordinated omission).
    Open { rate: f64 },
}

/// Hands out request tickets to the workers.
pub struct Schedule {
    stop: Stop,
    pacing: Pacing,
    started: Instant,
    deadline: Option<Instant>,
    next: AtomicU64,
}

/// One request to send: its sequence number and when it was due.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    pub seq: u64,
    /// For open loop: the intended send time. For closed loop: `None` (measure from send).
    pub due: Option<Instant>,
}

impl Schedule {
    pub fn new(stop: Stop, pacing: Pacing, started: Instant) -> Self {
        let deadline = match stop {
            Stop::Duration(d) => Some(started + d),
            Stop::Count(_) => None,
        };
        Self {
            stop,
            pacing,
            started,
            deadline,
            next: AtomicU64::new(0),
        }
    }

    /// The next ticket, or `None` when the run is over.
    pub fn next(&self, now: Instant) -> Option<Ticket> {
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let seq = self.next.fetch_add(1, Relaxed);
        if let Stop::Count(n) = self.stop {
            if seq >= n {
                return None;
            }
        }
        let due = match self.pacing {
            Pacing::Closed => None,
            Pacing::Open { rate } => {
                let due = self.started + Duration::from_secs_f64(seq as f64 / rate);
                if self.deadline.is_some_and(|d| due >= d) {
                    return None;
                }
                Some(due)
            }
        };
        Some(Ticket { seq, due })
    }

    /// Tickets handed out so far (bounded by the total for count runs).
    pub fn issued(&self) -> u64 {
        let n = self.next.load(Relaxed);
        match self.stop {
            Stop::Count(total) => n.min(total),
            Stop::Duration(_) => n,
        }
    }

    pub fn stop(&self) -> Stop {
        self.stop
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_runs_stop_after_n() {
        let t0 = Instant::now();
        let s = Schedule::new(Stop::Count(3), Pacing::Closed, t0);
        assert!((0..3).all(|_| s.next(t0).is_some()));
        assert!(s.next(t0).is_none());
        assert_eq!(s.issued(), 3);
    }

    #[test]
    fn duration_runs_stop_at_the_deadline() {
        let t0 = Instant::now();
        let s = Schedule::new(Stop::Duration(Duration::from_secs(1)), Pacing::Closed, t0);
        assert!(s.next(t0 + Duration::from_millis(999)).is_some());
        assert!(s.next(t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn open_loop_tickets_are_due_at_the_rate() {
        let t0 = Instant::now();
        let s = Schedule::new(Stop::Count(5), Pacing::Open { rate: 100.0 }, t0);
        let dues: Vec<Duration> = (0..5)
            .map(|_| s.next(t0).unwrap().due.unwrap() - t0)
            .collect();
        assert_eq!(dues[0], Duration::ZERO);
        assert_eq!(dues[4], Duration::from_millis(40));
    }
}
