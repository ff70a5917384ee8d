//! `target_groups:`: backends or EC2 discovery, strategy and its settings, health, timeouts,
//! retries, shedding.

use std::collections::HashSet;
use std::time::Duration;

use super::super::file::*;
use super::super::model::*;
use super::{parse_socket_addr, Checker};
use crate::edge::shed::ShedSettings;
use crate::selection::StrategyKind;

/// Default active health-check values, in the spirit of HAProxy (`inter 2s rise 2 fall 3`).
pub const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

/// The valid groups, and the names of the invalid ones (so that references to them are not
/// reported as errors of their own).
pub(super) fn validate(
    c: &mut Checker,
    groups: &[(usize, TargetGroupFile)],
) -> (Vec<TargetGroupConfig>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    for (i, g) in groups {
        let Some(group) = group(c, *i, g) else {
            invalid.push(g.name.clone());
            continue;
        };
        if !seen.insert(group.name.clone()) {
            c.error(
                format!("target_groups[{i}].name"),
                format!("duplicate target group name `{}`", group.name),
            );
            continue;
        }
        out.push(group);
    }
    (out, invalid)
}

fn group(c: &mut Checker, i: usize, g: &TargetGroupFile) -> Option<TargetGroupConfig> {
    let at = |f: &str| format!("target_groups[{i}].{f}");
    let errors_before = c.errors.len();
    if !valid_name(&g.name) {
        c.error(
            at("name"),
            format!(
                "`{}` is not a valid name (use letters, digits, `-`, `_` and `.`)",
                g.name
            ),
        );
    }
    let ec2 = match &g.ec2 {
        Some(_) if !g.backends.is_empty() => {
            c.error(at("ec2"), "give either `backends` or `ec2`, not both");
            None
        }
        Some(e) => ec2(c, &at("ec2"), e),
        None => None,
    };
    if g.backends.is_empty() && g.ec2.is_none() {
        c.error(
            at("backends"),
            format!(
                "target group `{}` has no backends (list `backends` or configure `ec2` discovery)",
                g.name
            ),
        );
    }
    let backends = backends(c, i, g);
    let health_check = health_check(c, &at("health_check"), &g.health_check);
    let passive = PassiveSettings {
        enabled: g.passive_health.enabled.unwrap_or(true),
        max_failures: g.passive_health.max_failures.unwrap_or(5),
        ejection_time: g
            .passive_health
            .ejection_time
            .unwrap_or(Duration::from_secs(30)),
    };
    if passive.max_failures == 0 {
        c.error(at("passive_health.max_failures"), "must be at least 1");
    }
    c.nonzero(&at("passive_health.ejection_time"), passive.ejection_time);
    let timeouts = UpstreamTimeouts {
        connect: c.nonzero(
            &at("connect_timeout"),
            g.connect_timeout.unwrap_or(Duration::from_secs(2)),
        ),
        read: c.nonzero(
            &at("read_timeout"),
            g.read_timeout.unwrap_or(Duration::from_secs(60)),
        ),
        write: c.nonzero(
            &at("write_timeout"),
            g.write_timeout.unwrap_or(Duration::from_secs(60)),
        ),
        idle: c.nonzero(
            &at("idle_timeout"),
            g.idle_timeout.unwrap_or(Duration::from_secs(60)),
        ),
    };
    let max_retries = g.max_retries.unwrap_or(2);
    if max_retries > 10 {
        c.error(
            at("max_retries"),
            format!("must be at most 10, got {max_retries}"),
        );
    }
    let latency = latency(c, i, g);
    let sticky = sticky(c, i, g);
    strategy_needs(c, i, g, &health_check);
    let shed = shed(c, i, g);
    let upstream = upstream(c, i, g);
    if c.errors.len() > errors_before {
        return None;
    }
    Some(TargetGroupConfig {
        name: g.name.clone(),
        strategy: g.strategy,
        backends,
        ec2,
        deregistration_delay: g.deregistration_delay.unwrap_or(Duration::from_secs(300)),
        health_check,
        passive,
        fail_open: g.fail_open.unwrap_or(true),
        timeouts,
        max_retries,
        latency,
        sticky,
        shed,
        upstream,
    })
}

