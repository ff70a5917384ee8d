//! TLS termination: certificate checks before start, Pingora's rustls listener settings
//! (TLS 1.2 and 1.3 only, HTTP/2 by ALPN) with certificates a reload can replace, and
//! self-signed certificates for development.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// Check that `cert` and `key` are readable PEM files holding at least one certificate and a
/// private key. Pingora would panic at start on a bad file; we refuse the configuration.
pub fn check_pem_files(cert: &Path, key: &Path) -> Result<(), (&'static str, String)> {
    let cert_bytes = std::fs::read(cert)
        .map_err(|e| ("cert", format!("cannot read {}: {e}", cert.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            (
                "cert",
                format!("{} is not a PEM certificate file: {e}", cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            "cert",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let key_bytes =
        std::fs::read(key).map_err(|e| ("key", format!("cannot read {}: {e}", key.display())))?;
    match rustls_pemfile::private_key(&mut key_bytes.as_slice()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(("key", format!("{} holds no PEM private key", key.display()))),
        Err(e) => Err((
            "key",
            format!("{} is not a PEM key file: {e}", key.display()),
        )),
    }
}

/// Pingora TLS settings for a listener: TLS 1.2/1.3 with rustls' default (modern, AEAD-only)
/// cipher suites, HTTP/2 offered by ALPN next to HTTP/1.1, and the certificate served from
/// `store` (so a reload can swap it without a restart).
pub fn listener_settings(store: Arc<CertStore>) -> TlsSettings {
    // With a resolver, Pingora reads no files: the paths stay empty.
    let mut settings =
        TlsSettings::intermediate("", "").expect("TLS settings without files cannot fail");
    settings.set_cert_resolver(store);
    settings.enable_h2();
    settings
}

/// The certificate of a TLS listener, read from its PEM files and replaceable at run time:
/// a reload re-reads the files (a renewed certificate is served to new connections at once).
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
}

impl CertStore {
    /// Read `cert` and `key` (checked PEM files).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertStore>> {
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(certified_key(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }))
    }

    /// The files this store reads.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// Read the files again; on any error the current certificate stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = certified_key(&self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    check_pem_files(cert, key).map_err(|(_, m)| anyhow::anyhow!(m))?;
    let (certs, key_der) =
        pingora_rustls::load_certs_and_key_files(path_str(cert)?, path_str(key)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .context("no certificate or no private key")?;
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().context("no TLS crypto provider installed")?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| anyhow::anyhow!("{}: unusable private key: {e}", key.display()))?;
    Ok(CertifiedKey::new(certs, signing_key))
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, for development and the
/// demo only: one pair per user, kept in a private directory under the temporary directory
/// and reused by later runs (so nothing piles up), made anew when missing or unreadable.
pub fn self_signed() -> anyhow::Result<(PathBuf, PathBuf)> {
    let uid = nix::unistd::getuid();
    let dir = std::env::temp_dir().join(format!("switchyard-self-signed-{uid}"));
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if check_pem_files(&cert, &key).is_ok() {
        return Ok((cert, key));
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    create_private_dir(&dir)?;
    std::fs::write(&cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    Ok((cert, key))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_files_pass_the_check_and_are_reused() {
        let (cert, key) = self_signed().unwrap();
        assert_eq!(
            self_signed().unwrap(),
            (cert.clone(), key.clone()),
            "one cached pair"
        );
        assert!(check_pem_files(&cert, &key).is_ok());
        // Swapped files are refused with the field named.
        assert_eq!(check_pem_files(&key, &cert).unwrap_err().0, "cert");
        assert_eq!(check_pem_files(&cert, &cert).unwrap_err().0, "key");
        assert_eq!(
            check_pem_files(Path::new("/nonexistent.pem"), &key)
                .unwrap_err()
                .0,
            "cert"
        );
    }
}
