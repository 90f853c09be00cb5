//! Mutual TLS: `--tls-client-ca` makes clients show a certificate that CA signed (others
//! are refused in the handshake), `--tls-client-optional` also serves clients without
//! one, and `tlsPassClientCertificates()` hands the verified certificate to the backend
//! in X-Forwarded-Tls-Client-Cert, which a client can never set itself.

use super::common::*;
use super::lab;
use super::support::*;
use base64::Engine;
use http_body_util::BodyExt;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;

/// A client's certificate and key.
type Identity = (CertificateDer<'static>, PrivateKeyDer<'static>);

/// One HTTP/1.1 GET over TLS from the node namespace, trusting `root`, showing `identity`
/// if given and sending `headers`: (status, body), or why it failed.
fn get_tls(
    w: &World,
    root: &CertificateDer<'static>,
    identity: Option<&Identity>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let root = root.clone();
    let identity = identity.map(|(c, k)| (c.clone(), k.clone_key()));
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    block_in_ns(&w.node, move || async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match identity {
            Some((c, k)) => b.with_client_auth_cert(vec![c], k).unwrap(),
            None => b.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(LISTEN)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("shop.example").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut s, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path.as_str()).header("host", "shop.example");
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = s
            .send_request(
                req.body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    })
}

/// A CA and a client certificate it signed.
struct Signed {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    identity: Identity,
}

/// A CA and a client certificate it signed (CN `cn`).
fn ca_and_client(cn: &str) -> Signed {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{cn} CA"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    Signed {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        identity: (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ),
    }
}

/// The header line the backend echoed for the client's certificate, if any (the test
/// backend echoes its head in lower case).
fn passed_cert(body: &str) -> Option<&str> {
    body.lines()
        .find_map(|l| l.strip_prefix("x-forwarded-tls-client-cert: "))
}

#[test]
fn client_certificates_are_verified_and_passed_to_the_backend() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    let server = rcgen::generate_simple_self_signed(vec!["shop.example".to_string()]).unwrap();
    let signed = ca_and_client("alice");
    let (ca_pem, alice) = (signed.ca_pem, signed.identity);
    let mallory = ca_and_client("mallory").identity;
    let dir = std::env::temp_dir().join(format!("{}-mtls", w.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert, server.cert.pem()).unwrap();
    std::fs::write(&key, server.signing_key.serialize_pem()).unwrap();
    std::fs::write(&ca, &ca_pem).unwrap();
    let root = server.cert.der().clone();
    let routes = format!(
        "pass: Path(\"/pass\") -> tlsPassClientCertificates() -> \"http://{ip}:8080\";\n\
         plain: Path(\"/plain\") -> \"http://{ip}:8080\";"
    );
    let tls_args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        ca.to_str().unwrap(),
    ];
    let spoof = [("x-forwarded-tls-client-cert", "Zm9yZ2Vk")];
    let alice_b64 = base64::engine::general_purpose::STANDARD
        .encode(&alice.0)
        .to_lowercase();

    let g = ingress_with(w, &routes, &tls_args);
    // Required: no certificate, or one another CA signed, gets no answer.
    let none = get_tls(w, &root, None, "/pass", &[]);
    assert!(
        none.is_err(),
        "served without a client certificate: {none:?}"
    );
    let rogue = get_tls(w, &root, Some(&mallory), "/pass", &[]);
    assert!(
        rogue.is_err(),
        "served a certificate of another CA: {rogue:?}"
    );
    // The CA's client is served; the backend gets its certificate, not the client's word.
    let (status, body) = get_tls(w, &root, Some(&alice), "/pass", &spoof).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(passed_cert(&body), Some(alice_b64.as_str()), "{body}");
    // A route without the filter passes no certificate, and never the client's header.
    let (status, body) = get_tls(w, &root, Some(&alice), "/plain", &spoof).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(passed_cert(&body), None, "{body}");
    drop(g);

    // Optional: a client without a certificate is served (and its header dropped); one
    // with a certificate of another CA is still refused.
    let mut optional = tls_args.to_vec();
    optional.push("--tls-client-optional");
    let _g = ingress_with(w, &routes, &optional);
    let (status, body) = get_tls(w, &root, None, "/pass", &spoof).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(passed_cert(&body), None, "{body}");
    let (_, body) = get_tls(w, &root, Some(&alice), "/pass", &[]).unwrap();
    assert_eq!(passed_cert(&body), Some(alice_b64.as_str()), "{body}");
    assert!(get_tls(w, &root, Some(&mallory), "/pass", &[]).is_err());

    // A client CA file without a certificate in it is refused at start, naming the file.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let file = routes_file(w, "a: * -> <shunt>;");
    let o = w
        .cmd(&["ingress", "serve", "--listen", "127.0.0.1:8001", "--routes"])
        .arg(&file)
        .args(&tls_args[..4])
        .arg("--tls-client-ca")
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("empty.pem") && err.contains("no PEM certificate"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ingress_shows_its_certificate_to_backends_that_ask() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    // The backend's own certificate names its address; it asks clients for a certificate
    // the "ingress" CA signed.
    let server = rcgen::generate_simple_self_signed(vec![ip.clone()]).unwrap();
    let ours = ca_and_client("ingress");
    let theirs = ca_and_client("stranger");
    super::tls::tls_backend(
        l.ns("b0"),
        "0.0.0.0:8443",
        &server,
        &[b"http/1.1"],
        Some(ours.ca_der.clone()),
    );
    let dir = std::env::temp_dir().join(format!("{}-bmtls", w.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let ca = file("backend-ca.pem", &server.cert.pem());
    let (cert, key) = (file("c.pem", &ours.cert_pem), file("k.pem", &ours.key_pem));
    let (cert2, key2) = (
        file("c2.pem", &theirs.cert_pem),
        file("k2.pem", &theirs.key_pem),
    );
    let routes = format!("all: * -> \"https://{ip}:8443\";");

    // The right certificate: served.
    let g = ingress_with(
        w,
        &routes,
        &[
            "--backend-ca",
            &ca,
            "--backend-cert",
            &cert,
            "--backend-key",
            &key,
        ],
    );
    let r = get(w, "/", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "tlsb\nHTTP/1.1\n"),
        "{r:?}"
    );
    drop(g);
    // None, or one another CA signed: the backend refuses, the client gets a 502.
    let g = ingress_with(w, &routes, &["--backend-ca", &ca]);
    assert_eq!(get(w, "/", &[]).status, 502);
    drop(g);
    let _g = ingress_with(
        w,
        &routes,
        &[
            "--backend-ca",
            &ca,
            "--backend-cert",
            &cert2,
            "--backend-key",
            &key2,
        ],
    );
    assert_eq!(get(w, "/", &[]).status, 502);
    // A key that is not the certificate's: refused at start.
    let o = w
        .cmd(&["ingress", "serve", "--listen", "127.0.0.1:8001", "--routes"])
        .arg(routes_file(w, "a: * -> <shunt>;"))
        .args(["--backend-cert", &cert, "--backend-key", &key2])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not fit the certificate"),
        "{o:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
