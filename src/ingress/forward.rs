//! A request's way to a backend endpoint: the forwarding headers, the endpoint picked by
//! the route's balancer among those passive health keeps in the rotation, the route's
//! timeouts (connect, response headers, pauses in the response body), and retries of
//! idempotent requests without a body on another endpoint when a connect fails.

use super::body::{Body, BoxError, full, plain};
use super::filter::Timeouts;
use super::health::Health;
use super::lb::Balancer;
use super::lb::InFlight;
use super::metrics::Metrics;
use super::pool::{ConnectError, Pools, SendError};
use super::predicate::X_FORWARDED_FOR;
use super::run::Outgoing;
use super::upgrade::{Switch, Upgrade, splice};
use super::weights::RoundTrips;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// At most this many endpoints are tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// The server-wide timeouts, used where a route sets none.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub connect: Duration,
    pub header: Option<Duration>,
    pub idle: Option<Duration>,
}

/// What requests to backends share: the pools, passive health, the load per endpoint and
/// the figures.
pub struct Upstream {
    pub pools: Pools,
    pub defaults: Defaults,
    pub health: Health,
    pub in_flight: InFlight,
    /// Round trips per endpoint, for weightedRoundRobin.
    pub trips: RoundTrips,
    pub metrics: Metrics,
    /// Name the answering endpoint in each response's extensions (the access log's).
    pub tag_endpoints: bool,
}

/// Headers of one hop only (RFC 9110 7.6.1): never forwarded either way.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names marks the hop-by-hop ones present (most messages carry none,
    // or only Connection: keep-alive); only those are looked up to be removed.
    let mut present = 0u16;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Headers the Connection header names are hop-by-hop too (looked up by the token
    // itself: no name is made for "keep-alive" or "close").
    if present & 1 != 0 {
        let mut values = h.get_all(header::CONNECTION).iter();
        let one = values.next().cloned();
        let more: Vec<HeaderValue> = values.cloned().collect();
        for v in one.iter().chain(&more) {
            for token in v.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                if !token.is_empty() {
                    h.remove(token);
                }
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
}

fn set(h: &mut HeaderMap, name: HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

/// X-Forwarded-For grows by the peer; -Proto and -Host say what the client asked.
pub fn forwarding_headers(h: &mut HeaderMap, host: &str, remote: SocketAddr, proto: &'static str) {
    match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let xff = format!("{prev}, {}", remote.ip());
            set(h, X_FORWARDED_FOR, &xff);
        }
        None => {
            h.insert(X_FORWARDED_FOR, peer_value(remote.ip()));
        }
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // What this client asked, never what it claims an earlier proxy saw. The client's own
    // Host value is reused when it is the one (no copy).
    let own = h
        .get(header::HOST)
        .filter(|v| !host.is_empty() && v.as_bytes() == host.as_bytes())
        .cloned();
    match own {
        Some(v) => {
            h.insert(X_FORWARDED_HOST, v);
        }
        None if !host.is_empty() => set(h, X_FORWARDED_HOST, host),
        None => {
            h.remove(X_FORWARDED_HOST);
        }
    }
}

/// A peer's address as a header value; the last one is kept per thread (a connection's
/// requests, and most of a busy thread's, come from one address).
fn peer_value(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, v)) if *seen == ip => v.clone(),
        _ => {
            let v = HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            *last = Some((ip, v.clone()));
            v
        }
    })
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

/// The URI a backend request carries: origin form (`/path?query`) for HTTP/1.1, absolute
/// for HTTP/2 (its `:scheme` and `:authority`). The client's own URI is reused when the
/// filters left its path and query alone.
fn backend_uri(
    client: &Uri,
    (path, query): (&str, Option<&str>),
    http2: bool,
    scheme: &str,
    authority: &str,
) -> Result<Uri, http::Error> {
    if !http2 && client.scheme().is_none() && client.path() == path && client.query() == query {
        return Ok(client.clone());
    }
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let text = if http2 {
        format!("{scheme}://{authority}{pq}")
    } else {
        pq
    };
    Ok(Uri::try_from(text)?)
}

