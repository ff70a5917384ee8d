//! The `/status` document: every target group and backend with the inputs of its score,
//! health, and share of traffic over the last minute, plus the route table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::{HostMatch, PathMatch, RouteAction, StickyBy};
use crate::runtime::Snapshot;
use crate::target_group::TargetGroup;

/// The route table as JSON, with each route's traffic policies as they run now.
pub fn route_table(snapshot: &Snapshot, now: Instant) -> Value {
    let config = &snapshot.config;
    let action = |a: &RouteAction| match a {
        RouteAction::Forward(i) => json!({"target_group": config.target_groups[*i].name}),
        RouteAction::Split(_) => json!({"split": true}),
        RouteAction::StatusPage => json!({"status_page": true}),
        RouteAction::Fixed { status, .. } => json!({"fixed_response": status}),
    };
    let routes: Vec<Value> = config
        .routes
        .iter()
        .zip(&snapshot.routes)
        .map(|(r, rt)| {
            let (kind, path) = match &r.path {
                PathMatch::Any => ("any", "/".to_string()),
                PathMatch::Exact(p) => ("exact", p.clone()),
                PathMatch::Prefix(p) => ("prefix", p.clone()),
            };
            let host = r.host.as_ref().map(|h| match h {
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Suffix(s) => format!("*{s}"),
            });
            let split = rt.split.as_ref().map(|sp| {
                let weights = sp.weights();
                let targets: Vec<Value> = sp
                    .settings
                    .targets
                    .iter()
                    .zip(&weights)
                    .map(|(t, w)| json!({"target_group": t.name, "weight": w}))
                    .collect();
                json!({
                    "targets": targets,
                    "stickiness": sp.settings.stickiness.as_ref().map(|s| json!({
                        "by": if s.by == StickyBy::Cookie { "cookie" } else { "client_ip" },
                        "duration_seconds": s.duration.as_secs(),
                    })),
                    "canary": sp.canary.as_ref().map(|c| c.view(now)),
                })
            });
            json!({
                "name": r.name,
                "host": host,
                "match": kind,
                "path": path,
                "strip_prefix": r.strip_prefix,
                "action": action(&r.action),
                "split": split,
                "mirror": r.mirror.as_ref().map(|m| json!({"target_group": m.group_name, "percent": m.percent})),
                "fault": r.fault.as_ref().map(|f| json!({
                    "delay_percent": f.delay.map(|d| d.0),
                    "abort_percent": f.abort.map(|a| a.0),
                    "header": f.header,
                })),
            })
        })
        .collect();
    json!({"rules": routes, "default": config.default_action.as_ref().map(action)})
}

/// The whole status document as of now.
pub fn status_json(snapshot: &Snapshot, uptime: Duration) -> Value {
    let now = Instant::now();
    let groups: Vec<Value> = snapshot.groups.iter().map(|g| group_json(g, now)).collect();
    json!({
        "service": "switchyard",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime.as_secs(),
        "config_generation": snapshot.generation,
        "target_groups": groups,
        "routes": route_table(snapshot, now),
    })
}

fn group_json(g: &Arc<TargetGroup>, now: Instant) -> Value {
    let views = g.backend_views(now);
    let minute_total: u64 = views.iter().map(|v| v.requests_last_minute).sum();
    let healthy = views.iter().filter(|v| v.healthy).count();
    let backends: Vec<Value> = views
        .iter()
        .map(|v| {
            let share = if minute_total > 0 {
                v.requests_last_minute as f64 / minute_total as f64
            } else {
                0.0
            };
            json!({
                "address": v.addr.to_string(),
                "weight": v.weight,
                "healthy": v.healthy,
                "state": v.state(),
                "drained": v.drained,
                "ejected": v.ejected,
                "inflight": v.inflight,
                "ewma_ms": round3(v.ewma.as_secs_f64() * 1e3),
                "probe_ms": v.probe.map(|p| round3(p.as_secs_f64() * 1e3)),
                "probe_ok": v.probe_ok,
                "requests_total": v.requests,
                "failures_total": v.failures,
                "requests_last_minute": v.requests_last_minute,
                "share_last_minute": round3(share),
            })
        })
        .collect();
    json!({
        "name": g.config.name,
        "strategy": g.config.strategy.name(),
        "fail_open": g.config.fail_open,
        "failing_open": g.is_failing_open(),
        "healthy": healthy,
        "total": views.len(),
        "requests_last_minute": minute_total,
        "backends": backends,
        "drift": g.drift(),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
