//! Hot reload of the configuration file, on `SIGHUP` or `POST /reload`: read it, check it
//! fully (the same checks as `-t`), build a new snapshot (first discovery of changed groups
//! included), and swap it in for new requests. Requests in flight finish on what they began
//! with; what was learned stays (see [`crate::runtime`]). Anything invalid changes nothing.
//!
//! What a reload cannot change — listener addresses and kinds, the admin listener, Pingora's
//! server settings — is reported as not applied, pointing to the graceful upgrade (`-u`).
//! Certificates of TLS listeners are re-read from their files. Run-time changes made through
//! the API (drains, weights, added or removed backends) are overridden by the file, and the
//! report says which.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::server::configuration::ServerConf;
use serde::Serialize;

use crate::config::{self, AdminSettings, ConfigErrors, Listener, Loaded};
use crate::edge::tls::CertStore;
use crate::runtime::Runtime;
use crate::target_group::overrides::Drift;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Embedded(&'static str),
}

impl Source {
    fn load(&self) -> Result<Loaded, ConfigErrors> {
        match self {
            Source::File(path) => config::load(path),
            Source::Embedded(text) => config::parse_full(text, "<embedded demo configuration>"),
        }
    }
}

/// What the process started with and a reload cannot change.
pub struct Fixed {
    pub listeners: Vec<Listener>,
    pub admin: Option<AdminSettings>,
    pub pingora: ServerConf,
    /// `proxy.h2c`: set on the listening sockets' HTTP options at start.
    pub h2c: bool,
    /// `proxy.header_case`: set on the listening sockets' HTTP options and on every backend
    /// connection at start.
    pub preserve_header_case: bool,
    /// `proxy.http1_path`: which loop the listening sockets' connections go to.
    pub own_http1_path: bool,
}

