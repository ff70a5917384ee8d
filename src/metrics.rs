//! Prometheus metrics. One registry per process, passed to the components that record into
//! it; no global statics. Labels stay bounded: routes and groups come from the configuration,
//! backends from discovery, codes from HTTP.
//!
//! Counters are incremented where the event happens (per-request ones only while recording
//! is on, `admin.metrics`); every counter family is created at zero for each known label set
//! when a group, route or backend appears, so alerts and dashboards never see "no data".
//! Per-backend gauges (health, EWMA, in-flight, probe latency) are set from the live state at
//! scrape time, so they are exact.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::edge::rate_limit::RateLimiter;
use crate::target_group::TargetGroup;

/// Latency buckets from 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Why an upstream attempt failed, as the `kind` label of `lb_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ConnectFailure,
    Timeout,
    ConnectionError,
    Http5xx,
    Http429,
    /// A gRPC answer whose `grpc-status` says the backend is failing.
    GrpcStatus,
    /// The TLS handshake with the backend failed (certificate not trusted, wrong name, no
    /// client certificate where one is required).
    Tls,
    /// An active health check got an answer, but not a passing one (status, `SERVING`).
    BadAnswer,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectFailure => "connect_failure",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionError => "connection_error",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::Http429 => "http_429",
            ErrorKind::GrpcStatus => "grpc_status",
            ErrorKind::Tls => "tls",
            ErrorKind::BadAnswer => "bad_answer",
        }
    }
}

