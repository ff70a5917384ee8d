//! Backends listed in the configuration file.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Extensions;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

use crate::config::BackendSpec;
use crate::selection::stats::StatsRegistry;

/// A fixed list of backends.
pub struct StaticList {
    specs: Vec<BackendSpec>,
    registry: Arc<StatsRegistry>,
}

impl StaticList {
    pub fn new(specs: Vec<BackendSpec>, registry: Arc<StatsRegistry>) -> Self {
        Self { specs, registry }
    }
}

/// A Pingora backend for `spec` with its stats attached from `registry`.
pub fn backend_for(spec: &BackendSpec, registry: &StatsRegistry, now: Instant) -> Backend {
    let mut b = Backend {
        addr: PingoraAddr::Inet(spec.address),
        weight: spec.weight as usize,
        ext: Extensions::new(),
    };
    registry.attach(&mut b, now);
    b
}

#[async_trait]
impl ServiceDiscovery for StaticList {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let now = Instant::now();
        let set = self
            .specs
            .iter()
            .map(|s| backend_for(s, &self.registry, now))
            .collect();
        Ok((set, HashMap::new()))
    }
}
