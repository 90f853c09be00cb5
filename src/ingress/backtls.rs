//! HTTPS to backends (`https://HOST:PORT`): the TLS client side (rustls with ring) the
//! pools connect with, offering HTTP/2 and HTTP/1.1 by ALPN. Backends are verified
//! against `--backend-ca` (PEM) or, without it, the system's bundle; with
//! `--backend-cert`/`--backend-key` the ingress shows its own certificate to backends that
//! ask for one (mutual TLS).

use crate::error::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Where the system's CA bundle is on Debian and friends.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client side for backends, trusting `ca` (PEM) or the system's bundle, and
/// showing `identity` (certificate chain and key, PEM) to backends that ask for one.
pub fn connector(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let file = ca.unwrap_or(Path::new(SYSTEM_BUNDLE));
    match CertificateDer::pem_file_iter(file) {
        Ok(certs) => {
            for c in certs {
                let c = c.map_err(|e| Error::InFile {
                    at: file.display().to_string(),
                    reason: e.to_string(),
                })?;
                // A bundle may hold certificates rustls cannot use; skip those.
                let _ = roots.add(c);
            }
        }
        Err(e) if ca.is_some() => {
            return Err(Error::InFile {
                at: file.display().to_string(),
                reason: e.to_string(),
            });
        }
        Err(e) => {
            tracing::warn!(bundle = SYSTEM_BUNDLE, error = %e, "no CA bundle: https:// backends will not verify");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Conflict(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => {
            let in_file = |p: &Path, e: &dyn std::fmt::Display| Error::InFile {
                at: p.display().to_string(),
                reason: e.to_string(),
            };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| in_file(cert, &e))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| in_file(cert, &e))?;
            if chain.is_empty() {
                return Err(in_file(cert, &"no PEM certificate in the file"));
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| in_file(key, &e))?;
            cfg.with_client_auth_cert(chain, key_der)
                .map_err(|e| in_file(key, &format!("the key does not fit the certificate: {e}")))?
        }
        None => cfg.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}
