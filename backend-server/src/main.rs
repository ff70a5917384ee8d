//! `backend-server`: run one demo backend from the command line.
use std::net::SocketAddr;

use anyhow::Context;
use backend_server::{BackendState, Behaviour};
use clap::Parser;

/// A demo HTTP backend whose latency, error rate and health can be changed at run time
/// through `PUT /_control` (JSON: delay_ms, jitter_ms, error_rate, error_status, healthy).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    listen: SocketAddr,
    /// Name reported in the `x-backend` header and in every body.
    #[arg(long, default_value = "b1")]
    name: String,
    /// Fixed delay added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Random extra delay of up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Fraction (0.0-1.0) of requests answered with `--error-status`.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Status used for injected errors.
    #[arg(long, default_value_t = 500)]
    error_status: u16,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this PEM CA (mTLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<std::path::PathBuf>,
    /// Serve the gRPC demo and health services instead of the HTTP paths.
    #[arg(long)]
    grpc: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let behaviour = Behaviour {
        delay_ms: args.delay_ms,
        jitter_ms: args.jitter_ms,
        error_rate: args.error_rate,
        error_status: args.error_status,
        healthy: true,
    };
    behaviour.validate().map_err(anyhow::Error::msg)?;
    let state = BackendState::new(args.name.clone(), behaviour);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(backend_server::tls::server_config(
            cert,
            key,
            args.client_ca.as_deref(),
        )?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let options = backend_server::ServeOptions {
        tls,
        grpc: args.grpc,
    };
    let running = backend_server::spawn_with(args.listen, state, options)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    log::info!(
        "backend {} listening on {scheme}://{}{}",
        args.name,
        running.addr(),
        if args.grpc { " (gRPC)" } else { "" }
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    Ok(())
}
