//! `switchyard`: read the configuration, check it, build the Pingora server, run it.

use std::process::ExitCode;

/// mimalloc: a quarter of a bare Pingora proxy's user-space instructions go to glibc's
/// malloc/free; mimalloc cuts that (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use switchyard::cli::Cli;
use switchyard::config;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(switchyard::cli::Command::Aws(args)) => run_aws(args),
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_aws(args: switchyard::aws::cli::AwsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(switchyard::aws::cli::run(args))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (config, text, source) = match (&cli.pingora.conf, cli.demo) {
        (Some(path), _) => {
            let (config, text) = config::load(path.as_ref())?;
            (config, text, path.clone())
        }
        (None, true) => {
            let source = "<embedded demo configuration>".to_string();
            (
                config::parse(config::DEMO_YAML, &source)?,
                config::DEMO_YAML.to_string(),
                source,
            )
        }
        (None, false) => {
            anyhow::bail!("no configuration: pass -c FILE, or --demo for the built-in demo")
        }
    };
    let pingora = switchyard::server::pingora_conf(&text, &source)?;
    if cli.pingora.test {
        println!("switchyard: configuration {source} is valid");
        return Ok(());
    }
    if cli.demo && (cli.pingora.daemon || pingora.daemon) {
        anyhow::bail!("--demo runs in the foreground; drop -d / daemon: true");
    }
    log::info!(
        "starting: {} listener(s), {} target group(s), {} route(s)",
        config.listeners.len(),
        config.target_groups.len(),
        config.routes.len()
    );
    let server = switchyard::server::build(config, pingora, cli.pingora, cli.demo)?;
    server.run_forever()
}
