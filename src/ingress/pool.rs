//! Keep-alive connections to backend endpoints, kept per serving thread.
//!
//! A backend connection's task lives on the runtime that made it, so each serving thread
//! keeps its own: a request, its backend connection and its answer never change thread.
//! HTTP/1.1 connections carry one request at a time: idle ones wait in a list per
//! endpoint, and a response hands its connection back when its body has been read (not
//! through a task per request). HTTP/2 connections (h2c, or TLS where ALPN picks h2) are
//! shared by all requests to the endpoint on the thread.

use super::body::{Body, BoxError};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Idle HTTP/1.1 connections kept per endpoint and thread.
const MAX_IDLE: usize = 256;
/// An idle connection is closed at the sixth sweep after it was last used (sweeps come
/// every 15 s: after 75 to 90 s unused); sweeps, not clocks, so a request reads no time.
const IDLE_SWEEPS: u32 = 6;

/// How an endpoint is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Http1,
    /// HTTP/2 without TLS (prior knowledge).
    H2c,
    /// TLS; HTTP/2 or HTTP/1.1 as ALPN decides.
    Tls,
}

impl Proto {
    pub fn scheme(self) -> &'static str {
        if self == Proto::Tls { "https" } else { "http" }
    }
}

/// Why no connection could be had (the request was not sent: another endpoint may be
/// tried).
#[derive(Debug)]
pub enum ConnectError {
    TimedOut,
    Failed(BoxError),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::TimedOut => write!(f, "connect timed out"),
            ConnectError::Failed(e) => write!(f, "connect failed: {e}"),
        }
    }
}

/// Why a request on a connection got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection (nothing was sent).
    Connect(ConnectError),
    /// The connection failed with the request on it.
    Exchange(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => e.fmt(f),
            SendError::Exchange(e) => e.fmt(f),
        }
    }
}

struct Idle {
    conn: http1::SendRequest<Body>,
    /// The sweep count when it was put back.
    since: u32,
}

thread_local! {
    static SWEEPS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static IDLE: RefCell<HashMap<String, Vec<Idle>>> = RefCell::new(HashMap::new());
    static SHARED: RefCell<HashMap<String, H2Conn>> =
        RefCell::new(HashMap::new());
}

/// The way to the backends: TLS for `https://` endpoints, and whether plain endpoints
/// speak HTTP/2 (h2c) by default.
#[derive(Clone)]
pub struct Pools {
    tls: TlsConnector,
    h2c_default: bool,
}

impl Pools {
    pub fn new(tls: TlsConnector, h2c_default: bool) -> Pools {
        Pools { tls, h2c_default }
    }

