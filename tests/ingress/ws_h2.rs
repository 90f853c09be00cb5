//! Websockets over HTTP/2 (RFC 8441): an h2c client's extended CONNECT reaches an
//! HTTP/1.1 websocket backend as a handshake the proxy makes (its own key, the backend's
//! answer checked), the client gets 200, and frames pass both ways; a backend whose
//! answer does not fit the key is a 502. HTTP/2 backends get an extended CONNECT from
//! HTTP/2 and HTTP/1.1 clients alike.

use super::common::*;
use super::lab;
use super::protocols::{enter, h2_backend, header_of, read_frame, read_head, write_frame, ws_echo};
use super::support::*;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes one masked text frame (as a client must).
async fn send_text<S: AsyncWriteExt + Unpin>(s: &mut S, text: &[u8]) {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81];
    if text.len() < 126 {
        f.push(0x80 | text.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(text.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f).await.unwrap();
}

/// Reads one unmasked frame: (opcode, payload).
async fn recv_frame<S: AsyncReadExt + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            u16::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

/// An extended CONNECT for a websocket at `path` over h2c; on 200 sends `messages` and
/// collects the echoes. Returns (status, response headers, echoes).
fn h2_websocket(
    w: &World,
    path: &'static str,
    messages: Vec<String>,
) -> (u16, http::HeaderMap, Vec<String>) {
    block_in_ns(&w.node, move || async move {
        let s = tokio::net::TcpStream::connect(LISTEN).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        // The server's SETTINGS (which enable extended CONNECT) come first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut req = http::Request::connect(format!("http://chat.example{path}"))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let resp = sender.send_request(req).await.unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        if status != 200 {
            return (status, headers, vec![]);
        }
        let up = hyper::upgrade::on(resp).await.unwrap();
        let mut io = hyper_util::rt::TokioIo::new(up);
        let mut echoes = vec![];
        for m in messages {
            send_text(&mut io, m.as_bytes()).await;
            let (op, payload) = recv_frame(&mut io).await;
            assert_eq!(op, 1);
            echoes.push(String::from_utf8(payload).unwrap());
        }
        (status, headers, echoes)
    })
}

/// A "websocket" backend that answers every handshake with a Sec-WebSocket-Accept that
/// fits no key.
fn lying_backend(ns: &str, addr: &str) {
    let (ns, addr) = (ns.to_string(), addr.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&ns);
        let l = std::net::TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = read_head(&mut s);
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBhbnN3ZXI=\r\n\r\n",
            );
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn websockets_over_http2_reach_http1_backends() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    ws_echo(l.ns("b0"), "0.0.0.0:8090");
    lying_backend(l.ns("b0"), "0.0.0.0:8091");
    let _g = ingress(
        w,
        &format!(
            "ws: Path(\"/ws\") -> setRequestHeader(\"X-Via\", \"knit\") -> \"http://{ip}:8090\";\n\
             liar: Path(\"/liar\") -> \"http://{ip}:8091\";"
        ),
    );
    let (status, headers, echoes) =
        h2_websocket(w, "/ws", vec!["hello".to_string(), "x".repeat(300)]);
    assert_eq!(status, 200, "{headers:?}");
    // The backend saw a handshake with the route's filters applied; the HTTP/1.1 parts of
    // its answer do not reach the HTTP/2 client.
    assert_eq!(
        headers.get("x-saw-via").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    assert!(headers.get("sec-websocket-accept").is_none(), "{headers:?}");
    assert!(headers.get("upgrade").is_none(), "{headers:?}");
    assert_eq!(
        echoes,
        vec![
            "echo: hello".to_string(),
            format!("echo: {}", "x".repeat(300))
        ]
    );
    // A backend whose answer does not fit the proxy's key is not spliced to the client.
    let (status, _, _) = h2_websocket(w, "/liar", vec![]);
    assert_eq!(status, 502);
}

/// Reads one masked frame (as a server gets them): (opcode, payload unmasked).
async fn recv_masked<S: AsyncReadExt + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.ok()?;
            u16::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask).await.ok()?;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Some((h[0] & 0x0f, payload))
}

