//! TLS for the demo backend (its HTTPS mode): a certificate and key from PEM files, HTTP/2 and
//! HTTP/1.1 by ALPN, and optionally a CA whose client certificates are required (mTLS).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

/// A rustls server configuration for `cert`/`key`, requiring client certificates signed by
/// `client_ca` when given.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = read_certs(cert)?;
    let key_bytes = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_bytes.as_slice())
        .with_context(|| format!("{} is not a PEM key", key.display()))?
        .with_context(|| format!("{} holds no private key", key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).context("adding a client CA")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}
