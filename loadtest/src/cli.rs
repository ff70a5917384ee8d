//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// An HTTP load generator: closed or open loop, latency percentiles from hdrhistogram,
/// status codes, errors and the share of responses per backend. Every run is bounded by a
/// count (-n) or a duration (-z).
#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compare Switchyard's strategies (and NGINX/HAProxy when installed) on demo backends
    /// with skewed, degrading and flaky latency profiles.
    Experiment(crate::experiment::ExperimentArgs),
}

/// One load run.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Target URL (http:// or https://).
    #[arg(required = true)]
    pub url: Option<String>,
    /// Number of requests (default 200 when -z is not given).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Run for this long instead, e.g. 10s, 1m.
    #[arg(short = 'z', long = "duration", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 10)]
    pub connections: usize,
    /// Open loop: total arrival rate in requests per second (latency from intended send time).
    #[arg(short = 'q', long)]
    pub rate: Option<f64>,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body from a file.
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Accept any TLS certificate (self-signed test setups).
    #[arg(long)]
    pub insecure: bool,
    /// Trust this PEM CA file instead of the system roots.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Response header naming the backend, for the per-backend share.
    #[arg(long, default_value = "x-backend")]
    pub backend_header: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Runtime worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}
