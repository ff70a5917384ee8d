//! A weighted split of a route over target groups (ALB's weighted forward, Envoy's weighted
//! clusters), with optional stickiness: a client stays on the group it was given.
//!
//! - By cookie (default): the response names the group in a cookie (`Max-Age` = the
//!   stickiness duration); later requests carrying it go to that group while its weight is
//!   above 0 (a rolled-back canary loses its clients at once).
//! - By client IP: a stable hash of the address picks the group, the same on every node. The
//!   groups are laid out in order with the canary (if any) first, so a growing canary weight
//!   only ever moves clients from the baseline to the canary.
//!
//! Weights are atomics: the canary analysis changes them at run time.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use pingora_http::RequestHeader;

use super::canary::Canary;
use crate::config::{SplitSettings, StickyBy};

/// A split at run time.
pub struct Split {
    pub settings: SplitSettings,
    weights: Vec<AtomicU32>,
    /// Positions in the order the weights are laid out (the canary first).
    order: Vec<usize>,
    pub canary: Option<Canary>,
}

/// The group chosen for a request: a position in `settings.targets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub position: usize,
    /// The client's cookie already named this group (no need to set it again).
    pub from_cookie: bool,
}

impl Split {
    /// A split with the configured weights; `canary` analyses it when configured.
    pub fn new(settings: SplitSettings, route: Arc<str>) -> Self {
        let weights = settings
            .targets
            .iter()
            .map(|t| AtomicU32::new(t.weight))
            .collect();
        let mut order: Vec<usize> = (0..settings.targets.len()).collect();
        if let Some(c) = &settings.canary {
            order.retain(|p| *p != c.canary);
            order.insert(0, c.canary);
        }
        let canary = settings
            .canary
            .as_ref()
            .map(|c| Canary::new(c.clone(), route, &settings.targets));
        Self {
            settings,
            weights,
            order,
            canary,
        }
    }

    /// The current weight of each position.
    pub fn weights(&self) -> Vec<u32> {
        self.weights.iter().map(|w| w.load(Relaxed)).collect()
    }

    /// Set the weight of `position`.
    pub fn set_weight(&self, position: usize, weight: u32) {
        self.weights[position].store(weight, Relaxed);
    }

    /// Choose the group for a request.
    pub fn choose(&self, request: &RequestHeader, client_ip: Option<IpAddr>) -> Choice {
        let weights = self.weights();
        let total: u32 = weights.iter().sum();
        if let Some(s) = &self.settings.stickiness {
            match s.by {
                StickyBy::Cookie => {
                    let named = read_cookie(request, &s.cookie)
                        .and_then(|v| self.settings.targets.iter().position(|t| t.name == v));
                    if let Some(position) = named.filter(|p| weights[*p] > 0) {
                        return Choice {
                            position,
                            from_cookie: true,
                        };
                    }
                }
                StickyBy::ClientIp => {
                    if let (Some(ip), true) = (client_ip, total > 0) {
                        let point = (stable_hash(ip) % 10_000) as u64 * total as u64 / 10_000;
                        return self.at(&weights, point as u32);
                    }
                }
            }
        }
        if total == 0 {
            return Choice {
                position: self.order[0],
                from_cookie: false,
            };
        }
        self.at(&weights, fastrand::u32(0..total))
    }

    /// The position whose weight range (in layout order) holds `point`.
    fn at(&self, weights: &[u32], point: u32) -> Choice {
        let mut acc = 0;
        for &p in &self.order {
            acc += weights[p];
            if point < acc {
                return Choice {
                    position: p,
                    from_cookie: false,
                };
            }
        }
        Choice {
            position: *self.order.last().expect("a split has groups"),
            from_cookie: false,
        }
    }

    /// The `Set-Cookie` value keeping the client on `choice`'s group, if stickiness is by
    /// cookie and the client does not have it yet.
    pub fn cookie(&self, choice: Choice) -> Option<String> {
        let s = self.settings.stickiness.as_ref()?;
        if s.by != StickyBy::Cookie || choice.from_cookie {
            return None;
        }
        Some(format!(
            "{}={}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            s.cookie,
            self.settings.targets[choice.position].name,
            s.duration.as_secs()
        ))
    }
}

/// FNV-1a over the address bytes: the same value on every node and every version.
fn stable_hash(ip: IpAddr) -> u32 {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    };
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (h ^ (h >> 32)) as u32
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read_cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SplitStickiness, SplitTarget};
    use std::time::Duration;

    fn split(weights: &[u32], by: Option<StickyBy>) -> Split {
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, w)| SplitTarget {
                group: i,
                name: format!("g{i}"),
                weight: *w,
            })
            .collect();
        let stickiness = by.map(|by| SplitStickiness {
            duration: Duration::from_secs(60),
            by,
            cookie: "G".into(),
        });
        Split::new(
            SplitSettings {
                targets,
                stickiness,
                canary: None,
            },
            Arc::from("r"),
        )
    }

    fn request(cookie: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(c) = cookie {
            r.insert_header("cookie", c).unwrap();
        }
        r
    }

    #[test]
    fn shares_follow_the_weights() {
        let s = split(&[90, 10], None);
        let n = 20_000;
        let second = (0..n)
            .filter(|_| s.choose(&request(None), None).position == 1)
            .count();
        let share = second as f64 / n as f64;
        assert!((0.09..0.11).contains(&share), "{share}");
    }

    #[test]
    fn a_cookie_keeps_the_group_while_its_weight_is_above_zero() {
        let s = split(&[50, 50], Some(StickyBy::Cookie));
        let first = s.choose(&request(None), None);
        let cookie = s.cookie(first).unwrap();
        let value = cookie.split(';').next().unwrap();
        for _ in 0..50 {
            let again = s.choose(&request(Some(value)), None);
            assert_eq!(again.position, first.position);
            assert!(again.from_cookie && s.cookie(again).is_none());
        }
        s.set_weight(first.position, 0);
        assert_ne!(
            s.choose(&request(Some(value)), None).position,
            first.position
        );
    }

    #[test]
    fn client_ip_stickiness_is_stable_and_a_growing_first_group_only_gains() {
        let s = split(&[10, 90], Some(StickyBy::ClientIp));
        let ips: Vec<IpAddr> = (0..2000u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        let before: Vec<usize> = ips
            .iter()
            .map(|ip| s.choose(&request(None), Some(*ip)).position)
            .collect();
        let again: Vec<usize> = ips
            .iter()
            .map(|ip| s.choose(&request(None), Some(*ip)).position)
            .collect();
        assert_eq!(before, again);
        s.set_weight(0, 50);
        s.set_weight(1, 50);
        let after: Vec<usize> = ips
            .iter()
            .map(|ip| s.choose(&request(None), Some(*ip)).position)
            .collect();
        assert!(
            before.iter().zip(&after).all(|(b, a)| *b == 1 || *a == 0),
            "nobody leaves the growing group"
        );
        let share = after.iter().filter(|p| **p == 0).count() as f64 / ips.len() as f64;
        assert!((0.4..0.6).contains(&share), "{share}");
    }
}
