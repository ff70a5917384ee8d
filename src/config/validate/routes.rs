//! `routes:`: matches, actions, rate limits.

use std::collections::HashSet;

use super::super::file::*;
use super::super::model::*;
use super::policy::{self, Groups};
use super::Checker;
use std::time::Duration;

use crate::edge::rate_limit::{RateKey, RateLimitSettings, StoreSettings};

pub(super) fn validate(
    c: &mut Checker,
    routes: &[(usize, RouteFile)],
    group_index: &dyn Fn(&str) -> Option<usize>,
    known_group: &dyn Fn(&str) -> bool,
) -> Vec<Route> {
    let mut out = Vec::with_capacity(routes.len());
    let mut names = HashSet::new();
    for (i, r) in routes {
        let Some(route) = route(c, *i, r, group_index, known_group) else {
            continue;
        };
        if !names.insert(route.name.clone()) {
            let field = if c.present(&format!("routes[{i}].name")) {
                format!("routes[{i}].name")
            } else {
                format!("routes[{i}]")
            };
            c.error(
                field,
                format!(
                    "duplicate route name `{}` (names label metrics and logs; set `name:` to tell them apart)",
                    route.name
                ),
            );
            continue;
        }
        out.push(route);
    }
    out
}

fn route(
    c: &mut Checker,
    i: usize,
    r: &RouteFile,
    group_index: &dyn Fn(&str) -> Option<usize>,
    known_group: &dyn Fn(&str) -> bool,
) -> Option<Route> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let before = c.errors.len();
    let path = match (&r.path, &r.path_prefix) {
        (Some(_), Some(_)) => {
            c.error(at("path"), "give either `path` or `path_prefix`, not both");
            PathMatch::Any
        }
        (Some(p), None) => PathMatch::Exact(check_path(c, &at("path"), p)),
        (None, Some(p)) => {
            let p = check_path(c, &at("path_prefix"), p);
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
        if h.is_empty() || h.contains(['/', ' ']) {
            c.error(at("host"), format!("`{h}` is not a host name"));
        }
        match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostMatch::Suffix(suffix.to_string()),
            _ => HostMatch::Exact(h),
        }
    });
    let groups = Groups {
        index: group_index,
        known: known_group,
    };
    let action = action(c, i, r, &groups);
    let forwards = matches!(
        action,
        Some(RouteAction::Forward(_) | RouteAction::Split(_)) | None
    );
    if r.strip_prefix && !(matches!(path, PathMatch::Prefix(_)) && forwards) {
        c.error(
            at("strip_prefix"),
            "needs a `path_prefix` other than `/` and a `target_group`",
        );
    }
    let name = r.name.clone().unwrap_or_else(|| match (&path, &host) {
        (PathMatch::Exact(p) | PathMatch::Prefix(p), _) => p.clone(),
        (PathMatch::Any, Some(HostMatch::Exact(h) | HostMatch::Suffix(h))) => h.clone(),
        // A catch-all is named by what it matches, not by its position, so that adding a
        // route above it does not rename it (names key metrics and what a reload keeps).
        (PathMatch::Any, None) => "/".to_string(),
    });
    let rate_limit = r
        .rate_limit
        .as_ref()
        .map(|rl| rate_limit(c, &at("rate_limit"), rl));
    for (key, given) in [("mirror", r.mirror.is_some()), ("fault", r.fault.is_some())] {
        if given && !forwards {
            c.error(
                at(key),
                "only a route that forwards (`target_group` or `forward`) can have this",
            );
        }
    }
    let mirror = r
        .mirror
        .as_ref()
        .and_then(|m| policy::mirror(c, &at("mirror"), m, &groups));
    let fault = r
        .fault
        .as_ref()
        .and_then(|f| policy::fault(c, &at("fault"), f));
    if c.errors.len() > before {
        return None;
    }
    Some(Route {
        name,
        host,
        path,
        strip_prefix: r.strip_prefix,
        action: action?,
        rate_limit,
        mirror,
        fault,
    })
}

