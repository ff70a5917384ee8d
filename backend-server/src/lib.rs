//! A small demo HTTP backend for Switchyard.
//!
//! It answers every path with a short JSON body naming itself, plus an `x-backend` header, so
//! a client can tell which backend served it. Its latency, error rate and health can be set at
//! start and changed at run time through `GET|PUT /_control`, so tests and experiments can
//! make a backend slow, failing or unhealthy mid-run.
//!
//! The crate is a library first: the proxy's demo mode and the end-to-end tests start
//! backends in-process with [`spawn`], and [`RunningBackend::kill`] drops every open
//! connection at once, the way a crashed process would.
#![forbid(unsafe_code)]

mod control;
#[cfg(feature = "grpc")]
pub mod grpc;
mod server;
pub mod tls;

pub use control::{Behaviour, BehaviourPatch};
pub use server::{router, spawn, spawn_with, RunningBackend, ServeOptions};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Shared state of one demo backend: its name, its current behaviour and what it served.
#[derive(Debug)]
pub struct BackendState {
    name: String,
    hostname: String,
    behaviour: RwLock<Behaviour>,
    requests_served: AtomicU64,
    health_checks_served: AtomicU64,
    /// TCP connections accepted (to see connection reuse from the outside).
    connections_accepted: AtomicU64,
    /// The last requests received (not health checks or control calls), newest last.
    recent: Mutex<VecDeque<SeenRequest>>,
}

/// How many received requests a backend remembers.
pub const RECENT_REQUESTS: usize = 256;

/// A request as a backend received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeenRequest {
    pub method: String,
    /// The HTTP version it arrived over, as `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Path and query.
    pub target: String,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
}

impl BackendState {
    /// A backend called `name` that starts with `behaviour`.
    pub fn new(name: impl Into<String>, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            hostname: read_hostname(),
            behaviour: RwLock::new(behaviour),
            requests_served: AtomicU64::new(0),
            health_checks_served: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_REQUESTS)),
        })
    }

    /// The name this backend reports in `x-backend` and in its body.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A copy of the current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Change the behaviour; fields absent from `patch` keep their value.
    pub fn apply(&self, patch: &BehaviourPatch) -> Result<Behaviour, String> {
        let mut guard = self.behaviour.write().unwrap_or_else(|p| p.into_inner());
        let updated = guard.patched(patch)?;
        *guard = updated.clone();
        Ok(updated)
    }

    /// Requests answered on paths other than the health and control paths.
    pub fn requests_served(&self) -> u64 {
        self.requests_served.load(Ordering::Relaxed)
    }

    /// The last requests received (up to [`RECENT_REQUESTS`]), oldest first.
    pub fn recent_requests(&self) -> Vec<SeenRequest> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn remember(&self, seen: SeenRequest) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_REQUESTS {
            recent.pop_front();
        }
        recent.push_back(seen);
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.connections_accepted.load(Ordering::Relaxed)
    }

    /// Health-check requests answered.
    pub fn health_checks_served(&self) -> u64 {
        self.health_checks_served.load(Ordering::Relaxed)
    }
}

fn read_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}
