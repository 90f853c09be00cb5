//! A request's way to a backend endpoint: the forwarding headers, the endpoint picked by
//! the route's balancer among those passive health keeps in the rotation, the route's
//! timeouts (connect, response headers, pauses in the response body), and retries of
//! idempotent requests without a body on another endpoint when a connect fails.

use super::backtls::HttpsConnector;
use super::body::{Body, BoxError, empty, plain};
use super::filter::Timeouts;
use super::health::Health;
use super::lb::Balancer;
use super::lb::InFlight;
use super::metrics::Metrics;
use super::run::Outgoing;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_rustls::TlsConnector;

/// At most this many endpoints are tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// The server-wide timeouts, used where a route sets none.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub connect: Duration,
    pub header: Option<Duration>,
    pub idle: Option<Duration>,
    /// Speak HTTP/2 (h2c, prior knowledge) to every backend, not only `h2c://` ones.
    pub http2: bool,
}

/// A client's request to switch protocols (a websocket): the Upgrade header it sent and
/// its side of the connection once the backend agrees.
pub struct Upgrade {
    pub protocol: HeaderValue,
    pub client: hyper::upgrade::OnUpgrade,
}

/// How an endpoint is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Http1,
    /// HTTP/2 without TLS (prior knowledge).
    H2c,
    /// TLS; HTTP/2 or HTTP/1.1 as ALPN decides.
    Tls,
}

/// Keep-alive pools to the backends, one per connect timeout and protocol in use (hyper's
/// connector has one connect timeout; routes rarely use more than a few).
pub struct Clients {
    pub defaults: Defaults,
    tls: TlsConnector,
}

thread_local! {
    // One pool per serving thread: a backend connection's task lives on the runtime that
    // made it, so a pool shared between threads would hand each request's halves from
    // thread to thread (a wake-up each way). Keyed by connect timeout (and HTTP/2).
    static PLAIN: RefCell<HashMap<(Duration, bool), Client<HttpConnector, Body>>> =
        RefCell::new(HashMap::new());
    static SECURE: RefCell<HashMap<Duration, Client<HttpsConnector, Body>>> =
        RefCell::new(HashMap::new());
}

fn http_connector(connect: Duration) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(connect));
    c
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256);
    b
}

impl Clients {
    pub fn new(defaults: Defaults, tls: TlsConnector) -> Clients {
        Clients { defaults, tls }
    }

    /// Sends a request (its URI absolute) over this thread's pool for this connect
    /// timeout and protocol.
    fn send(&self, connect: Option<Duration>, proto: Proto, req: Request<Body>) -> ResponseFuture {
        let d = connect.unwrap_or(self.defaults.connect);
        if proto == Proto::Tls {
            return SECURE.with_borrow_mut(|m| {
                m.entry(d)
                    .or_insert_with(|| {
                        let mut http = http_connector(d);
                        http.enforce_http(false);
                        builder().build(HttpsConnector {
                            http,
                            tls: self.tls.clone(),
                        })
                    })
                    .request(req)
            });
        }
        let h2 = proto == Proto::H2c;
        PLAIN.with_borrow_mut(|m| {
            m.entry((d, h2))
                .or_insert_with(|| builder().http2_only(h2).build(http_connector(d)))
                .request(req)
        })
    }

    /// An endpoint's authority and how it is spoken to.
    fn split<'a>(&self, endpoint: &'a str) -> (&'a str, Proto) {
        if let Some(a) = endpoint.strip_prefix("h2c://") {
            (a, Proto::H2c)
        } else if let Some(a) = endpoint.strip_prefix("https://") {
            (a, Proto::Tls)
        } else if self.defaults.http2 {
            (endpoint, Proto::H2c)
        } else {
            (endpoint, Proto::Http1)
        }
    }
}

fn scheme(p: Proto) -> &'static str {
    if p == Proto::Tls { "https" } else { "http" }
}

