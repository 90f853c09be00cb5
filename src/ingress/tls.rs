//! TLS for `knit ingress serve --tls-cert F --tls-key F`: rustls (ring) with the PEM
//! certificate chain and key, offering HTTP/2 and HTTP/1.1 by ALPN.

use crate::error::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

fn in_file(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InFile {
        at: path.display().to_string(),
        reason: reason.to_string(),
    }
}

pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| in_file(cert, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| in_file(cert, e))?;
    if certs.is_empty() {
        return Err(in_file(cert, "no PEM certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| in_file(key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| in_file(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| in_file(key, format!("the key does not fit the certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
