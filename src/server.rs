//! Assembles the Pingora server: proxy service, background upkeep, demo backends.

use std::sync::Arc;

use anyhow::Context;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_proxy::http_proxy_service_with_name;

use crate::config::{Config, ConfigError};
use crate::demo::DemoBackends;
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

    let groups: Vec<Arc<TargetGroup>> = config
        .target_groups
        .iter()
        .cloned()
        .map(|g| Arc::new(TargetGroup::new(g)))
        .collect();
    discover_once(&groups)?;

    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        Switchyard::new(&config, groups.clone()),
        "switchyard proxy",
    );
    for l in &config.listeners {
        proxy.add_tcp(&l.address_text);
        log::info!("listening for HTTP on {}", l.address_text);
    }
    if demo {
        server.add_service(background_service("demo backends", DemoBackends));
    }
    server.add_service(background_service("upkeep", Upkeep::new(groups)));
    server.add_service(proxy);
    Ok(server)
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
