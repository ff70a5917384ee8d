//! Open client connections, counted across every listener, and a hook for when the last one
//! closes.
//!
//! The binary registers what to do when the proxy falls idle ([`on_idle`]): hand the memory
//! the allocator keeps for reuse back to the system, so the resident set after a burst is
//! what the proxy holds, not what it held at the peak. The hook runs at most once per
//! [`MIN_GAP`]; when it is due sooner, it runs once the gap has passed if the proxy is still
//! idle, so a burst's end is never missed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The least time between two runs of the idle hook.
pub const MIN_GAP: Duration = Duration::from_millis(100);

static OPEN: AtomicUsize = AtomicUsize::new(0);
static HOOK: OnceLock<fn()> = OnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// When the hook last ran, in milliseconds since [`EPOCH`] plus one (0: never).
static LAST_RUN: AtomicU64 = AtomicU64::new(0);
/// A delayed run is scheduled.
static TRAILING: AtomicBool = AtomicBool::new(false);

/// Registers `hook` to run when the last open client connection closes (first call wins).
pub fn on_idle(hook: fn()) {
    let _ = HOOK.set(hook);
}

/// One open client connection, from accept to close; dropping it closes it in the count.
#[must_use = "the connection counts as open only while this lives"]
pub struct OpenConnection(());

impl OpenConnection {
    /// Counts a newly accepted connection.
    pub fn new() -> Self {
        OPEN.fetch_add(1, Ordering::AcqRel);
        OpenConnection(())
    }
}

impl Default for OpenConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if OPEN.fetch_sub(1, Ordering::AcqRel) == 1 {
            fell_idle();
        }
    }
}

/// The number of client connections open now.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Acquire)
}

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The last connection closed: run the hook now, or once [`MIN_GAP`] has passed since its last
/// run (on the current tokio runtime, if still idle then).
fn fell_idle() {
    let Some(hook) = HOOK.get().copied() else {
        return;
    };
    match wait_before_run(&LAST_RUN, now_ms(), MIN_GAP) {
        None => hook(),
        Some(wait) => schedule_trailing_run(hook, wait),
    }
}

fn schedule_trailing_run(hook: fn(), wait: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if TRAILING.swap(true, Ordering::AcqRel) {
        return;
    }
    runtime.spawn(async move {
        tokio::time::sleep(wait).await;
        TRAILING.store(false, Ordering::Release);
        if open_connections() == 0 && wait_before_run(&LAST_RUN, now_ms(), MIN_GAP).is_none() {
            hook();
        }
    });
}

/// `None` when a run may happen at `now` (and records it in `last`), else how long to wait.
/// `last` holds the time of the last run in milliseconds plus one, 0 for never.
fn wait_before_run(last: &AtomicU64, now: u64, gap: Duration) -> Option<Duration> {
    let gap = gap.as_millis() as u64;
    let previous = last.load(Ordering::Acquire);
    if previous != 0 && now + 1 < previous + gap {
        return Some(Duration::from_millis(previous + gap - now - 1));
    }
    match last.compare_exchange(previous, now + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => None,
        // Another thread ran it just now.
        Err(_) => Some(Duration::from_millis(gap)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_runs_at_most_once_per_gap_and_says_how_long_to_wait() {
        let last = AtomicU64::new(0);
        let gap = Duration::from_millis(100);
        assert_eq!(wait_before_run(&last, 5, gap), None);
        assert_eq!(
            wait_before_run(&last, 40, gap),
            Some(Duration::from_millis(65))
        );
        assert_eq!(
            wait_before_run(&last, 104, gap),
            Some(Duration::from_millis(1))
        );
        assert_eq!(wait_before_run(&last, 105, gap), None);
        assert_eq!(
            wait_before_run(&last, 106, gap),
            Some(Duration::from_millis(99))
        );
    }

    #[test]
    fn the_first_run_is_never_delayed() {
        let last = AtomicU64::new(0);
        assert_eq!(wait_before_run(&last, 0, Duration::from_millis(100)), None);
    }
}
