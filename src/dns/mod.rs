//! Container DNS, served by `knit daemon`: sandboxes resolve each other by name (and alias)
//! on the networks they share; everything else goes to the node's upstream resolvers.
//!
//! The daemon reads the store (never writes it): a watcher thread polls SQLite's
//! data_version every 20 ms and publishes a fresh `Records` snapshot when anything
//! committed, so attach/detach (CLI or CNI) show up in DNS within a few tens of ms, and a
//! restarted daemon serves the same answers.

mod answer_cache;
pub mod metrics;
pub mod records;
pub mod reply;
pub mod server;
mod udp_batch;
pub mod upstream;

use crate::error::{Error, IoContext, Result};
use crate::store::{AttachState, Store};
use records::{Host, NetView, Records};
use server::Shared;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::lock::DAEMON_LOCK;

pub struct Config {
    pub state_dir: PathBuf,
    pub resolv_conf: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub upstream_timeout: Duration,
}

/// The names an attachment answers to: a named sandbox's name, and its aliases.
pub fn host_names(sandbox: &str, aliases: &[String]) -> Vec<String> {
    let mut names = vec![];
    if crate::model::validate_name("sandbox", sandbox).is_ok() {
        names.push(sandbox.to_string());
    }
    names.extend(aliases.iter().cloned());
    names
}

/// Interface index of a link in the daemon's namespace (0 if there is none by that name).
fn ifindex(name: &str) -> u32 {
    match std::ffi::CString::new(name) {
        // SAFETY: a NUL-terminated string that outlives the call.
        Ok(c) => unsafe { libc::if_nametoindex(c.as_ptr()) },
        Err(_) => 0,
    }
}

/// The bridge of each network in `records`, looked up again: differs from the snapshot
/// when a bridge was re-created (reconcile) under the same name.
fn bridges_moved(records: &Records, bridges: &HashMap<i64, String>) -> bool {
    records.networks.iter().any(|n| {
        bridges
            .get(&n.id)
            .is_some_and(|b| ifindex(b) != n.bridge_ifindex)
    })
}

/// A snapshot of everything DNS serves, from the store, with the bridges' interface
/// indexes (who is served depends on the link a query arrives on). Also returns each
/// network's bridge name, to notice a re-created bridge.
pub fn load(store: &Store) -> Result<(Records, HashMap<i64, String>)> {
    let nets = store.networks()?;
    let mut bridges = HashMap::new();
    let views: Vec<NetView> = nets
        .iter()
        .filter(|n| n.serves_dns())
        .map(|n| {
            let bridge = n.bridge.clone().unwrap_or_default();
            let view = NetView {
                id: n.id,
                gateways: n.subnets.iter().map(|s| s.gateway).collect(),
                domain: n.dns_domain.clone(),
                internal: n.internal,
                // A cluster network's reverse names cover every node's blocks.
                subnets: n
                    .subnets
                    .iter()
                    .map(|s| s.subnet)
                    .chain(n.cluster.iter().flat_map(|c| c.subnets.clone()))
                    .collect(),
                bridge_ifindex: ifindex(&bridge),
            };
            bridges.insert(n.id, bridge);
            view
        })
        .collect();
    let others: Vec<_> = nets
        .iter()
        .filter(|n| !n.serves_dns())
        .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
        .collect();
    let mut hosts: Vec<Host> = store
        .all_attachments()?
        .into_iter()
        .filter(|a| a.state == AttachState::Ready)
        .map(|a| Host {
            names: host_names(&a.sandbox, &a.aliases),
            sandbox: a.sandbox,
            network_id: a.network_id,
            ips: a.ips.iter().map(|i| i.addr()).collect(),
        })
        .collect();
    // Sandboxes of cluster networks on other nodes answer by name too (keyed NODE/NAME:
    // they are never clients here).
    for r in store.remote_endpoints()? {
        if let Some(n) = nets
            .iter()
            .find(|n| n.name == r.rec.network && n.cluster.is_some())
        {
            hosts.push(Host {
                names: host_names(&r.rec.sandbox, &r.rec.aliases),
                sandbox: format!("{}/{}", r.rec.node, r.rec.sandbox),
                network_id: n.id,
                ips: r.rec.ips.iter().map(|i| i.addr()).collect(),
            });
        }
    }
    Ok((Records::build(views, hosts).with_subnets(others), bridges))
}

pub use crate::lock::daemon_running;

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    prepare(&s, addr)?;
    udp_batch::recv_pktinfo(&s, addr.is_ipv6())?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    prepare(&s, addr)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Non-blocking, reusable, and free-bind: a gateway address may be missing for a moment
/// (bridge re-created by reconcile) without the listener failing.
fn prepare(s: &socket2::Socket, addr: SocketAddr) -> std::io::Result<()> {
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    } else {
        s.set_freebind_v4(true)?;
    }
    Ok(())
}

