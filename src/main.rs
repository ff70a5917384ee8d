//! `switchyard`: read the configuration, check everything, build the Pingora server, run it.

use std::process::ExitCode;

/// mimalloc: a quarter of a bare Pingora proxy's user-space instructions go to glibc's
/// malloc/free; mimalloc cuts that (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use switchyard::cli::{Cli, Command};
use switchyard::config::{self, Loaded};
use switchyard::reload::Source;

/// mimalloc's `mi_option_purge_delay` (mimalloc 2's `mimalloc.h`; the Rust bindings name no
/// constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Give freed memory back to the system at once instead of after mimalloc's default 10 ms.
/// Under 500 connections this took the resident set from 90 to 35 MiB at no cost in CPU per
/// request (bench/README.md, "Memory"). `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option; mimalloc reads it when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    tune_allocator();
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
