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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_error::{Error, ErrorType};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use tokio::sync::Mutex;

use super::static_list::backend_for;
use crate::config::{BackendSpec, Ec2Settings};
use crate::metrics::Metrics;
use switchyard_aws::discovery::{Ec2Source, Query};
use switchyard_aws::AwsTarget;

/// Discovery of EC2 instances.
pub struct Ec2Discovery {
    settings: Ec2Settings,
    group: String,
    metrics: Arc<Metrics>,
    source: Ec2Source,
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
        let source = Ec2Source::new(Query {
            target: AwsTarget {
                region: settings.region.clone(),
                endpoint: settings.endpoint.clone(),
                profile: settings.profile.clone(),
                role_arn: settings.role_arn.clone(),
            },
            filters: settings.filters.clone(),
            port: settings.port,
            public_address: settings.public_address,
        });
        Self {
            settings,
            group: group.to_string(),
            metrics,
            source,
            state: Mutex::new(State::default()),
            failing: AtomicBool::new(false),
        }
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
            let answer = self.source.running().await;
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
