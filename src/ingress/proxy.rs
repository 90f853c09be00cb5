//! One request through the ingress: match it (following `<loopback>` routes), run the
//! filters, then answer from a filter, a `<shunt>`, or a backend endpoint picked by the
//! route's balancer over a keep-alive connection pool; the response goes back through
//! the filters' response side.

use super::body::{Body, full, plain};
use super::filter::{self, Outgoing, Timeouts};
use super::forward::{self, Upstream};
use super::lb::{self, Balancer};
use super::predicate::Req;
use super::resolve::Resolver;
use super::route::Backend;
use super::table::Table;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// `<loopback>` routes may send a request around this many times before it is refused
/// (a loop in the routes must not spin forever).
const MAX_LOOPS: usize = 9;

/// A table and its routes' balancers: swapped as one on reload, so requests in flight
/// finish on the table they started with.
pub struct Live {
    pub table: Table,
    pub balancers: Vec<Balancer>,
}

impl Live {
    pub fn new(table: Table) -> Live {
        let balancers = table
            .routes
            .iter()
            .map(|r| match &r.backend {
                Backend::Lb { algorithm, .. } => Balancer::new(*algorithm),
                _ => Balancer::new(super::route::Algorithm::RoundRobin),
            })
            .collect();
        Live { table, balancers }
    }
}

pub struct Proxy {
    pub live: RwLock<Arc<Live>>,
    pub resolver: Arc<Resolver>,
    pub up: Upstream,
}

impl Proxy {
    pub fn current(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn swap(&self, live: Live) {
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
    }
}

/// Serves one request; never fails (errors become 4xx/5xx responses).
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    proxy.up.metrics.in_flight.fetch_add(1, Relaxed);
    let live = proxy.current();
    let (route, mut resp) = route_request(&proxy, &live, req, remote).await;
    proxy.up.metrics.in_flight.fetch_sub(1, Relaxed);
    let id = route.map_or("(none)", |i| live.table.routes[i].id.as_str());
    proxy
        .up
        .metrics
        .observe(id, resp.status().as_u16(), started.elapsed());
    resp.headers_mut().remove(header::CONNECTION);
    Ok(resp)
}

/// The response, and the index of the last route that matched.
async fn route_request(
    proxy: &Proxy,
    live: &Live,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> (Option<usize>, Response<Body>) {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let mut out = Outgoing {
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(String::from),
        headers: std::mem::take(&mut parts.headers),
    };
    // (route, how many of its filters ran), for the response side.
    let mut chain: Vec<(usize, usize)> = vec![];
    let mut cookie: Option<String> = None;
    let mut last = None;
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
            let (ran, served) = filter::run_request(&route.filters, &mut out);
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
                    let endpoints: Vec<String> = targets
                        .iter()
                        .flat_map(|t| proxy.resolver.endpoints(t))
                        .collect();
                    if endpoints.is_empty() {
                        break 'routing plain(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the route's backends have no endpoints",
                        );
                    }
                    let key = Req {
                        method: &parts.method,
                        path: &out.path,
                        query: None,
                        host: &host,
                        headers: &out.headers,
                        remote: remote.ip(),
                    }
                    .source()
                    .to_string();
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
        filter::run_response(
            &live.table.routes[*i].filters,
            *ran,
            &mut status,
            &mut headers,
        );
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
