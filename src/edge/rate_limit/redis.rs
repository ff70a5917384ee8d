//! Rate-limit buckets shared by every node through Redis.
//!
//! Each request is one atomic server-side operation: a GCRA script (the algorithm of
//! redis-cell) that reads the bucket's "theoretical arrival time", decides with Redis' own
//! clock (`TIME`, the same for every node) and writes it back with an expiry, so idle buckets
//! vanish. It behaves like a token bucket of `burst` tokens refilled at `rate` per second, and
//! the wait it returns makes `Retry-After` exact.
//!
//! The request path never waits for Redis longer than `store_timeout`. A call that fails or
//! times out puts the store in fallback (logged once, counted in
//! `lb_rate_limit_store_errors_total`, `lb_rate_limit_store_fallback` set to 1): requests use
//! the node's local buckets without touching Redis, while the background upkeep pings Redis
//! once a second and switches back as soon as it answers.
//!
//! Requests use a connection of the thread that serves them. A connection's driver task runs
//! on the runtime that made it: one shared with the upkeep's runtime made every call hop to
//! another thread and back (two wake-ups through the kernel per request, measured in
//! `bench/README.md`). Each serving thread gets its own connection on first use; until it is
//! up, that thread's calls go through the upkeep's connection.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StoreSettings;
use crate::metrics::Metrics;

/// GCRA: `KEYS[1]` the bucket, `ARGV[1]` microseconds per token, `ARGV[2]` the burst
/// tolerance in microseconds. Returns `{1, 0}` when allowed, `{0, wait_us}` when not.
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, 0}
"#;

/// How often a store in fallback is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A shared store for rate-limit buckets.
pub struct RedisStore {
    settings: StoreSettings,
    /// The URL without credentials, for logs and metric labels.
    label: String,
    client: Option<redis::Client>,
    /// The upkeep's connection: probes, and calls from a thread whose own is not up yet.
    connection: ArcSwap<Option<ConnectionManager>>,
    /// One connection per thread that serves requests, made on that thread's runtime.
    per_thread: Arc<ArcSwap<Vec<(ThreadId, ConnectionManager)>>>,
    /// Threads whose connection is being made.
    connecting: Arc<Mutex<HashSet<ThreadId>>>,
    /// Bumped whenever the per-thread connections are dropped, so that one being made across
    /// a failure is not kept.
    generation: Arc<AtomicU64>,
    healthy: AtomicBool,
    /// Whether the fallback was already logged (once per episode).
    reported: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
    probing: AtomicBool,
    script: redis::Script,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// A store for `settings`; it connects in the background ([`Self::maintain`]) and serves
    /// from the local fallback until then.
    pub fn new(settings: StoreSettings, metrics: Arc<Metrics>) -> Self {
        let label = redact(&settings.url);
        let client = match redis::Client::open(settings.url.as_str()) {
            Ok(c) => Some(c),
            Err(e) => {
                log::error!("rate-limit store {label} is unusable ({e}); limits stay local");
                None
            }
        };
        metrics.init_store(&label);
        Self {
            settings,
            label,
            client,
            connection: ArcSwap::from_pointee(None),
            per_thread: Arc::new(ArcSwap::from_pointee(Vec::new())),
            connecting: Arc::new(Mutex::new(HashSet::new())),
            generation: Arc::new(AtomicU64::new(0)),
            healthy: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            last_probe: Mutex::new(None),
            probing: AtomicBool::new(false),
            script: redis::Script::new(GCRA),
            metrics,
        }
    }

    /// The store's URL without credentials.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Take a token from bucket `key` (`rate` per second, `burst` at once). `None` when the
    /// store cannot answer now: the caller uses its local fallback.
    pub async fn take(&self, key: &str, rate: f64, burst: f64) -> Option<Result<(), Duration>> {
        if !self.healthy.load(Relaxed) {
            return None;
        }
        let mut connection = match self.this_threads_connection() {
            Some(c) => c,
            None => (*self.connection.load_full()).clone()?,
        };
        let interval_us = (1e6 / rate).round().max(1.0) as i64;
        let tolerance_us = (burst * interval_us as f64).round() as i64;
        let mut call = self.script.key(key);
        call.arg(interval_us).arg(tolerance_us);
        let answer = tokio::time::timeout(
            self.settings.timeout,
            call.invoke_async::<(i64, i64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((1, _))) => Some(Ok(())),
            Ok(Ok((_, wait_us))) => Some(Err(Duration::from_micros(wait_us.max(0) as u64))),
            Ok(Err(e)) => {
                self.fall_back(&e.to_string());
                None
            }
            Err(_) => {
                self.fall_back(&format!(
                    "no answer within {}",
                    humantime::format_duration(self.settings.timeout)
                ));
                None
            }
        }
    }

