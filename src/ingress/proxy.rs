//! One request through the ingress: match it (following `<loopback>` routes), run the
//! filters, then answer from a filter, a `<shunt>`, or a backend endpoint picked by the
//! route's balancer over a keep-alive connection pool; the response goes back through
//! the filters' response side.

use super::accesslog::{AccessLog, Entry, Logged, Pending, now_rfc3339};
use super::bodies::{Captured, Compressed, Encoding, Throttled};
use super::body::{Body, BoxError, empty, full, plain};
use super::filter::Timeouts;
use super::forward::{self, Upstream};
use super::lb::{self, Balancer};
use super::metrics::RouteStats;
use super::predicate::Req;
use super::resolve::Resolver;
use super::route::{Backend, Target};
use super::run::{self, ClientCerts, Effects, Outgoing};
use super::table::Table;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

/// `<loopback>` routes may send a request around this many times before it is refused
/// (a loop in the routes must not spin forever).
const MAX_LOOPS: usize = 9;

/// A table and its routes' balancers: swapped as one on reload, so requests in flight
/// finish on the table they started with.
pub struct Live {
    pub table: Table,
    pub balancers: Vec<Balancer>,
    /// Per route: its endpoints when they are all fixed URLs (no `knit://` target to
    /// resolve), so a request to it copies none.
    pub fixed: Vec<Option<Vec<String>>>,
    /// Per route: its figures, found in the metrics at its first request (a route never
    /// asked for has none, so 100,000 routes cost no figures up front).
    stats: Vec<OnceLock<Arc<RouteStats>>>,
}

