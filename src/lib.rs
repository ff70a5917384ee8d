//! Switchyard: a programmable HTTP load balancer on Pingora that shows why each request
//! went where it went.
//!
//! Start-up story: [`cli`] parses the command line, [`config`] reads and validates the YAML
//! file, [`runtime`] builds the first configuration snapshot (and discovers every group once),
//! [`server`] checks what else can fail, then assembles a Pingora server with the [`proxy`],
//! the [`upkeep`] background service (discovery and health checks), the [`admin`] listener
//! and, in demo mode, the [`demo`] backends.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod edge;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod selection;
pub mod server;
pub mod shutdown;
pub mod target_group;
pub mod upkeep;
