//! EC2 discovery: running instances matching the configured filters become backends.
//!
//! - DescribeInstances is called at most once per `refresh_interval` (paginated, with the
//!   filters plus `instance-state-name=running`); in between, the last answer is reused.
//! - A failed call keeps the last good set (Pingora keeps the membership when discovery
//!   errs) and is logged and counted by the group; an empty answer is treated the same way
//!   unless `keep_last_on_empty: false`.
//! - A new instance joins as `initial` (disabled): it gets traffic only once it has passed
//!   `healthy_threshold` health checks ([`crate::target_group::TargetGroup`] promotes it).
//! - An instance that disappears is kept as `draining` (disabled): no new requests, in-flight
//!   ones finish; it leaves when it has none left or after the deregistration delay.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_error::{Error, ErrorType};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use tokio::sync::{Mutex, OnceCell};

use super::static_list::backend_for;
use crate::aws::{describe_error, sdk_config, AwsTarget};
use crate::config::{BackendSpec, Ec2Settings};
use crate::selection::stats::{Lifecycle, StatsRegistry};

/// Discovery of EC2 instances.
pub struct Ec2Discovery {
    settings: Ec2Settings,
    deregistration_delay: Duration,
    registry: Arc<StatsRegistry>,
    client: OnceCell<aws_sdk_ec2::Client>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last good answer.
    current: Vec<SocketAddr>,
    fetched_at: Option<Instant>,
    /// Addresses in the membership (current and draining).
    known: HashSet<SocketAddr>,
    /// Addresses gone from EC2, with when they went.
    draining: HashMap<SocketAddr, Instant>,
}

impl Ec2Discovery {
    pub fn new(
        settings: Ec2Settings,
        deregistration_delay: Duration,
        registry: Arc<StatsRegistry>,
    ) -> Self {
        Self {
            settings,
            deregistration_delay,
            registry,
            client: OnceCell::new(),
            state: Mutex::new(State::default()),
        }
    }

    async fn client(&self) -> &aws_sdk_ec2::Client {
        // Created on first use, inside the background service's runtime (never before a
        // daemon fork).
        self.client
            .get_or_init(|| async {
                let target = AwsTarget {
                    region: self.settings.region.clone(),
                    endpoint: self.settings.endpoint.clone(),
                    profile: self.settings.profile.clone(),
                    role_arn: self.settings.role_arn.clone(),
                };
                aws_sdk_ec2::Client::new(&sdk_config(&target).await)
            })
            .await
    }

    /// Addresses of the running instances matching the filters.
    pub async fn fetch(&self) -> Result<Vec<SocketAddr>, String> {
        let mut request = self.client().await.describe_instances();
        for (name, values) in &self.settings.filters {
            request = request.filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(name)
                    .set_values(Some(values.clone()))
                    .build(),
            );
        }
        request = request.filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        );
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| describe_error(&e))?;
            for reservation in page.reservations() {
                for instance in reservation.instances() {
                    let ip = if self.settings.public_address {
                        instance.public_ip_address()
                    } else {
                        instance.private_ip_address()
                    };
                    if let Some(ip) = ip.and_then(|ip| ip.parse::<IpAddr>().ok()) {
                        out.push(SocketAddr::new(ip, self.settings.port));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[async_trait]
impl ServiceDiscovery for Ec2Discovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        if state
            .fetched_at
            .is_none_or(|t| now.duration_since(t) >= self.settings.refresh_interval)
        {
            state.fetched_at = Some(now);
            match self.fetch().await {
                Ok(found)
                    if found.is_empty()
                        && self.settings.keep_last_on_empty
                        && !state.current.is_empty() =>
                {
                    return Err(Error::explain(
                        ErrorType::Custom("EC2 discovery"),
                        "empty answer; keeping the last good backends",
                    ));
                }
                Ok(found) => state.current = found,
                Err(e) => {
                    return Err(Error::explain(
                        ErrorType::Custom("EC2 discovery"),
                        format!("DescribeInstances failed: {e}"),
                    ));
                }
            }
        }
        Ok(self.membership(&mut state, now))
    }
}

impl Ec2Discovery {
    /// The membership for the current answer: new instances start `initial` (disabled),
    /// vanished ones drain (disabled) until idle or past the deregistration delay.
    fn membership(
        &self,
        state: &mut State,
        now: Instant,
    ) -> (BTreeSet<Backend>, HashMap<u64, bool>) {
        let current: HashSet<SocketAddr> = state.current.iter().copied().collect();
        let vanished: Vec<SocketAddr> = state
            .known
            .iter()
            .filter(|a| !current.contains(a))
            .copied()
            .collect();
        for addr in vanished {
            state.draining.entry(addr).or_insert(now);
        }
        // A returning instance stops draining.
        state.draining.retain(|addr, _| !current.contains(addr));
        let delay = self.deregistration_delay;
        let registry = &self.registry;
        state.draining.retain(|addr, since| {
            let idle = registry.get(addr).is_none_or(|s| s.inflight() == 0);
            let keep = !idle && now.duration_since(*since) < delay;
            if !keep {
                log::info!("backend {addr} left EC2 discovery and finished draining");
            }
            keep
        });

        let mut set = BTreeSet::new();
        let mut enablement = HashMap::new();
        for addr in current.iter().chain(state.draining.keys()) {
            let b = backend_for(
                &BackendSpec {
                    address: *addr,
                    weight: 1,
                },
                registry,
                now,
            );
            let stats = crate::selection::stats::stats_of(&b).cloned();
            let draining = state.draining.contains_key(addr);
            let is_new = !state.known.contains(addr);
            if let Some(s) = &stats {
                if draining {
                    if s.lifecycle() != Lifecycle::Draining {
                        log::info!(
                            "backend {addr} left EC2 discovery: draining its in-flight requests"
                        );
                    }
                    s.set_lifecycle(Lifecycle::Draining);
                } else if is_new {
                    log::info!(
                        "backend {addr} found by EC2 discovery: waiting for its health checks"
                    );
                    s.set_lifecycle(Lifecycle::Initial);
                }
            }
            if draining
                || is_new
                || stats
                    .as_ref()
                    .is_some_and(|s| s.lifecycle() == Lifecycle::Initial)
            {
                enablement.insert(hash_key(&b), false);
            }
            set.insert(b);
        }
        state.known = current
            .union(&state.draining.keys().copied().collect())
            .copied()
            .collect();
        (set, enablement)
    }
}

/// The key Pingora uses for a backend in enablement maps.
pub fn hash_key(b: &Backend) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}
