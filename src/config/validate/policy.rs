//! A route's traffic policies: `forward` (weighted split), `stickiness`, `canary`, `mirror`,
//! `fault`.

use std::time::Duration;

use super::super::file::*;
use super::super::model::*;
use super::Checker;

/// Looks groups up by name; `None` for a group that is unknown (an error is recorded unless it
/// is known but invalid, reported on its own).
pub(super) struct Groups<'a> {
    pub index: &'a dyn Fn(&str) -> Option<usize>,
    pub known: &'a dyn Fn(&str) -> bool,
}

impl Groups<'_> {
    /// The index of group `name` named at `field` of a route.
    pub(super) fn resolve_route_group(
        &self,
        c: &mut Checker,
        field: &str,
        name: &str,
    ) -> Option<usize> {
        self.resolve(c, field, name)
    }

    fn resolve(&self, c: &mut Checker, field: &str, name: &str) -> Option<usize> {
        let found = (self.index)(name);
        if found.is_none() && !(self.known)(name) {
            c.error(field, format!("no target group named `{name}`"));
        }
        found
    }
}

/// The split of `forward` (with its stickiness and canary), or `None` after an error.
pub(super) fn split(
    c: &mut Checker,
    at: &dyn Fn(&str) -> String,
    r: &RouteFile,
    forward: &[ForwardFile],
    groups: &Groups,
) -> Option<SplitSettings> {
    let before = c.errors.len();
    if forward.is_empty() {
        c.error(at("forward"), "list at least one target group");
        return None;
    }
    let mut targets = Vec::new();
    for (j, f) in forward.iter().enumerate() {
        let field = at(&format!("forward[{j}]"));
        let group = groups.resolve(c, &format!("{field}.target_group"), &f.target_group);
        if targets
            .iter()
            .any(|t: &SplitTarget| t.name == f.target_group)
        {
            c.error(
                format!("{field}.target_group"),
                format!("`{}` is listed twice", f.target_group),
            );
        }
        let weight = match (f.weight, &r.canary) {
            (Some(_), Some(_)) => {
                c.error(
                    format!("{field}.weight"),
                    "with a canary, its steps set the weights: leave `weight` out",
                );
                0
            }
            (None, None) => {
                c.error(
                    format!("{field}.weight"),
                    "each group of a split needs a weight",
                );
                0
            }
            (Some(w), None) if w > 1000 => {
                c.error(
                    format!("{field}.weight"),
                    format!("must be within 0..=1000, got {w}"),
                );
                0
            }
            (Some(w), None) => w,
            (None, Some(_)) => 0,
        };
        if let Some(group) = group {
            targets.push(SplitTarget {
                group,
                name: f.target_group.clone(),
                weight,
            });
        }
    }
    if r.canary.is_none() && forward.iter().all(|f| f.weight == Some(0)) {
        c.error(at("forward"), "at least one weight must be above 0");
    }
    let stickiness = r
        .stickiness
        .as_ref()
        .map(|s| stickiness(c, &at("stickiness"), s));
    let canary = r
        .canary
        .as_ref()
        .and_then(|k| canary(c, &at("canary"), k, &mut targets));
    (c.errors.len() == before).then_some(SplitSettings {
        targets,
        stickiness,
        canary,
    })
}

fn stickiness(c: &mut Checker, field: &str, s: &StickinessFile) -> SplitStickiness {
    let cookie = s
        .cookie
        .clone()
        .unwrap_or_else(|| "SWITCHYARD-GROUP".to_string());
    let duration = s.duration.unwrap_or(Duration::from_secs(86_400));
    let by = match s.by.unwrap_or(StickyByFile::Cookie) {
        StickyByFile::Cookie => {
            if duration < Duration::from_secs(1) || duration > Duration::from_secs(7 * 86_400) {
                c.error(
                    format!("{field}.duration"),
                    "must be within 1s..=7d (as an ALB)",
                );
            }
            if cookie.is_empty()
                || !cookie
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                c.error(
                    format!("{field}.cookie"),
                    format!("`{cookie}` is not a valid cookie name"),
                );
            }
            StickyBy::Cookie
        }
        StickyByFile::ClientIp => {
            for (key, given) in [
                ("cookie", s.cookie.is_some()),
                ("duration", s.duration.is_some()),
            ] {
                if given {
                    c.error(
                        format!("{field}.{key}"),
                        format!("`{key}` does nothing with `by: client_ip`"),
                    );
                }
            }
            StickyBy::ClientIp
        }
    };
    SplitStickiness {
        duration,
        by,
        cookie,
    }
}