/// Every metric Switchyard exports.
pub struct Metrics {
    /// Whether per-request metrics are recorded (`admin.metrics`).
    enabled: bool,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    retries: IntCounterVec,
    no_backend: IntCounterVec,
    health_checks: IntCounterVec,
    health_check_failures: IntCounterVec,
    ejections: IntCounterVec,
    discovery_refreshes: IntCounterVec,
    rate_limited: IntCounterVec,
    shed: IntCounterVec,
    http1_handovers: IntCounterVec,
    rate_limit_keys: IntGaugeVec,
    backends_alive: IntGaugeVec,
    backend_up: IntGaugeVec,
    backend_ewma: GaugeVec,
    backend_inflight: IntGaugeVec,
    backend_probe: GaugeVec,
    group_failing_open: IntGaugeVec,
    config_loads: IntCounterVec,
    shadow_requests: IntCounterVec,
    shadow_mismatch: IntCounterVec,
    canary_weight: IntGaugeVec,
    canary_rollbacks: IntCounterVec,
    faults: IntCounterVec,
    store_errors: IntCounterVec,
    store_fallback: IntGaugeVec,
    build_info: IntGaugeVec,
    start_time: IntGauge,
    client_connections: IntGauge,
    /// "0".."599", so labelling a status code does not allocate.
    codes: Vec<String>,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

/// A gauge without labels, registered.
fn single_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn float_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    /// A fresh registry with every metric registered; `enabled` turns recording on.
    pub fn new(enabled: bool) -> Arc<Self> {
        let r = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lb_request_duration_seconds",
                "Time from request start to the end of the response, by route and target group.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "target_group"],
        )
        .expect("valid histogram");
        r.register(Box::new(duration.clone()))
            .expect("unique metric");
        let start_time = single_gauge(
            &r,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            start_time.set(since.as_secs() as i64);
        }
        let m = Metrics {
            enabled,
            requests: counter(&r, "lb_http_requests_total", "Requests answered, by route, target group, backend and status code.", &["route", "target_group", "backend", "code"]),
            duration,
            upstream_errors: counter(&r, "lb_upstream_errors_total", "Failed upstream attempts by kind: connect_failure, timeout, connection_error, http_5xx, http_429.", &["target_group", "backend", "kind"]),
            retries: counter(&r, "lb_retries_total", "Attempts retried on another backend.", &["target_group"]),
            no_backend: counter(&r, "lb_no_healthy_backend_total", "Requests answered 503 because no backend could take them.", &["target_group"]),
            health_checks: counter(&r, "lb_health_checks_total", "Active health-check results.", &["target_group", "backend", "result"]),
            health_check_failures: counter(&r, "lb_health_check_failures_total", "Failed active health checks by why they failed (connect_failure, timeout, tls, connection_error, bad_answer).", &["target_group", "backend", "kind"]),
            ejections: counter(&r, "lb_backend_ejections_total", "Passive ejections after consecutive failed requests.", &["target_group", "backend"]),
            discovery_refreshes: counter(&r, "lb_discovery_refreshes_total", "Backend discovery refreshes by result (success, failure).", &["target_group", "result"]),
            rate_limited: counter(&r, "lb_rate_limited_total", "Requests rejected with 429 by rate limiting.", &["route"]),
            shed: counter(&r, "lb_shed_total", "Requests rejected with 503 because a target group was at its in-flight limit.", &["target_group"]),
            http1_handovers: counter(&r, "lb_http1_handovers_total", "Client connections Switchyard's own HTTP/1 path (proxy.http1_path: switchyard) handed to Pingora's loop, by reason: outside_subset (a request it does not serve), head_too_large, backend_protocol (a target group not on HTTP/1).", &["reason"]),
            rate_limit_keys: gauge(&r, "lb_rate_limit_keys", "Client buckets kept by a route's rate limiter (bounded by max_keys).", &["route"]),
            backends_alive: gauge(&r, "lb_backends_alive", "Backends passing their health checks.", &["target_group"]),
            backend_up: gauge(&r, "lb_backend_up", "1 when the backend passes its health checks and is not ejected.", &["target_group", "backend"]),
            backend_ewma: float_gauge(&r, "lb_backend_latency_ewma_seconds", "Peak-EWMA latency of the backend.", &["target_group", "backend"]),
            backend_inflight: gauge(&r, "lb_backend_inflight", "Requests in flight to the backend.", &["target_group", "backend"]),
            backend_probe: float_gauge(&r, "lb_backend_probe_latency_seconds", "Latency of the last active probe.", &["target_group", "backend"]),
            group_failing_open: gauge(&r, "lb_target_group_failing_open", "1 when no backend is healthy and the group sends to all of them.", &["target_group"]),
            config_loads: counter(&r, "lb_config_loads_total", "Configuration loads (start and reloads) by result.", &["result"]),
            shadow_requests: counter(&r, "lb_shadow_requests_total", "Shadow copies of requests by result: ok, error (4xx/5xx answer), timeout, failed, dropped (queue full), skipped (body not copied).", &["route", "target_group", "result"]),
            shadow_mismatch: counter(&r, "lb_shadow_status_mismatch_total", "Shadow answers whose status differed from the primary's.", &["route"]),
            canary_weight: gauge(&r, "lb_canary_weight", "Weight of a canary group on its route, in percent.", &["route", "target_group"]),
            canary_rollbacks: counter(&r, "lb_canary_rollbacks_total", "Canary rollouts rolled back by the analysis.", &["route"]),
            store_errors: counter(&r, "lb_rate_limit_store_errors_total", "Rate-limit store calls that failed or timed out (the request then used the local fallback).", &["store"]),
            store_fallback: gauge(&r, "lb_rate_limit_store_fallback", "1 while a shared rate-limit store is unreachable and limits use local buckets.", &["store"]),
            faults: counter(&r, "lb_faults_injected_total", "Faults injected by kind (delay, abort).", &["route", "kind"]),
            build_info: gauge(&r, "lb_build_info", "Always 1; labels carry the version.", &["version"]),
            start_time,
            client_connections: single_gauge(&r, "lb_client_connections", "Client connections open now on the proxy listeners (HTTP/1 and HTTP/2; over TLS once the handshake is done)."),
            codes: (0..600).map(|c: u16| c.to_string()).collect(),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in ["success", "failure"] {
            m.config_loads.with_label_values(&[result]);
        }
        Arc::new(m)
    }

    /// Whether recording is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Create the counters of group `group` at zero (discovery counters only for groups
    /// that discover).
    pub fn init_group(&self, group: &str, discovers: bool) {
        self.retries.with_label_values(&[group]);
        self.no_backend.with_label_values(&[group]);
        self.shed.with_label_values(&[group]);
        if discovers {
            for result in ["success", "failure"] {
                self.discovery_refreshes.with_label_values(&[group, result]);
            }
        }
    }

    /// Create the counters of route `route` at zero.
    pub fn init_route(&self, route: &str) {
        self.rate_limited.with_label_values(&[route]);
    }

