//! Websockets and HTTP/2 through the ingress, end to end: a websocket echo server behind
//! it (the handshake and frames pass through), h2c clients (many streams on one
//! connection), and HTTP/2 to backends (`h2c://` URLs, `--backend-http2`).

use super::common::*;
use super::lab;
use super::support::*;
use base64::Engine;
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn accept_key(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(format!("{key}{GUID}")))
}

pub fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    // SAFETY: setns on this thread only.
    assert_eq!(
        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
}

/// A header's value in a raw head (names compared without case).
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = vec![];
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// One websocket frame: (opcode, payload), unmasked.
pub fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).ok()?;
        len = u64::from(u16::from_be_bytes(l));
    } else if len == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l).ok()?;
        len = u64::from_be_bytes(l);
    }
    let mask = if h[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        s.read_exact(&mut m).ok()?;
        Some(m)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).ok()?;
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((h[0] & 0x0f, payload))
}

pub fn write_frame(s: &mut TcpStream, opcode: u8, payload: &[u8], masked: bool) {
    let mut f = vec![0x80 | opcode];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(bit | n as u8),
        n if n <= 0xffff => {
            f.push(bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    if masked {
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    s.write_all(&f).unwrap();
}

/// A websocket echo server on a thread in `ns`: answers each text frame with "echo: "
/// and the text; 400 to a request that is not a websocket handshake.
pub fn ws_echo(ns: &str, addr: &str) {
    let (ns, addr) = (ns.to_string(), addr.parse::<SocketAddr>().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        enter(&ns);
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let head = read_head(&mut s);
                let lower = head.to_ascii_lowercase();
                let key = header_of(&head, "sec-websocket-key");
                let (Some(key), true) = (key, lower.contains("upgrade: websocket")) else {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let via = if lower.contains("x-via: knit") {
                    "yes"
                } else {
                    "no"
                };
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Saw-Via: {via}\r\n\r\n",
                    accept_key(&key)
                );
                s.write_all(resp.as_bytes()).unwrap();
                while let Some((op, payload)) = read_frame(&mut s) {
                    if op == 8 {
                        write_frame(&mut s, 8, &[], false);
                        return;
                    }
                    let mut out = b"echo: ".to_vec();
                    out.extend_from_slice(&payload);
                    write_frame(&mut s, op, &out, false);
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn websockets_pass_through_end_to_end() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    ws_echo(l.ns("b0"), "0.0.0.0:8090");
    let _g = ingress(
        w,
        &format!(
            "ws: Path(\"/ws\") -> setRequestHeader(\"X-Via\", \"knit\") -> \"http://{ip}:8090\";\nwsidle: Path(\"/wsidle\") -> idleTimeout(\"500ms\") -> \"http://{ip}:8090\";\nother: * -> \"http://{ip}:8080\";"
        ),
    );
    let (head, echoes) = in_ns(&w.node, move || {
        let mut s = TcpStream::connect(LISTEN).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        s.write_all(
            format!("GET /ws HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let head = read_head(&mut s);
        let mut echoes = vec![];
        for msg in ["hello".to_string(), "x".repeat(300), "y".repeat(70_000)] {
            write_frame(&mut s, 1, msg.as_bytes(), true);
            let (op, payload) = read_frame(&mut s).expect("an echo");
            assert_eq!(op, 1);
            echoes.push(String::from_utf8(payload).unwrap());
            // Other requests are served while the websocket is open.
            let r = request(LISTEN, "GET", "/plain", &[]).unwrap();
            assert_eq!((r.status, r.who()), (200, "b0"));
        }
        write_frame(&mut s, 8, &[], true);
        assert_eq!(read_frame(&mut s).map(|f| f.0), Some(8));

        // A route's idle timeout holds for the switched connection: traffic keeps it
        // open, half a second of silence closes it.
        let mut s = TcpStream::connect(LISTEN).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            format!("GET /wsidle HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert!(
            read_head(&mut s)
                .to_ascii_lowercase()
                .starts_with("http/1.1 101")
        );
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(250));
            write_frame(&mut s, 1, b"ping", true);
            assert_eq!(
                read_frame(&mut s).map(|f| f.1),
                Some(b"echo: ping".to_vec())
            );
        }
        let quiet = std::time::Instant::now();
        let mut rest = [0u8; 16];
        assert_eq!(s.read(&mut rest).unwrap(), 0, "closed when idle");
        let waited = quiet.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        (head, echoes)
    });
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101"), "{head}");
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    // RFC 6455's example key and answer.
    assert_eq!(
        header_of(&head, "sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(
        lower.contains("x-saw-via: yes"),
        "the route's filters ran: {head}"
    );
    assert_eq!(echoes[0], "echo: hello");
    assert_eq!(echoes[1], format!("echo: {}", "x".repeat(300)));
    assert_eq!(echoes[2].len(), 70_006);
}

/// An HTTP/2 (h2c, prior knowledge) server on a thread in `ns`: answers its name and the
/// request's HTTP version. Runs until the test process ends.
pub fn h2_backend(ns: &str, addr: &str, name: &'static str) {
    tokio_server_in_ns(ns, addr, move |s| async move {
        let svc = hyper::service::service_fn(move |req: http::Request<_>| async move {
            let body = format!("{name}\n{:?}\n", req.version());
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from(body),
            )))
        });
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    });
}

/// `n` concurrent GETs on one h2c connection to the ingress: (status, version, body).
fn h2c_gets(w: &World, path: &'static str, n: usize) -> Vec<(u16, http::Version, String)> {
    in_ns(&w.node, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use http_body_util::BodyExt;
            let s = tokio::net::TcpStream::connect(LISTEN).await.unwrap();
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(s),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let calls = (0..n).map(|_| {
                let mut sender = sender.clone();
                async move {
                    let req = http::Request::get(format!("http://shop.example{path}"))
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    let (status, version) = (resp.status().as_u16(), resp.version());
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    (status, version, String::from_utf8_lossy(&body).into_owned())
                }
            });
            let mut out = vec![];
            for h in calls.map(tokio::spawn).collect::<Vec<_>>() {
                out.push(h.await.unwrap());
            }
            out
        })
    })
}