    /// The connection of the calling thread; when it has none yet, starts making one on this
    /// thread's runtime and returns `None` for now.
    fn this_threads_connection(&self) -> Option<ConnectionManager> {
        let thread = std::thread::current().id();
        if let Some((_, c)) = self.per_thread.load().iter().find(|(t, _)| *t == thread) {
            return Some(c.clone());
        }
        let client = self.client.clone()?;
        if !self.connecting.lock().insert(thread) {
            return None;
        }
        let config = self.manager_config();
        let per_thread = self.per_thread.clone();
        let connecting = self.connecting.clone();
        let generation = self.generation.clone();
        let started_in = generation.load(Relaxed);
        tokio::spawn(async move {
            match ConnectionManager::new_with_config(client, config).await {
                Ok(_) if generation.load(Relaxed) != started_in => {}
                Ok(c) => {
                    per_thread.rcu(|list| {
                        let mut list = Vec::clone(list);
                        list.push((thread, c.clone()));
                        list
                    });
                }
                // The upkeep's connection serves this thread meanwhile; try again later.
                Err(_) => tokio::time::sleep(PROBE_EVERY).await,
            }
            connecting.lock().remove(&thread);
        });
        None
    }

    fn drop_per_thread_connections(&self) {
        self.generation.fetch_add(1, Relaxed);
        self.per_thread.store(Arc::new(Vec::new()));
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        let timeout = self.settings.timeout.max(Duration::from_millis(500));
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
    }

    fn fall_back(&self, why: &str) {
        // A failed connection is not trusted again: each thread makes a new one once the
        // store answers, so a stale one cannot flip the store back into fallback.
        self.drop_per_thread_connections();
        self.metrics.rate_limit_store_error(&self.label);
        if self.healthy.swap(false, Relaxed) {
            self.metrics.rate_limit_store_fallback(&self.label, true);
            log::warn!(
                "rate-limit store {} failed ({why}): limits fall back to local buckets sized rate / {} until it answers again",
                self.label,
                self.settings.expected_nodes
            );
            self.reported.store(true, Relaxed);
        }
    }

    /// Connect, or check again a store in fallback (at most once a second). Run by the
    /// background upkeep, never on the request path.
    pub async fn maintain(&self, now: Instant) {
        if self.healthy.load(Relaxed) || self.probing.swap(true, Relaxed) {
            return;
        }
        self.probe(now).await;
        self.probing.store(false, Relaxed);
    }

    async fn probe(&self, now: Instant) {
        {
            let mut last = self.last_probe.lock();
            if last.is_some_and(|t| now.saturating_duration_since(t) < PROBE_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let Some(client) = &self.client else {
            return;
        };
        let probe = async {
            let mut connection = match (*self.connection.load_full()).clone() {
                Some(c) => c,
                None => {
                    let config = self.manager_config();
                    let c = ConnectionManager::new_with_config(client.clone(), config).await?;
                    self.connection.store(Arc::new(Some(c.clone())));
                    c
                }
            };
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(())) => {
                self.drop_per_thread_connections();
                self.healthy.store(true, Relaxed);
                self.metrics.rate_limit_store_fallback(&self.label, false);
                if self.reported.swap(false, Relaxed) {
                    log::info!(
                        "rate-limit store {} answers: limits are shared again",
                        self.label
                    );
                } else {
                    log::info!(
                        "rate-limit store {} connected: limits are shared",
                        self.label
                    );
                }
            }
            Ok(Err(e)) => self.note_down(&e.to_string()),
            Err(_) => self.note_down("no answer within 2s"),
        }
    }

    fn note_down(&self, why: &str) {
        self.metrics.rate_limit_store_fallback(&self.label, true);
        if !self.reported.swap(true, Relaxed) {
            log::warn!(
                "rate-limit store {} is unreachable ({why}): limits use local buckets sized rate / {}",
                self.label,
                self.settings.expected_nodes
            );
        }
    }

    /// Whether requests are decided by the shared store now.
    pub fn is_shared(&self) -> bool {
        self.healthy.load(Relaxed)
    }
}

/// `redis://user:secret@host:port/db` without the credentials.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(
            redact("redis://u:p@10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://10.0.0.1:6379/2"), "redis://10.0.0.1:6379/2");
    }
}
