//! The pools against real servers on loopback: connection reuse, idle sweeps, and a
//! keep-alive close caught under a request.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A keep-alive HTTP/1.1 server on loopback answering "ok"; counts its connections.
async fn server() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(super::super::body::full("ok")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

async fn get(pools: &Pools, endpoint: &str) -> String {
    let t = Duration::from_secs(2);
    let conn = pools.checkout(endpoint, t).await.unwrap();
    let req = Request::get("/")
        .header(http::header::HOST, endpoint)
        .body(super::super::body::empty())
        .unwrap();
    let resp = pools.send(endpoint, t, conn, req, None).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// A server answering the first request on each connection and closing the
/// connection when the second one arrives, as a server whose keep-alive timeout runs
/// out just as a request comes.
async fn closing_server() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                for answer in [true, false] {
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.clear();
                    if answer {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        s.write_all(ok).await.unwrap();
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "current_thread")]
async fn an_idempotent_request_caught_by_a_keep_alive_close_is_sent_again() {
    let (endpoint, accepted) = closing_server().await;
    let pools = Pools::new(super::super::backtls::connector(None, None).unwrap(), false);
    let t = Duration::from_secs(2);
    let req = || {
        Request::get("/")
            .header(http::header::HOST, endpoint.as_str())
            .body(super::super::body::empty())
            .unwrap()
    };
    assert_eq!(get(&pools, &endpoint).await, "ok");
    // The kept connection closes under the next request: with a spare copy it goes
    // again on a new connection. (A kept connection is one that may be closing: the proxy
    // makes the copy for it; not for a new one.)
    let conn = pools.checkout(&endpoint, t).await.unwrap();
    assert!(conn.may_be_closing());
    let resp = pools
        .send(&endpoint, t, conn, req(), Some(req()))
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Without one (not idempotent, or a body), the failure is the caller's.
    let conn = pools.checkout(&endpoint, t).await.unwrap();
    match pools.send(&endpoint, t, conn, req(), None).await {
        Err(SendError::Exchange(e)) => assert!(e.is_incomplete_message(), "{e}"),
        other => panic!(
            "expected an exchange error, got {:?}",
            other.map(|r| r.status())
        ),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_response_returns_its_connection_and_sweeps_close_idle_ones() {
    let (endpoint, accepted) = server().await;
    let tls = super::super::backtls::connector(None, None).unwrap();
    let pools = Pools::new(tls, false);
    for _ in 0..5 {
        assert_eq!(get(&pools, &endpoint).await, "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for 5 requests"
    );
    // Unused for IDLE_SWEEPS sweeps: closed; the next request opens a new one.
    for _ in 0..IDLE_SWEEPS - 1 {
        sweep();
    }
    assert!(
        IDLE.with_borrow(|m| m.contains_key(&endpoint)),
        "closed too early"
    );
    sweep();
    assert!(IDLE.with_borrow(|m| !m.contains_key(&endpoint)));
    assert_eq!(get(&pools, &endpoint).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A response dropped unread takes its connection with it (its rest may still be on
    // the wire).
    let t = Duration::from_secs(2);
    let conn = pools.checkout(&endpoint, t).await.unwrap();
    let req = Request::get("/")
        .header(http::header::HOST, endpoint.as_str())
        .body(super::super::body::empty())
        .unwrap();
    drop(pools.send(&endpoint, t, conn, req, None).await.unwrap());
    assert_eq!(get(&pools, &endpoint).await, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
