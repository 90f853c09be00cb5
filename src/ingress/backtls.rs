//! HTTPS to backends (`https://HOST:PORT`): the TLS client side (rustls with ring) the
//! pools connect with, offering HTTP/2 and HTTP/1.1 by ALPN. Backends are verified
//! against `--backend-ca` (PEM) or, without it, the system's bundle; with
//! `--backend-cert`/`--backend-key` the ingress shows its own certificate to backends that
//! ask for one (mutual TLS).

use super::pem;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Where the system's CA bundle is on Debian and friends.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client side for backends, trusting `ca` (PEM) or the system's bundle, and
/// showing `identity` (certificate chain and key, PEM) to backends that ask for one.
pub fn connector(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<TlsConnector> {
    let roots = match ca {
        Some(file) => pem::roots(file, false)?,
        None => pem::roots(Path::new(SYSTEM_BUNDLE), false).unwrap_or_else(|e| {
            tracing::warn!(bundle = SYSTEM_BUNDLE, error = %e, "no CA bundle: https:// backends will not verify");
            rustls::RootCertStore::empty()
        }),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Conflict(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => cfg
            .with_client_auth_cert(pem::chain(cert)?, pem::key(key)?)
            .map_err(|e| pem::in_file(key, format!("the key does not fit the certificate: {e}")))?,
        None => cfg.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}
