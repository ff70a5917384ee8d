//! The one validation pass: surface structs in, a checked [`Config`] out.
//!
//! Every error names the field path (`target_groups[1].backends[0].address`) and, where the
//! offending text can be found, its line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::file::*;
use super::model::*;

/// Default active health-check values, in the spirit of HAProxy (`inter 2s rise 2 fall 3`).
pub const DEFAULT_HC_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HC_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;

struct Checker<'a> {
    text: &'a str,
    source: &'a str,
}

impl Checker<'_> {
    /// An error for `field`, located at the first line that mentions `needle` (if any).
    fn err(
        &self,
        field: impl Into<String>,
        needle: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            source: self.source.to_string(),
            field: field.into(),
            line: find_line(self.text, needle),
            message: message.into(),
        }
    }
}

/// The 1-based number of the first line containing `needle` outside comments.
fn find_line(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    text.lines()
        .position(|l| l.split('#').next().unwrap_or("").contains(needle))
        .map(|i| i + 1)
}

/// Validate `file` (parsed from `text`) into a [`Config`].
pub fn validate(file: FileConfig, text: &str, source: &str) -> Result<Config, ConfigError> {
    let c = Checker { text, source };
    let listeners = validate_listeners(&c, &file.listeners)?;
    let target_groups = file
        .target_groups
        .iter()
        .enumerate()
        .map(|(i, g)| validate_group(&c, i, g))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique_group_names(&c, &target_groups)?;
    let group_index = |name: &str| target_groups.iter().position(|g| g.name == name);

    let mut routes = Vec::with_capacity(file.routes.len());
    for (i, r) in file.routes.iter().enumerate() {
        routes.push(validate_route(&c, i, r, &group_index)?);
    }
    let mut names = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !names.insert(r.name.clone()) {
            return Err(c.err(
                format!("routes[{i}].name"),
                &r.name,
                format!("duplicate route name `{}`", r.name),
            ));
        }
    }
    let default_action = match &file.default_target_group {
        None => None,
        Some(name) => Some(RouteAction::Forward(group_index(name).ok_or_else(
            || {
                c.err(
                    "default_target_group",
                    "default_target_group",
                    format!("no target group named `{name}`"),
                )
            },
        )?)),
    };
    let admin = validate_admin(&c, &file.admin, &listeners)?;
    Ok(Config {
        admin,
        listeners,
        target_groups,
        routes,
        default_action,
        proxy: ProxySettings {
            decision_headers: file.proxy.decision_headers,
            access_log: file.proxy.access_log.unwrap_or(true),
            via: match file.proxy.via.as_deref() {
                None => Some("switchyard".to_string()),
                Some("") => None,
                Some(v) => Some(v.to_string()),
            },
            max_header_bytes: positive(
                &c,
                "proxy.max_header_bytes",
                file.proxy.max_header_bytes.unwrap_or(32 * 1024),
            )?,
            max_body_bytes: positive(
                &c,
                "proxy.max_body_bytes",
                file.proxy.max_body_bytes.unwrap_or(10 * 1024 * 1024) as usize,
            )? as u64,
            client_ip: validate_client_ip(&c, &file.proxy.client_ip)?,
            client_header_timeout: match file.proxy.client_header_timeout {
                Some(d) if d.is_zero() => {
                    return Err(c.err(
                        "proxy.client_header_timeout",
                        "client_header_timeout",
                        "must be greater than zero",
                    ))
                }
                Some(d) => d,
                None => Duration::from_secs(10),
            },
            client_body_timeout: match file.proxy.client_body_timeout {
                Some(d) if d.is_zero() => {
                    return Err(c.err(
                        "proxy.client_body_timeout",
                        "client_body_timeout",
                        "must be greater than zero",
                    ))
                }
                Some(d) => d,
                None => Duration::from_secs(30),
            },
            hsts: file.proxy.hsts.as_ref().map(|h| {
                let mut v = format!("max-age={}", h.max_age.as_secs());
                if h.include_subdomains {
                    v.push_str("; includeSubDomains");
                }
                v
            }),
        },
    })
}