#[test]
fn http2_from_clients_and_to_backends() {
    let (l, _servers, b0, _b1) = lab();
    let w = &l.w;
    let ip = w.ip_of("n", &b0, 4);
    h2_backend(l.ns("b0"), "0.0.0.0:8090", "h2b");
    let g = ingress(
        w,
        &format!(
            "h1: Path(\"/h1\") -> \"http://{ip}:8080\";\nh2: Path(\"/h2\") -> \"h2c://{ip}:8090\";"
        ),
    );
    // An h2c client, 20 streams at once on one connection, to an HTTP/1.1 backend.
    let got = h2c_gets(w, "/h1", 20);
    assert_eq!(got.len(), 20);
    for (status, version, body) in &got {
        assert_eq!((*status, *version), (200, http::Version::HTTP_2), "{body}");
        assert!(body.starts_with("b0\nGET /h1 HTTP/1.1"), "{body}");
        assert!(body.contains("x-forwarded-host: shop.example"), "{body}");
    }
    // HTTP/2 to an h2c:// backend, from an h2c client and from an HTTP/1.0 one.
    let got = h2c_gets(w, "/h2", 3);
    assert!(
        got.iter()
            .all(|(s, v, b)| *s == 200 && *v == http::Version::HTTP_2 && b == "h2b\nHTTP/2.0\n"),
        "{got:?}"
    );
    let r = get(w, "/h2", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "h2b\nHTTP/2.0\n"));
    drop(g);
    // --backend-http2: plain http:// backends are spoken to in HTTP/2 too.
    let _g = ingress_with(
        w,
        &format!("all: * -> \"http://{ip}:8090\";"),
        &["--backend-http2"],
    );
    let r = get(w, "/any", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "h2b\nHTTP/2.0\n"));
}