    /// An endpoint's authority and how it is spoken to.
    pub fn split<'a>(&self, endpoint: &'a str) -> (&'a str, Proto) {
        if let Some(a) = endpoint.strip_prefix("h2c://") {
            (a, Proto::H2c)
        } else if let Some(a) = endpoint.strip_prefix("https://") {
            (a, Proto::Tls)
        } else if self.h2c_default {
            (endpoint, Proto::H2c)
        } else {
            (endpoint, Proto::Http1)
        }
    }

    /// A connection to `endpoint`: the thread's HTTP/2 one or most recently used idle
    /// HTTP/1.1 one, else a new one. Nothing is sent yet: on failure another endpoint
    /// may be tried with the same request.
    pub async fn checkout(&self, endpoint: &str, connect: Duration) -> Result<Conn, ConnectError> {
        if let Some(c) = shared(endpoint) {
            return Ok(Conn {
                sender: Sender::H2(c),
                pooled: true,
            });
        }
        if let Some(c) = idle(endpoint) {
            return Ok(Conn {
                sender: Sender::H1(c),
                pooled: true,
            });
        }
        self.open(endpoint, connect).await
    }

    /// Sends `req` on `conn`. A pooled connection that turns out closed before the
    /// request went out is replaced by a new one, and the request sent again. `spare`, a
    /// copy of an idempotent request without a body, is sent on a new connection when a
    /// pooled one closes with the request on it: the backend closed it as idle while the
    /// request was on its way (a server's keep-alive timeout races every proxy's reuse).
    pub async fn send(
        &self,
        endpoint: &str,
        connect: Duration,
        conn: Conn,
        req: Request<Body>,
        spare: Option<Request<Body>>,
    ) -> Result<Response<Body>, SendError> {
        let req = match conn.sender.send(endpoint, req).await {
            Ok(r) => return Ok(r),
            Err(Retry::Again(req)) if conn.pooled => {
                SHARED.with_borrow_mut(|m| m.remove(endpoint));
                req
            }
            Err(Retry::Failed(e)) if conn.pooled && e.is_incomplete_message() => match spare {
                Some(req) => {
                    tracing::debug!(
                        endpoint,
                        "a kept-alive connection closed under a request: sent again"
                    );
                    Box::new(req)
                }
                None => return Err(SendError::Exchange(e)),
            },
            Err(Retry::Again(_)) => {
                return Err(SendError::Connect(ConnectError::Failed(
                    "the new connection closed at once".into(),
                )));
            }
            Err(Retry::Failed(e)) => return Err(SendError::Exchange(e)),
        };
        let fresh = self
            .open(endpoint, connect)
            .await
            .map_err(SendError::Connect)?;
        match fresh.sender.send(endpoint, *req).await {
            Ok(r) => Ok(r),
            Err(Retry::Again(_)) => Err(SendError::Connect(ConnectError::Failed(
                "the new connection closed at once".into(),
            ))),
            Err(Retry::Failed(e)) => Err(SendError::Exchange(e)),
        }
    }

    /// A new connection to `endpoint`; an HTTP/2 one becomes the thread's shared one.
    async fn open(&self, endpoint: &str, connect: Duration) -> Result<Conn, ConnectError> {
        let (authority, proto) = self.split(endpoint);
        let sender = self.connect(authority, proto, connect).await?;
        if let Sender::H2(c) = &sender {
            SHARED.with_borrow_mut(|m| m.insert(endpoint.to_string(), c.clone()));
        }
        Ok(Conn {
            sender,
            pooled: false,
        })
    }

    /// A new connection: TCP (and TLS) within `timeout`, then the HTTP handshake; its
    /// task is spawned on this thread's runtime.
    async fn connect(
        &self,
        authority: &str,
        proto: Proto,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let open = async {
            let tcp = TcpStream::connect(authority)
                .await
                .map_err(|e| ConnectError::Failed(e.into()))?;
            let _ = tcp.set_nodelay(true);
            match proto {
                Proto::Http1 => h1(TokioIo::new(tcp)).await,
                Proto::H2c => h2(TokioIo::new(tcp)).await,
                Proto::Tls => {
                    let host = authority
                        .rsplit_once(':')
                        .map_or(authority, |(h, _)| h)
                        .trim_start_matches('[')
                        .trim_end_matches(']');
                    let name = ServerName::try_from(host.to_string())
                        .map_err(|e| ConnectError::Failed(e.into()))?;
                    let s = self
                        .tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ConnectError::Failed(e.into()))?;
                    if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                        h2(TokioIo::new(s)).await
                    } else {
                        h1(TokioIo::new(s)).await
                    }
                }
            }
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| ConnectError::TimedOut)?
    }
}

/// Closes this thread's connections unused for `IDLE_SWEEPS` sweeps (called every 15 s
/// on each serving thread).
pub fn sweep() {
    let now = SWEEPS.get().wrapping_add(1);
    SWEEPS.set(now);
    IDLE.with_borrow_mut(|m| {
        for list in m.values_mut() {
            list.retain(|i| now.wrapping_sub(i.since) < IDLE_SWEEPS && !i.conn.is_closed());
        }
        m.retain(|_, list| !list.is_empty());
    });
    SHARED.with_borrow_mut(|m| m.retain(|_, c| !c.send.is_closed()));
}

/// A connection a request can go out on.
pub struct Conn {
    sender: Sender,
    /// Taken from the pool (it may have closed since), not opened for this request.
    pooled: bool,
}

impl Conn {
    /// Whether the backend may close this connection as the request goes out: a kept
    /// HTTP/1.1 one (its keep-alive timeout, a graceful restart), so an idempotent request
    /// should keep a spare copy for `Pools::send`.
    pub fn may_be_closing(&self) -> bool {
        self.pooled && matches!(self.sender, Sender::H1(_))
    }

    /// Whether an HTTP/2 backend is known not to take extended CONNECT (RFC 8441): its
    /// SETTINGS said so. (A new connection may not have read them yet: a request goes,
    /// and a backend without it resets the stream.)
    pub fn refuses_extended_connect(&self) -> bool {
        match &self.sender {
            Sender::H2(c) => self.pooled && !c.extended_connect.load(Ordering::Relaxed),
            Sender::H1(_) => false,
        }
    }

    /// Whether the request must be in HTTP/2 form (an absolute URI).
    pub fn http2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(H2Conn),
}

impl Sender {
    async fn send(self, endpoint: &str, req: Request<Body>) -> Result<Response<Body>, Retry> {
        match self {
            Sender::H1(c) => send_h1(endpoint, c, req).await,
            Sender::H2(c) => send_h2(c.send, req).await,
        }
    }
}

