//! Shadow traffic: a copy of a share of a route's requests goes to another target group, and
//! its answer is discarded. The client never waits for, sees or is harmed by the shadow:
//!
//! - copies are made when the primary request has ended, and only when its body (if any) is
//!   small and fully buffered by the proxy (`max_body_bytes`); others are `skipped`;
//! - they go through a bounded queue (`queue`; when full, a copy is `dropped`), sent by workers
//!   of their own (at most `concurrency` at once) with their own `timeout`;
//! - every copy is counted by result in `lb_shadow_requests_total{route,target_group,result}`
//!   (`ok`, `error` for a 4xx/5xx answer, `timeout`, `failed`, `dropped`, `skipped`), and a
//!   status different from the primary's in `lb_shadow_status_mismatch_total{route}`.
//!
//! Copies carry `x-switchyard-shadow: 1`, so a shadow backend can tell them from real traffic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use tokio::sync::{mpsc, Semaphore};

use crate::config::MirrorSettings;
use crate::metrics::{ErrorKind, Metrics};
use crate::target_group::{Outcome, TargetGroup};

/// Header marking a copy.
pub const SHADOW_HEADER: &str = "x-switchyard-shadow";

/// One copy to send.
pub struct Shadow {
    pub request: RequestHeader,
    pub body: Option<Bytes>,
    /// What the client got from the primary (for mismatch counting).
    pub primary_status: u16,
}

/// The shadow traffic of one route.
pub struct Mirror {
    pub settings: MirrorSettings,
    route: Arc<str>,
    group: Arc<TargetGroup>,
    metrics: Arc<Metrics>,
    sender: mpsc::Sender<Shadow>,
    /// Taken by the first copy, which starts the workers on the proxy's runtime.
    receiver: Mutex<Option<mpsc::Receiver<Shadow>>>,
}

impl Mirror {
    pub fn new(
        settings: MirrorSettings,
        route: Arc<str>,
        group: Arc<TargetGroup>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(settings.queue);
        Self {
            settings,
            route,
            group,
            metrics,
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Whether this request is one of the copied share.
    pub fn sampled(&self) -> bool {
        self.settings.percent >= 100.0 || fastrand::f64() * 100.0 < self.settings.percent
    }

    /// The largest body copied.
    pub fn max_body_bytes(&self) -> usize {
        self.settings.max_body_bytes
    }

    /// Count a request that could not be copied (its body too large or not buffered).
    pub fn skipped(&self) {
        self.count("skipped");
    }

    /// Queue a copy; never waits. A full queue drops it (counted).
    pub fn offer(&self, shadow: Shadow) {
        if let Some(receiver) = self.receiver.lock().take() {
            let worker = Worker {
                route: self.route.clone(),
                group: self.group.clone(),
                metrics: self.metrics.clone(),
                timeout: self.settings.timeout,
                slots: Arc::new(Semaphore::new(self.settings.concurrency)),
                connector: crate::edge::upstream_tls::shared_connector(),
            };
            tokio::spawn(worker.run(receiver));
        }
        if self.sender.try_send(shadow).is_err() {
            self.count("dropped");
        }
    }

    fn count(&self, result: &str) {
        self.metrics
            .shadow(&self.route, &self.group.config.name, result);
    }
}

/// Sends the copies of one route.
struct Worker {
    route: Arc<str>,
    group: Arc<TargetGroup>,
    metrics: Arc<Metrics>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    connector: Arc<Connector>,
}

impl Worker {
    async fn run(self, mut receiver: mpsc::Receiver<Shadow>) {
        let this = Arc::new(self);
        while let Some(shadow) = receiver.recv().await {
            let Ok(slot) = this.slots.clone().acquire_owned().await else {
                return;
            };
            let this = this.clone();
            tokio::spawn(async move {
                this.send(shadow).await;
                drop(slot);
            });
        }
    }

    async fn send(&self, shadow: Shadow) {
        let group = &self.group;
        let now = Instant::now();
        let Some(pick) = group.pick(&[], &[], now, false) else {
            self.count("failed");
            return;
        };
        let guard = pick.stats.start_request();
        let result = tokio::time::timeout(
            self.timeout,
            self.exchange(pick.addr, shadow.request, shadow.body),
        )
        .await;
        let elapsed = now.elapsed();
        let (result, outcome) = match result {
            Err(_) => ("timeout", Outcome::Failure(ErrorKind::Timeout)),
            Ok(Err(_)) => ("failed", Outcome::Failure(ErrorKind::ConnectionError)),
            Ok(Ok(status)) => {
                if status != shadow.primary_status {
                    self.metrics.shadow_mismatch(&self.route);
                }
                if status >= 400 {
                    let outcome = if crate::proxy::attempt::is_failure_status(status) {
                        Outcome::Failure(crate::proxy::attempt::status_error_kind(status))
                    } else {
                        Outcome::Success(elapsed)
                    };
                    ("error", outcome)
                } else {
                    ("ok", Outcome::Success(elapsed))
                }
            }
        };
        group.record(guard.stats(), outcome, Instant::now());
        drop(guard);
        self.count(result);
    }

    /// Send the copy to `addr`; the answer's status (its body is read and discarded).
    async fn exchange(
        &self,
        addr: std::net::SocketAddr,
        mut request: RequestHeader,
        body: Option<Bytes>,
    ) -> pingora_error::Result<u16> {
        let mut peer = self.group.peers.peer(addr);
        let t = self.group.config.timeouts;
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        let _ = request.insert_header(SHADOW_HEADER, "1");
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        session.write_request_header(Box::new(request)).await?;
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            session.write_request_body(b, true).await?;
        }
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        while session.read_response_body().await?.is_some() {}
        self.connector
            .release_http_session(session, &peer, Some(t.idle))
            .await;
        Ok(status)
    }

    fn count(&self, result: &str) {
        self.metrics
            .shadow(&self.route, &self.group.config.name, result);
    }
}

impl Mirror {
    /// Whether the copies go to `group` (a reload that rebuilt the group needs a new mirror).
    pub fn serves(&self, group: &Arc<TargetGroup>) -> bool {
        Arc::ptr_eq(&self.group, group)
    }
}
