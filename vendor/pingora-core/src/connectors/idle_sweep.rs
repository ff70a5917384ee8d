// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Watching the connections idle in a keep-alive pool with one sweeper per connector
//! (see [`ConnectorOptions::idle_sweep`](super::ConnectorOptions::idle_sweep)).

use super::PoolCallback;
use crate::protocols::{Stream, UniqueIDType};
use log::debug;
use parking_lot::Mutex;
use pingora_pool::{ConnectionMeta, ConnectionPool};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the idle connections of its connector.
pub const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

type Pooled = Arc<tokio::sync::Mutex<Stream>>;
type Pool = ConnectionPool<Pooled>;

/// One connection released to the pool and not taken since.
struct Idle {
    meta: ConnectionMeta,
    since: Instant,
    timeout: Option<Duration>,
    /// Whether its socket can be checked for a close by the server: plain TCP only (a TLS
    /// server may send records, such as session tickets, that are not application data).
    plain: bool,
    /// The pooled connection, without keeping it alive: gone once the pool evicted it.
    conn: Weak<tokio::sync::Mutex<Stream>>,
}

impl Idle {
    fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    fn expired(&self, now: Instant) -> bool {
        self.timeout.is_some_and(|t| self.idle_for(now) >= t)
    }
}

/// The connections idle in one connector's pool, by connection id.
pub(crate) struct IdleSweep {
    idle: Mutex<HashMap<UniqueIDType, Idle, ahash::RandomState>>,
    sweeper_started: AtomicBool,
    callback: Option<PoolCallback>,
    unexpected_data_conn_count: Arc<AtomicU64>,
}

impl IdleSweep {
    pub(crate) fn new(
        callback: Option<PoolCallback>,
        unexpected_data_conn_count: Arc<AtomicU64>,
    ) -> Self {
        IdleSweep {
            idle: Mutex::new(HashMap::default()),
            sweeper_started: AtomicBool::new(false),
            callback,
            unexpected_data_conn_count,
        }
    }

    /// Note a connection just put in `pool`; the first one starts the sweeper.
    pub(crate) fn released(
        self: &Arc<Self>,
        meta: ConnectionMeta,
        conn: Weak<tokio::sync::Mutex<Stream>>,
        plain: bool,
        timeout: Option<Duration>,
        pool: &Arc<Pool>,
    ) {
        let idle = Idle {
            meta,
            since: Instant::now(),
            timeout,
            plain,
            conn,
        };
        self.idle.lock().insert(idle.meta.id, idle);
        if !self.sweeper_started.swap(true, Ordering::AcqRel) {
            let sweep = Arc::downgrade(self);
            let pool = Arc::downgrade(pool);
            pingora_runtime::current_handle().spawn(sweep_every_interval(sweep, pool));
        }
    }

    /// A connection was taken from the pool: whether it may be used, i.e. it has not been
    /// idle past its timeout (the sweeper had not come round to it yet).
    pub(crate) fn taken(&self, id: UniqueIDType) -> bool {
        let Some(idle) = self.idle.lock().remove(&id) else {
            return true;
        };
        let now = Instant::now();
        if !idle.expired(now) {
            return true;
        }
        debug!("idle connection reached its idle timeout");
        if let Some(callback) = &self.callback {
            callback(idle.idle_for(now));
        }
        false
    }

    /// Drop the connections the pool evicted, the ones idle past their timeout and the ones
    /// the server closed (or sent unexpected data on).
    fn sweep(&self, pool: &Pool) {
        let now = Instant::now();
        let mut left = Vec::new();
        self.idle.lock().retain(|_, idle| {
            let evicted = idle.conn.strong_count() == 0;
            let stale = !evicted
                && (idle.expired(now)
                    || (idle.plain
                        && !socket_is_idle(idle.meta.id, &self.unexpected_data_conn_count)));
            if stale {
                // Drops the pool's reference, which closes the connection.
                pool.pop_closed(&idle.meta);
            }
            if evicted || stale {
                left.push(idle.idle_for(now));
            }
            !(evicted || stale)
        });
        if let Some(callback) = &self.callback {
            left.into_iter().for_each(|idle_for| callback(idle_for));
        }
        // The pool keeps nodes emptied by reuse (`keep_emptied_nodes`); those still empty
        // now go, so keys no longer used leave nothing behind.
        pool.remove_empty_nodes();
    }
}

async fn sweep_every_interval(sweep: Weak<IdleSweep>, pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(IDLE_SWEEP_INTERVAL).await;
        let (Some(sweep), Some(pool)) = (sweep.upgrade(), pool.upgrade()) else {
            return; // the connector is gone
        };
        sweep.sweep(&pool);
    }
}