/// An HTTP/2-only (h2c) websocket echo server on a thread in `ns`: takes extended
/// CONNECTs for "websocket" (RFC 8441; 400 to anything else), answers each text frame
/// with "echo: " and the text, and tells the X-Via it saw as X-Saw-Via.
fn h2_ws_echo(ns: &str, addr: &str) {
    tokio_server_in_ns(ns, addr, |s| async move {
        let svc = hyper::service::service_fn(|mut req: http::Request<_>| async move {
            let websocket = req.method() == http::Method::CONNECT
                && req
                    .extensions()
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str() == "websocket")
                && req.headers().get("sec-websocket-key").is_none();
            let mut resp = http::Response::new(http_body_util::Empty::<bytes::Bytes>::new());
            if !websocket {
                *resp.status_mut() = http::StatusCode::BAD_REQUEST;
                return Ok::<_, std::convert::Infallible>(resp);
            }
            if let Some(v) = req.headers().get("x-via") {
                resp.headers_mut().insert("x-saw-via", v.clone());
            }
            let up = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = hyper_util::rt::TokioIo::new(up.await.unwrap());
                while let Some((op, text)) = recv_masked(&mut io).await {
                    if op != 1 {
                        return;
                    }
                    let mut f = vec![0x81];
                    let payload = [b"echo: ".as_slice(), &text].concat();
                    if payload.len() < 126 {
                        f.push(payload.len() as u8);
                    } else {
                        f.push(126);
                        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                    }
                    f.extend_from_slice(&payload);
                    if io.write_all(&f).await.is_err() {
                        return;
                    }
                }
            });
            Ok(resp)
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .enable_connect_protocol()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    });
}

#[test]
fn websockets_reach_http2_backends_by_extended_connect() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    h2_ws_echo(l.ns("b0"), "0.0.0.0:8092");
    h2_backend(l.ns("b0"), "0.0.0.0:8093", "plain");
    let _g = ingress(
        w,
        &format!(
            "ws: Path(\"/ws\") -> setRequestHeader(\"X-Via\", \"knit\") -> \"h2c://{ip}:8092\";\n\
             plain: PathSubtree(\"/plain\") -> \"h2c://{ip}:8093\";"
        ),
    );
    // An HTTP/2 client: extended CONNECT through to the HTTP/2 backend.
    let (status, headers, echoes) =
        h2_websocket(w, "/ws", vec!["hello".to_string(), "x".repeat(300)]);
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(
        headers.get("x-saw-via").map(|v| v.as_bytes()),
        Some(&b"knit"[..])
    );
    assert_eq!(
        echoes,
        vec![
            "echo: hello".to_string(),
            format!("echo: {}", "x".repeat(300))
        ]
    );
    // An HTTP/1.1 client: its handshake becomes an extended CONNECT; the proxy answers its
    // key (RFC 6455's example) itself.
    let (head, echo) = in_ns(&w.node, || {
        let mut s = std::net::TcpStream::connect(LISTEN).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // (The Upgrade token is case-insensitive; `:protocol` is not.)
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let head = read_head(&mut s);
        write_frame(&mut s, 1, b"over h1", true);
        (head, read_frame(&mut s).map(|f| f.1))
    });
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101"), "{head}");
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert_eq!(
        header_of(&head, "sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(echo, Some(b"echo: over h1".to_vec()));
    // An HTTP/2 backend that does not take extended CONNECT: no switch (502), and no
    // mark against it: more attempts than --eject-after leave it serving.
    for _ in 0..4 {
        let (status, _, _) = h2_websocket(w, "/plain/ws", vec![]);
        assert_eq!(status, 502);
    }
    let r = get(w, "/plain/x", &[]);
    assert_eq!(
        (r.status, r.body.lines().next()),
        (200, Some("plain")),
        "{r:?}"
    );
    assert!(!metrics(w).contains("knit_ingress_endpoint_ejected{"));
}