/// What requests to backends share: the pools, passive health, the load per endpoint and
/// the figures.
pub struct Upstream {
    pub clients: Clients,
    pub health: Health,
    pub in_flight: InFlight,
    pub metrics: Metrics,
}

/// Headers of one hop only (RFC 9110 7.6.1): never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

fn set(h: &mut HeaderMap, name: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

/// X-Forwarded-For grows by the peer; -Proto and -Host say what the client asked.
pub fn forwarding_headers(h: &mut HeaderMap, host: &str, remote: SocketAddr, proto: &str) {
    let client_ip = remote.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip,
    };
    set(h, "x-forwarded-for", &xff);
    set(h, "x-forwarded-proto", proto);
    if !host.is_empty() && !h.contains_key("x-forwarded-host") {
        set(h, "x-forwarded-host", host);
    }
}

/// Which endpoint answered (in the response's extensions, for the access log).
#[derive(Debug, Clone)]
pub struct Endpoint(pub String);

/// RFC 9110 9.2.2.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether an error (or one of its causes) is a timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// One request to the backend: `endpoints` is not empty.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    proxy: &Upstream,
    balancer: &Balancer,
    timeouts: Timeouts,
    parts: &http::request::Parts,
    out: &Outgoing,
    mut headers: HeaderMap,
    body: Body,
    host: &str,
    remote: SocketAddr,
    endpoints: &[String],
    key: &str,
    mut upgrade: Option<Upgrade>,
) -> Response<Body> {
    strip_hop_by_hop(&mut headers);
    forwarding_headers(&mut headers, host, remote, out.proto);
    if let Some(u) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u.protocol.clone());
    }
    let retryable = idempotent(&parts.method) && hyper::body::Body::is_end_stream(&body);
    let mut body = Some(body);
    let usable = proxy.health.usable(endpoints);
    let first = balancer.pick(&usable, key, &proxy.in_flight);
    let attempts = if retryable {
        usable.len().min(MAX_ATTEMPTS)
    } else {
        1
    };
    let header_timeout = timeouts.header.or(proxy.clients.defaults.header);
    let idle = timeouts.idle.or(proxy.clients.defaults.idle);
    let path_query = match &out.query {
        Some(q) => format!("{}?{q}", out.path),
        None => out.path.clone(),
    };
    for n in 0..attempts {
        let endpoint = &usable[(first + n) % usable.len()];
        let (authority, proto) = proxy.clients.split(endpoint);
        let uri = format!("{}://{authority}{path_query}", scheme(proto));
        let mut h = headers.clone();
        // As Skipper: the backend sees its own host; the client's is in X-Forwarded-Host.
        set(&mut h, "host", authority);
        let b = body.take().unwrap_or_else(empty);
        let version = if proto == Proto::H2c {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let mut breq = match Request::builder()
            .method(parts.method.clone())
            .uri(&uri)
            .version(version)
            .body(b)
        {
            Ok(r) => r,
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot build the backend request {uri:?}: {e}"),
                );
            }
        };
        *breq.headers_mut() = h;
        let _load = proxy.in_flight.start(endpoint);
        let sent = std::time::Instant::now();
        let call = proxy.clients.send(timeouts.connect, proto, breq);
        let result = match header_timeout {
            Some(d) => tokio::time::timeout(d, call).await.map_err(|_| ()),
            None => Ok(call.await),
        };
        match result {
            Ok(Ok(mut resp)) => {
                proxy.health.success(endpoint);
                proxy
                    .metrics
                    .observe_backend(endpoint, resp.status().as_u16(), sent.elapsed());
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let upgraded = match upgrade.take() {
                    Some(u) if switching => {
                        let backend = hyper::upgrade::on(&mut resp);
                        tokio::spawn(splice(u.client, backend, endpoint.clone()));
                        true
                    }
                    _ => false,
                };
                let (mut p, b) = resp.into_parts();
                let protocol = p.headers.get(header::UPGRADE).cloned();
                strip_hop_by_hop(&mut p.headers);
                if upgraded && let Some(proto) = protocol {
                    p.headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    p.headers.insert(header::UPGRADE, proto);
                }
                // The client's protocol, not the backend's (an HTTP/1.0 backend must not
                // make the answer to an HTTP/1.1 client a 1.0 one).
                p.version = parts.version;
                let b = b.map_err(BoxError::from);
                let b = match idle {
                    Some(d) => IdleBody::new(b.boxed(), d).boxed(),
                    None => b.boxed(),
                };
                let mut r = Response::from_parts(p, b);
                r.extensions_mut().insert(Endpoint(endpoint.clone()));
                return r;
            }
            Ok(Err(e)) => {
                proxy.metrics.backend_error(endpoint);
                proxy.health.failure(endpoint);
                let timeout = timed_out(&e);
                tracing::warn!(endpoint, error = %e, connect = e.is_connect(), "backend request failed");
                if e.is_connect() && n + 1 < attempts {
                    proxy.metrics.retry();
                    continue;
                }
                return if timeout {
                    plain(
                        StatusCode::GATEWAY_TIMEOUT,
                        &format!("backend {endpoint}: connect timed out"),
                    )
                } else {
                    plain(
                        StatusCode::BAD_GATEWAY,
                        &format!("backend {endpoint} failed"),
                    )
                };
            }
            Err(()) => {
                proxy.metrics.backend_error(endpoint);
                proxy.health.failure(endpoint);
                tracing::warn!(endpoint, "backend gave no response headers in time");
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("backend {endpoint}: no response in time"),
                );
            }
        }
    }
    plain(StatusCode::BAD_GATEWAY, "no backend endpoint answered")
}