    /// Create the counters of a route's traffic policies at zero.
    pub fn init_policies(
        &self,
        route: &str,
        shadow_group: Option<&str>,
        canary: Option<(&str, u32)>,
        faults: bool,
    ) {
        if let Some(group) = shadow_group {
            for result in ["ok", "error", "timeout", "failed", "dropped", "skipped"] {
                self.shadow_requests
                    .with_label_values(&[route, group, result]);
            }
            self.shadow_mismatch.with_label_values(&[route]);
        }
        if let Some((group, weight)) = canary {
            self.canary_weight
                .with_label_values(&[route, group])
                .set(weight as i64);
            self.canary_rollbacks.with_label_values(&[route]);
        }
        if faults {
            for kind in ["delay", "abort"] {
                self.faults.with_label_values(&[route, kind]);
            }
        }
    }

    /// Create a shared store's series (in fallback until it connects).
    pub fn init_store(&self, store: &str) {
        self.store_errors.with_label_values(&[store]);
        self.store_fallback.with_label_values(&[store]).set(1);
    }

    /// Count a failed store call.
    pub fn rate_limit_store_error(&self, store: &str) {
        self.store_errors.with_label_values(&[store]).inc();
    }

    /// Whether a store is in fallback.
    pub fn rate_limit_store_fallback(&self, store: &str, on: bool) {
        self.store_fallback
            .with_label_values(&[store])
            .set(on as i64);
    }

    /// Count a shadow copy by result.
    pub fn shadow(&self, route: &str, group: &str, result: &str) {
        if self.enabled {
            self.shadow_requests
                .with_label_values(&[route, group, result])
                .inc();
        }
    }

    /// Count a shadow answer whose status differed from the primary's.
    pub fn shadow_mismatch(&self, route: &str) {
        if self.enabled {
            self.shadow_mismatch.with_label_values(&[route]).inc();
        }
    }

    /// Set a canary's weight.
    pub fn canary_weight(&self, route: &str, group: &str, weight: u32) {
        self.canary_weight
            .with_label_values(&[route, group])
            .set(weight as i64);
    }

    /// Count a canary rollback.
    pub fn canary_rollback(&self, route: &str) {
        self.canary_rollbacks.with_label_values(&[route]).inc();
    }

    /// Count an injected fault of `kind` (`delay` or `abort`).
    pub fn fault(&self, route: &str, kind: &str) {
        if self.enabled {
            self.faults.with_label_values(&[route, kind]).inc();
        }
    }

    /// Create the counters of a backend at zero when it joins a group.
    pub fn init_backend(&self, group: &str, backend: &str) {
        self.ejections.with_label_values(&[group, backend]);
    }

