//! What every selector is built from: the group's backends with their stats, plus the
//! iterator shared by the score-based strategies (full scan or power of two choices).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use pingora_load_balancing::selection::BackendIter;
use pingora_load_balancing::Backend;

use super::stats::{BackendStats, StatsRegistry};

/// The members of a group in a fixed order, each with its stats.
pub struct Members {
    pub backends: Vec<Backend>,
    pub stats: Vec<Arc<BackendStats>>,
}

impl Members {
    /// Index `backends`, taking each one's stats from `Backend::ext` or, failing that, from
    /// the registry.
    pub fn new(backends: &BTreeSet<Backend>, registry: &StatsRegistry) -> Self {
        let now = Instant::now();
        let mut out = Members {
            backends: Vec::with_capacity(backends.len()),
            stats: Vec::with_capacity(backends.len()),
        };
        for b in backends {
            let stats = match super::stats::stats_of(b) {
                Some(s) => s.clone(),
                None => {
                    let mut b = b.clone();
                    registry.attach(&mut b, now);
                    match super::stats::stats_of(&b) {
                        Some(s) => s.clone(),
                        None => continue, // not an inet address: cannot be balanced
                    }
                }
            };
            out.backends.push(b.clone());
            out.stats.push(stats);
        }
        out
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// A selector that ranks its members by a score (lower is better).
pub trait Scored: Send + Sync + 'static {
    fn members(&self) -> &Members;
    /// The score of member `i` at `now`; lower wins.
    fn score(&self, i: usize, now: Instant) -> f64;
    /// Whether to sample two members (P2C) instead of scanning all.
    fn use_p2c(&self) -> bool;
}

/// Yields the best-scored member first, then the next best, and so on.
///
/// In scan mode every step is a full scan over the members not yet yielded, with ties
/// broken at random (reservoir sampling), so equal backends share traffic evenly. In P2C
/// mode the first step compares two random members, the second yields the other one, and
/// later steps walk the rest from a random point: O(1) per request whatever the group size.
pub struct ScoredIter<T: Scored> {
    sel: Arc<T>,
    now: Instant,
    /// Indices already yielded (inline: the common case allocates nothing).
    yielded: smallvec::SmallVec<[usize; 4]>,
    p2c_walk: Option<(usize, usize)>,
}

impl<T: Scored> ScoredIter<T> {
    pub fn new(sel: Arc<T>) -> Self {
        Self {
            sel,
            now: Instant::now(),
            yielded: smallvec::SmallVec::new(),
            p2c_walk: None,
        }
    }

    fn next_index(&mut self) -> Option<usize> {
        let n = self.sel.members().len();
        if self.yielded.len() >= n {
            return None;
        }
        if self.sel.use_p2c() && n > 2 {
            return Some(self.next_p2c(n));
        }
        self.next_scan(n)
    }

    fn next_scan(&mut self, n: usize) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        let mut ties = 0u32;
        for i in 0..n {
            if self.yielded.contains(&i) {
                continue;
            }
            let s = self.sel.score(i, self.now);
            match best {
                Some((_, b)) if s > b => {}
                Some((_, b)) if s == b => {
                    ties += 1;
                    if fastrand::u32(0..=ties) == 0 {
                        best = Some((i, s));
                    }
                }
                _ => {
                    best = Some((i, s));
                    ties = 0;
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn next_p2c(&mut self, n: usize) -> usize {
        match self.yielded.len() {
            0 => {
                let a = fastrand::usize(0..n);
                let b = (a + 1 + fastrand::usize(0..n - 1)) % n;
                let (sa, sb) = (self.sel.score(a, self.now), self.sel.score(b, self.now));
                let (first, second) = if sb < sa || (sb == sa && fastrand::bool()) {
                    (b, a)
                } else {
                    (a, b)
                };
                self.p2c_walk = Some((second, fastrand::usize(0..n)));
                first
            }
            1 => self.p2c_walk.map(|(second, _)| second).unwrap_or(0),
            _ => {
                // Walk the ring from a random start, skipping what was already yielded.
                let (_, mut pos) = self.p2c_walk.unwrap_or((0, 0));
                loop {
                    let i = pos % n;
                    pos += 1;
                    if !self.yielded.contains(&i) {
                        if let Some(w) = self.p2c_walk.as_mut() {
                            w.1 = pos;
                        }
                        return i;
                    }
                }
            }
        }
    }
}

impl<T: Scored> BackendIter for ScoredIter<T> {
    fn next(&mut self) -> Option<&Backend> {
        let i = self.next_index()?;
        self.yielded.push(i);
        self.sel.members().backends.get(i)
    }
}