/// `protocol`, `protocol_version` and `tls`; certificates are read now, as for listeners.
/// The protocol, HTTP version and TLS settings towards the group's backends.
fn upstream(c: &mut Checker, i: usize, g: &TargetGroupFile) -> UpstreamProtocol {
    let at = |f: &str| format!("target_groups[{i}].{f}");
    let version = match g.protocol_version.unwrap_or(ProtocolVersionFile::Http1) {
        ProtocolVersionFile::Http1 => ProtocolVersion::Http1,
        ProtocolVersionFile::Http2 => ProtocolVersion::Http2,
        ProtocolVersionFile::Grpc => ProtocolVersion::Grpc,
    };
    if version == ProtocolVersion::Grpc && c.present(&at("health_check.path")) {
        c.error(
            at("health_check.path"),
            "gRPC groups are checked with grpc.health.v1.Health/Check: the path does nothing",
        );
    }
    let https = g.protocol == Some(ProtocolFile::Https);
    let Some(t) = &g.tls else {
        return UpstreamProtocol {
            tls: https.then_some(UpstreamTls {
                ca_file: None,
                server_name: None,
                client_cert: None,
                insecure_skip_verify: false,
            }),
            version,
        };
    };
    if !https {
        c.error(
            at("tls"),
            "TLS settings do nothing without `protocol: https`",
        );
    }
    let file = |c: &mut Checker, key: &str, path: &Option<String>| {
        let p = path.as_ref().map(std::path::PathBuf::from);
        if let Some(p) = &p {
            if let Err(e) = crate::edge::upstream_tls::check_pem(p, key) {
                c.error(at(&format!("tls.{key}")), e);
            }
        }
        p
    };
    let ca_file = file(c, "ca_file", &t.ca_file);
    let cert = file(c, "client_cert", &t.client_cert);
    let key = file(c, "client_key", &t.client_key);
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            c.error(
                at("tls"),
                "give both `client_cert` and `client_key` for mTLS",
            );
            None
        }
    };
    if let Some(name) = &t.server_name {
        if name.is_empty() || name.contains(['/', ' ', ':']) {
            c.error(
                at("tls.server_name"),
                format!("`{name}` is not a host name"),
            );
        }
    }
    if t.insecure_skip_verify {
        c.warn(
            at("tls.insecure_skip_verify"),
            "backend certificates are not verified: anyone on the path can impersonate them (development only)",
        );
        if t.ca_file.is_some() || t.server_name.is_some() {
            c.error(
                at("tls.insecure_skip_verify"),
                "`ca_file` and `server_name` do nothing when verification is off",
            );
        }
    }
    UpstreamProtocol {
        tls: Some(UpstreamTls {
            ca_file,
            server_name: t.server_name.clone(),
            client_cert,
            insecure_skip_verify: t.insecure_skip_verify,
        }),
        version,
    }
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
}

fn backends(c: &mut Checker, i: usize, g: &TargetGroupFile) -> Vec<BackendSpec> {
    let mut out = Vec::with_capacity(g.backends.len());
    let mut seen = HashSet::new();
    for (j, b) in g.backends.iter().enumerate() {
        let field = format!("target_groups[{i}].backends[{j}]");
        let address = match parse_socket_addr(&b.address) {
            Ok(a) => a,
            Err(m) => {
                c.error(format!("{field}.address"), m);
                continue;
            }
        };
        if !seen.insert(address) {
            c.error(
                format!("{field}.address"),
                format!("duplicate backend {address} in group `{}`", g.name),
            );
            continue;
        }
        let weight = b.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            c.error(
                format!("{field}.weight"),
                format!("weight must be within 1..=1000, got {weight}"),
            );
            continue;
        }
        out.push(BackendSpec { address, weight });
    }
    out
}

/// Settings that only some strategies read are refused elsewhere: they would silently do
/// nothing.
fn strategy_needs(c: &mut Checker, i: usize, g: &TargetGroupFile, hc: &HealthCheckSettings) {
    let at = |f: &str| format!("target_groups[{i}].{f}");
    if g.strategy == StrategyKind::Fastest && !hc.enabled {
        c.error(
            at("health_check.enabled"),
            "strategy `fastest` ranks backends by their active probes: it needs health checks enabled",
        );
    }
}

