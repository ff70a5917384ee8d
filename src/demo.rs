//! The built-in demo: a handful of demo backends with different latencies, started inside
//! the proxy process so that `switchyard --demo` works with nothing else running.

use std::net::SocketAddr;

use async_trait::async_trait;
use backend_server::{BackendState, Behaviour};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

/// One demo backend: name, address and behaviour.
pub struct DemoBackend {
    pub name: &'static str,
    pub address: &'static str,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub error_rate: f64,
}

/// The demo backends `conf/demo.yaml` points at.
pub const DEMO_BACKENDS: &[DemoBackend] = &[
    DemoBackend {
        name: "c1-fast",
        address: "127.0.0.1:9001",
        delay_ms: 5,
        jitter_ms: 2,
        error_rate: 0.0,
    },
    DemoBackend {
        name: "c1-medium",
        address: "127.0.0.1:9002",
        delay_ms: 20,
        jitter_ms: 5,
        error_rate: 0.0,
    },
    DemoBackend {
        name: "c1-slow",
        address: "127.0.0.1:9003",
        delay_ms: 80,
        jitter_ms: 20,
        error_rate: 0.0,
    },
    DemoBackend {
        name: "c2-a",
        address: "127.0.0.1:9011",
        delay_ms: 10,
        jitter_ms: 5,
        error_rate: 0.0,
    },
    DemoBackend {
        name: "c2-b",
        address: "127.0.0.1:9012",
        delay_ms: 10,
        jitter_ms: 5,
        error_rate: 0.02,
    },
];

/// Runs the demo backends on the background service's runtime.
pub struct DemoBackends;

#[async_trait]
impl BackgroundService for DemoBackends {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running = Vec::new();
        for b in DEMO_BACKENDS {
            let behaviour = Behaviour {
                delay_ms: b.delay_ms,
                jitter_ms: b.jitter_ms,
                error_rate: b.error_rate,
                ..Behaviour::default()
            };
            let addr: SocketAddr = b.address.parse().expect("static demo address");
            match backend_server::spawn(addr, BackendState::new(b.name, behaviour)).await {
                Ok(r) => {
                    log::info!(
                        "demo backend {} on http://{} (delay {} ms)",
                        b.name,
                        r.addr(),
                        b.delay_ms
                    );
                    running.push(r);
                }
                Err(e) => log::error!("demo backend {} cannot listen on {addr}: {e}", b.name),
            }
        }
        let _ = shutdown.changed().await;
        drop(running);
    }
}
