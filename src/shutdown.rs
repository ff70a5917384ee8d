//! Leaving: graceful upgrade and shutdown of the whole process.
//!
//! - As soon as SIGQUIT (upgrade) or SIGTERM arrives, every response carries
//!   `Connection: close`, so clients move to new connections (served by the new process on an
//!   upgrade) on their own while this one finishes what it has. Pingora closes idle
//!   keep-alive connections when its shutdown starts; a client sending on one at that instant
//!   would see a reset.
//! - Pingora then waits out the whole `grace_period_seconds` even when nothing is in flight
//!   (300 s by default). Like NGINX and HAProxy, Switchyard exits as soon as its in-flight
//!   requests are done once the listeners are closed, waiting at most the grace period.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use tokio::sync::broadcast;

/// Whether the process is leaving, and how many requests it is still serving.
#[derive(Debug, Clone, Default)]
pub struct Leaving(Arc<State>);

#[derive(Debug, Default)]
struct State {
    leaving: AtomicBool,
    requests: AtomicI64,
}

/// Counts one request as being served until dropped.
#[derive(Debug)]
pub struct Serving(Arc<State>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Leaving {
    /// Whether responses should now close their connections.
    pub fn is_leaving(&self) -> bool {
        self.0.leaving.load(Ordering::Relaxed)
    }

    /// Count a request as being served until the returned guard drops.
    pub fn serving(&self) -> Serving {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        Serving(self.0.clone())
    }

    /// Requests being served now.
    pub fn requests(&self) -> i64 {
        self.0.requests.load(Ordering::Relaxed)
    }

    fn start(&self) {
        if !self.0.leaving.swap(true, Ordering::Relaxed) {
            log::info!("leaving: responses now close their connections");
        }
    }
}

/// Watches Pingora's execution phases: starts leaving on upgrade or termination, and ends the
/// process once the listeners are closed and no request is left.
pub struct PhaseWatcher {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    leaving: Leaving,
}

impl PhaseWatcher {
    pub fn new(phases: broadcast::Receiver<ExecutionPhase>, leaving: Leaving) -> Self {
        Self {
            phases: Mutex::new(Some(phases)),
            leaving,
        }
    }

    /// Exit the process as soon as no request is being served.
    async fn exit_when_idle(&self) {
        loop {
            if self.leaving.requests() <= 0 {
                log::info!("no request left in flight: exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether `phase` means this process is about to stop serving.
pub fn is_leaving(phase: &ExecutionPhase) -> bool {
    matches!(
        phase,
        ExecutionPhase::GracefulUpgradeTransferringFds
            | ExecutionPhase::GracefulUpgradeCloseTimeout
            | ExecutionPhase::GracefulTerminate
            | ExecutionPhase::ShutdownStarted
            | ExecutionPhase::ShutdownGracePeriod
            | ExecutionPhase::ShutdownRuntimes
    )
}

#[async_trait]
impl BackgroundService for PhaseWatcher {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().take() else {
            return;
        };
        loop {
            match phases.recv().await {
                // Listeners are closed and Pingora only waits: leave once idle.
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    self.leaving.start();
                    self.exit_when_idle().await;
                }
                Ok(phase) if is_leaving(&phase) => self.leaving.start(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