/// What the route does; `None` after recording an error (or naming an unreadable group).
fn action(c: &mut Checker, i: usize, r: &RouteFile, groups: &Groups) -> Option<RouteAction> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let actions = r.target_group.is_some() as u8
        + r.forward.is_some() as u8
        + r.status_page as u8
        + r.fixed_response.is_some() as u8;
    if actions != 1 {
        c.error(
            format!("routes[{i}]"),
            "each route needs exactly one of `target_group`, `forward`, `status_page: true` or `fixed_response`",
        );
        return None;
    }
    if r.forward.is_none() {
        for (key, given) in [
            ("stickiness", r.stickiness.is_some()),
            ("canary", r.canary.is_some()),
        ] {
            if given {
                c.error(
                    at(key),
                    "only a split (`forward` over several groups) can have this",
                );
            }
        }
    }
    if let Some(name) = &r.target_group {
        return groups
            .resolve_route_group(c, &at("target_group"), name)
            .map(RouteAction::Forward);
    }
    if let Some(forward) = &r.forward {
        return policy::split(c, &at, r, forward, groups).map(RouteAction::Split);
    }
    if r.status_page {
        return Some(RouteAction::StatusPage);
    }
    let f = r.fixed_response.as_ref()?;
    if !(100..=599).contains(&f.status) {
        c.error(
            at("fixed_response.status"),
            format!("{} is not an HTTP status", f.status),
        );
        return None;
    }
    Some(RouteAction::Fixed {
        status: f.status,
        body: f.body.clone(),
        content_type: f
            .content_type
            .clone()
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_string()),
    })
}

fn rate_limit(c: &mut Checker, field: &str, rl: &RateLimitFile) -> RateLimitSettings {
    if !(rl.rate.is_finite() && rl.rate > 0.0) {
        c.error(
            format!("{field}.rate"),
            format!(
                "must be a positive number of requests per second, got {}",
                rl.rate
            ),
        );
    }
    let burst = rl.burst.unwrap_or(rl.rate.max(1.0));
    if !(burst.is_finite() && burst >= 1.0) {
        c.error(
            format!("{field}.burst"),
            format!("must be at least 1, got {burst}"),
        );
    }
    let max_keys = rl.max_keys.unwrap_or(100_000);
    if max_keys == 0 {
        c.error(format!("{field}.max_keys"), "must be at least 1");
    }
    let key = match rl.key.unwrap_or(RateKeyFile::ClientIp) {
        RateKeyFile::ClientIp => RateKey::ClientIp,
        RateKeyFile::Global => RateKey::Global,
    };
    let store = match &rl.store {
        None => {
            for (k, given) in [
                ("store_timeout", rl.store_timeout.is_some()),
                ("expected_nodes", rl.expected_nodes.is_some()),
            ] {
                if given {
                    c.error(
                        format!("{field}.{k}"),
                        "does nothing without a shared `store`",
                    );
                }
            }
            None
        }
        Some(url) => {
            if !url.starts_with("redis://") || redis::Client::open(url.as_str()).is_err() {
                c.error(
                    format!("{field}.store"),
                    format!("`{url}` is not a Redis URL (redis://host:port/db)"),
                );
            }
            let timeout = rl.store_timeout.unwrap_or(Duration::from_millis(50));
            if timeout.is_zero() || timeout > Duration::from_secs(5) {
                c.error(format!("{field}.store_timeout"), "must be within (0, 5s]");
            }
            let expected_nodes = rl.expected_nodes.unwrap_or(1);
            if !(1..=1000).contains(&expected_nodes) {
                c.error(format!("{field}.expected_nodes"), "must be within 1..=1000");
            }
            Some(StoreSettings {
                url: url.clone(),
                timeout,
                expected_nodes,
            })
        }
    };
    RateLimitSettings {
        rate: rl.rate,
        burst,
        key,
        max_keys,
        store,
    }
}

fn check_path(c: &mut Checker, field: &str, p: &str) -> String {
    if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
        c.error(
            field,
            format!("`{p}` must start with `/` and hold no query, fragment or space"),
        );
    }
    p.to_string()
}
