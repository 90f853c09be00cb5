//! The ingress tests' helpers: an HTTP backend on a thread in a sandbox, the ingress
//! process (killed when its guard drops), and a plain HTTP client.

use super::common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub const LISTEN: &str = "127.0.0.1:8000";

/// A small HTTP/1.1 server on a thread inside `ns`: keep-alive, answers every request
/// with its name, request line and request headers in the body, and a response header
/// `X-Backend-Only`. `/slow` waits a second first. Counts the connections it accepted.
pub struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub connections: Arc<AtomicUsize>,
    /// Each request's line and body, as received.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle_conn(mut s: TcpStream, name: &str, stop: &AtomicBool, log: &Mutex<Vec<String>>) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if !stop.load(Ordering::SeqCst) => continue,
                Err(_) => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_string();
        let headers: Vec<String> = lines.map(|l| l.to_ascii_lowercase()).collect();
        let len: usize = headers
            .iter()
            .find_map(|h| h.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => return,
            }
        }
        let req_body = String::from_utf8_lossy(&buf[..len]).into_owned();
        log.lock()
            .unwrap()
            .push(format!("{request_line}\n{req_body}"));
        buf.drain(..len);
        if request_line.contains(" /slow") {
            std::thread::sleep(Duration::from_secs(1));
        }
        if request_line.contains(" /stall") {
            // Half the body, a pause of a second, the rest.
            let body = "0123456789".repeat(10);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body.as_bytes()[..50]);
            std::thread::sleep(Duration::from_secs(1));
            if s.write_all(&body.as_bytes()[50..]).is_err() {
                return;
            }
            continue;
        }
        let mut body = format!("{name}\n{request_line}\n");
        for h in &headers {
            body.push_str(h);
            body.push('\n');
        }
        let close = headers.iter().any(|h| h == "connection: close");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend-Only: yes\r\nContent-Type: text/plain\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if s.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

pub fn backend(ns: &str, addr: &str, name: &str) -> Backend {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    let addr: SocketAddr = addr.parse().unwrap();
    let name = name.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(vec![]));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop2, conns2, log2) = (stop.clone(), connections.clone(), requests.clone());
    let thread = std::thread::spawn(move || {
        // SAFETY: setns on this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let l = TcpListener::bind(addr).expect("bind backend");
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        while !stop2.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((s, _)) => {
                    conns2.fetch_add(1, Ordering::SeqCst);
                    let _ = s.set_nonblocking(false);
                    let (name, stop, log) = (name.clone(), stop2.clone(), log2.clone());
                    std::thread::spawn(move || handle_conn(s, &name, &stop, &log));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("backend ready");
    Backend {
        stop,
        thread: Some(thread),
        connections,
        requests,
    }
}

/// `knit ingress serve` in the node namespace; killed when dropped.
pub struct Ingress {
    pub child: Child,
    pub routes: std::path::PathBuf,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.routes);
        let _ = std::fs::remove_file(self.routes.with_extension("log"));
    }
}

pub fn routes_file(w: &World, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("{}-routes.eskip", w.prefix));
    std::fs::write(&p, text).unwrap();
    p
}

pub fn ingress(w: &World, text: &str) -> Ingress {
    ingress_with(w, text, &[])
}

/// `ingress` with more `serve` options.
pub fn ingress_with(w: &World, text: &str, extra: &[&str]) -> Ingress {
    let routes = routes_file(w, text);
    let log = routes.with_extension("log");
    let mut child = w
        .cmd(&["ingress", "serve", "--listen", LISTEN, "--routes"])
        .arg(&routes)
        .args(["--reload-ms", "100", "--metrics", "127.0.0.1:9911"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn ingress");
    // It prints "listening on ..." once the socket is bound.
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 128];
    let n = out.read(&mut line).unwrap_or(0);
    let g = Ingress { child, routes };
    assert!(
        String::from_utf8_lossy(&line[..n]).starts_with("listening on"),
        "ingress did not start: {:?}; stderr: {}",
        String::from_utf8_lossy(&line[..n]),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    g
}

/// A response: status, headers (lowercased names), body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn who(&self) -> &str {
        self.body.lines().next().unwrap_or("")
    }
}

/// One HTTP/1.0 request (so the answer is never chunked) from the current namespace.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: shop.example\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or(format!("no head: {raw:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(format!("bad status line: {raw:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `request` from inside the node namespace.
pub fn get(w: &World, path: &str, headers: &[(&str, &str)]) -> Resp {
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    in_ns(&w.node, move || {
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        request(LISTEN, "GET", &path, &h)
    })
    .unwrap_or_else(|e| panic!("GET failed: {e}"))
}

/// Who answered `n` requests (with headers made by `h` per request).
pub fn tally(
    w: &World,
    path: &str,
    n: usize,
    h: fn(usize) -> Vec<(String, String)>,
) -> Vec<String> {
    let path = path.to_string();
    in_ns(&w.node, move || {
        (0..n)
            .map(|i| {
                let hs = h(i);
                let hs: Vec<(&str, &str)> =
                    hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let r = request(LISTEN, "GET", &path, &hs).expect("request");
                assert_eq!(r.status, 200, "{r:?}");
                r.who().to_string()
            })
            .collect()
    })
}

pub fn counts(who: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in who {
        *m.entry(w.clone()).or_insert(0) += 1;
    }
    m
}

/// Sends raw bytes, reads the answer to EOF (from the current namespace).
pub fn raw(addr: &str, bytes: &[u8]) -> Result<String, String> {
    raw_bytes(addr, bytes).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `raw`, the answer as bytes.
pub fn raw_bytes(addr: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).map_err(|e| e.to_string())?;
    let mut out = vec![];
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The ingress's metrics text (from inside the node namespace).
pub fn metrics(w: &World) -> String {
    in_ns(&w.node, || {
        raw("127.0.0.1:9911", b"GET /metrics HTTP/1.0\r\n\r\n").expect("metrics")
    })
}

/// Runs the future `f` makes on a single-threaded runtime of its own, on a thread inside
/// the namespace `ns`.
pub fn block_in_ns<T, F, Fut>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    in_ns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// A tokio server on a thread of its own in `ns`, listening on `addr`: `serve` gets each
/// connection, on a task. Returns once it listens; runs until the test process ends.
pub fn tokio_server_in_ns<F, Fut>(ns: &str, addr: &str, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (ns, addr) = (ns.to_string(), addr.parse::<SocketAddr>().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
        // SAFETY: setns on this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(addr).await.unwrap();
            tx.send(()).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(serve(s));
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}
