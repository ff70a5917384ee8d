//! Active HTTP health checks: Pingora's HTTP check configured from our settings. The probe
//! itself is all this module does; the group times it, keeps the rise/fall state in each
//! backend's stats ([`super::HealthState`]) and reports flips.

use async_trait::async_trait;
use pingora_error::{Error, ErrorType};
use pingora_http::ResponseHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;

use crate::config::{HealthCheckSettings, StatusRanges};

/// An HTTP probe: `GET path` with the configured `Host`, a timeout, and accepted statuses.
pub struct ProbeCheck {
    inner: HttpHealthCheck,
}

impl ProbeCheck {
    /// A check for group `group` with `settings`. The probe's `Host` header is the
    /// configured host or, as Envoy does, the group's name.
    pub fn new(group: &str, settings: &HealthCheckSettings) -> Self {
        let host = settings.host.clone().unwrap_or_else(|| group.to_string());
        let mut inner = HttpHealthCheck::new(&host, false);
        inner.peer_template.options.connection_timeout = Some(settings.timeout);
        inner.peer_template.options.total_connection_timeout = Some(settings.timeout);
        inner.peer_template.options.read_timeout = Some(settings.timeout);
        inner.peer_template.options.write_timeout = Some(settings.timeout);
        if let Ok(uri) = settings.path.parse() {
            inner.req.set_uri(uri);
        }
        let _ = inner
            .req
            .insert_header("User-Agent", "switchyard-health-check");
        let expected = settings.expected_status.clone();
        inner.validator = Some(Box::new(move |resp: &ResponseHeader| {
            check_status(&expected, resp)
        }));
        Self { inner }
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
        self.inner.check(target).await
    }

    /// Thresholds are applied by [`super::HealthState`]; each probe counts once here.
    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}