/// Once both sides have switched protocols, copies bytes both ways until either ends.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    endpoint: String,
) {
    match tokio::try_join!(client, backend) {
        Ok((c, b)) => {
            let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
                tracing::debug!(endpoint, error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::warn!(endpoint, error = %e, "protocol switch failed"),
    }
}

/// How long a `tee` copy may take before it is dropped.
const SHADOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a copy of the request to `endpoint` in the background; its answer is read and
/// dropped, its failures only logged.
pub fn shadow(
    up: &Upstream,
    endpoint: &str,
    rewrite: Option<&(regex::Regex, String)>,
    parts: &http::request::Parts,
    out: &Outgoing,
    host: &str,
    body: Bytes,
) {
    let mut headers = out.headers.clone();
    strip_hop_by_hop(&mut headers);
    forwarding_headers(
        &mut headers,
        host,
        SocketAddr::new(out.remote, 0),
        out.proto,
    );
    let (authority, proto) = up.clients.split(endpoint);
    set(&mut headers, "host", authority);
    let path = match rewrite {
        Some((re, with)) => re.replace_all(&out.path, with.as_str()).into_owned(),
        None => out.path.clone(),
    };
    let uri = match &out.query {
        Some(q) => format!("{}://{authority}{path}?{q}", scheme(proto)),
        None => format!("{}://{authority}{path}", scheme(proto)),
    };
    let req = Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(super::body::full(body));
    let mut req = match req {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(uri, error = %e, "tee: cannot build the copy");
            return;
        }
    };
    *req.headers_mut() = headers;
    let call = up.clients.send(None, proto, req);
    let endpoint = endpoint.to_string();
    tokio::spawn(async move {
        let sent = async {
            let resp = call.await?;
            // Read the answer so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(())
        };
        match tokio::time::timeout(SHADOW_TIMEOUT, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(endpoint, error = %e, "tee copy failed"),
            Err(_) => tracing::warn!(endpoint, "tee copy timed out"),
        }
    });
}

/// A response body that fails when the backend pauses longer than `idle` between frames
/// (the client's connection is then cut, as the body cannot be completed).
pub struct IdleBody {
    inner: Body,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleBody {
    pub fn new(inner: Body, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    tracing::warn!(
                        idle_ms = this.idle.as_millis() as u64,
                        "backend body paused too long; response cut"
                    );
                    Poll::Ready(Some(Err("the backend's response paused too long".into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
