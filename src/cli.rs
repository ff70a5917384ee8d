//! The command line: Pingora's own flags plus ours.

use clap::Parser;
use pingora_core::server::configuration::Opt;

/// A programmable HTTP load balancer on Pingora that shows why each request went where it
/// went.
#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Pingora's flags: -c FILE (configuration), -t (test configuration and exit),
    /// -d (daemon), -u (graceful upgrade from a running instance).
    #[command(flatten)]
    pub pingora: Opt,

    /// Run the built-in demo: start demo backends in-process and use the embedded demo
    /// configuration (or the file given with -c).
    #[arg(long)]
    pub demo: bool,
}
