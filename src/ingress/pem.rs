//! PEM files for both TLS sides (the listener's and the backends'): certificate chains,
//! private keys and CA sets, with errors that name the file.

use crate::error::{Error, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

pub fn in_file(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InFile {
        at: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The certificates in `path`, in order; at least one.
pub fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| in_file(path, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| in_file(path, e))?;
    if certs.is_empty() {
        return Err(in_file(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The private key in `path`.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| in_file(path, e))
}

/// The CAs in `path`, at least one. `strict`: every certificate must be usable;
/// otherwise those rustls cannot use are skipped (a bundle may hold some).
pub fn roots(path: &Path, strict: bool) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in chain(path)? {
        match roots.add(c) {
            Err(e) if strict => return Err(in_file(path, e)),
            _ => {}
        }
    }
    if roots.is_empty() {
        return Err(in_file(path, "no certificate in the file can be a CA"));
    }
    Ok(roots)
}
