//! Changes made to a group at run time (through the admin API) on top of what the
//! configuration and discovery say: added and removed backends and weights. They are reported
//! as drift from the file in `/status`; a reload of the file overrides them and says which.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use super::membership::Weights;

/// Run-time changes of one group.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Backends added at run time, with their weight.
    pub added: BTreeMap<SocketAddr, usize>,
    /// Backends removed at run time (they drain, then leave).
    pub removed: Vec<SocketAddr>,
    /// Weights set at run time.
    pub weights: BTreeMap<SocketAddr, usize>,
}

/// One difference between the running group and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub backend: String,
    pub change: String,
}

impl Overrides {
    /// `discovered` with the run-time changes applied.
    pub fn apply(&self, discovered: &Weights) -> Weights {
        let mut out = discovered.clone();
        for (addr, w) in &self.added {
            out.insert(*addr, *w);
        }
        for addr in &self.removed {
            out.remove(addr);
        }
        for (addr, w) in &self.weights {
            if let Some(slot) = out.get_mut(addr) {
                *slot = *w;
            }
        }
        out
    }

    /// Each change, against what discovery says (`discovered`).
    pub fn drift(&self, discovered: &Weights) -> Vec<Drift> {
        let mut out = Vec::new();
        for (addr, w) in &self.added {
            out.push(Drift {
                backend: addr.to_string(),
                change: format!("added at run time (weight {w})"),
            });
        }
        for addr in &self.removed {
            out.push(Drift {
                backend: addr.to_string(),
                change: "removed at run time".to_string(),
            });
        }
        for (addr, w) in &self.weights {
            let from = discovered
                .get(addr)
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".to_string());
            out.push(Drift {
                backend: addr.to_string(),
                change: format!("weight {from} → {w}"),
            });
        }
        out
    }

    /// Whether there is no change at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.weights.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn changes_apply_on_top_of_discovery_and_read_as_drift() {
        let discovered: Weights = [(addr(1), 1), (addr(2), 1)].into_iter().collect();
        let o = Overrides {
            added: [(addr(3), 2)].into_iter().collect(),
            removed: vec![addr(1)],
            weights: [(addr(2), 5)].into_iter().collect(),
        };
        let applied = o.apply(&discovered);
        assert_eq!(
            applied,
            [(addr(2), 5), (addr(3), 2)]
                .into_iter()
                .collect::<Weights>()
        );
        let drift = o.drift(&discovered);
        assert_eq!(drift.len(), 3);
        assert_eq!(drift[2].change, "weight 1 → 5");
    }
}
