//! `listeners:`: addresses, TLS material, HTTPS redirects.

use std::collections::HashSet;
use std::path::PathBuf;

use super::super::file::{FileConfig, ListenerFile};
use super::super::model::{Listener, ListenerKind};
use super::{parse_socket_addr, Checker};

pub(super) fn validate(c: &mut Checker, file: &FileConfig) -> Vec<Listener> {
    if file.listeners_given == 0 {
        c.error(
            "listeners",
            "at least one listener is required, e.g. `listeners: [{address: 127.0.0.1:8080}]`",
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in &file.listeners {
        let field = format!("listeners[{i}].address");
        let address = match parse_socket_addr(&l.address) {
            Ok(a) => a,
            Err(m) => {
                c.error(&field, m);
                continue;
            }
        };
        if !seen.insert(address) {
            c.error(&field, format!("duplicate listener {address}"));
            continue;
        }
        if let Some(kind) = listener_kind(c, *i, l) {
            out.push(Listener {
                address,
                address_text: l.address.trim().to_string(),
                kind,
            });
        }
    }
    out
}

fn listener_kind(c: &mut Checker, i: usize, l: &ListenerFile) -> Option<ListenerKind> {
    let at = |f: &str| format!("listeners[{i}].{f}");
    match (&l.tls, &l.redirect_https) {
        (Some(_), Some(_)) => {
            c.error(
                at("redirect_https"),
                "a listener either terminates TLS or redirects to HTTPS, not both",
            );
            None
        }
        (None, None) => Some(ListenerKind::Plain),
        (None, Some(r)) => {
            let port = r.port.unwrap_or(443);
            let status = r.status.unwrap_or(308);
            if port == 0 {
                c.error(at("redirect_https.port"), "must be a TCP port (1-65535)");
                return None;
            }
            if status != 301 && status != 308 {
                c.error(
                    at("redirect_https.status"),
                    format!("must be 301 or 308, got {status}"),
                );
                return None;
            }
            Some(ListenerKind::RedirectHttps { port, status })
        }
        (Some(t), None) => match (&t.cert, &t.key, t.self_signed) {
            (None, None, true) => Some(ListenerKind::SelfSignedTls),
            (Some(cert), Some(key), false) => {
                let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
                if let Err((which, m)) = crate::edge::tls::check_pem_files(&cert, &key) {
                    c.error(at(&format!("tls.{which}")), m);
                    return None;
                }
                Some(ListenerKind::Tls { cert, key })
            }
            _ => {
                c.error(
                    at("tls"),
                    "give `cert` and `key` (PEM files), or `self_signed: true` for development",
                );
                None
            }
        },
    }
}
