//! Open client connections, counted across every listener, and a hook for when the last one
//! closes.
//!
//! The binary registers what to do when the proxy falls idle ([`on_idle`]): hand the memory
//! the allocator keeps for reuse back to the system, so the resident set after a burst is
//! what the proxy holds, not what it held at the peak. The hook runs at most once per
//! [`MIN_GAP`]; when it is due sooner, it runs once the gap has passed if the proxy is still
//! idle, so a burst's end is never missed. After a run it runs once more, a gap later, if the
//! proxy is still idle: a connection's task frees the rest of its memory after the connection
//! stops counting as open, possibly on another thread. The allocator keeps memory per thread,
//! so the hook runs on every worker thread of the runtime, not only on the one that closed the
//! last connection ([`run_on_every_worker`]).

use parking_lot::{Condvar, Mutex};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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

/// The single-thread runtimes that connections were counted on, each noted by the first
/// connection of its thread: with `work_stealing: false`, Pingora runs one on each worker thread,
/// and the hook has to be handed to each.
static SINGLE_THREAD_RUNTIMES: Mutex<Vec<tokio::runtime::Handle>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's runtime has been looked at by [`note_this_threads_runtime`].
    static RUNTIME_NOTED: Cell<bool> = const { Cell::new(false) };
}

/// How long a worker thread that has run the hook waits for the others to take theirs (see
/// [`run_on_every_worker`]). Only spent when the proxy is idle, and only when a worker is slow
/// to wake.
const RENDEZVOUS_WAIT: Duration = Duration::from_millis(20);

/// Registers `hook` to run, on every worker thread, when the last open client connection
/// closes (first call wins).
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
        note_this_threads_runtime();
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
        None => {
            run_on_every_worker(hook);
            schedule_trailing_run(hook, MIN_GAP + Duration::from_millis(5));
        }
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
            run_on_every_worker(hook);
        }
    });
}

/// Notes this thread's runtime if it is a single-thread one, the first time a thread counts a
/// connection; after that, one thread-local read.
fn note_this_threads_runtime() {
    if RUNTIME_NOTED.get() {
        return;
    }
    RUNTIME_NOTED.set(true);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
            SINGLE_THREAD_RUNTIMES.lock().push(runtime);
        }
    }
}

/// Runs `hook` once on each worker thread:
/// - on a multi-thread tokio runtime, on each of its workers ([`run_on_each_worker_of`]);
/// - on a single-thread one, on this thread and on each of the single-thread runtimes
///   connections were counted on (Pingora's `work_stealing: false`), each of which runs only
///   on its own thread;
/// - outside a runtime, or on a multi-thread one with a single worker, on this thread.
///
/// mimalloc keeps freed memory in the heap of the thread that owns it, and a thread can only
/// collect its own heap; any worker may hold some.
fn run_on_every_worker(hook: fn()) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return hook();
    };
    let workers = runtime.metrics().num_workers();
    match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread if workers > 1 => {
            run_on_each_worker_of(runtime, workers, hook)
        }
        tokio::runtime::RuntimeFlavor::CurrentThread => {
            hook();
            for other in SINGLE_THREAD_RUNTIMES.lock().iter() {
                // This thread's own runtime runs it once more, later: harmless.
                drop(other.spawn(async move { hook() }));
            }
        }
        _ => hook(),
    }
}

/// Runs `hook` once on each of the `workers` workers of a multi-thread runtime. One task per worker is handed to
/// the runtime's shared queue (from a blocking-pool thread: a task spawned on a worker would
/// stay in that worker's own slot), and each task, once its hook has run, waits for the others
/// ([`Rendezvous`]), so that no worker takes two while another takes none. The wait ends after
/// [`RENDEZVOUS_WAIT`] at the latest: a worker that is busy or slow to wake costs the others
/// that much idle time, never a hang.
fn run_on_each_worker_of(runtime: tokio::runtime::Handle, workers: usize, hook: fn()) {
    let shared = runtime.clone();
    runtime.spawn_blocking(move || {
        let rendezvous = Arc::new(Rendezvous::new(workers));
        for _ in 0..workers {
            let rendezvous = rendezvous.clone();
            shared.spawn(async move {
                hook();
                rendezvous.arrive_and_wait(RENDEZVOUS_WAIT);
            });
        }
    });
}

