//! The background service that keeps target groups current: discovery refreshes and active
//! health checks, each group on its own schedule.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::target_group::TargetGroup;

/// Runs every group's health checks at its configured interval.
pub struct Upkeep {
    groups: Vec<Arc<TargetGroup>>,
}

impl Upkeep {
    pub fn new(groups: Vec<Arc<TargetGroup>>) -> Self {
        Self { groups }
    }
}

#[async_trait]
impl BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks = tokio::task::JoinSet::new();
        for group in &self.groups {
            let group = group.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(group.config.health_check.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = group.refresh().await {
                        // The last good membership stays in place.
                        log::warn!(
                            "group {}: discovery failed, keeping the last good backends: {e}",
                            group.config.name
                        );
                    }
                    group.run_health_checks().await;
                }
            });
        }
        // Once a second: sample request counters for the "last minute" views.
        let groups = self.groups.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = std::time::Instant::now();
                for g in &groups {
                    g.sample_history(now);
                }
            }
        });
        let _ = shutdown.changed().await;
        tasks.abort_all();
    }
}
