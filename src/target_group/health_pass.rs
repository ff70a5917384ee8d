//! A group's active health checks: every member probed in parallel, results kept in each
//! backend's stats (rise/fall), flips logged and counted, new backends promoted once healthy.

use std::sync::Arc;
use std::time::Instant;

use pingora_load_balancing::health_check::HealthCheck;
use pingora_load_balancing::Backend;

use super::TargetGroup;
use crate::health::ProbeCheck;
use crate::selection::stats::{stats_of, BackendStats, Lifecycle};

impl TargetGroup {
    /// One pass of active health checks over every member that is not leaving, in
    /// parallel; then backends waiting in `initial` that passed enough checks start taking
    /// traffic.
    pub async fn run_health_checks(&self) {
        let members = self.members.load_full();
        match &self.probe {
            Some(probe) => {
                let checks = members.iter().filter_map(|b| {
                    let stats = stats_of(b)?;
                    (stats.lifecycle() != Lifecycle::Draining)
                        .then(|| self.check_one(probe, b, stats))
                });
                futures::future::join_all(checks).await;
            }
            None => {
                for s in members.iter().filter_map(crate::selection::stats::stats_of) {
                    s.health.set(true);
                }
            }
        }
        self.promote_initial(&members);
    }

    async fn check_one(&self, probe: &ProbeCheck, backend: &Backend, stats: &Arc<BackendStats>) {
        let hc = &self.config.health_check;
        let started = Instant::now();
        let result = probe.check(backend).await;
        let flip = stats.record_probe(
            started.elapsed(),
            result.is_ok(),
            hc.healthy_threshold,
            hc.unhealthy_threshold,
        );
        self.registry.probe_recorded();
        self.metrics.health_check(
            &self.config.name,
            stats.label(),
            result
                .as_ref()
                .err()
                .map(|e| crate::proxy::outcome::health_check_error_kind(e)),
        );
        let name = &self.config.name;
        match (flip, &result) {
            (Some(true), _) => {
                log::info!("group {name}: backend {} is healthy again", stats.addr())
            }
            (Some(false), Err(e)) => log::warn!(
                "group {name}: backend {} is unhealthy ({e}): no new requests until it recovers",
                stats.addr()
            ),
            (_, Err(e)) => {
                log::debug!("group {name}: health check of {} failed: {e}", stats.addr())
            }
            _ => {}
        }
    }

    /// Enable `initial` backends that passed enough checks (at once without checks).
    fn promote_initial(&self, members: &[Backend]) {
        let needed = match &self.probe {
            Some(_) => self.config.health_check.healthy_threshold,
            None => 0,
        };
        for s in members.iter().filter_map(crate::selection::stats::stats_of) {
            if s.lifecycle() == Lifecycle::Initial && s.health.passes() >= needed {
                s.set_lifecycle(Lifecycle::Active);
                s.health.set(true);
                log::info!(
                    "group {}: backend {} passed its health checks and takes traffic",
                    self.config.name,
                    s.addr()
                );
            }
        }
    }
}
