//! What stands between clients and backends: TLS termination, the HTTP→HTTPS redirect,
//! per-route rate limits, per-group overload shedding and request limits.

pub mod limits;
pub mod rate_limit;
pub mod redirect;
pub mod shed;
pub mod slow_client;
pub mod tls;
