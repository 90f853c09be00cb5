//! `knit ingress serve`: the listener (HTTP/1.1 and h2c), the routes file watched and
//! reloaded without a restart (a file that does not load is refused whole and the old
//! table stays), `knit://` endpoints re-read from the store, the metrics endpoint, and
//! graceful shutdown on SIGTERM or SIGINT (stop accepting, let requests in flight
//! finish, then exit).

use super::accesslog::AccessLog;
use super::forward::{Defaults, Upstream};
use super::health::Health;
use super::proxy::{self, Live, Proxy};
use super::resolve::Resolver;
use super::route::{Backend, Target};
use super::table::{LoadError, Table};
use crate::error::{Error, Result};
use crate::store::Store;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Config {
    pub listen: SocketAddr,
    /// The routes file (eskip), if any; merged with the routes kept in the store.
    pub routes: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub state_dir: PathBuf,
    /// How often the routes file is looked at.
    pub reload: Duration,
    /// Backend timeouts where a route sets none: connect, response headers, pauses in
    /// the response body.
    pub connect_timeout: Duration,
    pub response_header_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// A client must send a request's whole head within this (slowloris).
    pub header_read_timeout: Duration,
    /// A request head larger than this is refused with 431 (at least 8 KiB).
    pub max_header_bytes: usize,
    /// Serving threads; 0: one per core.
    pub threads: usize,
    /// Passive health: this many failures in a row take an endpoint out (0: never) ...
    pub eject_after: u32,
    /// ... for this long.
    pub eject_for: Duration,
    /// HTTP/2 (h2c) to every backend.
    pub backend_http2: bool,
    /// Where the access log goes: a file, or `-` for standard output.
    pub access_log: Option<String>,
    /// TLS: the certificate chain and key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The CAs (PEM) `https://` backends are verified against; the system's without it.
    pub backend_ca: Option<PathBuf>,
    /// The certificate chain and key (PEM) shown to `https://` backends that ask for one.
    pub backend_cert: Option<PathBuf>,
    pub backend_key: Option<PathBuf>,
    /// TLS clients must show a certificate these CAs (PEM) signed ...
    pub tls_client_ca: Option<PathBuf>,
    /// ... unless this is set: then a client without one is served too (one that shows
    /// a certificate must still show a valid one).
    pub tls_client_optional: bool,
}

/// How long requests in flight get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(30);
/// How long a changed routes file must stay the same before it is loaded.
const SETTLE: Duration = Duration::from_millis(50);
/// How often `knit://` endpoints are re-read from the store.
const RESOLVE_EVERY: Duration = Duration::from_secs(1);
/// weightedRoundRobin's round-trip counts halve every this many resolve ticks (10 s).
const DECAY_TICKS: u32 = 10;
/// How long a metrics scraper may take to send its request's head.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a serving thread closes its backend connections idle too long (pool.rs
/// counts in these).
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// The routes as written: the routes file's text (empty without one) and the routes kept
/// in the store.
#[derive(Debug, Clone, PartialEq, Default)]
struct Sources {
    file: String,
    stored: Vec<(String, String)>,
}

/// The store's routes; none where knit never ran (opening would create a store).
fn stored_routes(state_dir: &Path) -> Result<Vec<(String, String)>> {
    if Store::is_blank(state_dir) {
        return Ok(vec![]);
    }
    Store::open(state_dir)?.ingress_routes()
}

fn load(path: Option<&Path>, state_dir: &Path) -> Result<(Sources, Table)> {
    let file = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::io(format!("reading {}", p.display()), e))?,
        None => String::new(),
    };
    let stored = stored_routes(state_dir)?;
    let shown = path.map_or("(no routes file)".to_string(), |p| p.display().to_string());
    let table = Table::load_merged(&file, &stored).map_err(|e| match e {
        LoadError::Syntax(p) => Error::InFile {
            at: format!("{shown}:{}:{}", p.line, p.col),
            reason: p.message,
        },
        other => Error::InFile {
            at: shown.clone(),
            reason: other.to_string(),
        },
    })?;
    Ok((Sources { file, stored }, table))
}

