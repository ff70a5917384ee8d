//! `switchyard`: read the configuration, check everything, build the Pingora server, run it.

use std::process::ExitCode;

/// mimalloc: a quarter of a bare Pingora proxy's user-space instructions go to glibc's
/// malloc/free; mimalloc cuts that (see bench/README.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: allocator::Mimalloc = allocator::Mimalloc;

// With `--features system-allocator` (heap profiling, `bench/dhat-idle.sh`) mimalloc is still
// tuned and asked to hand memory back, but allocates nothing.
#[cfg_attr(feature = "system-allocator", allow(dead_code))]
mod allocator;

use clap::Parser;
use switchyard::cli::{Cli, Command};
use switchyard::config::{self, Loaded};
use switchyard::reload::Source;

fn main() -> ExitCode {
    allocator::tune();
    switchyard::edge::idle::on_idle(allocator::release_unused);
    switchyard::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Aws(args)) => run_aws(args),
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in format!("{e:#}").lines() {
                eprintln!("switchyard: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run_aws(args: switchyard_aws::cli::AwsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let check = |text: &str, source: &str| {
        config::parse_full(text, source)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    rt.block_on(switchyard_aws::cli::run(args, &check))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let loaded = read_configuration(&cli)?;
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    if cli.test {
        println!("switchyard: configuration {} is valid", loaded.source);
        return Ok(());
    }
    if cli.demo && (cli.daemon || loaded.pingora.daemon) {
        anyhow::bail!("--demo runs in the foreground; drop -d / daemon: true");
    }
    let source = match &cli.conf {
        Some(path) => Source::File(path.clone()),
        None => Source::Embedded(config::DEMO_YAML),
    };
    switchyard::server::run(switchyard::server::Start {
        opt: cli.pingora_opt(),
        config: loaded.config,
        pingora: loaded.pingora,
        demo: cli.demo,
        source,
    })
}

fn read_configuration(cli: &Cli) -> anyhow::Result<Loaded> {
    let loaded = match (&cli.conf, cli.demo) {
        (Some(path), _) => config::load(path),
        (None, true) => config::parse_full(config::DEMO_YAML, "<embedded demo configuration>"),
        (None, false) => {
            anyhow::bail!("no configuration: pass -c FILE, or --demo for the built-in demo")
        }
    };
    loaded.map_err(anyhow::Error::from)
}
