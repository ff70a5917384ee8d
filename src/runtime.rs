//! The running configuration: an immutable [`Snapshot`] (routes, groups, limiters, proxy
//! settings) published through one atomic pointer. A request takes the snapshot once when it
//! starts and keeps it to its end; a reload builds a whole new snapshot off the request path,
//! checks it, and swaps it in.
//!
//! What a reload must not forget lives outside the snapshot, keyed by stable identities, so
//! the new snapshot simply finds it again: each group's stats registry (by group name: latency
//! estimates, probe results, health, ejection, in-flight), and each route's rate-limit buckets
//! (by route name and unchanged settings). A group whose configuration did not change is
//! carried over as it is.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::{Config, Route, RouteAction};
use crate::edge::rate_limit::redis::RedisStore;
use crate::edge::rate_limit::RateLimiter;
use crate::metrics::Metrics;
use crate::policy::mirror::Mirror;
use crate::policy::split::Split;
use crate::routing::{self, Router};
use crate::selection::stats::StatsRegistry;
use crate::target_group::TargetGroup;

/// One route at run time.
pub struct RouteRuntime {
    /// The route's name (metrics label, logs).
    pub name: Arc<str>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// A weighted split (with its canary), when the route forwards to several groups.
    pub split: Option<Arc<Split>>,
    /// Shadow traffic.
    pub mirror: Option<Arc<Mirror>>,
}

impl RouteRuntime {
    fn plain(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            limiter: None,
            split: None,
            mirror: None,
        }
    }
}

/// Everything a request needs, as of one configuration.
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    /// Per route, by index in `config.routes`.
    pub routes: Vec<RouteRuntime>,
    /// The route used when nothing matched and a default group is set.
    pub default_route: RouteRuntime,
    /// Per group, by index in `config.target_groups`.
    pub groups: Vec<Arc<TargetGroup>>,
    /// Prebuilt `Via` value (cloning a HeaderValue does not copy it).
    pub via: Option<http::HeaderValue>,
    /// Counts reloads: 0 for the configuration the process started with.
    pub generation: u64,
}

impl Snapshot {
    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&Arc<TargetGroup>> {
        self.groups.iter().find(|g| g.config.name == name)
    }

    /// Each rate-limited route's name and limiter, for metrics.
    pub fn limiters(&self) -> Vec<(String, Arc<RateLimiter>)> {
        self.routes
            .iter()
            .filter_map(|r| r.limiter.as_ref().map(|l| (r.name.to_string(), l.clone())))
            .collect()
    }
}

/// Shared rate-limit stores by URL (kept across reloads: connections and fallback state).
type Stores = Mutex<HashMap<String, Arc<RedisStore>>>;

/// The current snapshot and what outlives snapshots.
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    /// Stats of each group, by name; a group rebuilt by a reload keeps its registry.
    registries: Mutex<HashMap<String, Arc<StatsRegistry>>>,
    /// Shared rate-limit stores, by URL.
    stores: Stores,
    pub metrics: Arc<Metrics>,
}