/// A count of arrivals that a number of threads wait on, each for at most a given time.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    expected: usize,
}

impl Rendezvous {
    fn new(expected: usize) -> Self {
        Rendezvous {
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
            expected,
        }
    }

    /// Counts this arrival, then blocks until every expected one has come or `patience` has
    /// passed; true if all came.
    fn arrive_and_wait(&self, patience: Duration) -> bool {
        let mut arrived = self.arrived.lock();
        *arrived += 1;
        if *arrived >= self.expected {
            self.all_here.notify_all();
            return true;
        }
        self.all_here
            .wait_while_for(&mut arrived, |n| *n < self.expected, patience);
        *arrived >= self.expected
    }
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
    fn a_rendezvous_releases_everyone_once_all_have_come_and_a_straggler_after_its_patience() {
        let rendezvous = Arc::new(Rendezvous::new(3));
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let r = rendezvous.clone();
                std::thread::spawn(move || r.arrive_and_wait(Duration::from_secs(30)))
            })
            .collect();
        assert!(rendezvous.arrive_and_wait(Duration::from_secs(30)));
        for w in waiting {
            assert!(w.join().unwrap(), "all three came");
        }

        let alone = Rendezvous::new(2);
        assert!(!alone.arrive_and_wait(Duration::from_millis(10)));
    }

    /// Each worker of a multi-thread runtime runs the hook, even though the tasks are spawned
    /// from one of them and the runtime is otherwise idle.
    #[test]
    fn the_hook_runs_on_every_worker_thread() {
        static THREADS: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());
        fn note_thread() {
            THREADS.lock().push(std::thread::current().id());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        for round in 1..=3 {
            THREADS.lock().clear();
            runtime.block_on(async {
                tokio::spawn(async { run_on_every_worker(note_thread) })
                    .await
                    .unwrap();
                for _ in 0..500 {
                    if THREADS.lock().len() >= 4 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            let threads = THREADS.lock().clone();
            assert_eq!(threads.len(), 4, "round {round}: one run per worker");
            let distinct: std::collections::HashSet<_> = threads.into_iter().collect();
            assert_eq!(distinct.len(), 4, "round {round}: four distinct threads");
        }
    }

    /// With one single-thread runtime per worker thread (Pingora's `work_stealing: false`),
    /// the hook reaches every thread that has counted a connection.
    #[test]
    fn the_hook_runs_on_every_single_thread_runtime_that_counted_a_connection() {
        static THREADS: Mutex<Vec<std::thread::ThreadId>> = Mutex::new(Vec::new());
        fn note_thread() {
            THREADS.lock().push(std::thread::current().id());
        }
        let counted = Arc::new(std::sync::Barrier::new(3));
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        drop(OpenConnection::new());
                        tokio::task::spawn_blocking(move || counted.wait())
                            .await
                            .unwrap();
                        if i == 0 {
                            run_on_every_worker(note_thread);
                        }
                        for _ in 0..500 {
                            if THREADS.lock().contains(&std::thread::current().id()) {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    });
                    std::thread::current().id()
                })
            })
            .collect();
        for worker in workers {
            let id = worker.join().unwrap();
            assert!(THREADS.lock().contains(&id), "{id:?} ran the hook");
        }
    }

    #[test]
    fn the_first_run_is_never_delayed() {
        let last = AtomicU64::new(0);
        assert_eq!(wait_before_run(&last, 0, Duration::from_millis(100)), None);
    }
}