/// A backend request: the client's method, `uri`, and `headers` (already without
/// hop-by-hop headers, with the forwarding ones) with the backend's own Host, as Skipper
/// does (the client's is in X-Forwarded-Host).
fn backend_request(
    method: &Method,
    uri: Uri,
    http2: bool,
    authority: &str,
    mut headers: HeaderMap,
    body: Body,
) -> Request<Body> {
    set(&mut headers, header::HOST, authority);
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    *req.headers_mut() = headers;
    req
}

/// A copy of a request that has no body.
fn bodiless_copy(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(super::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
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
    let retryable = idempotent(&parts.method) && hyper::body::Body::is_end_stream(&body);
    let usable = proxy.health.usable(endpoints);
    let first = balancer.pick(&usable, key, &proxy.in_flight, &proxy.trips);
    // weightedRoundRobin's weights: how each round trip went.
    let trip = |endpoint: &str, ok: bool| {
        if balancer.weighs() {
            proxy.trips.record(endpoint, ok);
        }
    };
    let attempts = if retryable {
        usable.len().min(MAX_ATTEMPTS)
    } else {
        1
    };
    let connect = timeouts.connect.unwrap_or(proxy.defaults.connect);
    let header_timeout = timeouts.header.or(proxy.defaults.header);
    let idle = timeouts.idle.or(proxy.defaults.idle);
    // Only a failed connect moves on to another endpoint, and nothing was sent then: the
    // request is built once, for the endpoint that took the connection.
    let mut picked = None;
    for n in 0..attempts {
        let endpoint = &usable[(first + n) % usable.len()];
        match proxy.pools.checkout(endpoint, connect).await {
            Ok(conn) => {
                picked = Some((endpoint, conn));
                break;
            }
            Err(e) => {
                proxy.metrics.backend_error(endpoint);
                proxy.health.failure(endpoint);
                trip(endpoint, false);
                tracing::warn!(endpoint, error = %e, "backend connect failed");
                if n + 1 < attempts {
                    proxy.metrics.retry();
                    continue;
                }
                return connect_failed(endpoint, &e);
            }
        }
    }
    let Some((endpoint, conn)) = picked else {
        return plain(StatusCode::BAD_GATEWAY, "no backend endpoint answered");
    };
    let (authority, proto) = proxy.pools.split(endpoint);
    let http2 = conn.http2();
    let reused = conn.may_be_closing();
    let target = (out.path.as_str(), out.query.as_deref());
    let uri = match backend_uri(&parts.uri, target, http2, proto.scheme(), authority) {
        Ok(u) => u,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("cannot build the backend request for {endpoint}: {e}"),
            );
        }
    };
    // A protocol switch is asked for in the backend's terms (it is known only now). An
    // HTTP/2 backend that does not take extended CONNECT cannot switch: that is no failure
    // of the backend (it serves other requests), so its health is not touched, here or
    // when it resets the stream of one.
    let h2_switch = upgrade.is_some() && http2;
    if h2_switch && conn.refuses_extended_connect() {
        tracing::warn!(
            endpoint,
            "an HTTP/2 backend without extended CONNECT: no protocol switch"
        );
        return plain(
            StatusCode::BAD_GATEWAY,
            &format!(
                "backend {endpoint} takes no protocol switch over HTTP/2 (no extended CONNECT)"
            ),
        );
    }
    if let Some(u) = &upgrade {
        u.switch.ask(&mut headers, http2);
    }
    let method = upgrade.as_ref().map_or_else(
        || parts.method.clone(),
        |u| u.switch.method(&parts.method, http2),
    );
    let mut breq = backend_request(&method, uri, http2, authority, headers, body);
    if http2 && let Some(p) = upgrade.as_ref().and_then(|u| u.switch.request_extension()) {
        breq.extensions_mut().insert(p);
    }
    let spare = (retryable && reused).then(|| bodiless_copy(&breq));
    let _load = proxy.in_flight.start(endpoint);
    let sent = std::time::Instant::now();
    let call = proxy.pools.send(endpoint, connect, conn, breq, spare);
    let result = match header_timeout {
        Some(d) => tokio::time::timeout(d, call).await.map_err(|_| ()),
        None => Ok(call.await),
    };
    let mut resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            proxy.metrics.backend_error(endpoint);
            if !(h2_switch && matches!(e, SendError::Exchange(_))) {
                proxy.health.failure(endpoint);
                trip(endpoint, false);
            }
            tracing::warn!(endpoint, error = %e, "backend request failed");
            return match e {
                SendError::Connect(c) => connect_failed(endpoint, &c),
                SendError::Exchange(_) => plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("backend {endpoint} failed"),
                ),
            };
        }
        Err(()) => {
            proxy.metrics.backend_error(endpoint);
            proxy.health.failure(endpoint);
            trip(endpoint, false);
            tracing::warn!(endpoint, "backend gave no response headers in time");
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("backend {endpoint}: no response in time"),
            );
        }
    };
    proxy.health.success(endpoint);
    trip(endpoint, !resp.status().is_server_error());
    proxy
        .metrics
        .observe_backend(endpoint, resp.status().as_u16(), sent.elapsed());
    let switching = match &upgrade {
        Some(_) => Switch::switched(resp.status(), http2),
        None => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
    };
    let switched = match upgrade.take() {
        Some(Upgrade { switch, client }) if switching => {
            if !switch.accepted(resp.headers(), http2) {
                proxy.metrics.backend_error(endpoint);
                tracing::warn!(
                    endpoint,
                    "backend's websocket handshake does not answer its key"
                );
                return plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("backend {endpoint}: a websocket handshake that does not fit its key"),
                );
            }
            let backend = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(
                client,
                backend,
                endpoint.clone(),
                idle.unwrap_or(super::upgrade::TUNNEL_IDLE),
            ));
            Some(switch)
        }
        // A switch nobody asked for cannot be passed on (the client would take the
        // connection as switched; an HTTP/2 client has no 101 at all).
        None if switching => {
            proxy.metrics.backend_error(endpoint);
            tracing::warn!(endpoint, "backend switched protocols unasked");
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("backend {endpoint}: a protocol switch nobody asked for"),
            );
        }
        _ => None,
    };
    let (mut p, b) = resp.into_parts();
    strip_hop_by_hop(&mut p.headers);
    if let Some(switch) = &switched {
        switch.answer(&mut p.status, &mut p.headers, http2);
    }
    // The client's protocol, not the backend's (an HTTP/1.0 backend must not make the
    // answer to an HTTP/1.1 client a 1.0 one).
    p.version = parts.version;
    let b = match idle {
        Some(d) => IdleBody::new(b, d).boxed(),
        None => b,
    };
    let mut r = Response::from_parts(p, b);
    if proxy.tag_endpoints {
        r.extensions_mut().insert(Endpoint(endpoint.clone()));
    }
    r
}

