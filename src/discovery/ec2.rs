//! EC2 discovery: running instances matching the configured filters become backends.
//!
//! - DescribeInstances is called at most once per `refresh_interval` (paginated, with the
//!   filters plus `instance-state-name=running`); in between, the last answer is reused.
//!   Each real call counts in `lb_discovery_refreshes_total{result}`.
//! - A failed call keeps the last good set (the group keeps its membership when discovery
//!   errs); it is logged once when the API starts failing and once when it recovers. An empty
//!   answer is treated the same way unless `keep_last_on_empty: false`.
//! - What happens to instances that appear (`initial` until healthy) or vanish (`draining`)
//!   is the group's business ([`crate::target_group`]), the same for every source.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_error::{Error, ErrorType};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use tokio::sync::{Mutex, OnceCell};

use super::static_list::backend_for;
use crate::aws::{describe_error, sdk_config, AwsTarget};
use crate::config::{BackendSpec, Ec2Settings};
use crate::metrics::Metrics;

/// Discovery of EC2 instances.
pub struct Ec2Discovery {
    settings: Ec2Settings,
    group: String,
    metrics: Arc<Metrics>,
    client: OnceCell<aws_sdk_ec2::Client>,
    state: Mutex<State>,
    failing: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The last good answer.
    current: Vec<SocketAddr>,
    fetched_at: Option<Instant>,
}

impl Ec2Discovery {
    pub fn new(settings: Ec2Settings, group: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            settings,
            group: group.to_string(),
            metrics,
            client: OnceCell::new(),
            state: Mutex::new(State::default()),
            failing: AtomicBool::new(false),
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
        let due = state
            .fetched_at
            .is_none_or(|t| now.duration_since(t) >= self.settings.refresh_interval);
        if due {
            state.fetched_at = Some(now);
            let answer = self.fetch().await;
            self.metrics.discovery_refresh(&self.group, answer.is_ok());
            match answer {
                Ok(found)
                    if found.is_empty()
                        && self.settings.keep_last_on_empty
                        && !state.current.is_empty() =>
                {
                    self.note_failure("an empty answer");
                    return Err(Error::explain(
                        ErrorType::Custom("EC2 discovery"),
                        "empty answer; keeping the last good backends",
                    ));
                }
                Ok(found) => {
                    if self.failing.swap(false, Relaxed) {
                        log::info!(
                            "group {}: EC2 discovery answers again ({} instance(s))",
                            self.group,
                            found.len()
                        );
                    }
                    state.current = found;
                }
                Err(e) => {
                    self.note_failure(&e);
                    return Err(Error::explain(
                        ErrorType::Custom("EC2 discovery"),
                        format!("DescribeInstances failed: {e}"),
                    ));
                }
            }
        }
        let set = state
            .current
            .iter()
            .map(|addr| {
                backend_for(&BackendSpec {
                    address: *addr,
                    weight: 1,
                })
            })
            .collect();
        Ok((set, HashMap::new()))
    }
}

impl Ec2Discovery {
    /// Log a failure once per episode (every call is counted in the metrics).
    fn note_failure(&self, what: &str) {
        if !self.failing.swap(true, Relaxed) {
            log::warn!(
                "group {}: EC2 discovery failed ({what}); keeping the last good backends until it answers again",
                self.group
            );
        }
    }
}
