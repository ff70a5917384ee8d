//! The end-to-end suite, one test binary: every test starts the real `switchyard` binary on
//! loopback against real demo backends (and, where a test needs them, a real `redis-server`,
//! `moto_server`, nginx or haproxy). One binary instead of one per file keeps the debug build
//! small and its link time short; `cargo nextest run` still runs each test in its own process.

mod support;

mod aws;
mod backend_protocols;
mod config_errors;
mod edge;
mod experiment;
mod failover;
mod first_hour;
mod health;
mod http1_path;
mod memory;
mod multinode;
mod observability;
mod policies;
mod round_robin;
mod routing;
mod runtime_control;
mod startup;
mod strategies;
mod upgrade;
mod upstream_pool;
