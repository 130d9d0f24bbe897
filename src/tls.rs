//! TLS with rustls: the HTTPS listener (its certificate and key re-read when the files change,
//! without dropping a connection) and the client side for an `https` upstream (system roots or
//! a configured CA file, optionally a client certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::policy::reload::{file_stamp, Stamp};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{}`: {message}", .path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable PEM private key: {e}")))
}

/// Reads a certificate chain and its key into a rustls `CertifiedKey`.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| file_err(key, format!("unsupported private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .map_err(|e| file_err(key, format!("does not match `{}`: {e}", cert.display())))?;
    Ok(ck)
}

/// The listener's certificate, swapped in place when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let ck = load_certified_key(cert_file, key_file)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(ck),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        }))
    }

    fn stamps(&self) -> (Option<Stamp>, Option<Stamp>) {
        (file_stamp(&self.cert_file), file_stamp(&self.key_file))
    }

    /// Polls the files every second until `stop`; a change that loads is swapped in, one that
    /// does not (a half-written pair, a mismatched key) keeps the current certificate.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut last = self.stamps();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            let now = self.stamps();
            if now == last {
                continue;
            }
            match load_certified_key(&self.cert_file, &self.key_file) {
                Ok(ck) => {
                    self.current.store(Arc::new(ck));
                    last = now;
                    tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the current one")
                }
            }
        }
    }
}

/// The listener's rustls config: HTTP/1.1 over TLS 1.2 or 1.3.
pub fn server_config(cert: Arc<ReloadingCert>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// What the upstream TLS client trusts and presents.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// Trust only this CA bundle; otherwise the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The rustls client config for an `https` upstream.
pub fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| file_err(ca, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::Config(
                    "no system CA certificates found; set `upstream_tls.ca_file`".into(),
                ));
            }
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    // ALPN (http/1.1) is set by the upstream pool (`crate::upstream::Pool::new`).
    let cfg = match &tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| file_err(key, e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(cfg)
}