type Io<T> = TokioIo<T>;

async fn h1<T>(io: Io<T>) -> Result<Sender, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| ConnectError::Failed(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    Ok(Sender::H1(send))
}

async fn h2<T>(io: Io<T>) -> Result<Sender, ConnectError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|e| ConnectError::Failed(e.into()))?;
    // The connection knows what the backend's SETTINGS said; its task copies whether they
    // allow extended CONNECT out to the senders after each turn.
    let extended_connect = Arc::new(AtomicBool::new(false));
    let said = extended_connect.clone();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let ended = std::future::poll_fn(|cx| {
            let turn = conn.as_mut().poll(cx);
            said.store(
                conn.is_extended_connect_protocol_enabled(),
                Ordering::Relaxed,
            );
            turn
        })
        .await;
        if let Err(e) = ended {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    Ok(Sender::H2(H2Conn {
        send,
        extended_connect,
    }))
}

/// An HTTP/2 connection's sender, and whether the backend takes extended CONNECT.
#[derive(Clone)]
struct H2Conn {
    send: http2::SendRequest<Body>,
    extended_connect: Arc<AtomicBool>,
}

/// This thread's HTTP/2 connection to `endpoint`, if it is still open.
fn shared(endpoint: &str) -> Option<H2Conn> {
    SHARED.with_borrow_mut(|m| match m.get(endpoint) {
        Some(c) if !c.send.is_closed() => Some(c.clone()),
        Some(_) => {
            m.remove(endpoint);
            None
        }
        None => None,
    })
}

/// The most recently used idle HTTP/1.1 connection to `endpoint` that can take a
/// request; closed and expired ones found on the way are dropped.
fn idle(endpoint: &str) -> Option<http1::SendRequest<Body>> {
    IDLE.with_borrow_mut(|m| {
        let list = m.get_mut(endpoint)?;
        while let Some(i) = list.pop() {
            if i.conn.is_ready() {
                return Some(i.conn);
            }
        }
        None
    })
}

fn put_back(endpoint: String, mut conn: http1::SendRequest<Body>) {
    if conn.is_closed() {
        return;
    }
    if !conn.is_ready() {
        // The connection task has not yet taken in the end of the response: wait for it
        // (rare: on this single-threaded runtime it usually has by the time the body's
        // reader sees the end).
        tokio::spawn(async move {
            if conn.ready().await.is_ok() {
                put_back(endpoint, conn);
            }
        });
        return;
    }
    IDLE.with_borrow_mut(|m| {
        let list = m.entry(endpoint).or_default();
        if list.len() >= MAX_IDLE {
            list.remove(0);
        }
        list.push(Idle {
            conn,
            since: SWEEPS.get(),
        });
    });
}

enum Retry {
    /// The connection closed before the request went out: here it is, unsent.
    Again(Box<Request<Body>>),
    Failed(hyper::Error),
}

async fn send_h1(
    endpoint: &str,
    mut conn: http1::SendRequest<Body>,
    req: Request<Body>,
) -> Result<Response<Body>, Retry> {
    match conn.try_send_request(req).await {
        Ok(resp) => {
            // A protocol switch takes the connection over; it never returns to the pool.
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                return Ok(resp.map(|b| b.map_err(BoxError::from).boxed()));
            }
            let endpoint = endpoint.to_string();
            Ok(resp.map(|b| {
                Returning {
                    body: b,
                    back: Some((endpoint, conn)),
                }
                .boxed()
            }))
        }
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Retry::Again(Box::new(req))),
            None => Err(Retry::Failed(e.into_error())),
        },
    }
}

async fn send_h2(
    mut conn: http2::SendRequest<Body>,
    req: Request<Body>,
) -> Result<Response<Body>, Retry> {
    match conn.try_send_request(req).await {
        Ok(resp) => Ok(resp.map(|b| b.map_err(BoxError::from).boxed())),
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Retry::Again(Box::new(req))),
            None => Err(Retry::Failed(e.into_error())),
        },
    }
}

/// A response body that gives its HTTP/1.1 connection back to the pool once read to
/// the end (a body dropped early takes its connection with it: the rest of it may still
/// be on the wire).
struct Returning {
    body: Incoming,
    back: Option<(String, http1::SendRequest<Body>)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((endpoint, conn)) = self.back.take() {
            put_back(endpoint, conn);
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // A body with nothing in it (HEAD, 204, 304, Content-Length: 0) is never polled.
        if hyper::body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
