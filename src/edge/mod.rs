//! What stands between clients and backends: TLS termination, the HTTP→HTTPS redirect,
//! per-route rate limits, per-group overload shedding, request limits, slow clients, and the
//! protocol (and TLS) towards the backends.

pub mod idle;
pub mod limits;
pub mod rate_limit;
pub mod redirect;
pub mod shed;
pub mod slow_client;
pub mod tls;
pub mod upstream_tls;
