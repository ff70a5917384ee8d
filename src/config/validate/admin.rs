//! `admin:`: where metrics, status and the dashboard are served.

use super::super::file::AdminFile;
use super::super::model::{AdminSettings, Listener};
use super::{parse_socket_addr, Checker};

/// Default admin address: loopback only, like HAProxy's stats socket.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9091";

pub(super) fn validate(
    c: &mut Checker,
    a: &AdminFile,
    listeners: &[Listener],
) -> Option<AdminSettings> {
    if a.enabled == Some(false) {
        return None;
    }
    let text = a
        .address
        .clone()
        .unwrap_or_else(|| DEFAULT_ADMIN_ADDRESS.to_string());
    let address = match parse_socket_addr(&text) {
        Ok(a) => a,
        Err(m) => {
            c.error("admin.address", m);
            return None;
        }
    };
    if listeners.iter().any(|l| {
        l.address.port() == address.port()
            && (l.address.ip() == address.ip()
                || l.address.ip().is_unspecified()
                || address.ip().is_unspecified())
    }) {
        c.error(
            "admin.address",
            format!("{address} overlaps a proxy listener; metrics never share the proxy port"),
        );
    }
    let api = a.api.unwrap_or(true);
    let token_file = a.token_file.as_ref().map(std::path::PathBuf::from);
    if let Some(path) = &token_file {
        if let Err(m) = crate::admin::auth::read_token(path) {
            c.error("admin.token_file", m);
        }
    } else if api && !address.ip().is_loopback() {
        c.error(
            "admin.address",
            format!(
                "{address} is reachable from other hosts: set `admin.token_file` to protect the runtime API, \
                 set `admin.api: false`, or listen on loopback"
            ),
        );
    }
    Some(AdminSettings {
        address,
        address_text: text.trim().to_string(),
        metrics: a.metrics.unwrap_or(true),
        api,
        token_file,
    })
}