fn positive(c: &Checker, field: &str, v: usize) -> Result<usize, ConfigError> {
    if v == 0 {
        let key = field.rsplit('.').next().unwrap_or(field);
        return Err(c.err(field, key, "must be greater than zero"));
    }
    Ok(v)
}

fn validate_client_ip(c: &Checker, f: &ClientIpFile) -> Result<ClientIpSettings, ConfigError> {
    let trusted_proxies = f
        .trusted_proxies
        .iter()
        .map(|t| Cidr::parse(t).map_err(|m| c.err("proxy.client_ip.trusted_proxies", t, m)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(h) = &f.header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(c.err(
                "proxy.client_ip.header",
                h,
                format!("`{h}` is not a valid header name"),
            ));
        }
        if trusted_proxies.is_empty() {
            return Err(c.err("proxy.client_ip.trusted_proxies", h,
                "a client IP header needs trusted_proxies: any client could otherwise choose its own IP"));
        }
    }
    Ok(ClientIpSettings {
        header: f.header.clone(),
        trusted_proxies,
    })
}

fn validate_listeners(
    c: &Checker,
    listeners: &[ListenerFile],
) -> Result<Vec<Listener>, ConfigError> {
    if listeners.is_empty() {
        return Err(c.err(
            "listeners",
            "listeners",
            "at least one listener is required",
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let field = format!("listeners[{i}].address");
        let address = parse_socket_addr(&l.address).map_err(|m| c.err(&field, &l.address, m))?;
        if !seen.insert(address) {
            return Err(c.err(&field, &l.address, format!("duplicate listener {address}")));
        }
        let kind = listener_kind(c, i, l)?;
        out.push(Listener {
            address,
            address_text: l.address.trim().to_string(),
            kind,
        });
    }
    Ok(out)
}

fn listener_kind(c: &Checker, i: usize, l: &ListenerFile) -> Result<ListenerKind, ConfigError> {
    let at = |f: &str| format!("listeners[{i}].{f}");
    match (&l.tls, &l.redirect_https) {
        (Some(_), Some(_)) => Err(c.err(
            at("redirect_https"),
            "redirect_https",
            "a listener either terminates TLS or redirects to HTTPS, not both",
        )),
        (None, None) => Ok(ListenerKind::Plain),
        (None, Some(r)) => {
            let port = r.port.unwrap_or(443);
            let status = r.status.unwrap_or(308);
            if port == 0 {
                return Err(c.err(
                    at("redirect_https.port"),
                    "port",
                    "must be a TCP port (1-65535)",
                ));
            }
            if status != 301 && status != 308 {
                return Err(c.err(
                    at("redirect_https.status"),
                    "status",
                    format!("must be 301 or 308, got {status}"),
                ));
            }
            Ok(ListenerKind::RedirectHttps { port, status })
        }
        (Some(t), None) => match (&t.cert, &t.key, t.self_signed) {
            (None, None, true) => Ok(ListenerKind::SelfSignedTls),
            (Some(cert), Some(key), false) => {
                let (cert, key) = (
                    std::path::PathBuf::from(cert),
                    std::path::PathBuf::from(key),
                );
                crate::edge::tls::check_pem_files(&cert, &key).map_err(|(which, m)| {
                    let needle = if which == "cert" {
                        cert.display().to_string()
                    } else {
                        key.display().to_string()
                    };
                    c.err(at(&format!("tls.{which}")), &needle, m)
                })?;
                Ok(ListenerKind::Tls { cert, key })
            }
            _ => Err(c.err(
                at("tls"),
                "tls",
                "give `cert` and `key` (PEM files), or `self_signed: true` for development",
            )),
        },
    }
}

/// Default admin address: loopback only, like HAProxy's stats socket.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9091";

fn validate_admin(
    c: &Checker,
    a: &AdminFile,
    listeners: &[Listener],
) -> Result<Option<AdminSettings>, ConfigError> {
    if a.enabled == Some(false) {
        return Ok(None);
    }
    let text = a
        .address
        .clone()
        .unwrap_or_else(|| DEFAULT_ADMIN_ADDRESS.to_string());
    let address = parse_socket_addr(&text).map_err(|m| c.err("admin.address", &text, m))?;
    if listeners.iter().any(|l| {
        l.address.port() == address.port()
            && (l.address.ip() == address.ip()
                || l.address.ip().is_unspecified()
                || address.ip().is_unspecified())
    }) {
        return Err(c.err(
            "admin.address",
            &text,
            format!("{address} overlaps a proxy listener; metrics never share the proxy port"),
        ));
    }
    Ok(Some(AdminSettings {
        address,
        address_text: text.trim().to_string(),
        metrics: a.metrics.unwrap_or(true),
    }))
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        format!("`{text}` is not an `ip:port` address (names are not resolved; use e.g. 127.0.0.1:8080 or [::1]:8080)")
    })
}