/// One run-time change a reload undid.
#[derive(Debug, Clone, Serialize)]
pub struct Overridden {
    pub target_group: String,
    pub backend: String,
    pub change: String,
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    /// Groups carried over unchanged, with everything they had.
    pub kept: Vec<String>,
    /// Groups rebuilt from changed settings (their backends' stats kept).
    pub rebuilt: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Run-time changes the file overrode.
    pub overridden: Vec<Overridden>,
    /// Changes in the file that need a graceful upgrade (`switchyard -u`).
    pub not_applied: Vec<String>,
    pub warnings: Vec<String>,
}

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is invalid; every error with its line.
    Invalid(ConfigErrors),
    /// The file is valid but could not be put to work (a first discovery failed, a
    /// certificate could not be read).
    Failed(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(e) => write!(f, "{e}"),
            ReloadError::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// Reloads the configuration; one reload (or run-time change) at a time.
pub struct Reloader {
    pub runtime: Arc<Runtime>,
    source: Source,
    fixed: Fixed,
    certs: Vec<Arc<CertStore>>,
    /// The runtime API's token, re-read on every reload.
    token: ArcSwap<Option<String>>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        runtime: Arc<Runtime>,
        source: Source,
        fixed: Fixed,
        certs: Vec<Arc<CertStore>>,
    ) -> Self {
        let token = read_token(fixed.admin.as_ref());
        Self {
            runtime,
            source,
            fixed,
            certs,
            token: ArcSwap::from_pointee(token),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The runtime API's token, if changes are allowed at all.
    pub fn token(&self) -> Arc<Option<String>> {
        self.token.load_full()
    }

    /// Hold this while changing the running configuration in any other way, so that a
    /// reload never interleaves with a run-time change.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Reload the file; `who` names the requester in the log.
    pub async fn reload(&self, who: &str) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let result = self.reload_locked().await;
        self.runtime.metrics.config_load(result.is_ok());
        match &result {
            Ok(r) => log::info!(
                "configuration reloaded by {who} (generation {}): {} group(s) kept, {} rebuilt, {} added, {} removed{}{}",
                r.generation,
                r.kept.len(),
                r.rebuilt.len(),
                r.added.len(),
                r.removed.len(),
                if r.overridden.is_empty() { String::new() } else { format!("; {} run-time change(s) overridden", r.overridden.len()) },
                if r.not_applied.is_empty() { String::new() } else { format!("; not applied (needs `switchyard -u`): {}", r.not_applied.join("; ")) },
            ),
            Err(e) => {
                for line in e.to_string().lines() {
                    log::error!("reload requested by {who} failed, nothing changed: {line}");
                }
            }
        }
        result
    }

    async fn reload_locked(&self) -> Result<ReloadReport, ReloadError> {
        let loaded = self.source.load().map_err(ReloadError::Invalid)?;
        let not_applied = self.not_applied(&loaded);
        let mut config = loaded.config;
        // What cannot change keeps running as it started.
        config.listeners = self.fixed.listeners.clone();
        config.admin = self.fixed.admin.clone();
        for store in &self.certs {
            store.reload().map_err(|e| {
                let (cert, _) = store.files();
                ReloadError::Failed(format!("re-reading {}: {e:#}", cert.display()))
            })?;
        }
        let old = self.runtime.snapshot();
        let next = self
            .runtime
            .build(config, Some(&old), old.generation + 1)
            .await
            .map_err(|e| ReloadError::Failed(format!("{e:#}")))?;
        let mut report = ReloadReport {
            generation: next.generation,
            kept: Vec::new(),
            rebuilt: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
            overridden: Vec::new(),
            not_applied,
            warnings: loaded.warnings.iter().map(|w| w.to_string()).collect(),
        };
        for g in &next.groups {
            let name = g.config.name.clone();
            match old.group(&name) {
                Some(o) if Arc::ptr_eq(o, g) => report.kept.push(name),
                Some(_) => report.rebuilt.push(name),
                None => report.added.push(name),
            }
        }
        for g in &old.groups {
            if next.group(&g.config.name).is_none() {
                report.removed.push(g.config.name.clone());
            }
        }
        // The file wins over run-time changes: undo them, and say which.
        for g in &old.groups {
            let drift: Vec<Drift> = match next.group(&g.config.name) {
                Some(n) if Arc::ptr_eq(n, g) => n.reset_to_configuration(),
                Some(n) => {
                    let mut d = g.drift();
                    d.retain(|x| !x.change.starts_with("drained"));
                    d.extend(n.clear_drains());
                    d
                }
                None => g.drift(),
            };
            report
                .overridden
                .extend(drift.into_iter().map(|d| Overridden {
                    target_group: g.config.name.clone(),
                    backend: d.backend,
                    change: d.change,
                }));
        }
        self.token
            .store(Arc::new(read_token(self.fixed.admin.as_ref())));
        self.runtime.forget_removed_groups(&next);
        self.runtime.publish(next);
        Ok(report)
    }

    /// The differences from what the process started with that a reload cannot apply.
    fn not_applied(&self, loaded: &Loaded) -> Vec<String> {
        let mut out = Vec::new();
        if loaded.config.listeners != self.fixed.listeners {
            out.push("listeners changed".to_string());
        }
        let admin_of = |a: &Option<AdminSettings>| {
            a.as_ref()
                .map(|a| (a.address, a.metrics, a.api, a.token_file.clone()))
        };
        if admin_of(&loaded.config.admin) != admin_of(&self.fixed.admin) {
            out.push("admin listener settings changed".to_string());
        }
        if loaded.pingora != self.fixed.pingora {
            out.push("Pingora server settings changed".to_string());
        }
        if loaded.config.proxy.h2c != self.fixed.h2c {
            out.push("proxy.h2c changed".to_string());
        }
        if loaded.config.proxy.preserve_header_case != self.fixed.preserve_header_case {
            out.push("proxy.header_case changed".to_string());
        }
        if loaded.config.proxy.own_http1_path != self.fixed.own_http1_path {
            out.push("proxy.http1_path changed".to_string());
        }
        out
    }
}

fn read_token(admin: Option<&AdminSettings>) -> Option<String> {
    let path = admin?.token_file.as_ref()?;
    match crate::admin::auth::read_token(path) {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!("runtime API locked: {e}");
            None
        }
    }
}

/// Reloads on `SIGHUP` (`systemctl reload`).
pub struct HangupWatcher(pub Arc<Reloader>);

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for HangupWatcher {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP (reload): {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    let _ = self.0.reload("SIGHUP").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