/// Whether the socket `fd` is still open with nothing to read, without consuming anything.
#[cfg(unix)]
fn socket_is_idle(fd: UniqueIDType, unexpected_data_conn_count: &AtomicU64) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data in the socket and
    // MSG_DONTWAIT never blocks. A stale fd only makes the call fail or look at another
    // socket, and the caller then acts on a pool entry that is no longer there.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let read = if n >= 0 {
        Some(Ok(n as usize))
    } else {
        let err = std::io::Error::last_os_error();
        (err.kind() != std::io::ErrorKind::WouldBlock).then_some(Err(err))
    };
    super::still_idle(read, unexpected_data_conn_count)
}

#[cfg(not(unix))]
fn socket_is_idle(_fd: UniqueIDType, _unexpected_data_conn_count: &AtomicU64) -> bool {
    true
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected loopback pair: the client end as a `Stream`, and the server end.
    async fn connected() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (
            Box::new(crate::protocols::l4::stream::Stream::from(client)),
            server,
        )
    }

    fn sweep() -> Arc<IdleSweep> {
        Arc::new(IdleSweep::new(None, Arc::new(AtomicU64::new(0))))
    }

    /// Releases `stream` to `pool` under `key` as the connector does with `idle_sweep` on, as
    /// a plain TCP connection.
    fn release(
        sweep: &Arc<IdleSweep>,
        pool: &Arc<Pool>,
        stream: Stream,
        key: u64,
        timeout: Option<Duration>,
    ) -> ConnectionMeta {
        release_as(sweep, pool, stream, key, timeout, true)
    }

    /// The same, saying whether the connection is plain TCP (a TLS one is not checked for a
    /// close by the server).
    fn release_as(
        sweep: &Arc<IdleSweep>,
        pool: &Arc<Pool>,
        stream: Stream,
        key: u64,
        timeout: Option<Duration>,
        plain: bool,
    ) -> ConnectionMeta {
        let meta = ConnectionMeta::new(key, stream.id());
        let stream = Arc::new(tokio::sync::Mutex::new(stream));
        sweep.released(meta.clone(), Arc::downgrade(&stream), plain, timeout, pool);
        pool.put(&meta, stream);
        meta
    }

    #[tokio::test]
    async fn a_connection_taken_before_its_idle_timeout_may_be_used_and_not_after() {
        let pool = Arc::new(ConnectionPool::new(8).keep_emptied_nodes());
        let sweep = sweep();
        let (fresh, _server_a) = connected().await;
        let (stale, _server_b) = connected().await;
        let fresh = release(&sweep, &pool, fresh, 1, Some(Duration::from_secs(60)));
        let stale = release(&sweep, &pool, stale, 2, Some(Duration::ZERO));

        assert!(sweep.taken(fresh.id), "idle for less than its timeout");
        assert!(!sweep.taken(stale.id), "idle for its whole timeout");
        assert!(sweep.taken(99), "not noted as idle: nothing to refuse");
    }

    #[tokio::test]
    async fn the_sweep_drops_expired_and_server_closed_connections_and_keeps_the_rest() {
        let pool = Arc::new(ConnectionPool::new(8).keep_emptied_nodes());
        let sweep = sweep();
        let (expired, _server_a) = connected().await;
        let (closed, server_b) = connected().await;
        let (talked, mut server_c) = connected().await;
        let (kept, _server_d) = connected().await;
        release(&sweep, &pool, expired, 1, Some(Duration::ZERO));
        release(&sweep, &pool, closed, 2, None);
        release(&sweep, &pool, talked, 3, None);
        let kept = release(&sweep, &pool, kept, 4, Some(Duration::from_secs(60)));
        drop(server_b);
        server_c.write_all(b"unexpected").await.unwrap();
        // Let the FIN and the bytes arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;

        sweep.sweep(&pool);

        assert!(pool.get(&1).is_none(), "idle past its timeout");
        assert!(pool.get(&2).is_none(), "closed by the server");
        assert!(pool.get(&3).is_none(), "the server sent data on an idle connection");
        assert!(pool.get(&4).is_some(), "idle, open and within its timeout");
        assert_eq!(sweep.idle.lock().len(), 1, "only the kept one is still watched");
        assert!(sweep.taken(kept.id), "and it may be used");
    }

    #[tokio::test]
    async fn the_sweep_forgets_connections_the_pool_evicted() {
        // A pool of one connection per key: a second one released under the same key evicts
        // the first. Neither counts as plain TCP, so the sweep does not look at their sockets.
        let pool = Arc::new(ConnectionPool::new(1).keep_emptied_nodes());
        let sweep = sweep();
        let (first, _server_a) = connected().await;
        let (second, _server_b) = connected().await;
        release_as(&sweep, &pool, first, 1, None, false);
        release_as(&sweep, &pool, second, 1, None, false);
        assert_eq!(sweep.idle.lock().len(), 2);

        sweep.sweep(&pool);

        assert_eq!(sweep.idle.lock().len(), 1, "only the pooled one is still watched");
        assert!(pool.get(&1).is_some());
    }
}