fn check_unique_group_names(c: &Checker, groups: &[TargetGroupConfig]) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        if !seen.insert(g.name.as_str()) {
            return Err(c.err(
                format!("target_groups[{i}].name"),
                &format!("name: {}", g.name),
                format!("duplicate target group name `{}`", g.name),
            ));
        }
    }
    Ok(())
}

fn validate_group(
    c: &Checker,
    i: usize,
    g: &TargetGroupFile,
) -> Result<TargetGroupConfig, ConfigError> {
    let at = |f: &str| format!("target_groups[{i}].{f}");
    if g.name.trim().is_empty()
        || !g
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        return Err(c.err(
            at("name"),
            &g.name,
            format!(
                "`{}` is not a valid name (use letters, digits, `-`, `_` and `.`)",
                g.name
            ),
        ));
    }
    let ec2 = match &g.ec2 {
        Some(_) if !g.backends.is_empty() => {
            return Err(c.err(
                at("ec2"),
                "ec2:",
                "give either `backends` or `ec2`, not both",
            ));
        }
        Some(e) => Some(validate_ec2(c, &at("ec2"), e)?),
        None => None,
    };
    if g.backends.is_empty() && ec2.is_none() {
        return Err(c.err(
            at("backends"),
            &format!("name: {}", g.name),
            format!(
                "target group `{}` has no backends (list `backends` or configure `ec2` discovery)",
                g.name
            ),
        ));
    }
    let mut backends = Vec::with_capacity(g.backends.len());
    let mut seen = HashSet::new();
    for (j, b) in g.backends.iter().enumerate() {
        let field = at(&format!("backends[{j}].address"));
        let address = parse_socket_addr(&b.address).map_err(|m| c.err(&field, &b.address, m))?;
        if !seen.insert(address) {
            return Err(c.err(
                &field,
                &b.address,
                format!("duplicate backend {address} in group `{}`", g.name),
            ));
        }
        let weight = b.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            return Err(c.err(
                at(&format!("backends[{j}].weight")),
                &b.address,
                format!("weight must be within 1..=1000, got {weight}"),
            ));
        }
        backends.push(BackendSpec { address, weight });
    }
    let health_check = validate_health_check(c, &at("health_check"), &g.health_check)?;
    let passive = PassiveSettings {
        enabled: g.passive_health.enabled.unwrap_or(true),
        max_failures: g.passive_health.max_failures.unwrap_or(5),
        ejection_time: g
            .passive_health
            .ejection_time
            .unwrap_or(Duration::from_secs(30)),
    };
    if passive.max_failures == 0 {
        return Err(c.err(
            at("passive_health.max_failures"),
            "max_failures",
            "must be at least 1",
        ));
    }
    let timeouts = UpstreamTimeouts {
        connect: g.connect_timeout.unwrap_or(Duration::from_secs(2)),
        read: g.read_timeout.unwrap_or(Duration::from_secs(60)),
        write: g.write_timeout.unwrap_or(Duration::from_secs(60)),
        idle: g.idle_timeout.unwrap_or(Duration::from_secs(60)),
    };
    for (name, d) in [
        ("connect_timeout", timeouts.connect),
        ("read_timeout", timeouts.read),
        ("write_timeout", timeouts.write),
        ("idle_timeout", timeouts.idle),
    ] {
        if d.is_zero() {
            return Err(c.err(at(name), name, "must be greater than zero"));
        }
    }
    let max_retries = g.max_retries.unwrap_or(2);
    if max_retries > 10 {
        return Err(c.err(
            at("max_retries"),
            "max_retries",
            format!("must be at most 10, got {max_retries}"),
        ));
    }
    let defaults = LatencySettings::default();
    let latency = LatencySettings {
        decay: g.latency.decay.unwrap_or(defaults.decay),
        default_rtt: g.latency.default_rtt.unwrap_or(defaults.default_rtt),
        failure_penalty: g
            .latency
            .failure_penalty
            .unwrap_or(defaults.failure_penalty),
        p2c_threshold: g.latency.p2c_threshold.unwrap_or(defaults.p2c_threshold),
    };
    if latency.decay.is_zero() {
        return Err(c.err(at("latency.decay"), "decay", "must be greater than zero"));
    }
    if latency.p2c_threshold < 2 {
        return Err(c.err(
            at("latency.p2c_threshold"),
            "p2c_threshold",
            "must be at least 2",
        ));
    }
    let sticky = validate_sticky(c, &at("sticky"), &g.sticky)?;
    Ok(TargetGroupConfig {
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
        shed: validate_shed(c, i, g)?,
    })
}

