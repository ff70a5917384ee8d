//! Assembles and starts the Pingora server. Everything that can fail is checked before any
//! socket is touched — configuration, certificates, the first discovery of every group, free
//! listening addresses — so a bad start exits at once with one clear line, and a bad upgrade
//! leaves the running instance serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use crate::admin::AdminApp;
use crate::config::{Config, ListenerKind};
use crate::demo::DemoBackends;
use crate::edge::redirect::RedirectApp;
use crate::edge::slow_client::GuardedApp;
use crate::edge::tls::{self, CertStore};
use crate::metrics::Metrics;
use crate::proxy::h1::Http1Path;
use crate::proxy::Switchyard;
use crate::reload::{Fixed, HangupWatcher, Reloader, Source};
use crate::runtime::Runtime;
use crate::shutdown::{Leaving, PhaseWatcher};
use crate::upkeep::Upkeep;

/// Longest wait for the first discovery of every group at start.
pub const FIRST_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `run` needs besides the configuration.
pub struct Start {
    pub config: Config,
    pub pingora: ServerConf,
    pub opt: Opt,
    pub demo: bool,
    /// Where a reload reads the configuration again.
    pub source: Source,
}

/// Check everything, take the listening sockets (from the running instance on `-u`), and
/// serve until told to stop.
pub fn run(start: Start) -> anyhow::Result<()> {
    let Start {
        config,
        pingora,
        opt,
        demo,
        source,
    } = start;
    let upgrading = opt.upgrade;
    let metrics = Metrics::new(config.admin.as_ref().is_none_or(|a| a.metrics));
    let runtime = first_discovery(config.clone(), metrics)?;
    let certs = cert_stores(&config)?;
    if !upgrading {
        check_addresses_free(&config)?;
    }
    let pid_file = pingora.pid_file.clone();
    let daemon = pingora.daemon || opt.daemon;
    let fixed = Fixed {
        listeners: config.listeners.clone(),
        admin: config.admin.clone(),
        pingora: copy_of(&pingora)?,
        h2c: config.proxy.h2c,
        preserve_header_case: config.proxy.preserve_header_case,
        own_http1_path: config.proxy.own_http1_path,
    };
    let reloader = Arc::new(Reloader::new(
        runtime.clone(),
        source,
        fixed,
        certs.iter().flatten().cloned().collect(),
    ));
    let mut server = Server::new_with_opt_and_conf(opt, pingora);
    if upgrading {
        hand_over_from_running_instance(&pid_file)?;
    }
    // Takes the listening sockets of the old process when upgrading.
    server.bootstrap();
    let leaving = Leaving::default();
    let watcher = PhaseWatcher::new(server.watch_execution_phase(), leaving.clone());
    server.add_service(background_service("phases", watcher));
    add_proxy(&mut server, &config, runtime.clone(), leaving, &certs);
    server.add_service(background_service(
        "reload on SIGHUP",
        HangupWatcher(reloader.clone()),
    ));
    if let Some(admin) = &config.admin {
        let app = AdminApp::new(reloader, admin.api);
        server.add_service(small_service("switchyard admin", app, &admin.address_text));
        log::info!(
            "admin (metrics, status, dashboard) on http://{}/dashboard",
            admin.address_text
        );
    }
    if demo {
        server.add_service(background_service("demo backends", DemoBackends));
    }
    server.add_service(background_service("upkeep", Upkeep::new(runtime)));
    if !daemon {
        // Pingora writes it in daemon mode; a later `-u` finds this process through it.
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            log::warn!("cannot write pid file {pid_file}: {e}");
        }
    }
    log::info!(
        "serving: {} listener(s), {} target group(s), {} route(s)",
        config.listeners.len(),
        config.target_groups.len(),
        config.routes.len()
    );
    server.run_forever()
}

/// Build the runtime and discover every group once, on a throwaway runtime: nothing may
/// outlive it into a daemon fork.
fn first_discovery(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Runtime>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async {
        tokio::time::timeout(FIRST_DISCOVERY_TIMEOUT, Runtime::start(config, metrics))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the first discovery of the target groups took longer than {}s",
                    FIRST_DISCOVERY_TIMEOUT.as_secs()
                )
            })?
    })
}

/// The certificate of each TLS listener, by index: read now (a reload re-reads them);
/// self-signed ones are made (or reused) now.
fn cert_stores(config: &Config) -> anyhow::Result<Vec<Option<Arc<CertStore>>>> {
    config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| match &l.kind {
            ListenerKind::Tls { cert, key } => CertStore::load(cert, key)
                .map(Some)
                .with_context(|| format!("listeners[{i}].tls")),
            ListenerKind::SelfSignedTls => {
                let (cert, key) = tls::self_signed()?;
                log::warn!(
                    "listener {} uses a self-signed certificate ({}): for development only",
                    l.address_text,
                    cert.display()
                );
                CertStore::load(&cert, &key).map(Some)
            }
            _ => Ok(None),
        })
        .collect()
}