/// The answer when no connection to `endpoint` could be had.
fn connect_failed(endpoint: &str, e: &ConnectError) -> Response<Body> {
    match e {
        ConnectError::TimedOut => plain(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("backend {endpoint}: connect timed out"),
        ),
        ConnectError::Failed(_) => plain(
            StatusCode::BAD_GATEWAY,
            &format!("backend {endpoint} failed"),
        ),
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
    let path = match rewrite {
        Some((re, with)) => re.replace_all(&out.path, with.as_str()).into_owned(),
        None => out.path.clone(),
    };
    let (query, method, client) = (out.query.clone(), parts.method.clone(), parts.uri.clone());
    let connect = up.defaults.connect;
    let endpoint = endpoint.to_string();
    // The pools are the serving thread's: the copy goes out from a task on it.
    let pools = up.pools.clone();
    tokio::spawn(async move {
        let sent = async {
            let conn = pools
                .checkout(&endpoint, connect)
                .await
                .map_err(|e| e.to_string())?;
            let (authority, proto) = pools.split(&endpoint);
            let http2 = conn.http2();
            let target = (path.as_str(), query.as_deref());
            let uri = backend_uri(&client, target, http2, proto.scheme(), authority)
                .map_err(|e| e.to_string())?;
            let req = backend_request(&method, uri, http2, authority, headers, full(body));
            let resp = pools
                .send(&endpoint, connect, conn, req, None)
                .await
                .map_err(|e| e.to_string())?;
            // Read the answer so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            Ok::<_, String>(())
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

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