fn validate_ec2(c: &Checker, field: &str, e: &Ec2File) -> Result<Ec2Settings, ConfigError> {
    if e.filters.is_empty() {
        return Err(c.err(format!("{field}.filters"), "filters",
            "at least one filter is required (e.g. tag:Cluster), or every instance of the account would be a backend"));
    }
    for (i, f) in e.filters.iter().enumerate() {
        if f.name.trim().is_empty() || f.values.is_empty() {
            return Err(c.err(
                format!("{field}.filters[{i}]"),
                &f.name,
                "a filter needs a name and at least one value",
            ));
        }
    }
    if let Some(endpoint) = &e.endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(c.err(
                format!("{field}.endpoint"),
                endpoint,
                "must be an http:// or https:// URL",
            ));
        }
    }
    let refresh_interval = e.refresh_interval.unwrap_or(Duration::from_secs(60));
    if refresh_interval < Duration::from_secs(1) {
        return Err(c.err(
            format!("{field}.refresh_interval"),
            "refresh_interval",
            "must be at least 1s",
        ));
    }
    let port = e.port.unwrap_or(80);
    if port == 0 {
        return Err(c.err(
            format!("{field}.port"),
            "port",
            "must be a TCP port (1-65535)",
        ));
    }
    Ok(Ec2Settings {
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

fn validate_shed(
    c: &Checker,
    i: usize,
    g: &TargetGroupFile,
) -> Result<Option<crate::edge::shed::ShedSettings>, ConfigError> {
    let at = |f: &str| format!("target_groups[{i}].{f}");
    let Some(max_inflight) = g.max_inflight else {
        if g.queue.is_some() {
            return Err(c.err(at("queue"), "queue", "a queue needs `max_inflight`"));
        }
        return Ok(None);
    };
    if max_inflight == 0 {
        return Err(c.err(at("max_inflight"), "max_inflight", "must be at least 1"));
    }
    let size = g.queue.as_ref().and_then(|q| q.size).unwrap_or(0);
    let timeout = g
        .queue
        .as_ref()
        .and_then(|q| q.timeout)
        .unwrap_or(Duration::from_secs(1));
    if timeout.is_zero() && size > 0 {
        return Err(c.err(at("queue.timeout"), "timeout", "must be greater than zero"));
    }
    Ok(Some(crate::edge::shed::ShedSettings {
        max_inflight,
        queue_size: size,
        queue_timeout: timeout,
    }))
}

fn validate_health_check(
    c: &Checker,
    field: &str,
    h: &HealthCheckFile,
) -> Result<HealthCheckSettings, ConfigError> {
    let path = h.path.clone().unwrap_or_else(|| "/health".to_string());
    if !path.starts_with('/') {
        return Err(c.err(
            format!("{field}.path"),
            &path,
            format!("`{path}` must start with `/`"),
        ));
    }
    let interval = h.interval.unwrap_or(DEFAULT_HC_INTERVAL);
    let timeout = h.timeout.unwrap_or(DEFAULT_HC_TIMEOUT);
    if interval.is_zero() || timeout.is_zero() {
        return Err(c.err(
            format!("{field}.interval"),
            "interval",
            "interval and timeout must be greater than zero",
        ));
    }
    if timeout > interval {
        return Err(c.err(
            format!("{field}.timeout"),
            "timeout",
            format!(
                "timeout ({}) must not exceed interval ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    let healthy_threshold = h.healthy_threshold.unwrap_or(DEFAULT_HEALTHY_THRESHOLD);
    let unhealthy_threshold = h.unhealthy_threshold.unwrap_or(DEFAULT_UNHEALTHY_THRESHOLD);
    for (name, v) in [
        ("healthy_threshold", healthy_threshold),
        ("unhealthy_threshold", unhealthy_threshold),
    ] {
        if !(1..=100).contains(&v) {
            return Err(c.err(
                format!("{field}.{name}"),
                name,
                format!("must be within 1..=100, got {v}"),
            ));
        }
    }
    let expected_text = h
        .expected_status
        .clone()
        .unwrap_or_else(|| "200-399".to_string());
    let expected_status = parse_status_ranges(&expected_text)
        .map_err(|m| c.err(format!("{field}.expected_status"), &expected_text, m))?;
    Ok(HealthCheckSettings {
        enabled: h.enabled.unwrap_or(true),
        path,
        host: h.host.clone(),
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_status,
    })
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

fn validate_sticky(
    c: &Checker,
    field: &str,
    s: &StickyFile,
) -> Result<StickySettings, ConfigError> {
    let lb_cookie = match &s.lb_cookie {
        None => None,
        Some(lc) => {
            let name = lc.name.clone().unwrap_or_else(|| "SWITCHYARD".to_string());
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(c.err(
                    format!("{field}.lb_cookie.name"),
                    &name,
                    format!("`{name}` is not a valid cookie name"),
                ));
            }
            let max_age = lc.max_age.unwrap_or(Duration::from_secs(86_400));
            if max_age.is_zero() || max_age > Duration::from_secs(7 * 86_400) {
                return Err(c.err(
                    format!("{field}.lb_cookie.max_age"),
                    "max_age",
                    "must be within 1s..=7d (as an ALB)",
                ));
            }
            Some(LbCookie { name, max_age })
        }
    };
    Ok(StickySettings { lb_cookie })
}

fn validate_route(
    c: &Checker,
    i: usize,
    r: &RouteFile,
    group_index: &dyn Fn(&str) -> Option<usize>,
) -> Result<Route, ConfigError> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let needle = r
        .path_prefix
        .as_deref()
        .or(r.path.as_deref())
        .or(r.host.as_deref())
        .unwrap_or("routes");
    let path = match (&r.path, &r.path_prefix) {
        (Some(_), Some(_)) => {
            return Err(c.err(
                at("path"),
                needle,
                "give either `path` or `path_prefix`, not both",
            ))
        }
        (Some(p), None) => PathMatch::Exact(check_path(c, &at("path"), p)?),
        (None, Some(p)) => {
            let p = check_path(c, &at("path_prefix"), p)?;
            if p == "/" {
                PathMatch::Any
            } else {
                PathMatch::Prefix(p.trim_end_matches('/').to_string())
            }
        }
        (None, None) => PathMatch::Any,
    };
    let host = r.host.as_deref().map(|h| {
        let h = h.trim().to_ascii_lowercase();
        match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostMatch::Suffix(suffix.to_string()),
            _ => HostMatch::Exact(h),
        }
    });
    let actions =
        r.target_group.is_some() as u8 + r.status_page as u8 + r.fixed_response.is_some() as u8;
    if actions != 1 {
        return Err(c.err(format!("routes[{i}]"), needle,
            "each route needs exactly one of `target_group`, `status_page: true` or `fixed_response`"));
    }
    let action = if let Some(name) = &r.target_group {
        RouteAction::Forward(group_index(name).ok_or_else(|| {
            c.err(
                at("target_group"),
                &format!("target_group: {name}"),
                format!("no target group named `{name}`"),
            )
        })?)
    } else if r.status_page {
        RouteAction::StatusPage
    } else {
        let f = r.fixed_response.as_ref().expect("counted above");
        if !(100..=599).contains(&f.status) {
            return Err(c.err(
                at("fixed_response.status"),
                "status",
                format!("{} is not an HTTP status", f.status),
            ));
        }
        RouteAction::Fixed {
            status: f.status,
            body: f.body.clone(),
            content_type: f
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=utf-8".to_string()),
        }
    };
    if r.strip_prefix
        && !(matches!(path, PathMatch::Prefix(_)) && matches!(action, RouteAction::Forward(_)))
    {
        return Err(c.err(
            at("strip_prefix"),
            "strip_prefix",
            "needs a `path_prefix` other than `/` and a `target_group`",
        ));
    }
    let name = r.name.clone().unwrap_or_else(|| match (&path, &host) {
        (PathMatch::Exact(p) | PathMatch::Prefix(p), _) => p.clone(),
        (PathMatch::Any, Some(HostMatch::Exact(h) | HostMatch::Suffix(h))) => h.clone(),
        (PathMatch::Any, None) => format!("route{i}"),
    });
    let rate_limit = match &r.rate_limit {
        None => None,
        Some(rl) => Some(validate_rate_limit(c, &at("rate_limit"), rl)?),
    };
    Ok(Route {
        name,
        host,
        path,
        strip_prefix: r.strip_prefix,
        action,
        rate_limit,
    })
}

fn validate_rate_limit(
    c: &Checker,
    field: &str,
    rl: &RateLimitFile,
) -> Result<crate::edge::rate_limit::RateLimitSettings, ConfigError> {
    use crate::edge::rate_limit::{RateKey, RateLimitSettings};
    if !(rl.rate.is_finite() && rl.rate > 0.0) {
        return Err(c.err(
            format!("{field}.rate"),
            "rate",
            format!(
                "must be a positive number of requests per second, got {}",
                rl.rate
            ),
        ));
    }
    let burst = rl.burst.unwrap_or(rl.rate.max(1.0));
    if !(burst.is_finite() && burst >= 1.0) {
        return Err(c.err(
            format!("{field}.burst"),
            "burst",
            format!("must be at least 1, got {burst}"),
        ));
    }
    let max_keys = rl.max_keys.unwrap_or(100_000);
    if max_keys == 0 {
        return Err(c.err(
            format!("{field}.max_keys"),
            "max_keys",
            "must be at least 1",
        ));
    }
    let key = match rl.key.unwrap_or(RateKeyFile::ClientIp) {
        RateKeyFile::ClientIp => RateKey::ClientIp,
        RateKeyFile::Global => RateKey::Global,
    };
    Ok(RateLimitSettings {
        rate: rl.rate,
        burst,
        key,
        max_keys,
    })
}

fn check_path(c: &Checker, field: &str, p: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
        return Err(c.err(
            field,
            p,
            format!("`{p}` must start with `/` and hold no query, fragment or space"),
        ));
    }
    Ok(p.to_string())
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

    #[test]
    fn find_line_skips_comments() {
        let text = "# target_group: x\nroutes:\n  - target_group: x\n";
        assert_eq!(find_line(text, "target_group: x"), Some(3));
    }
}