/// A copy of Pingora's settings (its type is not `Clone`), to compare on reload.
fn copy_of(conf: &ServerConf) -> anyhow::Result<ServerConf> {
    let text = serde_yaml::to_string(conf).context("copying Pingora's settings")?;
    serde_yaml::from_str(&text).context("copying Pingora's settings")
}

/// Fail with the address and field if another process listens on one of ours.
fn check_addresses_free(config: &Config) -> anyhow::Result<()> {
    let listeners = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listeners[{i}].address"), l.address));
    let admin = config
        .admin
        .iter()
        .map(|a| ("admin.address".to_string(), a.address));
    for (field, addr) in listeners.chain(admin) {
        bindable(addr).with_context(|| format!("{field}: cannot listen on {addr}"))?;
    }
    Ok(())
}

fn bindable(addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "the address is already in use (another process listens there; to replace a running Switchyard, use -u)"
        )),
        Err(e) => Err(e.into()),
    }
}

/// Ask the instance named by `pid_file` to hand over its sockets (SIGQUIT); it retries
/// connecting to the upgrade socket for a few seconds, which `bootstrap` opens right after.
fn hand_over_from_running_instance(pid_file: &str) -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let running = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32 && is_switchyard(*pid));
    match running {
        Some(pid) => {
            kill(Pid::from_raw(pid), Signal::SIGQUIT)
                .with_context(|| format!("signalling the running instance (pid {pid})"))?;
            log::info!("upgrade: asked the running instance (pid {pid}) to hand over its sockets");
        }
        None => log::warn!(
            "upgrade: no running Switchyard found through {pid_file}; waiting a few seconds for one to be sent SIGQUIT"
        ),
    }
    Ok(())
}

/// Whether process `pid` is a Switchyard (so a stale pid file never signals a stranger).
fn is_switchyard(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == "switchyard")
}

fn add_proxy(
    server: &mut Server,
    config: &Config,
    runtime: Arc<Runtime>,
    leaving: Leaving,
    certs: &[Option<Arc<CertStore>>],
) {
    let discard_header_case = !config.proxy.preserve_header_case;
    let switchyard = Switchyard::new(runtime.clone(), leaving.clone(), discard_header_case);
    let own_path = config.proxy.own_http1_path.then(|| {
        let proxy = Switchyard::new(runtime.clone(), leaving, discard_header_case);
        Arc::new(Http1Path::new(proxy, &server.configuration))
    });
    // Pingora's proxy app, behind a deadline for request heads (slowloris).
    let mut proxy_app = HttpProxy::new(switchyard, server.configuration.clone());
    proxy_app.handle_init_modules();
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2c = config.proxy.h2c;
    options.h1_discard_header_case = discard_header_case;
    proxy_app.server_options = Some(options);
    let guarded = GuardedApp::new(proxy_app, runtime, own_path, config.proxy.h2c);
    let mut proxy = Service::new("switchyard proxy".to_string(), guarded);
    for (i, l) in config.listeners.iter().enumerate() {
        match &l.kind {
            ListenerKind::Plain => {
                proxy.add_listener(proxy_endpoint(&l.address_text));
                log::info!("listening for HTTP on {}", l.address_text);
            }
            ListenerKind::Tls { .. } | ListenerKind::SelfSignedTls => {
                if let Some(store) = &certs[i] {
                    let settings = tls::listener_settings(store.clone());
                    proxy.add_listener(proxy_endpoint(&l.address_text).tls(settings));
                    log::info!("listening for HTTPS on {}", l.address_text);
                }
            }
            ListenerKind::RedirectHttps { port, status } => {
                let app = RedirectApp {
                    https_port: *port,
                    status: *status,
                };
                let name = format!("switchyard redirect {}", l.address_text);
                server.add_service(small_service(&name, app, &l.address_text));
                log::info!(
                    "redirecting HTTP on {} to HTTPS port {port} with {status}",
                    l.address_text
                );
            }
        }
    }
    server.add_service(proxy);
}

/// A proxy listening endpoint on `address`, without Pingora's L4 read buffer.
///
/// By default Pingora reads every accepted connection through a 64 KB buffer. Pingora's HTTP/1
/// sessions and rustls read into buffers of their own, so that buffer only adds a copy per read
/// and a zeroed 64 KB allocation per connection. Without it, a new connection for every request
/// costs about 5 % less CPU, and a CPU-second makes about a tenth more new TLS connections
/// (bench/README.md); keep-alive traffic is unchanged.
fn proxy_endpoint(address: &str) -> ListenerConfig {
    ListenerConfig::tcp(address).l4_buffer(L4BufferSettings::default().read(0))
}

/// A one-thread HTTP service for `app` on `address` (admin endpoints, redirects: light work).
fn small_service<A>(name: &str, app: A, address: &str) -> Service<HttpServer<A>>
where
    A: pingora_core::apps::http_app::ServeHttp + Send + Sync + 'static,
{
    let mut service = Service::new(name.to_string(), HttpServer::new_app(app));
    service.add_tcp(address);
    service.threads = Some(1);
    service
}
