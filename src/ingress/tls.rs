//! TLS for `knit ingress serve --tls-cert F --tls-key F`: rustls (ring) with the PEM
//! certificate chain and key, offering HTTP/2 and HTTP/1.1 by ALPN; with
//! `--tls-client-ca F`, clients show a certificate one of those CAs signed (mutual TLS). The files are watched:
//! a changed pair that loads (and whose key fits the certificate) serves new handshakes,
//! one that does not is logged and the current pair stays.

use super::pem::{self, in_file};
use crate::error::Result;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    CertifiedKey::from_der(pem::chain(cert)?, pem::key(key)?, provider)
        .map_err(|e| in_file(key, format!("the key does not fit the certificate: {e}")))
}

/// The files' modification times, to notice a change.
fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

/// The certificate served now, swapped when the files change.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole certificate (swaps are one assignment).
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl Certs {
    /// Re-reads the files every `every` while they change; runs forever.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = stamps(&self.cert, &self.key);
        loop {
            tokio::time::sleep(every).await;
            let now = stamps(&self.cert, &self.key);
            if now == seen {
                continue;
            }
            // Both files may be mid-rewrite: wait until they stop changing.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stamps(&self.cert, &self.key) != now {
                continue;
            }
            seen = now;
            match load(&self.cert, &self.key, &self.provider) {
                Ok(ck) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate refused; keeping the current one");
                }
            }
        }
    }
}

/// The verifier of client certificates: signed by one of the CAs in `ca` (PEM);
/// `optional`: a client may also show none.
fn client_verifier(
    ca: &Path,
    optional: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let roots = pem::roots(ca, true)?;
    let b = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let b = if optional {
        b.allow_unauthenticated()
    } else {
        b
    };
    b.build().map_err(|e| in_file(ca, e))
}

/// The TLS server side; `clients`: the CA file client certificates are verified against,
/// and whether a client may show none.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    clients: Option<(&Path, bool)>,
) -> Result<(TlsAcceptor, Arc<Certs>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = load(cert, key, &provider)?;
    let verifier = match clients {
        Some((ca, optional)) => Some(client_verifier(ca, optional, &provider)?),
        None => None,
    };
    let certs = Arc::new(Certs {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        provider: provider.clone(),
        current: RwLock::new(Arc::new(ck)),
    });
    let b = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| in_file(cert, e))?;
    let b = match verifier {
        Some(v) => b.with_client_cert_verifier(v),
        None => b.with_no_client_auth(),
    };
    let mut cfg = b.with_cert_resolver(certs.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(cfg)), certs))
}
