//! `knit ingress serve --tls-cert --tls-key`: HTTPS with a certificate made by the test
//! (rcgen), HTTP/1.1 and HTTP/2 chosen by ALPN, X-Forwarded-Proto https; a key that does
//! not fit the certificate is refused at start.

use super::common::*;
use super::lab;
use super::support::*;
use http_body_util::BodyExt;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

/// One GET over TLS from the node namespace, offering `alpn`: (negotiated ALPN, status,
/// version, body).
fn tls_get(
    w: &World,
    root: CertificateDer<'static>,
    alpn: &'static [u8],
) -> Result<(Vec<u8>, u16, http::Version, String), String> {
    in_ns(&w.node, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(root).map_err(|e| e.to_string())?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![alpn.to_vec()];
            let tcp = tokio::net::TcpStream::connect(LISTEN)
                .await
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from("shop.example").unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let negotiated = tls.get_ref().1.alpn_protocol().unwrap_or(b"").to_vec();
            let io = hyper_util::rt::TokioIo::new(tls);
            let req = |uri: &str| {
                http::Request::get(uri)
                    .header("host", "shop.example")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap()
            };
            let resp = if negotiated == b"h2" {
                let (mut s, conn) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                s.send_request(req("https://shop.example/secure"))
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                let (mut s, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                s.send_request(req("/secure"))
                    .await
                    .map_err(|e| e.to_string())?
            };
            let (status, version) = (resp.status().as_u16(), resp.version());
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Ok((
                negotiated,
                status,
                version,
                String::from_utf8_lossy(&body).into_owned(),
            ))
        })
    })
}

/// The certificate the ingress shows in a handshake (trusting `roots`).
fn peer_cert(w: &World, roots: Vec<CertificateDer<'static>>) -> Result<Vec<u8>, String> {
    in_ns(&w.node, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                store.add(r).map_err(|e| e.to_string())?;
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(store)
                .with_no_client_auth();
            let tcp = tokio::net::TcpStream::connect(LISTEN)
                .await
                .map_err(|e| e.to_string())?;
            let name = ServerName::try_from("shop.example").unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let certs = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
            Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
        })
    })
}

/// Writes a file aside and renames it over, as deploy tools do.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn https_with_http1_and_http2_by_alpn() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let ck = rcgen::generate_simple_self_signed(vec!["shop.example".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("{}-tls", w.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let root = ck.cert.der().clone();

    let _g = ingress_with(
        w,
        &format!("all: * -> \"http://{ip}:8080\";"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let (alpn, status, version, body) = tls_get(w, root.clone(), b"http/1.1").unwrap();
    assert_eq!(alpn, b"http/1.1");
    assert_eq!((status, version), (200, http::Version::HTTP_11));
    assert!(body.starts_with("b0\nGET /secure HTTP/1.1"), "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    let (alpn, status, version, body) = tls_get(w, root.clone(), b"h2").unwrap();
    assert_eq!(alpn, b"h2");
    assert_eq!((status, version), (200, http::Version::HTTP_2));
    assert!(body.contains("x-forwarded-proto: https"), "{body}");

    // Cleartext to the TLS port is not served; TLS clients still are.
    let plain = in_ns(&w.node, || request(LISTEN, "GET", "/", &[]));
    assert!(plain.is_err(), "{plain:?}");
    assert_eq!(tls_get(w, root.clone(), b"http/1.1").unwrap().1, 200);

    // A new certificate and key in the files serve new handshakes without a restart; a
    // pair that does not fit is refused and the current one stays.
    let ck2 = rcgen::generate_simple_self_signed(vec!["shop.example".to_string()]).unwrap();
    let roots = vec![root.clone(), ck2.cert.der().clone()];
    assert_eq!(peer_cert(w, roots.clone()).unwrap(), root.to_vec());
    replace(&key, &ck2.signing_key.serialize_pem());
    replace(&cert, &ck2.cert.pem());
    eventually_within(
        "the new certificate",
        std::time::Duration::from_secs(5),
        || peer_cert(w, roots.clone()).is_ok_and(|c| c == ck2.cert.der().to_vec()),
    );
    replace(&cert, &ck.cert.pem());
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(peer_cert(w, roots).unwrap(), ck2.cert.der().to_vec());
    replace(&cert, &ck2.cert.pem());

    // A key that is not the certificate's: refused at start.
    let other = rcgen::KeyPair::generate().unwrap();
    let wrong = dir.join("wrong.pem");
    std::fs::write(&wrong, other.serialize_pem()).unwrap();
    let routes = routes_file(w, "a: * -> <shunt>;");
    let o = w
        .cmd(&["ingress", "serve", "--listen", "127.0.0.1:8001", "--routes"])
        .arg(&routes)
        .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not fit the certificate"),
        "{o:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTPS server on a thread in `ns` offering `alpn`: answers "tlsb", the request's
/// version; with `client_ca`, only to clients showing a certificate that CA signed. Runs
/// until the test process ends.
pub fn tls_backend(
    ns: &str,
    addr: &str,
    ck: &rcgen::CertifiedKey<rcgen::KeyPair>,
    alpn: &[&[u8]],
    client_ca: Option<CertificateDer<'static>>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let mut cfg = b
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio_server_in_ns(ns, addr, move |s| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(s) = acceptor.accept(s).await else {
                return;
            };
            let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                let body = format!("tlsb\n{:?}\n", req.version());
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(body),
                )))
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
        }
    });
}

#[test]
fn https_backends_are_verified_against_the_given_ca() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    // The backend's certificate names its address; it is its own CA.
    let ck = rcgen::generate_simple_self_signed(vec![ip.clone()]).unwrap();
    tls_backend(l.ns("b0"), "0.0.0.0:8443", &ck, &[b"h2", b"http/1.1"], None);
    tls_backend(l.ns("b0"), "0.0.0.0:8444", &ck, &[b"http/1.1"], None);
    let ca = std::env::temp_dir().join(format!("{}-ca.pem", w.prefix));
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let routes = format!(
        "h2: Path(\"/h2\") -> \"https://{ip}:8443\";\nh1: Path(\"/h1\") -> \"https://{ip}:8444\";"
    );
    let g = ingress_with(w, &routes, &["--backend-ca", ca.to_str().unwrap()]);
    // ALPN decides: HTTP/2 where the backend offers it, else HTTP/1.1.
    let r = get(w, "/h2", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tlsb\nHTTP/2.0\n"),
        "{r:?}"
    );
    let r = get(w, "/h1", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tlsb\nHTTP/1.1\n"),
        "{r:?}"
    );
    drop(g);
    // Without the CA the backend's certificate is not trusted: 502.
    let _g = ingress(w, &routes);
    assert_eq!(get(w, "/h2", &[]).status, 502);
    let _ = std::fs::remove_file(&ca);
}
