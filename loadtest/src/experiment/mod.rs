//! `loadtest experiment`: the same load against Switchyard's strategies (and NGINX and
//! HAProxy when installed) on demo backends with latency profiles, printed as a table and
//! written as JSON plus a latency CDF plot (SVG).
//!
//! Profiles:
//! - `skewed`: ten backends of fixed latencies 1 ms, 4×10 ms, 4×100 ms, 1000 ms (the tower
//!   balancer benchmark);
//! - `degrading`: four 10 ms backends, one of which turns 200 ms a third into the run;
//! - `flaky`: four 10 ms backends, one answering fast 503s half of the time.
//!
//! Every contender runs without health checks of either kind (see [`peers`]), so the table
//! compares the strategies alone; `fastest`, which needs its probes, is marked. A peer that
//! is not installed is named in a note under the table rather than silently dropped. One run
//! writes every table into `tables.md` with the commit and the date, next to the JSON and the
//! plots, in a fresh directory outside the repository unless `--out` says otherwise.

pub mod peers;
pub mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use backend_server::{BackendState, Behaviour, BehaviourPatch, RunningBackend};
use clap::Args;
use serde::Serialize;

use crate::plan::Stop;
use crate::report::Summary;
use crate::run::{self, RunOptions};
use peers::Contender;
pub use report::{plot_cdf, table};

/// Options of `loadtest experiment`.
#[derive(Args, Debug, Clone)]
pub struct ExperimentArgs {
    /// skewed, degrading, flaky or all.
    #[arg(long, default_value = "all")]
    pub profile: String,
    /// Switchyard strategies to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round_robin,least_conn,adaptive,p2c,fastest"
    )]
    pub strategies: Vec<String>,
    /// Requests per run (skewed and flaky).
    #[arg(short = 'n', long, default_value_t = 3000)]
    pub requests: u64,
    /// Length of a degrading run.
    #[arg(long, default_value = "9s", value_parser = humantime::parse_duration)]
    pub degrading_duration: Duration,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// The switchyard binary (default: next to this one).
    #[arg(long)]
    pub switchyard: Option<PathBuf>,
    /// Where to write tables.md, JSON and SVG results (default: a new directory under the
    /// temporary directory, so committed results are never overwritten).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip NGINX and HAProxy even when installed.
    #[arg(long)]
    pub no_peers: bool,
}

/// One contender's result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub proxy: String,
    pub summary: Summary,
}

/// Results of one profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileResult {
    pub profile: String,
    pub backends: Vec<String>,
    pub rows: Vec<Row>,
    /// Peers that could not be compared, and why.
    pub missing: Vec<String>,
}

/// A set of backends with latency and error behaviour.
pub struct Profile {
    pub name: &'static str,
    /// (name, delay ms, error rate, error status)
    pub backends: Vec<(String, u64, f64, u16)>,
    /// After this long, the first backend turns this slow.
    pub degrade: Option<(Duration, u64)>,
}

/// The profiles named `which` (`all` for every one).
pub fn profiles(which: &str) -> anyhow::Result<Vec<Profile>> {
    let skewed = Profile {
        name: "skewed",
        backends: [1u64, 10, 10, 10, 10, 100, 100, 100, 100, 1000]
            .iter()
            .enumerate()
            .map(|(i, ms)| (format!("b{i}-{ms}ms"), *ms, 0.0, 200))
            .collect(),
        degrade: None,
    };
    let degrading = Profile {
        name: "degrading",
        backends: (0..4)
            .map(|i| (format!("b{i}-10ms"), 10, 0.0, 200))
            .collect(),
        degrade: Some((Duration::from_secs(3), 200)),
    };
    let flaky = Profile {
        name: "flaky",
        backends: (0..4)
            .map(|i| {
                if i == 0 {
                    ("b0-flaky".to_string(), 0, 0.5, 503)
                } else {
                    (format!("b{i}-10ms"), 10, 0.0, 200)
                }
            })
            .collect(),
        degrade: None,
    };
    Ok(match which {
        "all" => vec![skewed, degrading, flaky],
        "skewed" => vec![skewed],
        "degrading" => vec![degrading],
        "flaky" => vec![flaky],
        other => bail!("unknown profile {other}: skewed, degrading, flaky or all"),
    })
}

