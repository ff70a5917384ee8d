//! One load run: resolve the target, start the workers, show progress, summarise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::client::{self, Target};
use crate::plan::{Pacing, Schedule, Stop};
use crate::record::Recorder;
use crate::report::Summary;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub url: String,
    pub stop: Stop,
    pub pacing: Pacing,
    pub connections: usize,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    pub insecure: bool,
    pub cacert: Option<PathBuf>,
    pub backend_header: String,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
}

impl RunOptions {
    /// Defaults for `url`: 200 requests over 10 connections, closed loop.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            stop: Stop::Count(200),
            pacing: Pacing::Closed,
            connections: 10,
            method: "GET".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(20),
            insecure: false,
            cacert: None,
            backend_header: "x-backend".into(),
            progress: false,
        }
    }
}

async fn target(opts: &RunOptions) -> anyhow::Result<Target> {
    let url = url::Url::parse(&opts.url).with_context(|| format!("bad URL {}", opts.url))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => bail!("unsupported scheme {other}: use http or https"),
    };
    let host = url.host_str().context("the URL has no host")?.to_string();
    let port = url.port_or_known_default().context("the URL has no port")?;
    let addr = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let mut pq = url.path().to_string();
    if let Some(q) = url.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let tls = if tls {
        let config = client::tls_config(opts.insecure, opts.cacert.as_deref())?;
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .context("TLS server name")?;
        Some((TlsConnector::from(config), name))
    } else {
        None
    };
    Ok(Target {
        addr,
        tls,
        request: client::serialize_request(
            &opts.method,
            &pq,
            &host_header,
            &opts.headers,
            &opts.body,
        ),
        head: opts.method.eq_ignore_ascii_case("HEAD"),
        backend_header: opts.backend_header.to_ascii_lowercase(),
    })
}

/// Run the load described by `opts` on the current runtime.
pub async fn run(opts: &RunOptions) -> anyhow::Result<Summary> {
    if opts.connections == 0 {
        bail!("need at least one connection");
    }
    let target = Arc::new(target(opts).await?);
    let started = Instant::now();
    let schedule = Arc::new(Schedule::new(opts.stop, opts.pacing, started));
    let done = Arc::new(AtomicU64::new(0));
    let progress = (opts.progress && std::io::stderr().is_terminal())
        .then(|| spawn_progress(opts.stop, done.clone(), started));
    let workers: Vec<_> = (0..opts.connections)
        .map(|_| {
            tokio::spawn(crate::worker::run(
                target.clone(),
                schedule.clone(),
                opts.timeout,
                done.clone(),
            ))
        })
        .collect();
    let mut total = Recorder::new();
    for w in workers {
        total.merge(w.await.context("a worker panicked")?);
    }
    let elapsed = started.elapsed();
    if let Some((task, bar)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let mode = match opts.pacing {
        Pacing::Closed => "closed loop".to_string(),
        Pacing::Open { rate } => format!("open loop at {rate} req/s"),
    };
    Ok(Summary::new(
        &opts.url,
        mode,
        opts.connections,
        elapsed,
        &total,
    ))
}

fn spawn_progress(
    stop: Stop,
    done: Arc<AtomicU64>,
    started: Instant,
) -> (tokio::task::JoinHandle<()>, indicatif::ProgressBar) {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = match stop {
        Stop::Count(n) => ProgressBar::new(n),
        Stop::Duration(d) => ProgressBar::new(d.as_millis() as u64),
    };
    let template = match stop {
        Stop::Count(_) => "{bar:40} {pos}/{len} requests  {per_sec}  eta {eta}",
        Stop::Duration(_) => "{bar:40} {msg}",
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let handle = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            let n = done.load(Relaxed);
            match stop {
                Stop::Count(_) => bar.set_position(n),
                Stop::Duration(_) => {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!("{n} requests"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (task, handle)
}
