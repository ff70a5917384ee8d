//! Rate limiting per route, keyed globally or per client IP: 429 with `Retry-After` when a
//! client's bucket is empty.
//!
//! - Local (default): token buckets in this process ([`bucket`]).
//! - Shared (`store: redis://…`): one bucket per route and client for every node using the
//!   same Redis ([`redis`]): N nodes together let through the configured rate, not N times
//!   it. When Redis does not answer within `store_timeout`, the node keeps serving with local
//!   buckets sized `rate / expected_nodes` until Redis answers again.

pub mod bucket;
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucket::LocalBuckets;
use redis::RedisStore;

/// What the limiter is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey {
    Global,
    ClientIp,
}

/// Where a route's buckets live when shared across nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Longest wait for Redis on the request path before falling back to local buckets.
    pub timeout: Duration,
    /// Nodes sharing the limit: each node's fallback bucket gets `rate / expected_nodes`.
    pub expected_nodes: u32,
}

/// Rate-limit settings of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// Tokens per second.
    pub rate: f64,
    /// Bucket size: requests allowed at once after a quiet period.
    pub burst: f64,
    pub key: RateKey,
    /// Bound on the number of client buckets kept (locally).
    pub max_keys: usize,
    /// Shared store, when the limit is shared across nodes.
    pub store: Option<StoreSettings>,
}

/// The rate limiter of one route.
pub struct RateLimiter {
    settings: RateLimitSettings,
    /// This node's buckets: the limit itself, or the fallback of a shared limit.
    local: LocalBuckets,
    /// The shared buckets, and the prefix of this route's keys in the store.
    shared: Option<(Arc<RedisStore>, String)>,
}

impl RateLimiter {
    /// A limiter for route `route`; `store` is the shared store when configured.
    pub fn new(settings: RateLimitSettings, route: &str, store: Option<Arc<RedisStore>>) -> Self {
        let nodes = settings
            .store
            .as_ref()
            .map(|s| s.expected_nodes.max(1) as f64)
            .unwrap_or(1.0);
        let local = LocalBuckets::new(
            settings.rate / nodes,
            (settings.burst / nodes).max(1.0),
            settings.key,
            settings.max_keys,
        );
        Self {
            local,
            shared: store.map(|s| (s, format!("switchyard:rl:{route}:"))),
            settings,
        }
    }

    /// The settings this limiter was built with.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Take a token for a request from `client` at `now`; `Err` carries the wait until the
    /// next token. With a shared store that answers, its bucket decides; else this node's.
    pub async fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if let Some((store, prefix)) = &self.shared {
            let key = match (self.settings.key, client) {
                (RateKey::ClientIp, Some(ip)) => format!("{prefix}{}", bucket::ip_key(ip)),
                _ => format!("{prefix}global"),
            };
            if let Some(answer) = store
                .take(&key, self.settings.rate, self.settings.burst)
                .await
            {
                return answer;
            }
        }
        self.local.check(client, now)
    }

    /// Client buckets currently kept locally.
    pub fn tracked_keys(&self) -> usize {
        self.local.tracked_keys()
    }
}

/// `Retry-After` seconds for a wait: whole seconds, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(20)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }

    #[tokio::test]
    async fn a_shared_limit_falls_back_to_its_share_of_the_rate() {
        let settings = RateLimitSettings {
            rate: 30.0,
            burst: 30.0,
            key: RateKey::Global,
            max_keys: 10,
            store: Some(StoreSettings {
                url: "redis://127.0.0.1:1/0".into(),
                timeout: Duration::from_millis(20),
                expected_nodes: 3,
            }),
        };
        let store = RedisStore::new(
            settings.store.clone().unwrap(),
            crate::metrics::Metrics::new(true),
        );
        let limiter = RateLimiter::new(settings, "r", Some(Arc::new(store)));
        let t0 = Instant::now();
        let mut allowed = 0;
        for _ in 0..100 {
            allowed += limiter.check(None, t0).await.is_ok() as usize;
        }
        assert_eq!(
            allowed, 10,
            "a third of the burst while the store is unreachable"
        );
    }
}