/// Run the experiment from the command line.
pub async fn run(args: ExperimentArgs) -> anyhow::Result<()> {
    let switchyard = match &args.switchyard {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("switchyard"),
    };
    if !switchyard.exists() {
        bail!(
            "no switchyard binary at {} (build it, or pass --switchyard)",
            switchyard.display()
        );
    }
    let out = args.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "switchyard-experiment-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let started = Instant::now();
    let mut tables = report::header(&args);
    for profile in profiles(&args.profile)? {
        let result = run_profile(&profile, &args, &switchyard).await?;
        let t = table(&result);
        print!("{t}");
        tables.push_str(&t);
        let json_path = out.join(format!("{}.json", result.profile));
        std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)?;
        let svg_path = out.join(format!("{}-cdf.svg", result.profile));
        plot_cdf(&result, &svg_path)?;
        println!("  → {} and {}\n", json_path.display(), svg_path.display());
    }
    tables.push_str(&format!(
        "\nThe run took {:.0} s.\n",
        started.elapsed().as_secs_f64()
    ));
    let tables_path = out.join("tables.md");
    std::fs::write(&tables_path, tables)?;
    println!("tables: {}", tables_path.display());
    Ok(())
}

/// Run every contender on one profile.
pub async fn run_profile(
    profile: &Profile,
    args: &ExperimentArgs,
    switchyard: &Path,
) -> anyhow::Result<ProfileResult> {
    let mut backends = Vec::new();
    for (name, delay_ms, error_rate, error_status) in &profile.backends {
        let behaviour = Behaviour {
            delay_ms: *delay_ms,
            error_rate: *error_rate,
            error_status: *error_status,
            ..Behaviour::default()
        };
        backends.push(
            backend_server::spawn(
                "127.0.0.1:0".parse()?,
                BackendState::new(name.clone(), behaviour),
            )
            .await?,
        );
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let mut contenders: Vec<(String, Contender)> = args
        .strategies
        .iter()
        .map(|s| (format!("switchyard {s}"), Contender::Switchyard(s.clone())))
        .collect();
    let mut missing = Vec::new();
    if args.no_peers {
        missing.push("NGINX and HAProxy: left out (--no-peers)".to_string());
    } else {
        for (name, c) in peers::peers() {
            if c.available() {
                contenders.push((name.to_string(), c));
            } else {
                let note = format!("{name}: `{}` is not installed", c.binary().unwrap_or("?"));
                eprintln!("note: {note}; not compared");
                missing.push(note);
            }
        }
    }
    let mut rows = Vec::new();
    for (name, contender) in contenders {
        reset(&backends, profile);
        let dir = scratch_dir(&name)?;
        let port = free_port()?;
        let mut proxy = contender.start(&dir, port, &addrs, switchyard)?;
        let started = wait_for_port(port, &mut proxy.0).await;
        if let Err(e) = started {
            drop(proxy);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.context(format!("starting {name}")));
        }
        let mut opts = RunOptions::new(&format!("http://127.0.0.1:{port}/"));
        opts.connections = args.connections;
        opts.timeout = Duration::from_secs(10);
        opts.stop = match profile.degrade {
            Some(_) => Stop::Duration(args.degrading_duration),
            None => Stop::Count(args.requests),
        };
        let degrade = profile.degrade.map(|(after, ms)| {
            let state = backends[0].state().clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = state.apply(&BehaviourPatch {
                    delay_ms: Some(ms),
                    ..Default::default()
                });
            })
        });
        let summary = run::run(&opts).await;
        if let Some(d) = degrade {
            d.abort();
        }
        drop(proxy);
        let _ = std::fs::remove_dir_all(&dir);
        let proxy = if contender.probes() {
            format!("{name} (active probes)")
        } else {
            name
        };
        rows.push(Row {
            proxy,
            summary: summary?,
        });
    }
    Ok(ProfileResult {
        profile: profile.name.to_string(),
        backends: profile.backends.iter().map(|b| b.0.clone()).collect(),
        rows,
        missing,
    })
}

fn reset(backends: &[RunningBackend], profile: &Profile) {
    for (b, (_, delay_ms, error_rate, _)) in backends.iter().zip(&profile.backends) {
        let _ = b.state().apply(&BehaviourPatch {
            delay_ms: Some(*delay_ms),
            error_rate: Some(*error_rate),
            ..Default::default()
        });
    }
}

fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "loadtest-{}-{}-{}",
        name.replace(' ', "-"),
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("exited early with {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            // Let health checks and the first discovery settle.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("not listening on {port} after 20 s")
}
