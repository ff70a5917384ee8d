//! Local token buckets, keyed globally or per client IP.
//!
//! Each key has a bucket of `burst` tokens refilled at `rate` per second; a request takes one
//! token or is rejected with the time until the next token (for `Retry-After`). Per-client
//! buckets live in an LRU map of at most `max_keys` entries (sharded to keep lock hold times
//! short), so memory does not grow with the number of distinct clients: the least recently
//! seen client's bucket is forgotten first, as River's rate limiter does.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::RateKey;

/// Number of independently locked shards of the per-client map.
const SHARDS: usize = 16;

/// One bucket.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket as of `now`.
    pub fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    /// Take one token at `now`, or return how long until one is available.
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Token buckets of one route (or of its local fallback).
pub struct LocalBuckets {
    rate: f64,
    burst: f64,
    key: RateKey,
    global: Mutex<Option<TokenBucket>>,
    shards: Vec<Mutex<LruCache<u128, TokenBucket>>>,
}

impl LocalBuckets {
    /// Buckets of `burst` tokens refilled at `rate`, at most `max_keys` clients kept.
    pub fn new(rate: f64, burst: f64, key: RateKey, max_keys: usize) -> Self {
        let per_shard = NonZeroUsize::new(max_keys.div_ceil(SHARDS).max(1)).expect("max(1)");
        Self {
            rate,
            burst,
            key,
            global: Mutex::new(None),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    /// Take a token for a request from `client` at `now`; `Err` carries the wait until the
    /// next token.
    pub fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.rate, self.burst);
        match (self.key, client) {
            (RateKey::ClientIp, Some(ip)) => {
                let key = ip_key(ip);
                let mut shard = self.shards[(mix(key) % SHARDS as u64) as usize].lock();
                let bucket = shard.get_or_insert_mut(key, || TokenBucket::full(burst, now));
                bucket.take(rate, burst, now)
            }
            // Without a client address everything shares the global bucket.
            _ => self
                .global
                .lock()
                .get_or_insert_with(|| TokenBucket::full(burst, now))
                .take(rate, burst, now),
        }
    }

    /// Client buckets currently kept.
    pub fn tracked_keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// The key of a client address (IPv4-mapped IPv6 keyed like IPv4).
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4) as u128,
            None => u128::from(v6) | (1 << 127),
        },
    }
}

/// Spread keys over shards (SplitMix64 finaliser).
fn mix(key: u128) -> u64 {
    let mut x = (key as u64) ^ ((key >> 64) as u64);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: f64, key: RateKey, max_keys: usize) -> LocalBuckets {
        LocalBuckets::new(rate, burst, key, max_keys)
    }

    #[test]
    fn a_burst_gets_exactly_the_bucket() {
        let l = limiter(50.0, 10.0, RateKey::Global, 100);
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| l.check(None, t0).is_ok()).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_burst() {
        let l = limiter(50.0, 10.0, RateKey::Global, 100);
        let t0 = Instant::now();
        for _ in 0..10 {
            l.check(None, t0).unwrap();
        }
        let wait = l.check(None, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.02).abs() < 1e-9, "{wait:?}");
        // 100 ms later: 5 tokens.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!((0..20).filter(|_| l.check(None, t1).is_ok()).count(), 5);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| l.check(None, t2).is_ok()).count(), 10);
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let l = limiter(1.0, 2.0, RateKey::ClientIp, 100);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.check(Some(a), t0).is_ok() && l.check(Some(a), t0).is_ok());
        assert!(l.check(Some(a), t0).is_err());
        assert!(l.check(Some(b), t0).is_ok(), "b is not limited by a");
    }

    #[test]
    fn memory_is_bounded_by_max_keys() {
        let l = limiter(1.0, 1.0, RateKey::ClientIp, 1000);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let _ = l.check(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        assert!(l.tracked_keys() <= 1000 + SHARDS, "{}", l.tracked_keys());
    }
}
