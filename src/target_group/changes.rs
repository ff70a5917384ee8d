//! Run-time changes to a group (the admin API): drain, weigh, add and remove backends, and
//! the drift they make from the configuration.

use std::net::SocketAddr;
use std::time::Instant;

use super::overrides::Drift;
use super::{ChangeError, TargetGroup};
use crate::selection::stats::{stats_of, Lifecycle};

impl TargetGroup {
    /// Drain (or undrain) member `addr`: no new requests while drained; in-flight ones
    /// finish. Returns whether the state changed.
    pub fn set_drained(&self, addr: SocketAddr, drained: bool) -> Result<bool, ChangeError> {
        let stats = self
            .member(&addr)
            .ok_or(ChangeError::UnknownBackend(addr))?;
        Ok(stats.set_drained(drained) != drained)
    }

    /// Set member `addr`'s weight.
    pub fn set_weight(&self, addr: SocketAddr, weight: usize) -> Result<(), ChangeError> {
        if self.member(&addr).is_none() {
            return Err(ChangeError::UnknownBackend(addr));
        }
        {
            let mut o = self.overrides.lock();
            match o.added.get_mut(&addr) {
                Some(w) => *w = weight,
                None => {
                    o.weights.insert(addr, weight);
                }
            }
        }
        self.reconcile(Instant::now());
        Ok(())
    }

    /// Add a backend at run time: it starts `initial` until it passes its health checks.
    pub fn add_backend(&self, addr: SocketAddr, weight: usize) -> Result<(), ChangeError> {
        let present = self
            .member(&addr)
            .is_some_and(|s| s.lifecycle() != Lifecycle::Draining);
        if present {
            return Err(ChangeError::AlreadyMember(addr));
        }
        {
            let mut o = self.overrides.lock();
            o.removed.retain(|a| *a != addr);
            o.added.insert(addr, weight);
        }
        self.reconcile(Instant::now());
        Ok(())
    }

    /// Remove a backend at run time: it drains first, then leaves.
    pub fn remove_backend(&self, addr: SocketAddr) -> Result<(), ChangeError> {
        let present = self
            .member(&addr)
            .is_some_and(|s| s.lifecycle() != Lifecycle::Draining);
        if !present {
            return Err(ChangeError::UnknownBackend(addr));
        }
        {
            let mut o = self.overrides.lock();
            if o.added.remove(&addr).is_none() {
                o.removed.push(addr);
            }
            o.weights.remove(&addr);
        }
        self.reconcile(Instant::now());
        Ok(())
    }

    /// Differences from the configuration made at run time: changes and operator drains.
    pub fn drift(&self) -> Vec<Drift> {
        let discovered = self.membership.lock().discovered.clone();
        let mut out = self.overrides.lock().drift(&discovered);
        for b in self.members.load().iter() {
            if let Some(s) = stats_of(b) {
                if s.is_drained() {
                    out.push(Drift {
                        backend: s.label().to_string(),
                        change: "drained at run time".to_string(),
                    });
                }
            }
        }
        out
    }

    /// Undo operator drains (a reload: the file wins); returns what was undone.
    pub fn clear_drains(&self) -> Vec<Drift> {
        let mut out = Vec::new();
        for s in self.registry.all() {
            if s.set_drained(false) {
                out.push(Drift {
                    backend: s.label().to_string(),
                    change: "drained at run time".to_string(),
                });
            }
        }
        out
    }

    /// Undo every run-time change (a reload: the file wins); returns what was undone.
    pub fn reset_to_configuration(&self) -> Vec<Drift> {
        let undone = self.drift();
        *self.overrides.lock() = Default::default();
        for s in self.registry.all() {
            s.set_drained(false);
        }
        self.reconcile(Instant::now());
        undone
    }
}