fn knit_targets(table: &Table) -> Vec<Target> {
    table
        .routes
        .iter()
        .filter_map(|r| match &r.backend {
            Backend::Lb { targets, .. } => Some(targets),
            _ => None,
        })
        .flatten()
        .filter(|t| !matches!(t, Target::Http(_)))
        .cloned()
        .collect()
}

pub fn run(cfg: Config) -> Result<i32> {
    let (text, table) = load(cfg.routes.as_deref(), &cfg.state_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    rt.block_on(serve(cfg, text, table))
}

async fn serve(cfg: Config, text: Sources, table: Table) -> Result<i32> {
    let resolver = Arc::new(Resolver::new(cfg.state_dir.clone()));
    let targets = knit_targets(&table);
    resolver.refresh(targets.iter());
    let identity = cfg.backend_cert.as_deref().zip(cfg.backend_key.as_deref());
    let backend_tls = super::backtls::connector(cfg.backend_ca.as_deref(), identity)?;
    let pools = super::pool::Pools::new(backend_tls, cfg.backend_http2);
    let access = match &cfg.access_log {
        Some(spec) => Some(Arc::new(AccessLog::open(spec)?)),
        None => None,
    };
    let n = table.routes.len();
    // The proxy serves until the process ends: a 'static reference (no count for every
    // request on every thread to touch).
    let proxy: &'static Proxy = Box::leak(Box::new(Proxy::new(
        table,
        resolver.clone(),
        Upstream {
            pools,
            defaults: Defaults {
                connect: cfg.connect_timeout,
                header: cfg.response_header_timeout,
                idle: cfg.idle_timeout,
            },
            health: Health::new(cfg.eject_after, cfg.eject_for),
            in_flight: Default::default(),
            trips: Default::default(),
            metrics: Default::default(),
            tag_endpoints: cfg.access_log.is_some(),
        },
        access,
    )));
    // One listener; its connections are dealt to the serving threads in turn, so each
    // gets as many (SO_REUSEPORT listeners per thread leave the spread to a hash of the
    // addresses: uneven for a few dozen keep-alive connections, and the busier thread
    // sets the tail latency).
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let listener = tokio::net::TcpListener::from_std(bound_listener(cfg.listen)?)
        .map_err(|e| Error::io(format!("listening on {}", cfg.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    tracing::info!(listen = %local, routes = n, file = ?cfg.routes, "ingress serving");
    // Scripts and tests wait for this line: the socket is bound from here on.
    let _ = writeln!(std::io::stdout(), "listening on {local} ({n} routes)");
    let _ = std::io::stdout().flush();

    tokio::spawn(watch_routes(
        proxy,
        cfg.routes.clone(),
        cfg.state_dir.clone(),
        text,
        cfg.reload,
    ));
    tokio::spawn(refresh_endpoints(proxy, cfg.state_dir.clone()));
    if let Some(addr) = cfg.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("metrics listener on {addr}"), e))?;
        tokio::spawn(serve_metrics(proxy, l));
    }

    let acceptor = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => {
            let clients = cfg
                .tls_client_ca
                .as_deref()
                .map(|ca| (ca, cfg.tls_client_optional));
            let (acceptor, certs) = super::tls::acceptor(c, k, clients)?;
            tokio::spawn(certs.watch(cfg.reload));
            Some(acceptor)
        }
        _ => None,
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper answers a head over max_buf_size with 431 and closes a connection whose head
    // is not complete within header_read_timeout; neither touches other connections.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        // Websockets over HTTP/2 (RFC 8441).
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("SIGTERM handler", e))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::io("SIGINT handler", e))?;
    // Each serving thread has a single-threaded runtime: a request, its backend
    // connection and its answer stay on one thread.
    let mut workers = vec![];
    let mut queues = vec![];
    for n in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Worker {
            proxy,
            builder: builder.clone(),
            acceptor: acceptor.clone(),
            handshake: cfg.header_read_timeout,
        };
        let worker = std::thread::Builder::new()
            .name(format!("knit-serve-{n}"))
            .spawn(move || w.run(rx))
            .map_err(|e| Error::io("starting a serving thread", e))?;
        workers.push(worker);
        queues.push(tx);
    }
    let mut turn = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Handed over as a std socket: the serving thread registers it with its
                // own runtime.
                let Ok(stream) = stream.into_std() else { continue };
                let _ = queues[turn % queues.len()].send((stream, peer));
                turn = turn.wrapping_add(1);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    drop(listener);
    // A closed queue tells its thread to finish what it has and stop.
    drop(queues);
    for w in workers {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    Ok(0)
}

