//! Sticky: the same client goes to the same backend.
//!
//! Clients are placed on a Ketama consistent-hash ring (Pingora's `KetamaHashing`), keyed
//! by client IP, so removing one of ten backends remaps only about a tenth of clients. When
//! a client's backend cannot take the request, the walk continues to the next backend on the
//! ring, which is the same fallback for every request of that client. With an LB cookie the
//! key is the backend id from the cookie instead ([`cookie_key`]); an unknown or stale id
//! falls back to the ring.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use pingora_load_balancing::selection::consistent::{KetamaHashing, OwnedNodeIterator};
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;

use super::members::Members;
use super::{GroupShared, KeyInput, SelectionKey, SharedConfig, Strategy};
use crate::config::TargetGroupConfig;

/// First byte of a key that carries a backend id from a cookie.
const COOKIE_TAG: u8 = b'C';

/// Consistent hashing by client, with optional cookie pinning.
pub struct Sticky {
    ring: Arc<KetamaHashing>,
    members: Members,
    by_id: HashMap<u64, usize>,
    by_addr: HashMap<SocketAddr, usize>,
}

/// A stable, opaque id for a backend, used as the LB cookie's value.
pub fn backend_id(addr: &SocketAddr) -> u64 {
    // FNV-1a over the textual address: stable across processes and versions.
    addr.to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The selection key for a request whose LB cookie names backend `id`.
pub fn cookie_key(id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = COOKIE_TAG;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn id_from_key(key: &[u8]) -> Option<u64> {
    match key {
        [COOKIE_TAG, rest @ ..] if rest.len() == 8 => {
            Some(u64::from_be_bytes(rest.try_into().ok()?))
        }
        _ => None,
    }
}

impl Strategy for Sticky {
    const NAME: &'static str = "sticky";

    /// The backend id of a valid LB cookie, else the client IP.
    fn request_key(request: &KeyInput<'_>) -> SelectionKey {
        if let Some(cookie) = &request.settings.sticky.lb_cookie {
            let id = read_cookie(request.request, &cookie.name)
                .and_then(|v| u64::from_str_radix(v, 16).ok());
            if let Some(id) = id {
                return SelectionKey::new(&cookie_key(id));
            }
        }
        request
            .client_ip
            .map(SelectionKey::from_ip)
            .unwrap_or_default()
    }

    /// With an LB cookie configured: set it unless the client already named `picked`.
    fn response_cookie(
        settings: &TargetGroupConfig,
        picked: SocketAddr,
        key: &SelectionKey,
    ) -> Option<String> {
        let cookie = settings.sticky.lb_cookie.as_ref()?;
        let id = backend_id(&picked);
        if id_from_key(key.as_bytes()) == Some(id) {
            return None;
        }
        Some(format!(
            "{}={id:016x}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            cookie.name,
            cookie.max_age.as_secs()
        ))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn read_cookie<'a>(req: &'a pingora_http::RequestHeader, name: &str) -> Option<&'a str> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|line| {
            line.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then_some(v.trim())
            })
        })
}

impl BackendSelection for Sticky {
    type Iter = StickyIter;
    type Config = SharedConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, shared: &SharedConfig) -> Self {
        let members = Members::new(backends, &shared.registry);
        let by_id = members
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| (backend_id(&s.addr()), i))
            .collect();
        let by_addr = members
            .stats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.addr(), i))
            .collect();
        let ring = Arc::new(KetamaHashing::build(backends));
        Self {
            ring,
            members,
            by_id,
            by_addr,
        }
    }

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &GroupShared::standalone())
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> StickyIter {
        let pinned = id_from_key(key).and_then(|id| self.by_id.get(&id).copied());
        StickyIter {
            sel: self.clone(),
            pinned,
            ring: self.ring.iter(key),
            yielded: smallvec::SmallVec::new(),
            steps: 0,
        }
    }
}

/// Yields the pinned backend (cookie) if any, then the ring walk without repeats.
pub struct StickyIter {
    sel: Arc<Sticky>,
    pinned: Option<usize>,
    ring: OwnedNodeIterator,
    yielded: smallvec::SmallVec<[SocketAddr; 4]>,
    steps: usize,
}

impl BackendIter for StickyIter {
    fn next(&mut self) -> Option<&Backend> {
        if let Some(i) = self.pinned.take() {
            let b = self.sel.members.backends.get(i)?;
            self.yielded.push(self.sel.members.stats[i].addr());
            return Some(b);
        }
        let n = self.sel.members.len();
        // Each backend has a few hundred points on the ring; bound the walk accordingly.
        let max_steps = 400 * n.max(1) + 1;
        if self.yielded.len() >= n {
            return None;
        }
        loop {
            if self.steps >= max_steps {
                return None;
            }
            self.steps += 1;
            let b = self.ring.next()?;
            let addr = *b.addr.as_inet()?;
            if !self.yielded.contains(&addr) {
                self.yielded.push(addr);
                // Re-borrow to tie the lifetime to `self` rather than the loop.
                return self.ring_backend(addr);
            }
        }
    }
}

impl StickyIter {
    fn ring_backend(&self, addr: SocketAddr) -> Option<&Backend> {
        let i = *self.sel.by_addr.get(&addr)?;
        self.sel.members.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn first_port(sel: &Arc<Sticky>, key: &[u8]) -> u16 {
        sel.iter(key).next().unwrap().addr.as_inet().unwrap().port()
    }

    #[test]
    fn same_client_same_backend() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(Sticky::build_with_config(&backends(5, &shared), &shared));
        let ip = [127u8, 0, 0, 7];
        let p = first_port(&sel, &ip);
        assert!((0..50).all(|_| first_port(&sel, &ip) == p));
    }

    #[test]
    fn removing_one_of_ten_remaps_about_a_tenth() {
        let shared = GroupShared::standalone();
        let all = backends(10, &shared);
        let full = Arc::new(Sticky::build_with_config(&all, &shared));
        let removed_port = 10003u16;
        let fewer: BTreeSet<Backend> = all
            .iter()
            .filter(|b| b.addr.as_inet().unwrap().port() != removed_port)
            .cloned()
            .collect();
        let less = Arc::new(Sticky::build_with_config(&fewer, &shared));
        let mut moved = 0;
        let mut moved_not_from_removed = 0;
        let clients = 5000u32;
        for c in 0..clients {
            let key = c.to_be_bytes();
            let (a, b) = (first_port(&full, &key), first_port(&less, &key));
            if a != b {
                moved += 1;
                if a != removed_port {
                    moved_not_from_removed += 1;
                }
            }
        }
        assert_eq!(
            moved_not_from_removed, 0,
            "only the removed backend's clients move"
        );
        let share = moved as f64 / clients as f64;
        assert!((0.04..0.2).contains(&share), "moved share {share}");
    }

    #[test]
    fn fallback_walks_the_ring_without_repeats() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(Sticky::build_with_config(&backends(4, &shared), &shared));
        let mut it = sel.iter(b"client");
        let mut seen = Vec::new();
        while let Some(b) = it.next() {
            seen.push(b.addr.clone());
        }
        assert_eq!(seen.len(), 4);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn cookie_pins_a_backend() {
        let shared = GroupShared::standalone();
        let sel = Arc::new(Sticky::build_with_config(&backends(4, &shared), &shared));
        let target: SocketAddr = "127.0.0.1:10002".parse().unwrap();
        let key = cookie_key(backend_id(&target));
        assert!((0..20).all(|_| first_port(&sel, &key) == 10002));
        // An unknown id falls back to the ring.
        let unknown = cookie_key(42);
        assert!(sel.iter(&unknown).next().is_some());
    }
}
