//! HTTPS to backends (`https://HOST:PORT`): a connector for hyper's pooled client that
//! connects TCP, then TLS (rustls with ring) with the server name of the URL's host,
//! offering HTTP/2 and HTTP/1.1 by ALPN. Backends are verified against `--backend-ca`
//! (PEM) or, without it, the system's bundle.

use super::body::BoxError;
use crate::error::{Error, Result};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where the system's CA bundle is on Debian and friends.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The TLS client side for backends, trusting `ca` (PEM) or the system's bundle.
pub fn connector(ca: Option<&Path>) -> Result<TlsConnector> {
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
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Conflict(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// A TLS connection to a backend.
pub struct Conn(TokioIo<TlsStream<TcpStream>>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let (tcp, session) = self.0.inner().get_ref();
        let c = tcp.connected();
        if session.alpn_protocol() == Some(b"h2") {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// TCP by hyper's connector, then TLS.
#[derive(Clone)]
pub struct HttpsConnector {
    pub http: HttpConnector,
    pub tls: TlsConnector,
}

impl tower_service::Service<Uri> for HttpsConnector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut http, tls) = (self.http.clone(), self.tls.clone());
        Box::pin(async move {
            let host = uri.host().ok_or("a backend URL without a host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())?;
            let tcp = http.call(uri).await?.into_inner();
            let s = tls.connect(name, tcp).await?;
            Ok(Conn(TokioIo::new(s)))
        })
    }
}