fn latency(c: &mut Checker, i: usize, g: &TargetGroupFile) -> LatencySettings {
    let at = |f: &str| format!("target_groups[{i}].latency.{f}");
    let defaults = LatencySettings::default();
    let latency = LatencySettings {
        decay: c.nonzero(&at("decay"), g.latency.decay.unwrap_or(defaults.decay)),
        default_rtt: g.latency.default_rtt.unwrap_or(defaults.default_rtt),
        failure_penalty: g
            .latency
            .failure_penalty
            .unwrap_or(defaults.failure_penalty),
        p2c_threshold: g.latency.p2c_threshold.unwrap_or(defaults.p2c_threshold),
    };
    if latency.p2c_threshold < 2 {
        c.error(at("p2c_threshold"), "must be at least 2");
    }
    let uses_threshold = matches!(
        g.strategy,
        StrategyKind::LeastConn | StrategyKind::Adaptive | StrategyKind::Fastest
    );
    if g.latency.p2c_threshold.is_some() && !uses_threshold {
        c.error(
            at("p2c_threshold"),
            format!(
                "strategy `{}` has no scan/sampling threshold (only least_conn, adaptive and fastest do)",
                g.strategy.name()
            ),
        );
    }
    latency
}

fn sticky(c: &mut Checker, i: usize, g: &TargetGroupFile) -> StickySettings {
    let field = format!("target_groups[{i}].sticky");
    if c.present(&field) && g.strategy != StrategyKind::Sticky {
        c.error(
            &field,
            format!(
                "sticky settings do nothing with strategy `{}`: use `strategy: sticky`, or remove this block",
                g.strategy.name()
            ),
        );
    }
    let Some(lc) = &g.sticky.lb_cookie else {
        return StickySettings::default();
    };
    let name = lc.name.clone().unwrap_or_else(|| "SWITCHYARD".to_string());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        c.error(
            format!("{field}.lb_cookie.name"),
            format!("`{name}` is not a valid cookie name"),
        );
    }
    let max_age = lc.max_age.unwrap_or(Duration::from_secs(86_400));
    if max_age.is_zero() || max_age > Duration::from_secs(7 * 86_400) {
        c.error(
            format!("{field}.lb_cookie.max_age"),
            "must be within 1s..=7d (as an ALB)",
        );
    }
    StickySettings {
        lb_cookie: Some(LbCookie { name, max_age }),
    }
}

fn ec2(c: &mut Checker, field: &str, e: &Ec2File) -> Option<Ec2Settings> {
    let before = c.errors.len();
    if e.filters.is_empty() {
        c.error(format!("{field}.filters"),
            "at least one filter is required (e.g. tag:Cluster), or every instance of the account would be a backend");
    }
    for (i, f) in e.filters.iter().enumerate() {
        if f.name.trim().is_empty() || f.values.is_empty() {
            c.error(
                format!("{field}.filters[{i}]"),
                "a filter needs a name and at least one value",
            );
        }
    }
    if let Some(endpoint) = &e.endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            c.error(
                format!("{field}.endpoint"),
                "must be an http:// or https:// URL",
            );
        }
    }
    let refresh_interval = e.refresh_interval.unwrap_or(Duration::from_secs(60));
    if refresh_interval < Duration::from_secs(1) {
        c.error(format!("{field}.refresh_interval"), "must be at least 1s");
    }
    let port = e.port.unwrap_or(80);
    if port == 0 {
        c.error(format!("{field}.port"), "must be a TCP port (1-65535)");
    }
    (c.errors.len() == before).then(|| Ec2Settings {
        region: e.region.clone(),
        endpoint: e.endpoint.clone(),
        profile: e.profile.clone(),
        role_arn: e.role_arn.clone(),
        filters: e
            .filters
            .iter()
            .map(|f| (f.name.clone(), f.values.clone()))
            .collect(),
        port,
        public_address: matches!(e.address, Some(Ec2AddressFile::Public)),
        refresh_interval,
        keep_last_on_empty: e.keep_last_on_empty.unwrap_or(true),
    })
}

