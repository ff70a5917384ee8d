//! Active HTTP health checks, timed so that the `fastest` strategy can rank by them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_error::{Error, ErrorType};
use pingora_http::ResponseHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;

use crate::config::{HealthCheckSettings, StatusRanges};
use crate::metrics::Metrics;
use crate::selection::stats::StatsRegistry;

/// Pingora's HTTP check configured from our settings, plus probe timing and logging.
///
/// A backend flips to unhealthy after `unhealthy_threshold` consecutive failures and back
/// after `healthy_threshold` consecutive passes (Pingora's `consecutive_failure` and
/// `consecutive_success`). Every probe's latency is recorded in the group's stats registry.
pub struct ProbeCheck {
    inner: HttpHealthCheck,
    registry: Arc<StatsRegistry>,
    group: String,
    metrics: Option<Arc<Metrics>>,
}

impl ProbeCheck {
    /// A check for group `group` with `settings`. The probe's `Host` header is the
    /// configured host or, as Envoy does, the group's name.
    pub fn new(
        group: &str,
        settings: &HealthCheckSettings,
        registry: Arc<StatsRegistry>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let host = settings.host.clone().unwrap_or_else(|| group.to_string());
        let mut inner = HttpHealthCheck::new(&host, false);
        inner.consecutive_success = settings.healthy_threshold as usize;
        inner.consecutive_failure = settings.unhealthy_threshold as usize;
        inner.peer_template.options.connection_timeout = Some(settings.timeout);
        inner.peer_template.options.total_connection_timeout = Some(settings.timeout);
        inner.peer_template.options.read_timeout = Some(settings.timeout);
        inner.peer_template.options.write_timeout = Some(settings.timeout);
        inner
            .req
            .set_uri(settings.path.parse().expect("validated path"));
        inner
            .req
            .insert_header("User-Agent", "switchyard-health-check")
            .expect("static header");
        let expected = settings.expected_status.clone();
        inner.validator = Some(Box::new(move |resp: &ResponseHeader| {
            check_status(&expected, resp)
        }));
        Self {
            inner,
            registry,
            group: group.to_string(),
            metrics,
        }
    }
}

fn check_status(expected: &StatusRanges, resp: &ResponseHeader) -> pingora_error::Result<()> {
    let status = resp.status.as_u16();
    if expected.contains(status) {
        Ok(())
    } else {
        Error::e_explain(
            ErrorType::CustomCode("unexpected health-check status", status),
            "during http health check",
        )
    }
}

#[async_trait]
impl HealthCheck for ProbeCheck {
    async fn check(&self, target: &Backend) -> pingora_error::Result<()> {
        let started = Instant::now();
        let result = self.inner.check(target).await;
        if let Some(addr) = target.addr.as_inet() {
            self.registry
                .record_probe(addr, started.elapsed(), result.is_ok());
            if let Some(m) = &self.metrics {
                m.health_check(&self.group, &addr.to_string(), result.is_ok());
            }
        }
        if let Err(e) = &result {
            log::debug!(
                "health check of {} in group {} failed: {e}",
                target.addr,
                self.group
            );
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!(
                "backend {} of group {} is healthy again",
                target.addr,
                self.group
            );
        } else {
            log::warn!(
                "backend {} of group {} is unhealthy: no new requests until it recovers",
                target.addr,
                self.group
            );
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
