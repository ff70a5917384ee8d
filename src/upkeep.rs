//! The background service that keeps target groups current: discovery refreshes and active
//! health checks, each group on its own interval, over whatever groups the current
//! configuration snapshot has (a reload needs no restart of anything here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::runtime::Runtime;

/// How often the scheduler looks for groups whose upkeep is due.
const TICK: Duration = Duration::from_millis(50);

/// Runs every group's discovery and health checks at its configured interval.
pub struct Upkeep {
    runtime: Arc<Runtime>,
}

impl Upkeep {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let runtime = self.runtime.clone();
        let scheduler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sample = Instant::now();
            loop {
                tick.tick().await;
                let now = Instant::now();
                runtime.advance_policies(now);
                runtime.maintain_stores(now);
                let snapshot = runtime.snapshot();
                for group in &snapshot.groups {
                    if group.begin_upkeep(now) {
                        let group = group.clone();
                        tokio::spawn(async move { group.upkeep().await });
                    }
                }
                // Once a second: sample request counters for the "last minute" views.
                if now.duration_since(last_sample) >= Duration::from_secs(1) {
                    last_sample = now;
                    for g in &snapshot.groups {
                        g.sample_history(now);
                    }
                }
            }
        });
        let _ = shutdown.changed().await;
        scheduler.abort();
    }
}
