//! The command line: Pingora's flags, described for what they do in Switchyard, plus ours.

use std::path::PathBuf;

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

    /// The configuration file: Switchyard's settings and Pingora's server settings (YAML).
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    pub conf: Option<PathBuf>,

    /// Check the whole configuration (every field, certificates included), print every
    /// error with its line, and exit: 0 if valid, 1 if not.
    #[arg(short = 't', long = "test")]
    pub test: bool,

    /// Run in the background; the process id goes to the configured pid_file.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Upgrade in place: check everything first, then take over the listening sockets of the
    /// instance named by pid_file, which finishes its requests and exits.
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,

    /// Run the built-in demo: demo backends in-process, the embedded demo configuration (or
    /// the file given with -c), listening on 127.0.0.1 only.
    #[arg(long)]
    pub demo: bool,
}

impl Cli {
    /// Pingora's options for the server (the configuration itself is passed already read).
    pub fn pingora_opt(&self) -> Opt {
        Opt {
            upgrade: self.upgrade,
            daemon: self.daemon,
            nocapture: false,
            test: false,
            conf: None,
        }
    }
}

/// Subcommands besides running the proxy.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// AWS tooling: demo backends, Switchyard nodes, an ALB to compare with, an NLB for HA.
    Aws(switchyard_aws::cli::AwsArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_says_what_it_does_here() {
        let help = Cli::command().render_help().to_string();
        for expected in [
            "-c, --conf <FILE>",
            "Check the whole configuration",
            "Run in the background",
            "Upgrade in place",
            "--demo",
        ] {
            assert!(
                help.contains(expected),
                "{expected:?} missing from:\n{help}"
            );
        }
        assert!(
            !help.contains("base set of command line arguments"),
            "{help}"
        );
    }
}
