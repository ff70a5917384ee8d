//! Overload shedding for a target group, like HAProxy's `maxconn` + `timeout queue`: at most
//! `max_inflight` requests go to the group at once; beyond that a request waits in a short
//! bounded queue, and when the queue is full or the wait times out it gets 503 with
//! `Retry-After` at once, instead of piling up until everything times out.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Admission settings of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShedSettings {
    pub max_inflight: usize,
    pub queue_size: usize,
    pub queue_timeout: Duration,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    QueueFull,
    QueueTimeout,
}

/// Admission control for one group.
pub struct Admission {
    settings: ShedSettings,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
}

/// Holds a slot until the request ends.
pub type Slot = OwnedSemaphorePermit;

struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Admission {
    pub fn new(settings: ShedSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.max_inflight)),
            queued: AtomicUsize::new(0),
            settings,
        }
    }

    /// A slot now, or after waiting in the queue, or the reason for a 503.
    pub async fn admit(&self) -> Result<Slot, Rejected> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        if self.queued.fetch_add(1, Relaxed) >= self.settings.queue_size {
            self.queued.fetch_sub(1, Relaxed);
            return Err(Rejected::QueueFull);
        }
        let _queued = Queued(&self.queued);
        match tokio::time::timeout(
            self.settings.queue_timeout,
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Rejected::QueueTimeout),
        }
    }

    /// Requests admitted and not finished.
    pub fn inflight(&self) -> usize {
        self.settings.max_inflight - self.slots.available_permits()
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, queue: usize) -> Admission {
        Admission::new(ShedSettings {
            max_inflight: max,
            queue_size: queue,
            queue_timeout: Duration::from_millis(100),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_then_queues_then_rejects() {
        let a = admission(2, 1);
        let s1 = a.admit().await.unwrap();
        let _s2 = a.admit().await.unwrap();
        assert_eq!(a.inflight(), 2);
        let a = Arc::new(a);
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.admit().await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        assert_eq!(a.queued(), 1);
        assert_eq!(a.admit().await.unwrap_err(), Rejected::QueueFull);
        drop(s1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(a.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_times_out() {
        let a = admission(1, 5);
        let _s = a.admit().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(a.admit().await.unwrap_err(), Rejected::QueueTimeout);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert_eq!(a.queued(), 0);
    }
}
