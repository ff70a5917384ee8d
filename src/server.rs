//! Assembles the Pingora server: proxy service, background upkeep, demo backends.

use std::sync::Arc;

use anyhow::Context;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use crate::admin::AdminApp;
use crate::config::{Config, ConfigError, ListenerKind};
use crate::demo::DemoBackends;
use crate::edge::redirect::RedirectApp;
use crate::edge::slow_client::GuardedApp;
use crate::edge::tls;
use crate::lifecycle::{Draining, PhaseWatcher};
use crate::metrics::Metrics;
use crate::proxy::Switchyard;
use crate::target_group::TargetGroup;
use crate::upkeep::Upkeep;

/// Parse Pingora's own keys of the file, with the same error reporting as ours.
pub fn pingora_conf(text: &str, source: &str) -> Result<ServerConf, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let conf: ServerConf = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let message = crate::config::clean_yaml_message(&inner.to_string(), &field);
        ConfigError {
            source: source.to_string(),
            field,
            line: inner.location().map(|l| l.line()),
            message,
        }
    })?;
    conf.validate().map_err(|e| ConfigError {
        source: source.to_string(),
        field: "(pingora server settings)".to_string(),
        line: None,
        message: e.to_string(),
    })
}

/// Build the server for `config`. Nothing listens until `run_forever`.
pub fn build(
    config: Config,
    pingora: ServerConf,
    mut opt: Opt,
    demo: bool,
) -> anyhow::Result<Server> {
    // The configuration was read already; Pingora must not read the file again.
    opt.conf = None;
    let mut server = Server::new_with_opt_and_conf(opt, pingora);
    server.bootstrap();

    let metrics = match &config.admin {
        Some(a) if a.metrics => Some(Metrics::new()),
        _ => None,
    };
    let groups: Vec<Arc<TargetGroup>> = config
        .target_groups
        .iter()
        .cloned()
        .map(|g| Arc::new(TargetGroup::new(g, metrics.clone())))
        .collect();
    discover_once(&groups)?;

    let draining = Draining::default();
    let watcher = PhaseWatcher::new(server.watch_execution_phase(), draining.clone());
    server.add_service(background_service("lifecycle", watcher));
    let switchyard = Switchyard::new(&config, groups.clone(), metrics.clone(), draining);
    let limiters = switchyard.rate_limiters();
    // Pingora's proxy app, behind a deadline for the first request head (slowloris).
    let mut proxy_app = HttpProxy::new(switchyard, server.configuration.clone());
    proxy_app.handle_init_modules();
    let guarded = GuardedApp::new(proxy_app, config.proxy.client_header_timeout);
    let mut proxy = Service::new("switchyard proxy".to_string(), guarded);
    for l in &config.listeners {
        match &l.kind {
            ListenerKind::Plain => {
                proxy.add_tcp(&l.address_text);
                log::info!("listening for HTTP on {}", l.address_text);
            }
            ListenerKind::Tls { cert, key } => {
                proxy.add_tls_with_settings(
                    &l.address_text,
                    None,
                    tls::listener_settings(cert, key)?,
                );
                log::info!(
                    "listening for HTTPS on {} ({})",
                    l.address_text,
                    cert.display()
                );
            }
            ListenerKind::SelfSignedTls => {
                let (cert, key) = tls::self_signed("switchyard-self-signed")?;
                proxy.add_tls_with_settings(
                    &l.address_text,
                    None,
                    tls::listener_settings(&cert, &key)?,
                );
                log::warn!("listening for HTTPS on {} with a self-signed certificate ({}): for development only", l.address_text, cert.display());
            }
            ListenerKind::RedirectHttps { port, status } => {
                let app = RedirectApp {
                    https_port: *port,
                    status: *status,
                };
                let service = small_service(
                    format!("switchyard redirect {}", l.address_text),
                    app,
                    &l.address_text,
                );
                log::info!(
                    "redirecting HTTP on {} to HTTPS port {port} with {status}",
                    l.address_text
                );
                server.add_service(service);
            }
        }
    }
    if let Some(admin) = &config.admin {
        let app = AdminApp::new(&config, groups.clone(), limiters, metrics.clone());
        let service = small_service("switchyard admin".to_string(), app, &admin.address_text);
        log::info!(
            "admin (metrics, status, dashboard) on http://{}/dashboard",
            admin.address_text
        );
        server.add_service(service);
    }
    if demo {
        server.add_service(background_service("demo backends", DemoBackends));
    }
    server.add_service(background_service("upkeep", Upkeep::new(groups)));
    server.add_service(proxy);
    Ok(server)
}

/// A one-thread HTTP service for `app` on `address` (admin endpoints, redirects: light work).
fn small_service<A>(name: String, app: A, address: &str) -> Service<HttpServer<A>>
where
    A: pingora_core::apps::http_app::ServeHttp + Send + Sync + 'static,
{
    let mut service = Service::new(name, HttpServer::new_app(app));
    service.add_tcp(address);
    service.threads = Some(1);
    service
}

/// Fill every group's membership before serving, so the first request has backends.
fn discover_once(groups: &[Arc<TargetGroup>]) -> anyhow::Result<()> {
    // A throwaway runtime: nothing may outlive it into a daemon fork.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async {
        for g in groups {
            g.refresh()
                .await
                .map_err(|e| anyhow::anyhow!("group {}: discovery failed: {e}", g.config.name))?;
        }
        Ok(())
    })
}
