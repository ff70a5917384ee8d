use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use loadtest::cli::{Cli, Command, LoadArgs};
use loadtest::plan::{Pacing, Stop};
use loadtest::report;
use loadtest::run::{self, RunOptions};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let threads = cli.load.threads;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Some(Command::Experiment(args)) => loadtest::experiment::run(args).await,
            None => load(cli.load).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let opts = options(&args)?;
    let summary = run::run(&opts).await?;
    let text = if args.json {
        report::json::render(&summary) + "\n"
    } else {
        report::text::render(&summary)
    };
    // A closed pipe (e.g. `| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

fn options(args: &LoadArgs) -> anyhow::Result<RunOptions> {
    let url = args.url.clone().context("a URL is required")?;
    let mut opts = RunOptions::new(&url);
    opts.stop = match (args.requests, args.duration) {
        (Some(n), None) => Stop::Count(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Count(200),
        (Some(_), Some(_)) => bail!("give -n or -z, not both"),
    };
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("-q must be a positive rate");
        }
        opts.pacing = Pacing::Open { rate };
    }
    opts.connections = args.connections;
    opts.method = args.method.to_ascii_uppercase();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `Name: value`"))?;
        opts.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(path) = &args.body {
        opts.body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    opts.timeout = args.timeout;
    opts.insecure = args.insecure;
    opts.cacert = args.cacert.clone();
    opts.backend_header = args.backend_header.clone();
    opts.progress = !args.json;
    Ok(opts)
}