/// The TCP listener, non-blocking, with SO_REUSEADDR (a restart binds at once).
fn bound_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let io = |e| Error::io(format!("listening on {addr}"), e);
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(io)?;
    s.set_reuse_address(true).map_err(io)?;
    s.set_nonblocking(true).map_err(io)?;
    s.bind(&addr.into()).map_err(io)?;
    s.listen(1024).map_err(io)?;
    Ok(s.into())
}

/// One serving thread: the connections dealt to it, the shared proxy, its own runtime
/// and backend pools.
struct Worker {
    proxy: &'static Proxy,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handshake: Duration,
}

type Accepted = (std::net::TcpStream, SocketAddr);

impl Worker {
    fn run(self, queue: tokio::sync::mpsc::UnboundedReceiver<Accepted>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a serving thread's runtime");
                return;
            }
        };
        rt.block_on(self.serve(queue));
    }

    async fn serve(self, mut queue: tokio::sync::mpsc::UnboundedReceiver<Accepted>) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        // This thread's idle backend connections are closed after a while unused, and its
        // handle on the table follows reloads (an idle thread would otherwise keep a
        // replaced table, however large, until its next request).
        let proxy = self.proxy;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                super::pool::sweep();
                drop(proxy.current());
            }
        });
        while let Some((stream, peer)) = queue.recv().await {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => self.connection(s, peer, &graceful),
                Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
            }
        }
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {DRAIN:?}; exiting anyway");
        }
    }

    fn connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        graceful: &hyper_util::server::graceful::GracefulShutdown,
    ) {
        let _ = stream.set_nodelay(true);
        let p = self.proxy;
        let watcher = graceful.watcher();
        let (builder, acceptor) = (self.builder.clone(), self.acceptor.clone());
        let handshake = self.handshake;
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                let svc = service_fn(move |req| proxy::handle(p, req, peer, false, None));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let _ = watcher.watch(conn.into_owned()).await;
                return;
            };
            // A handshake gets as long as a request head (slowloris over TLS).
            let s = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // The client's certificates, verified in the handshake (--tls-client-ca).
            let certs: Option<super::run::ClientCerts> = s
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|d| bytes::Bytes::copy_from_slice(d)).collect());
            let svc = service_fn(move |req| proxy::handle(p, req, peer, true, certs.clone()));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(s), svc);
            let _ = watcher.watch(conn.into_owned()).await;
        });
    }
}