impl Runtime {
    /// A runtime whose first snapshot is `config` (after its first discovery).
    pub async fn start(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Runtime>> {
        let registries = Mutex::new(HashMap::new());
        let stores = Stores::default();
        let snapshot = build_snapshot(config, None, 0, &registries, &stores, &metrics).await?;
        let runtime = Runtime {
            current: ArcSwap::from_pointee(snapshot),
            registries,
            stores,
            metrics,
        };
        runtime.init_metrics();
        runtime.metrics.config_load(true);
        Ok(Arc::new(runtime))
    }

    /// The current snapshot (one atomic increment).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publish `next` for new requests; requests in flight keep the one they started with.
    pub fn publish(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
        self.init_metrics();
    }

    /// Build a snapshot of `config`. Groups equal to one in `previous` are carried over;
    /// changed and new ones are built (keeping their stats registry) and discovered once:
    /// a discovery failure fails the build, so nothing half-works.
    pub async fn build(
        &self,
        config: Config,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> anyhow::Result<Snapshot> {
        build_snapshot(
            config,
            previous,
            generation,
            &self.registries,
            &self.stores,
            &self.metrics,
        )
        .await
    }

    /// Forget the registries of groups that no longer exist.
    pub fn forget_removed_groups(&self, snapshot: &Snapshot) {
        self.registries
            .lock()
            .retain(|name, _| snapshot.group(name).is_some());
    }

    /// Connect (or check again) the shared rate-limit stores; never blocks the caller.
    pub fn maintain_stores(&self, now: std::time::Instant) {
        for store in self.stores.lock().values() {
            let store = store.clone();
            tokio::spawn(async move { store.maintain(now).await });
        }
    }

    /// Advance every canary rollout at `now`.
    pub fn advance_policies(&self, now: std::time::Instant) {
        let s = self.snapshot();
        for r in &s.routes {
            if let Some(split) = &r.split {
                crate::policy::advance_canary(&r.name, split, &self.metrics, now);
            }
        }
    }

    /// Create every counter at zero for the groups, routes and backends now known.
    fn init_metrics(&self) {
        let s = self.snapshot();
        for g in &s.groups {
            self.metrics
                .init_group(&g.config.name, g.config.ec2.is_some());
        }
        for (r, rc) in s.routes.iter().zip(&s.config.routes) {
            self.metrics.init_route(&r.name);
            let canary = r.split.as_ref().and_then(|sp| {
                sp.canary
                    .as_ref()
                    .map(|c| (c.canary_name.as_str(), c.weight()))
            });
            let shadow = r.mirror.as_ref().map(|m| m.settings.group_name.as_str());
            self.metrics
                .init_policies(&r.name, shadow, canary, rc.fault.is_some());
        }
        if matches!(s.config.default_action, Some(RouteAction::Forward(_))) {
            self.metrics.init_route(routing::DEFAULT_ROUTE_NAME);
        }
    }
}

/// See [`Runtime::build`].
async fn build_snapshot(
    config: Config,
    previous: Option<&Snapshot>,
    generation: u64,
    registries: &Mutex<HashMap<String, Arc<StatsRegistry>>>,
    stores: &Stores,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Snapshot> {
    let mut groups = Vec::with_capacity(config.target_groups.len());
    for gc in &config.target_groups {
        let old = previous.and_then(|p| p.group(&gc.name));
        if let Some(old) = old.filter(|o| o.config == *gc) {
            groups.push(old.clone());
            continue;
        }
        let registry = registries
            .lock()
            .entry(gc.name.clone())
            .or_insert_with(|| Arc::new(StatsRegistry::new(gc.latency)))
            .clone();
        let group = TargetGroup::new(
            gc.clone(),
            registry,
            old.map(|o| o.as_ref()),
            metrics.clone(),
        )?;
        group
            .refresh()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("group {}: the first discovery failed", gc.name))?;
        groups.push(Arc::new(group));
    }
    let routes = config
        .routes
        .iter()
        .map(|r| route_runtime(r, previous, &groups, stores, metrics))
        .collect();
    let via = config
        .proxy
        .via
        .as_ref()
        .and_then(|v| http::HeaderValue::from_str(&format!("1.1 {v}")).ok());
    Ok(Snapshot {
        router: Router::new(config.routes.clone(), config.default_action.clone()),
        routes,
        default_route: RouteRuntime::plain(routing::DEFAULT_ROUTE_NAME),
        groups,
        via,
        generation,
        config,
    })
}

/// The run-time state of route `r`. What a reload must not forget is taken from the route of
/// the same name in `previous` when its settings are unchanged: the rate-limit buckets, the
/// split's weights and canary progress, the shadow queue and its workers.
fn route_runtime(
    r: &Route,
    previous: Option<&Snapshot>,
    groups: &[Arc<TargetGroup>],
    stores: &Stores,
    metrics: &Arc<Metrics>,
) -> RouteRuntime {
    let old = previous.and_then(|p| {
        let i = p.config.routes.iter().position(|o| o.name == r.name)?;
        Some((&p.config.routes[i], &p.routes[i]))
    });
    let name: Arc<str> = Arc::from(r.name.as_str());
    let limiter = r.rate_limit.as_ref().map(|settings| {
        old.filter(|(o, _)| o.rate_limit.as_ref() == Some(settings))
            .and_then(|(_, rt)| rt.limiter.clone())
            .unwrap_or_else(|| {
                let store = settings.store.as_ref().map(|s| {
                    stores
                        .lock()
                        .entry(s.url.clone())
                        .or_insert_with(|| Arc::new(RedisStore::new(s.clone(), metrics.clone())))
                        .clone()
                });
                Arc::new(RateLimiter::new(settings.clone(), &r.name, store))
            })
    });
    let split = match &r.action {
        RouteAction::Split(settings) => Some(
            old.and_then(|(_, rt)| rt.split.clone())
                .filter(|s| s.settings.same_as(settings))
                .unwrap_or_else(|| Arc::new(Split::new(settings.clone(), name.clone()))),
        ),
        _ => None,
    };
    let mirror = r.mirror.as_ref().map(|m| {
        let group = groups[m.group].clone();
        old.and_then(|(_, rt)| rt.mirror.clone())
            .filter(|o| o.settings.same_as(m) && o.serves(&group))
            .unwrap_or_else(|| {
                Arc::new(Mirror::new(m.clone(), name.clone(), group, metrics.clone()))
            })
    });
    RouteRuntime {
        name,
        limiter,
        split,
        mirror,
    }
}
