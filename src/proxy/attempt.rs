//! One attempt at one backend, recorded once.
//!
//! An [`Attempt`] is created when a backend is picked. The proxy's hooks only *set* what
//! happened to it (a response head and its status, an error and its kind, the response
//! finishing, the client going away); the last event wins. When the attempt ends — a retry
//! replaces it, the request finishes, or its future is dropped — `Drop` records the outcome
//! exactly once: latency sample, passive-ejection state, error metrics, in-flight count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::ErrorKind;
use crate::selection::stats::{BackendStats, InflightGuard};
use crate::selection::PickInputs;
use crate::target_group::{Outcome, TargetGroup};

/// What the hooks saw of an attempt so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Picked; nothing came back yet.
    Started,
    /// The response head arrived with this status; its body is still coming.
    Responded(u16),
    /// The whole response reached the client.
    Finished(u16),
    /// The backend failed this way.
    Failed(ErrorKind),
    /// The client went away first (or the request was abandoned).
    ClientGone,
}

/// Whether an HTTP status says the backend is struggling.
pub fn is_failure_status(status: u16) -> bool {
    status >= 500 || status == 429
}

/// The error kind of a failing status.
pub fn status_error_kind(status: u16) -> ErrorKind {
    if status == 429 {
        ErrorKind::Http429
    } else {
        ErrorKind::Http5xx
    }
}

/// The outcome of an attempt whose last event is `event`, `elapsed` after it started, with
/// its response head `head_after` the start (if one came).
pub fn outcome_of(event: Event, elapsed: Duration, head_after: Option<Duration>) -> Outcome {
    match event {
        Event::Failed(kind) => Outcome::Failure(kind),
        Event::Responded(s) | Event::Finished(s) if is_failure_status(s) => {
            Outcome::Failure(status_error_kind(s))
        }
        Event::Finished(_) => Outcome::Success(head_after.unwrap_or(elapsed)),
        Event::Started | Event::Responded(_) | Event::ClientGone => Outcome::Abandoned(elapsed),
    }
}

/// One attempt in flight; dropping it records its outcome.
#[derive(Debug)]
pub struct Attempt {
    group: Arc<TargetGroup>,
    guard: InflightGuard,
    started: Instant,
    head_after: Option<Duration>,
    event: Event,
    /// The decision's inputs at pick time (when decision headers are on).
    pub inputs: Option<PickInputs>,
}

impl Attempt {
    /// Start an attempt at `stats` of `group`, counting it in flight.
    pub fn start(
        group: Arc<TargetGroup>,
        stats: &Arc<BackendStats>,
        inputs: Option<PickInputs>,
        now: Instant,
    ) -> Self {
        Self {
            group,
            guard: stats.start_request(),
            started: now,
            head_after: None,
            event: Event::Started,
            inputs,
        }
    }

    /// The backend's stats.
    pub fn stats(&self) -> &Arc<BackendStats> {
        self.guard.stats()
    }

    /// The group the backend belongs to.
    pub fn group(&self) -> &Arc<TargetGroup> {
        &self.group
    }

    /// A response head with `status` arrived at `now`.
    pub fn responded(&mut self, status: u16, now: Instant) {
        self.head_after = Some(now.saturating_duration_since(self.started));
        self.event = Event::Responded(status);
    }

    /// The whole response reached the client.
    pub fn finished(&mut self) {
        if let Event::Responded(s) = self.event {
            self.event = Event::Finished(s);
        }
    }

    /// The backend failed.
    pub fn failed(&mut self, kind: ErrorKind) {
        self.event = Event::Failed(kind);
    }

    /// The client went away; a backend failure already seen stays the outcome.
    pub fn client_gone(&mut self) {
        if !matches!(self.event, Event::Failed(_)) {
            self.event = Event::ClientGone;
        }
    }

    /// The last event.
    pub fn event(&self) -> Event {
        self.event
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let now = Instant::now();
        let outcome = outcome_of(
            self.event,
            now.saturating_duration_since(self.started),
            self.head_after,
        );
        self.group.record(self.guard.stats(), outcome, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_last_event_decides() {
        assert_eq!(
            outcome_of(Event::Finished(200), 9 * MS, Some(3 * MS)),
            Outcome::Success(3 * MS),
            "latency is the time to the response head"
        );
        assert_eq!(
            outcome_of(Event::Finished(503), 9 * MS, Some(3 * MS)),
            Outcome::Failure(ErrorKind::Http5xx)
        );
        assert_eq!(
            outcome_of(Event::Finished(429), 9 * MS, Some(3 * MS)),
            Outcome::Failure(ErrorKind::Http429)
        );
        assert_eq!(
            outcome_of(
                Event::Failed(ErrorKind::ConnectionError),
                9 * MS,
                Some(3 * MS)
            ),
            Outcome::Failure(ErrorKind::ConnectionError),
            "a 200 whose body then broke is a failure"
        );
        assert_eq!(
            outcome_of(Event::ClientGone, 9 * MS, None),
            Outcome::Abandoned(9 * MS)
        );
        assert_eq!(
            outcome_of(Event::Responded(200), 9 * MS, Some(3 * MS)),
            Outcome::Abandoned(9 * MS),
            "a body that never finished is no success"
        );
        assert_eq!(
            outcome_of(Event::Started, 5 * MS, None),
            Outcome::Abandoned(5 * MS)
        );
    }
}
