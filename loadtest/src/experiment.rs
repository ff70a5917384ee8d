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
//! Switchyard runs with passive ejection off, so the table compares the strategies alone
//! (active health checks stay on, as in production).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use backend_server::{BackendState, Behaviour, BehaviourPatch, RunningBackend};
use clap::Args;
use serde::Serialize;

use crate::plan::Stop;
use crate::report::Summary;
use crate::run::{self, RunOptions};

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
    /// Where to write JSON and SVG results.
    #[arg(long, default_value = "bench/results/experiment")]
    pub out: PathBuf,
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
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for profile in profiles(&args.profile)? {
        let result = run_profile(&profile, &args, &switchyard).await?;
        print!("{}", table(&result));
        let json_path = args.out.join(format!("{}.json", result.profile));
        std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)?;
        let svg_path = args.out.join(format!("{}-cdf.svg", result.profile));
        plot_cdf(&result, &svg_path)?;
        println!("  → {} and {}\n", json_path.display(), svg_path.display());
    }
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
    if !args.no_peers {
        for (name, c) in [
            ("nginx round robin", Contender::Nginx(None)),
            ("nginx least_conn", Contender::Nginx(Some("least_conn"))),
            ("haproxy roundrobin", Contender::Haproxy("roundrobin")),
            ("haproxy leastconn", Contender::Haproxy("leastconn")),
        ] {
            if c.available() {
                contenders.push((name.to_string(), c));
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
        rows.push(Row {
            proxy: name,
            summary: summary?,
        });
    }
    Ok(ProfileResult {
        profile: profile.name.to_string(),
        backends: profile.backends.iter().map(|b| b.0.clone()).collect(),
        rows,
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

enum Contender {
    Switchyard(String),
    Nginx(Option<&'static str>),
    Haproxy(&'static str),
}

/// A started proxy process, stopped on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Contender {
    fn available(&self) -> bool {
        let bin = match self {
            Contender::Switchyard(_) => return true,
            Contender::Nginx(_) => "nginx",
            Contender::Haproxy(_) => "haproxy",
        };
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            || Path::new("/usr/sbin").join(bin).is_file()
    }

    fn start(
        &self,
        dir: &Path,
        port: u16,
        backends: &[SocketAddr],
        switchyard: &Path,
    ) -> anyhow::Result<Running> {
        let quiet = || (Stdio::null(), Stdio::null());
        match self {
            Contender::Switchyard(strategy) => {
                let list: String = backends
                    .iter()
                    .map(|b| format!("      - address: {b}\n"))
                    .collect();
                let conf = format!(
                    "version: 1\nthreads: 2\npid_file: {d}/sy.pid\nupgrade_sock: {d}/sy.sock\ngrace_period_seconds: 0\n\
                     listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  enabled: false\nproxy:\n  access_log: false\n\
                     target_groups:\n  - name: g\n    strategy: {strategy}\n    passive_health:\n      enabled: false\n    health_check:\n      interval: 500ms\n      timeout: 400ms\n    backends:\n{list}\
                     routes:\n  - path_prefix: /\n    target_group: g\n",
                    d = dir.display()
                );
                let path = dir.join("switchyard.yaml");
                std::fs::write(&path, conf)?;
                let (o, e) = quiet();
                Ok(Running(
                    Command::new(switchyard)
                        .arg("-c")
                        .arg(&path)
                        .env("RUST_LOG", "error")
                        .stdout(o)
                        .stderr(e)
                        .spawn()?,
                ))
            }
            Contender::Nginx(method) => {
                let servers: String = backends
                    .iter()
                    .map(|b| format!("    server {b};\n"))
                    .collect();
                let conf = format!(
                    "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                     events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
                     upstream be {{\n    {m}\n{servers}    keepalive 128;\n  }}\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                     proxy_pass http://be;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
                    d = dir.display(),
                    m = method.map(|m| format!("{m};")).unwrap_or_default()
                );
                let path = dir.join("nginx.conf");
                std::fs::write(&path, conf)?;
                let (o, e) = quiet();
                Ok(Running(
                    Command::new("nginx")
                        .arg("-p")
                        .arg(dir)
                        .arg("-c")
                        .arg(&path)
                        .arg("-e")
                        .arg(dir.join("error.log"))
                        .stdout(o)
                        .stderr(e)
                        .spawn()?,
                ))
            }
            Contender::Haproxy(balance) => {
                let servers: String = backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("  server s{i} {b}\n"))
                    .collect();
                let conf = format!(
                    "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n\
                     frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\nbackend be\n  balance {balance}\n{servers}"
                );
                let path = dir.join("haproxy.cfg");
                std::fs::write(&path, conf)?;
                let (o, e) = quiet();
                Ok(Running(
                    Command::new("haproxy")
                        .arg("-db")
                        .arg("-f")
                        .arg(&path)
                        .stdout(o)
                        .stderr(e)
                        .spawn()?,
                ))
            }
        }
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

/// The result table of a profile.
pub fn table(result: &ProfileResult) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## profile: {} (backends: {})\n",
        result.profile,
        result.backends.join(", ")
    );
    let _ = writeln!(
        out,
        "| proxy | p50 ms | p99 ms | p99.9 ms | req/s | non-2xx | errors | share per backend |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for row in &result.rows {
        let s = &row.summary;
        let non2xx: u64 = s
            .status_codes
            .iter()
            .filter(|(c, _)| !(200..300).contains(*c))
            .map(|(_, n)| n)
            .sum();
        let shares: Vec<String> = result
            .backends
            .iter()
            .map(|b| {
                let share = s
                    .backends
                    .iter()
                    .find(|x| &x.backend == b)
                    .map(|x| x.share)
                    .unwrap_or(0.0);
                format!("{b} {:.0}%", share * 100.0)
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} | {} |",
            row.proxy,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            s.requests_per_second,
            non2xx,
            s.errors,
            shares.join(", ")
        );
    }
    out
}

/// Latency CDF per contender (log-scale latency) as an SVG.
pub fn plot_cdf(result: &ProfileResult, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let max_ms = result
        .rows
        .iter()
        .flat_map(|r| r.summary.cdf.iter().map(|p| p[1]))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("latency CDF — profile {}", result.profile),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.1f64..max_ms * 1.2).log_scale(), 0f64..1.0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of requests")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, row) in result.rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = row
            .summary
            .cdf
            .iter()
            .map(|p| (p[1].max(0.1), p[0]))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(row.proxy.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
