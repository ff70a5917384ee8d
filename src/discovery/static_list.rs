//! Backends listed in the configuration file.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use http::Extensions;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

use crate::config::BackendSpec;

/// A fixed list of backends.
pub struct StaticList {
    specs: Vec<BackendSpec>,
}

impl StaticList {
    pub fn new(specs: Vec<BackendSpec>) -> Self {
        Self { specs }
    }
}

/// A Pingora backend for `spec` (stats are attached by the group).
pub fn backend_for(spec: &BackendSpec) -> Backend {
    Backend {
        addr: PingoraAddr::Inet(spec.address),
        weight: spec.weight as usize,
        ext: Extensions::new(),
    }
}

#[async_trait]
impl ServiceDiscovery for StaticList {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((self.specs.iter().map(backend_for).collect(), HashMap::new()))
    }
}