/// Polls the store and resolv.conf, publishing snapshots when they change.
fn watch_store(
    state_dir: PathBuf,
    resolv: PathBuf,
    records: watch::Sender<Arc<Records>>,
    upstreams: watch::Sender<Vec<SocketAddr>>,
) {
    let mut rc = upstream::ResolvConf::new(&resolv);
    let _ = upstreams.send(rc.servers.clone());
    let mut store = None;
    let mut last = None;
    let mut bridges = HashMap::new();
    for tick in 0u64.. {
        if store.is_none() {
            store = Store::open(&state_dir).ok();
        }
        if let Some(s) = &store {
            // A bridge re-created under its name has a new index: reload (every 200 ms).
            if tick % 10 == 5 && bridges_moved(&records.borrow(), &bridges) {
                last = None;
            }
            match s.data_version() {
                Ok(v) if Some(v) != last => match load(s) {
                    Ok((r, b)) => {
                        last = Some(v);
                        bridges = b;
                        let _ = records.send(Arc::new(r));
                    }
                    Err(e) => tracing::error!("reading the store: {e}"),
                },
                Ok(_) => {}
                Err(_) => store = None,
            }
        }
        if tick % 50 == 0 && rc.refresh() {
            tracing::info!("upstream resolvers now {:?}", rc.servers);
            let _ = upstreams.send(rc.servers.clone());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Serves `GET /metrics`: DNS, cluster, data plane, build. Anything else is 404 (another
/// path) or 405 (another method). The listener is bound before the daemon starts serving,
/// so a failed bind is fatal rather than a daemon without metrics.
async fn serve_metrics(l: TcpListener, shared: Arc<Shared>, dir: std::path::PathBuf) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let dir = dir.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
                ("GET", "/metrics") => {
                    let mut body = shared.metrics.render();
                    // The store and nft reads block: off the DNS thread.
                    let plane = tokio::task::spawn_blocking(move || {
                        let mut out = String::new();
                        crate::metrics::build_info(&mut out);
                        let r = crate::node::metrics_view::data_plane(&dir, &mut out);
                        (out, r)
                    })
                    .await;
                    match plane {
                        Ok((out, Ok(()))) => {
                            body.push_str(&out);
                            ("200 OK", body)
                        }
                        Ok((_, Err(e))) => ("500 Internal Server Error", format!("{e}\n")),
                        Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                    }
                }
                ("GET", _) => ("404 Not Found", "only /metrics is served\n".to_string()),
                _ => ("405 Method Not Allowed", "only GET /metrics\n".to_string()),
            };
            let head = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

/// Runs the daemon until killed.
pub fn run(cfg: Config) -> Result<i32> {
    std::fs::create_dir_all(&cfg.state_dir).op(|| format!("create {}", cfg.state_dir.display()))?;
    let lock_path = cfg.state_dir.join(DAEMON_LOCK);
    let lock =
        std::fs::File::create(&lock_path).op(|| format!("create {}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own, held for the daemon's lifetime.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::Conflict(format!(
            "another knit daemon is serving {}",
            cfg.state_dir.display()
        )));
    }
    // One thread: a DNS answer is a few microseconds of work, and a single event loop
    // avoids cross-thread wake-ups (and leaves the other cores to the containers).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .op(|| "start async runtime".into())?;
    let metrics = match cfg.metrics {
        Some(addr) => Some(
            rt.block_on(TcpListener::bind(addr))
                .op(|| format!("listen for metrics on {addr} (--metrics)"))?,
        ),
        None => None,
    };
    rt.block_on(serve(cfg, metrics));
    drop(lock);
    Ok(0)
}

async fn serve(cfg: Config, metrics: Option<TcpListener>) {
    let (rec_tx, mut rec_rx) = watch::channel(Arc::new(Records::default()));
    let (up_tx, up_rx) = watch::channel(Vec::new());
    let (dir, resolv) = (cfg.state_dir.clone(), cfg.resolv_conf.clone());
    std::thread::spawn(move || watch_store(dir, resolv, rec_tx, up_tx));
    let shared = Arc::new(Shared {
        forwarder: upstream::Forwarder::new().await,
        records: rec_rx.clone(),
        upstreams: up_rx,
        metrics: Default::default(),
        upstream_timeout: cfg.upstream_timeout,
        tcp_clients: Default::default(),
    });
    if let Some(l) = metrics {
        tokio::spawn(serve_metrics(l, shared.clone(), cfg.state_dir.clone()));
    }
    tracing::info!("serving DNS for {}", cfg.state_dir.display());
    let mut listeners: HashMap<IpAddr, (i64, Vec<JoinHandle<()>>)> = HashMap::new();
    loop {
        let wanted = rec_rx.borrow_and_update().listen_addrs();
        listeners.retain(|ip, (net, tasks)| {
            let keep = wanted.get(ip) == Some(net);
            if !keep {
                tasks.iter().for_each(JoinHandle::abort);
                tracing::info!("stopped listening on {ip}");
            }
            keep
        });
        for (ip, net) in wanted {
            if listeners.contains_key(&ip) {
                continue;
            }
            let addr = SocketAddr::new(ip, 53);
            match (bind_udp(addr), bind_tcp(addr)) {
                (Ok(u), Ok(t)) => {
                    let tasks = vec![
                        tokio::spawn(server::serve_udp(Arc::new(u), net, shared.clone())),
                        tokio::spawn(server::serve_tcp(t, net, shared.clone())),
                    ];
                    tracing::info!("listening on {addr} (udp, tcp)");
                    listeners.insert(ip, (net, tasks));
                }
                (u, t) => tracing::error!("cannot listen on {addr}: {:?} {:?}", u.err(), t.err()),
            }
        }
        if rec_rx.changed().await.is_err() {
            return;
        }
    }
}