/// The canary rules; sets the split's starting weights from the first step.
fn canary(
    c: &mut Checker,
    field: &str,
    k: &CanaryFile,
    targets: &mut [SplitTarget],
) -> Option<CanarySettings> {
    let before = c.errors.len();
    if targets.len() != 2 {
        c.error(
            field,
            "a canary needs a `forward` of exactly two groups: the baseline and the canary",
        );
        return None;
    }
    let position = |c: &mut Checker, key: &str, name: &str| {
        let p = targets.iter().position(|t| t.name == name);
        if p.is_none() {
            c.error(
                format!("{field}.{key}"),
                format!("`{name}` is not one of the split's groups"),
            );
        }
        p
    };
    let baseline = position(c, "baseline", &k.baseline);
    let canary = position(c, "canary", &k.canary);
    if baseline.is_some() && baseline == canary {
        c.error(
            format!("{field}.canary"),
            "the canary and the baseline must be different groups",
        );
    }
    let steps_ok = !k.steps.is_empty()
        && k.steps.windows(2).all(|w| w[0] < w[1])
        && k.steps.iter().all(|s| (1..=100).contains(s))
        && k.steps.last() == Some(&100);
    if !steps_ok {
        c.error(
            format!("{field}.steps"),
            "give increasing percentages within 1..=100 that end at 100, e.g. [5, 10, 25, 50, 100]",
        );
    }
    if k.interval < Duration::from_secs(1) {
        c.error(format!("{field}.interval"), "must be at least 1s");
    }
    let max_error_rate_increase = k.max_error_rate_increase.unwrap_or(0.01);
    if !(0.0..=1.0).contains(&max_error_rate_increase) {
        c.error(
            format!("{field}.max_error_rate_increase"),
            "must be within 0..=1 (a rate, e.g. 0.01)",
        );
    }
    let max_p99_ratio = k.max_p99_ratio.unwrap_or(1.5);
    if !(max_p99_ratio.is_finite() && max_p99_ratio >= 1.0) {
        c.error(format!("{field}.max_p99_ratio"), "must be at least 1");
    }
    let min_requests = k.min_requests.unwrap_or(20);
    if min_requests == 0 {
        c.error(format!("{field}.min_requests"), "must be at least 1");
    }
    if c.errors.len() > before {
        return None;
    }
    let (baseline, canary) = (baseline?, canary?);
    targets[canary].weight = k.steps[0];
    targets[baseline].weight = 100 - k.steps[0];
    Some(CanarySettings {
        baseline,
        canary,
        steps: k.steps.clone(),
        interval: k.interval,
        max_error_rate_increase,
        max_p99_ratio,
        min_requests,
    })
}

pub(super) fn mirror(
    c: &mut Checker,
    field: &str,
    m: &MirrorFile,
    groups: &Groups,
) -> Option<MirrorSettings> {
    let before = c.errors.len();
    let group = groups.resolve(c, &format!("{field}.target_group"), &m.target_group);
    let percent = m.percent.unwrap_or(100.0);
    if !(percent > 0.0 && percent <= 100.0) {
        c.error(
            format!("{field}.percent"),
            format!("must be within (0, 100], got {percent}"),
        );
    }
    let max_body_bytes = m.max_body_bytes.unwrap_or(64 * 1024);
    if max_body_bytes > 64 * 1024 {
        c.error(
            format!("{field}.max_body_bytes"),
            "at most 65536: only bodies the proxy already buffers can be copied",
        );
    }
    let queue = m.queue.unwrap_or(1000);
    if !(1..=100_000).contains(&queue) {
        c.error(format!("{field}.queue"), "must be within 1..=100000");
    }
    let concurrency = m.concurrency.unwrap_or(32);
    if !(1..=1024).contains(&concurrency) {
        c.error(format!("{field}.concurrency"), "must be within 1..=1024");
    }
    let timeout = m.timeout.unwrap_or(Duration::from_secs(2));
    c.nonzero(&format!("{field}.timeout"), timeout);
    if c.errors.len() > before {
        return None;
    }
    Some(MirrorSettings {
        group: group?,
        group_name: m.target_group.clone(),
        percent,
        max_body_bytes,
        queue,
        concurrency,
        timeout,
    })
}

pub(super) fn fault(c: &mut Checker, field: &str, f: &FaultFile) -> Option<FaultSettings> {
    let before = c.errors.len();
    if f.delay.is_none() && f.abort.is_none() {
        c.error(field, "give `delay`, `abort` or both");
    }
    let percent_ok = |p: f64| p > 0.0 && p <= 100.0;
    if let Some(d) = &f.delay {
        if !percent_ok(d.percent) {
            c.error(
                format!("{field}.delay.percent"),
                format!("must be within (0, 100], got {}", d.percent),
            );
        }
        if d.duration.is_zero() || d.duration > Duration::from_secs(3600) {
            c.error(format!("{field}.delay.duration"), "must be within (0, 1h]");
        }
    }
    if let Some(a) = &f.abort {
        if !percent_ok(a.percent) {
            c.error(
                format!("{field}.abort.percent"),
                format!("must be within (0, 100], got {}", a.percent),
            );
        }
        if !(400..=599).contains(&a.status) {
            c.error(
                format!("{field}.abort.status"),
                format!("must be an error status (400..=599), got {}", a.status),
            );
        }
    }
    let header = f.header.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            c.error(
                format!("{field}.header"),
                format!("`{h}` is not a valid header name"),
            );
        }
    }
    (c.errors.len() == before).then(|| FaultSettings {
        delay: f.delay.as_ref().map(|d| (d.percent, d.duration)),
        abort: f.abort.as_ref().map(|a| (a.percent, a.status)),
        header,
    })
}