fn shed(c: &mut Checker, i: usize, g: &TargetGroupFile) -> Option<ShedSettings> {
    let at = |f: &str| format!("target_groups[{i}].{f}");
    let Some(max_inflight) = g.max_inflight else {
        if g.queue.is_some() {
            c.error(at("queue"), "a queue needs `max_inflight`");
        }
        return None;
    };
    if max_inflight == 0 {
        c.error(at("max_inflight"), "must be at least 1");
    }
    let size = g.queue.as_ref().and_then(|q| q.size).unwrap_or(0);
    let timeout = g
        .queue
        .as_ref()
        .and_then(|q| q.timeout)
        .unwrap_or(Duration::from_secs(1));
    if timeout.is_zero() && size > 0 {
        c.error(at("queue.timeout"), "must be greater than zero");
    }
    Some(ShedSettings {
        max_inflight,
        queue_size: size,
        queue_timeout: timeout,
    })
}

fn health_check(c: &mut Checker, field: &str, h: &HealthCheckFile) -> HealthCheckSettings {
    let path = h.path.clone().unwrap_or_else(|| "/health".to_string());
    if !path.starts_with('/') || path.contains([' ', '#']) || path.parse::<http::Uri>().is_err() {
        c.error(
            format!("{field}.path"),
            format!("`{path}` must be a path starting with `/`"),
        );
    }
    let interval = c.nonzero(
        &format!("{field}.interval"),
        h.interval.unwrap_or(DEFAULT_HC_INTERVAL),
    );
    let timeout = c.nonzero(
        &format!("{field}.timeout"),
        h.timeout.unwrap_or(DEFAULT_HC_TIMEOUT),
    );
    if timeout > interval {
        c.error(
            format!("{field}.timeout"),
            format!(
                "timeout ({}) must not exceed interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        );
    }
    let healthy_threshold = h.healthy_threshold.unwrap_or(DEFAULT_HEALTHY_THRESHOLD);
    let unhealthy_threshold = h.unhealthy_threshold.unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD);
    for (name, v) in [
        ("healthy_threshold", healthy_threshold),
        ("unhealthy_threshold", unhealthy_threshold),
    ] {
        if !(1..=100).contains(&v) {
            c.error(
                format!("{field}.{name}"),
                format!("must be within 1..=100, got {v}"),
            );
        }
    }
    let expected_text = h
        .expected_status
        .clone()
        .unwrap_or_else(|| "200-399".to_string());
    let expected_status = parse_status_ranges(&expected_text).unwrap_or_else(|m| {
        c.error(format!("{field}.expected_status"), m);
        StatusRanges(vec![(200, 399)])
    });
    if let Some(host) = &h.host {
        if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
            c.error(
                format!("{field}.host"),
                format!("`{host}` is not a valid Host header"),
            );
        }
    }
    HealthCheckSettings {
        enabled: h.enabled.unwrap_or(true),
        path,
        host: h.host.clone(),
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_status,
    }
}

/// Parse `"200-399"`, `"200,204"` or `"200-299, 301"`.
pub fn parse_status_ranges(text: &str) -> Result<StatusRanges, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| s.parse::<u16>().ok().filter(|v| (100..=599).contains(v));
        match (parse(lo), parse(hi)) {
            (Some(lo), Some(hi)) if lo <= hi => out.push((lo, hi)),
            _ => {
                return Err(format!(
                    "`{part}` is not a status or range of statuses within 100-599"
                ))
            }
        }
    }
    if out.is_empty() {
        return Err("no status given".to_string());
    }
    Ok(StatusRanges(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse() {
        assert_eq!(
            parse_status_ranges("200-399").unwrap(),
            StatusRanges(vec![(200, 399)])
        );
        assert_eq!(
            parse_status_ranges("200, 204").unwrap(),
            StatusRanges(vec![(200, 200), (204, 204)])
        );
        assert!(parse_status_ranges("399-200").is_err());
        assert!(parse_status_ranges("abc").is_err());
        assert!(parse_status_ranges("").is_err());
    }
}