impl Live {
    pub fn new(table: Table) -> Live {
        let stats = table.routes.iter().map(|_| OnceLock::new()).collect();
        let balancers = table
            .routes
            .iter()
            .map(|r| match &r.backend {
                Backend::Lb { algorithm, .. } => Balancer::new(*algorithm),
                _ => Balancer::new(super::route::Algorithm::RoundRobin),
            })
            .collect();
        let fixed = table
            .routes
            .iter()
            .map(|r| match &r.backend {
                Backend::Lb { targets, .. } => targets
                    .iter()
                    .map(|t| match t {
                        Target::Http(authority) => Some(authority.clone()),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            })
            .collect();
        Live {
            table,
            balancers,
            fixed,
            stats,
        }
    }
}

pub struct Proxy {
    live: RwLock<Arc<Live>>,
    /// Bumped by every swap: a thread's copy of the table is current while it matches.
    generation: AtomicU64,
    pub resolver: Arc<Resolver>,
    pub up: Upstream,
    pub access: Option<Arc<AccessLog>>,
}

/// A serving thread's handle on the current table. Requests clone this (a count only
/// their thread touches) rather than the table's own Arc, whose count every thread would
/// write on every request.
pub type Current = Arc<Arc<Live>>;

thread_local! {
    /// This thread's handle on the table, and the generation it is of.
    static CURRENT: std::cell::RefCell<Option<(u64, Current)>> =
        const { std::cell::RefCell::new(None) };
}

impl Proxy {
    pub fn new(
        table: Table,
        resolver: Arc<Resolver>,
        up: Upstream,
        access: Option<Arc<AccessLog>>,
    ) -> Proxy {
        Proxy {
            live: RwLock::new(Arc::new(Live::new(table))),
            generation: AtomicU64::new(1),
            resolver,
            up,
            access,
        }
    }

    /// The table now. One atomic load per request while it is unchanged; the lock is
    /// taken once per thread after a swap.
    pub fn current(&self) -> Current {
        let generation = self.generation.load(Ordering::Acquire);
        CURRENT.with_borrow_mut(|c| match c {
            Some((g, live)) if *g == generation => live.clone(),
            _ => {
                let live = Arc::new(self.live.read().unwrap_or_else(|p| p.into_inner()).clone());
                *c = Some((generation, live.clone()));
                live
            }
        })
    }

    pub fn swap(&self, live: Live) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// One request in the in-flight gauge while it lives.
struct Counted<'a>(&'a super::shard::Gauge);

impl<'a> Counted<'a> {
    fn new(gauge: &'a super::shard::Gauge) -> Counted<'a> {
        gauge.add(1);
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// Serves one request; never fails (errors become 4xx/5xx responses).
pub async fn handle(
    proxy: &'static Proxy,
    req: Request<Incoming>,
    remote: SocketAddr,
    tls: bool,
    certs: Option<ClientCerts>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    // Counted down on drop: also when the client goes away and hyper drops this future.
    let counted = Counted::new(&proxy.up.metrics.in_flight);
    let live = proxy.current();
    let entry = proxy.access.as_ref().map(|log| {
        let h = req.headers();
        let text =
            |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(String::from);
        let entry = Entry {
            time: now_rfc3339(),
            remote: remote.ip().to_string(),
            method: req.method().to_string(),
            host: text(header::HOST)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default(),
            uri: req
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string()),
            proto: format!("{:?}", req.version()),
            status: 0,
            bytes: 0,
            duration_ms: 0.0,
            route: None,
            endpoint: None,
            user_agent: text(header::USER_AGENT),
            complete: false,
        };
        Pending::new(log.clone(), entry, started)
    });
    let (route, mut resp) = route_request(proxy, &live, req, remote, tls, certs).await;
    drop(counted);
    let status = resp.status().as_u16();
    match route {
        Some(i) => live.stats[i]
            .get_or_init(|| proxy.up.metrics.route(&live.table.routes[i].id))
            .observe(status, started.elapsed()),
        None => proxy
            .up
            .metrics
            .observe_unmatched(status, started.elapsed()),
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().remove(header::CONNECTION);
    }
    if let Some((log, mut e)) = entry.and_then(Pending::take) {
        e.status = resp.status().as_u16();
        e.route = route.map(|i| live.table.routes[i].id.clone());
        e.endpoint = resp
            .extensions()
            .get::<forward::Endpoint>()
            .map(|x| x.0.clone());
        let b = std::mem::replace(resp.body_mut(), empty());
        *resp.body_mut() = Logged::new(b, log, e, started).boxed();
    }
    Ok(resp)
}

/// The response, and the index of the last route that matched.
async fn route_request(
    proxy: &Proxy,
    live: &Live,
    req: Request<Incoming>,
    remote: SocketAddr,
    tls: bool,
    certs: Option<ClientCerts>,
) -> (Option<usize>, Response<Body>) {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let mut upgrade = super::upgrade::Upgrade::of(&mut parts);
    let accept = parts
        .headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut out = Outgoing {
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(String::from),
        headers: std::mem::take(&mut parts.headers),
        remote: remote.ip(),
        user: None,
        proto: if tls { "https" } else { "http" },
        client_certs: certs,
    };
    // Only tlsPassClientCertificates() speaks for a client's certificate: a client never
    // does, on any route.
    out.headers.remove(run::X_FORWARDED_TLS_CLIENT_CERT);
    let mut body: Body = body.map_err(BoxError::from).boxed();
    let mut captured = None;
    // (route, how many of its filters ran), for the response side.
    let mut chain: Vec<(usize, usize)> = vec![];
    let mut cookie: Option<String> = None;
    let mut last = None;
    // What the filters of the routes that ran ask around the backend call (worked out
    // when a backend is called, else after).
    let mut effects: Option<Effects> = None;
    let mut resp = 'routing: {
        for _ in 0..MAX_LOOPS {
            let view = Req {
                method: &parts.method,
                path: &out.path,
                query: out.query.as_deref(),
                host: &host,
                headers: &out.headers,
                remote: remote.ip(),
            };
            let Some(i) = live.table.lookup_index(&view, &mut lb::random_f64) else {
                break 'routing plain(StatusCode::NOT_FOUND, "no route matches");
            };
            let route = &live.table.routes[i];
            if let Some((name, value)) = &route.sticky
                && view.cookie(name).is_none()
            {
                cookie = Some(format!("{name}={value}; Path=/"));
            }
            last = Some(i);
            let (ran, served) = run::run_request(&route.filters, &mut out).await;
            chain.push((i, ran));
            if let Some(s) = served {
                let mut r = Response::new(full(s.body));
                *r.status_mut() = s.status;
                *r.headers_mut() = s.headers;
                break 'routing r;
            }
            match &route.backend {
                Backend::Shunt => break 'routing plain(StatusCode::NOT_FOUND, ""),
                Backend::Loopback => continue,
                Backend::Lb { targets, .. } => {
                    let endpoints: Cow<[String]> = match &live.fixed[i] {
                        Some(e) => Cow::Borrowed(e),
                        None => Cow::Owned(
                            targets
                                .iter()
                                .flat_map(|t| proxy.resolver.endpoints(t))
                                .collect(),
                        ),
                    };
                    if endpoints.is_empty() {
                        break 'routing plain(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the route's backends have no endpoints",
                        );
                    }
                    // The client's address is the hash key (only consistentHash uses one).
                    let key = if live.balancers[i].hashes() {
                        super::predicate::client_ip(&out.headers, remote.ip()).to_string()
                    } else {
                        String::new()
                    };
                    let e = effects.insert(Effects::of(
                        chain
                            .iter()
                            .map(|(i, ran)| (live.table.routes[*i].filters.as_slice(), *ran)),
                    ));
                    if let Some(n) = e.audit {
                        let (c, kept) = Captured::new(body, n);
                        body = c.boxed();
                        captured = Some(kept);
                    }
                    if !e.tee.is_empty() {
                        match tee(&proxy.up, &e.tee, &parts, &out, &host, body).await {
                            Ok(b) => body = b,
                            Err(r) => break 'routing r,
                        }
                    }
                    let headers = std::mem::take(&mut out.headers);
                    break 'routing forward::forward(
                        &proxy.up,
                        &live.balancers[i],
                        Timeouts::of(&route.filters),
                        &parts,
                        &out,
                        headers,
                        body,
                        &host,
                        remote,
                        &endpoints,
                        &key,
                        upgrade.take(),
                    )
                    .await;
                }
            }
        }
        plain(
            StatusCode::LOOP_DETECTED,
            "too many <loopback> routes in a row",
        )
    };
    let (mut status, mut headers) = (resp.status(), std::mem::take(resp.headers_mut()));
    for (i, ran) in chain.iter().rev() {
        run::run_response(
            &live.table.routes[*i].filters,
            *ran,
            &mut status,
            &mut headers,
            origin.as_ref(),
        );
    }
    // The filters' effects, if the backend call did not already need them.
    let effects = effects.unwrap_or_else(|| {
        Effects::of(
            chain
                .iter()
                .map(|(i, ran)| (live.table.routes[*i].filters.as_slice(), *ran)),
        )
    });
    if !effects.latency.is_zero() {
        tokio::time::sleep(effects.latency).await;
    }
    if let Some((level, types)) = &effects.compress
        && let Some(enc) = compressible(&parts.method, status, &headers, types, accept.as_deref())
    {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(enc.name()),
        );
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        let b = std::mem::replace(resp.body_mut(), empty());
        *resp.body_mut() = Compressed::new(b, enc, *level).boxed();
    }
    if let Some(rate) = effects.bandwidth {
        let b = std::mem::replace(resp.body_mut(), empty());
        *resp.body_mut() = Throttled::new(b, rate).boxed();
    }
    if effects.audit.is_some() {
        let kept = captured.map(|k| k.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let line = serde_json::json!({
            "audit": last.map(|i| live.table.routes[i].id.as_str()),
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "remote": remote.ip().to_string(),
            "user": out.user,
            "status": status.as_u16(),
            "requestBody": kept.map(|k| String::from_utf8_lossy(&k).into_owned()),
        });
        // One line per request; a closed stderr must not fail the request.
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    if let Some(c) = cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        headers.append(header::SET_COOKIE, v);
    }
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    (last, resp)
}

/// The encoding to compress a response with, if it should be: the client accepts one, the
/// content type is listed, and it is not already encoded (nor bodiless).
fn compressible(
    method: &http::Method,
    status: StatusCode,
    headers: &http::HeaderMap,
    types: &[String],
    accept: Option<&str>,
) -> Option<Encoding> {
    if method == http::Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || headers.contains_key(header::CONTENT_ENCODING)
    {
        return None;
    }
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !types.iter().any(|t| t.eq_ignore_ascii_case(mime)) {
        return None;
    }
    Encoding::accepted(accept?)
}

/// The largest request body copied for `tee` (larger or unsized ones are not copied).
const TEE_MAX: u64 = 1 << 20;

/// Sends copies of the request to the `tee` endpoints (answers ignored); returns the body
/// for the real backend (read whole when copied), or the answer when the client's body
/// could not be read.
async fn tee(
    up: &Upstream,
    to: &[(String, Option<(regex::Regex, String)>)],
    parts: &http::request::Parts,
    out: &Outgoing,
    host: &str,
    body: Body,
) -> Result<Body, Response<Body>> {
    let size = hyper::body::Body::size_hint(&body).exact();
    let bytes = match size {
        Some(n) if n <= TEE_MAX => match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                tracing::warn!(error = %e, "reading the request body for tee failed");
                return Err(plain(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ));
            }
        },
        _ => {
            tracing::warn!("tee: request body too large or of unknown size; not copied");
            return Ok(body);
        }
    };
    for (endpoint, rewrite) in to {
        forward::shadow(
            up,
            endpoint,
            rewrite.as_ref(),
            parts,
            out,
            host,
            bytes.clone(),
        );
    }
    Ok(full(bytes))
}
