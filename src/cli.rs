//! The command line: Pingora's own flags plus ours.

use clap::Parser;
use pingora_core::server::configuration::Opt;

/// A programmable HTTP load balancer on Pingora that shows why each request went where it
/// went.
#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Pingora's flags: -c FILE (configuration), -t (test configuration and exit),
    /// -d (daemon), -u (graceful upgrade from a running instance).
    #[command(flatten)]
    pub pingora: Opt,

    /// Run the built-in demo: start demo backends in-process and use the embedded demo
    /// configuration (or the file given with -c).
    #[arg(long)]
    pub demo: bool,
}

/// Subcommands besides running the proxy.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// AWS tooling: launch, list, kill-switch, alb up|down.
    Aws(crate::aws::cli::AwsArgs),
}