    /// Count a configuration load (start or reload) by result.
    pub fn config_load(&self, ok: bool) {
        self.config_loads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// Count one finished request.
    pub fn observe_request(
        &self,
        route: &str,
        group: &str,
        backend: &str,
        code: u16,
        duration: Duration,
    ) {
        if !self.enabled {
            return;
        }
        let code = self
            .codes
            .get(code as usize)
            .map(String::as_str)
            .unwrap_or("other");
        self.requests
            .with_label_values(&[route, group, backend, code])
            .inc();
        self.duration
            .with_label_values(&[route, group])
            .observe(duration.as_secs_f64());
    }

    pub fn upstream_error(&self, group: &str, backend: &str, kind: ErrorKind) {
        if !self.enabled {
            return;
        }
        self.upstream_errors
            .with_label_values(&[group, backend, kind.as_str()])
            .inc();
    }

    pub fn retry(&self, group: &str) {
        if !self.enabled {
            return;
        }
        self.retries.with_label_values(&[group]).inc();
    }

    pub fn no_backend(&self, group: &str) {
        if !self.enabled {
            return;
        }
        self.no_backend.with_label_values(&[group]).inc();
    }

    /// Count one active health check: `None` when it passed, else why it failed.
    pub fn health_check(&self, group: &str, backend: &str, failure: Option<ErrorKind>) {
        if !self.enabled {
            return;
        }
        let result = if failure.is_none() {
            "success"
        } else {
            "failure"
        };
        self.health_checks
            .with_label_values(&[group, backend, result])
            .inc();
        if let Some(kind) = failure {
            self.health_check_failures
                .with_label_values(&[group, backend, kind.as_str()])
                .inc();
        }
    }

    pub fn ejection(&self, group: &str, backend: &str) {
        if !self.enabled {
            return;
        }
        self.ejections.with_label_values(&[group, backend]).inc();
    }

    pub fn discovery_refresh(&self, group: &str, ok: bool) {
        if !self.enabled {
            return;
        }
        self.discovery_refreshes
            .with_label_values(&[group, if ok { "success" } else { "failure" }])
            .inc();
    }

    pub fn rate_limited(&self, route: &str) {
        if !self.enabled {
            return;
        }
        self.rate_limited.with_label_values(&[route]).inc();
    }

    /// The own HTTP/1 path handed a connection to Pingora's loop, for `reason`.
    pub fn http1_handover(&self, reason: &str) {
        if !self.enabled {
            return;
        }
        self.http1_handovers.with_label_values(&[reason]).inc();
    }

    pub fn shed(&self, group: &str) {
        if !self.enabled {
            return;
        }
        self.shed.with_label_values(&[group]).inc();
    }

    /// Set the per-backend gauges from the groups' live state.
    pub fn refresh_gauges(
        &self,
        groups: &[Arc<TargetGroup>],
        limiters: &[(String, Arc<RateLimiter>)],
    ) {
        for (route, limiter) in limiters {
            self.rate_limit_keys
                .with_label_values(&[route.as_str()])
                .set(limiter.tracked_keys() as i64);
        }
        self.client_connections
            .set(crate::edge::idle::open_connections() as i64);
        let now = std::time::Instant::now();
        // Drop series of backends (and groups) that left, then set the current ones.
        self.backends_alive.reset();
        self.group_failing_open.reset();
        self.backend_up.reset();
        self.backend_inflight.reset();
        self.backend_ewma.reset();
        self.backend_probe.reset();
        for g in groups {
            let name = g.config.name.as_str();
            self.backends_alive
                .with_label_values(&[name])
                .set(g.healthy_count() as i64);
            self.group_failing_open
                .with_label_values(&[name])
                .set(g.is_failing_open() as i64);
            for view in g.backend_views(now) {
                let addr = view.addr.to_string();
                let labels = [name, addr.as_str()];
                self.backend_up
                    .with_label_values(&labels)
                    .set((view.healthy && !view.ejected) as i64);
                self.backend_inflight
                    .with_label_values(&labels)
                    .set(view.inflight);
                self.backend_ewma
                    .with_label_values(&labels)
                    .set(view.ewma.as_secs_f64());
                if let Some(p) = view.probe {
                    self.backend_probe
                        .with_label_values(&labels)
                        .set(p.as_secs_f64());
                }
            }
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("encoding metrics failed: {e}");
        }
        out
    }
}

impl Metrics {
    /// The names of every metric family registered (also those with no sample yet).
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 29] = [
            &self.requests,
            &self.duration,
            &self.upstream_errors,
            &self.retries,
            &self.no_backend,
            &self.health_checks,
            &self.health_check_failures,
            &self.ejections,
            &self.discovery_refreshes,
            &self.rate_limited,
            &self.shed,
            &self.rate_limit_keys,
            &self.backends_alive,
            &self.backend_up,
            &self.backend_ewma,
            &self.backend_inflight,
            &self.backend_probe,
            &self.group_failing_open,
            &self.config_loads,
            &self.shadow_requests,
            &self.shadow_mismatch,
            &self.canary_weight,
            &self.canary_rollbacks,
            &self.faults,
            &self.store_errors,
            &self.store_fallback,
            &self.build_info,
            &self.start_time,
            &self.client_connections,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics() {
        let dashboard = include_str!("../conf/grafana/switchyard-dashboard.json");
        let names = Metrics::new(true).names();
        let used: std::collections::BTreeSet<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("lb_"))
            .collect();
        assert!(used.len() >= 8, "{used:?}");
        for name in used {
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                names.iter().any(|n| n == base),
                "dashboard uses {name}, which is not exported"
            );
        }
    }

    #[test]
    fn a_request_is_counted_once_with_its_labels() {
        let m = Metrics::new(true);
        m.observe_request("/c1", "c1", "127.0.0.1:1", 200, Duration::from_millis(3));
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(r#"lb_http_requests_total{backend="127.0.0.1:1",code="200",route="/c1",target_group="c1"} 1"#), "{text}");
        assert!(text.contains(
            r#"lb_request_duration_seconds_bucket{route="/c1",target_group="c1",le="0.005"} 1"#
        ));
    }
}
