//! Websockets over HTTP/2 (RFC 8441): an h2c client's extended CONNECT reaches an
//! HTTP/1.1 websocket backend as a handshake the proxy makes (its own key, the backend's
//! answer checked), the client gets 200, and frames pass both ways; a backend whose
//! answer does not fit the key is a 502.

use super::common::*;
use super::lab;
use super::protocols::{enter, read_head, ws_echo};
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