/// Polls the routes file and the store's routes; a change that loads replaces the table
/// (requests in flight keep the old one), one that does not is logged and ignored.
async fn watch_routes(
    proxy: &'static Proxy,
    path: Option<PathBuf>,
    state_dir: PathBuf,
    mut last: Sources,
    every: Duration,
) {
    let read_file = |p: &Option<PathBuf>| match p {
        // A routes file is small: reading it inline costs less than a thread hop.
        Some(p) => std::fs::read_to_string(p),
        None => Ok(String::new()),
    };
    let mut store = StoreWatch::new(state_dir);
    loop {
        tokio::time::sleep(every).await;
        let file = match read_file(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = ?path, error = %e, "routes file unreadable; keeping the current routes");
                continue;
            }
        };
        // The store is read only when it was written since the last look.
        let stored = match store.changed() {
            None => last.stored.clone(),
            Some(s) => match s.ingress_routes() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "the store's routes cannot be read; keeping the current routes");
                    store.forget();
                    continue;
                }
            },
        };
        let now = Sources { file, stored };
        if now == last {
            continue;
        }
        // A file written in place (not renamed over) can be caught half written: take it
        // only once two reads a moment apart agree.
        if now.file != last.file {
            tokio::time::sleep(SETTLE).await;
            if read_file(&path).ok().as_deref() != Some(now.file.as_str()) {
                continue;
            }
        }
        match Table::load_merged(&now.file, &now.stored) {
            Ok(table) => {
                let n = table.routes.len();
                // Resolved and swapped in under one lock: a pruning pass sees the old table
                // with the old answers or the new table with the new ones.
                let _ = tokio::task::spawn_blocking(move || {
                    let targets = knit_targets(&table);
                    let _resolving = proxy.resolver.lock();
                    proxy.resolver.refresh_locked(targets.iter());
                    proxy.swap(Live::new(table));
                })
                .await;
                tracing::info!(file = ?path, stored = now.stored.len(), routes = n, "routes reloaded");
            }
            Err(e) => {
                tracing::error!(file = ?path, error = %e, "routes refused; keeping the current routes");
            }
        }
        last = now;
    }
}

/// Whether the store was written since the last look: SQLite's data_version on a
/// connection kept open, as the DNS daemon polls it. The store is opened once it exists
/// (opening a blank state directory would create one).
struct StoreWatch {
    dir: PathBuf,
    store: Option<Store>,
    seen: Option<i64>,
}

impl StoreWatch {
    fn new(dir: PathBuf) -> StoreWatch {
        StoreWatch {
            dir,
            store: None,
            seen: None,
        }
    }

    /// The store, if it changed since the last call (the first look counts as a change).
    fn changed(&mut self) -> Option<&Store> {
        if self.store.is_none() && !Store::is_blank(&self.dir) {
            self.store = Store::open(&self.dir).ok();
        }
        let version = match self.store.as_ref()?.data_version() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the store cannot be read; opening it again");
                self.forget();
                return None;
            }
        };
        if self.seen == Some(version) {
            return None;
        }
        self.seen = Some(version);
        self.store.as_ref()
    }

    /// Drops the connection (a failed read): the next look opens the store again.
    fn forget(&mut self) {
        self.store = None;
        self.seen = None;
    }
}

/// Re-reads the `knit://` endpoints of the current table from the store; when the table
/// or an endpoint changed, forgets what was kept for endpoints and routes now unused.
async fn refresh_endpoints(proxy: &'static Proxy, state_dir: PathBuf) {
    let mut store = StoreWatch::new(state_dir);
    let mut table = 0;
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(RESOLVE_EVERY).await;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(DECAY_TICKS) {
            proxy.up.trips.decay();
        }
        let live = proxy.current();
        let targets = knit_targets(&live.table);
        // Unchanged store and table: the endpoints are what they were.
        let written = !targets.is_empty() && store.changed().is_some();
        let now = Arc::as_ptr(&*live) as usize;
        if !written && now == table {
            continue;
        }
        let swapped = now != table;
        table = now;
        drop(live);
        // One hop to a blocking thread for the store and the pruning both.
        let _ = tokio::task::spawn_blocking(move || {
            let moved = proxy.resolver.refresh(targets.iter());
            if swapped || moved {
                proxy.forget_unused();
            }
        })
        .await;
    }
}

async fn serve_metrics(proxy: &'static Proxy, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let p = proxy;
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body =
                    p.up.metrics
                        .render(&p.up.health.ejected(), &p.up.in_flight.all());
                async move {
                    let mut r =
                        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            // A scraper that never finishes its request is let go, as clients are.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(METRICS_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
