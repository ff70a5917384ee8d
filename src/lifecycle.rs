//! Draining on graceful upgrade and shutdown.
//!
//! Pingora closes idle keep-alive connections when shutdown starts; a client that sends a
//! request on such a connection at that instant sees a reset. To avoid the race, as soon as
//! SIGQUIT (upgrade) or SIGTERM arrives — seconds before Pingora starts shutting down — every
//! response carries `Connection: close`, so clients move to new connections (served by the
//! new process) on their own while the old one finishes what it has.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use tokio::sync::broadcast;

/// Set once the process is handing over or shutting down.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn start(&self) {
        if !self.0.swap(true, Ordering::Relaxed) {
            log::info!("draining: responses now close their connections");
        }
    }
}

/// Watches Pingora's execution phases and starts draining on upgrade or termination.
pub struct PhaseWatcher {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    draining: Draining,
}

impl PhaseWatcher {
    pub fn new(phases: broadcast::Receiver<ExecutionPhase>, draining: Draining) -> Self {
        Self {
            phases: Mutex::new(Some(phases)),
            draining,
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
                Ok(phase) if is_leaving(&phase) => self.draining.start(),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
