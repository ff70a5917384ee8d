//! Per-request state carried through Pingora's hooks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::attempt::Attempt;
use crate::policy::fault::Injected;
use crate::policy::split::{Choice, Split};
use crate::runtime::Snapshot;
use crate::selection::stats::BackendStats;
use crate::selection::SelectionKey;
use crate::shutdown::Serving;
use crate::target_group::TargetGroup;

/// State of one request.
pub struct RequestCtx {
    pub started: Instant,
    /// The configuration this request runs on, taken once when it starts.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Index of the matched route (`None`: the default route, or none matched).
    pub route: Option<usize>,
    /// Name of the matched route.
    pub route_name: Option<Arc<str>>,
    /// The target group, when the route forwards.
    pub group: Option<Arc<TargetGroup>>,
    /// Prefix to strip before forwarding.
    pub strip_prefix: Option<Arc<str>>,
    /// The strategy's key for this request.
    pub key: SelectionKey,
    /// Backends already tried, so a retry goes elsewhere (inline: no allocation).
    pub tried: smallvec::SmallVec<[SocketAddr; 4]>,
    /// The current attempt; replacing or dropping it records its outcome.
    pub attempt: Option<Attempt>,
    /// The last backend chosen (kept after the attempt ends, for logs and headers).
    pub backend: Option<Arc<BackendStats>>,
    pub failed_open: bool,
    /// Status of a response the proxy wrote itself.
    pub local_status: Option<u16>,
    /// The client's IP (socket peer, or from a trusted proxy's header).
    pub client_ip: Option<IpAddr>,
    /// Admission slot of an overload-limited group, held until the request ends.
    pub slot: Option<crate::edge::shed::Slot>,
    /// Request body progress (size limit and upload-rate floor).
    pub body: BodyProgress,
    /// Counts this request as being served until it ends (for a prompt shutdown).
    pub serving: Option<Serving>,
    /// The split this request went through, and the group it was given.
    pub split: Option<(Arc<Split>, Choice)>,
    /// Faults injected into this request.
    pub fault: Option<Injected>,
}

/// How much of the request body arrived, and since when.
#[derive(Debug, Default, Clone, Copy)]
pub struct BodyProgress {
    pub bytes: u64,
    pub since: Option<Instant>,
}

impl RequestCtx {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            snapshot: None,
            route: None,
            route_name: None,
            group: None,
            strip_prefix: None,
            key: SelectionKey::default(),
            tried: smallvec::SmallVec::new(),
            attempt: None,
            backend: None,
            failed_open: false,
            local_status: None,
            client_ip: None,
            slot: None,
            body: BodyProgress::default(),
            serving: None,
            split: None,
            fault: None,
        }
    }

    /// The address of the last backend chosen.
    pub fn backend_addr(&self) -> Option<SocketAddr> {
        self.backend.as_ref().map(|b| b.addr())
    }

    /// The name of the request's target group, when it has one.
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.config.name.as_str())
    }

    /// The label of the last backend chosen.
    pub fn backend_label(&self) -> Option<&str> {
        self.backend.as_ref().map(|b| b.label())
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.tried.len() as u32
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
