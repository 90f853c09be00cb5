//! The cluster agent, a thread of `knit daemon` on a joined node: it keeps the node's
//! lease alive (renewing every third of its TTL, from a thread of its own), lists knit's
//! etcd prefix, then watches
//! it from the listed revision and syncs the node after every change. etcd being down
//! changes nothing in the kernel: the agent logs, counts, retries with backoff, and
//! re-lists and re-syncs once etcd answers (also after a compaction or a lost lease,
//! which it replaces, keeping its blocks if they are still free).

use crate::cluster::etcd::Etcd;
use crate::cluster::keys::{self, PREFIX};
use crate::cluster::peers::Desired;
use crate::cluster::state::ClusterState;
use crate::cluster::status::STATUS;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::node::cluster::node_record;
use crate::store::Membership;
use etcd_client::{EventType, WatchOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One line of the agent's log, with the wall-clock time (peers' logs line up).
fn log(msg: std::fmt::Arguments) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    tracing::info!(
        "cluster [{}.{:03}]: {msg}",
        now.as_secs(),
        now.subsec_millis()
    );
}

/// The lease the renewer keeps alive (set by each round once registered) and how to
/// reach etcd; `lost` is raised when etcd says the lease is gone.
struct Renewal {
    lease: Option<(i64, i64, crate::model::cluster::EtcdAccess)>,
    lost: bool,
}

static RENEWAL: std::sync::Mutex<Renewal> = std::sync::Mutex::new(Renewal {
    lease: None,
    lost: false,
});

/// Renews the node's lease every third of its TTL on a thread of its own, so a sync that
/// waits (for the kernel lock, behind a long command) never lets the lease run out.
fn renewer() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(format_args!("lease renewal: cannot start a runtime: {e}"));
            return;
        }
    };
    rt.block_on(async {
        let mut client: Option<(i64, Etcd)> = None;
        loop {
            let want = RENEWAL.lock().ok().and_then(|r| r.lease.clone());
            let Some((lease, ttl, access)) = want else {
                client = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            if client.as_ref().is_none_or(|(l, _)| *l != lease) {
                client = Etcd::connect(&access).await.ok().map(|e| (lease, e));
            }
            let renewed = match &mut client {
                Some((_, etcd)) => etcd.keep_alive(lease).await,
                None => Err(Error::Conflict("etcd unreachable".into())),
            };
            match renewed {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if let Ok(mut r) = RENEWAL.lock() {
                        r.lost = true;
                    }
                }
                Err(e) => {
                    log(format_args!("renewing lease {lease}: {e}"));
                    client = None;
                }
            }
            tokio::time::sleep(Duration::from_secs((ttl / 3).max(1) as u64)).await;
        }
    });
}

/// Starts the agent on its own thread (the DNS server keeps its own loop).
pub fn spawn(state_dir: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("knit-lease".into())
        .spawn(renewer);
    let _ = std::thread::Builder::new()
        .name("knit-cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log(format_args!("cannot start a runtime: {e}"));
                    return;
                }
            };
            rt.block_on(run(&state_dir));
        });
}

async fn run(dir: &Path) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match round(dir).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                STATUS.etcd_up.store(0, Relaxed);
                STATUS.etcd_errors.fetch_add(1, Relaxed);
                log(format_args!(
                    "{e}; kernel state kept, retrying in {backoff:?}"
                ));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(4));
            }
        }
    }
}

fn membership(dir: &Path) -> Result<Option<Membership>> {
    Node::open(dir, false)?.store.membership()
}

/// Connects, (re)registers, lists, syncs, then watches until something breaks.
async fn round(dir: &Path) -> Result<()> {
    let Some(mut m) = membership(dir)? else {
        if let Ok(mut r) = RENEWAL.lock() {
            r.lease = None;
        }
        // Not (or no longer) in a cluster: look again later.
        tokio::time::sleep(Duration::from_secs(1)).await;
        return Ok(());
    };
    crate::nft::keeper::hold();
    let mut etcd = Etcd::connect(&m.access()).await?;
    STATUS.etcd_up.store(1, Relaxed);
    if etcd.ttl_left(m.lease_id).await?.is_none() {
        let lease = etcd.grant(m.lease_ttl).await?;
        Node::open(dir, false)?.store.set_lease(lease)?;
        log(format_args!("lease {} expired, now {lease}", m.lease_id));
        m.lease_id = lease;
    }
    etcd.put(
        &keys::node(&m.name),
        serde_json::to_vec(&node_record(&m)).unwrap_or_default(),
        Some(m.lease_id),
    )
    .await?;
    let (mut state, rev, problems) = etcd.list().await?;
    STATUS.relists.fetch_add(1, Relaxed);
    for p in problems {
        log(format_args!("{p}"));
    }
    // Each round starts from the kernel as it is; later syncs diff against memory.
    let mut mem = Memory {
        store: None,
        last: None,
        read_at: std::time::Instant::now(),
        reread: reread_interval(),
    };
    sync(dir, &mut etcd, &m, &mut state, &mut mem).await?;
    // Policy on other nodes' sandboxes, recomputed once per round (a mirror cut short
    // by a crash or a refused batch is made right here).
    if let Some(store) = mem.store.take() {
        let mut node = Node::with_store(dir, store)?;
        node.resync_remote_policy()?;
        mem.store = Some(node.into_store());
    }
    log(format_args!(
        "{} in sync at revision {rev} ({} nodes)",
        m.name,
        state.nodes.len()
    ));
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(rev + 1);
    let (_watcher, mut stream) = etcd
        .client
        .watch(PREFIX, Some(opts))
        .await
        .map_err(|e| Error::Conflict(format!("etcd: watch: {e}")))?;
    if let Ok(mut r) = RENEWAL.lock() {
        r.lease = Some((m.lease_id, m.lease_ttl, m.access()));
        r.lost = false;
    }
    let mut renew = tokio::time::interval(Duration::from_secs(1));
    renew.tick().await;
    // Local attaches and detaches (CLI, CNI) change the store, not etcd: look every
    // 100 ms and publish what changed.
    let mut local = tokio::time::interval(Duration::from_millis(100));
    let store = crate::store::Store::open(dir)?;
    let mut version = store.data_version()?;
    loop {
        tokio::select! {
            _ = local.tick() => {
                let v = store.data_version()?;
                if v != version {
                    version = v;
                    // The round's open store, not a fresh open: every sync writes the store
                    // too (what the firewall holds), so this runs after each watch event.
                    let store = match mem.store.take() {
                        Some(s) => s,
                        None => crate::store::Store::open(dir)?,
                    };
                    let node = Node::with_store(dir, store)?;
                    node.publish_endpoints(&mut etcd, &m, &mut state).await?;
                    mem.store = Some(node.into_store());
                }
            }
            msg = stream.message() => {
                let resp = msg
                    .map_err(|e| Error::Conflict(format!("etcd: watch: {e}")))?
                    .ok_or_else(|| Error::Conflict("etcd: watch ended".into()))?;
                if resp.canceled() || resp.compact_revision() > 0 {
                    // Events were compacted away: re-list (and diff) rather than miss any.
                    return Err(Error::Conflict(format!(
                        "etcd: watch canceled (compacted at {}); re-listing",
                        resp.compact_revision()
                    )));
                }
                // Left the cluster meanwhile (`knit node leave`): start over.
                let now = match &mem.store {
                    Some(s) => s.membership()?,
                    None => membership(dir)?,
                };
                if now.is_none_or(|now| now.name != m.name) {
                    return Ok(());
                }
                crate::trace::phase("cluster: watch event");
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Ok(key) = kv.key_str() else { continue };
                    let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                    if let Some(p) = state.apply(key, value, kv.lease()) {
                        log(format_args!("{p}"));
                    }
                }
                sync(dir, &mut etcd, &m, &mut state, &mut mem).await?;
            }
            _ = renew.tick() => {
                crate::nft::keeper::hold();
                if RENEWAL.lock().is_ok_and(|r| r.lost) {
                    return Err(Error::Conflict("the node's lease expired".into()));
                }
                // The periodic kernel re-read runs here, between events, never in the
                // sync that answers a watch event (that one diffs against memory, so a
                // new peer is programmed without a full dump on the way).
                if mem.read_at.elapsed() > mem.reread {
                    mem.last = None;
                    sync(dir, &mut etcd, &m, &mut state, &mut mem).await?;
                }
            }
        }
    }
}

/// What a round keeps between syncs: the store (opened once) and what the previous sync
/// programmed (None: read the kernel).
struct Memory {
    store: Option<crate::store::Store>,
    last: Option<Desired>,
    /// When the kernel was last read: after `reread` it is read again, so entries someone
    /// else removed (an underlay flap flushes its routes) come back.
    read_at: std::time::Instant,
    /// `REREAD` plus up to as much again at random, so daemons started together do not
    /// re-read in step.
    reread: Duration,
}

const REREAD: Duration = Duration::from_secs(30);

fn reread_interval() -> Duration {
    let jitter = u64::from(u16::from_ne_bytes(crate::model::random_bytes::<2>()));
    REREAD + Duration::from_millis(jitter * REREAD.as_millis() as u64 / 65_536)
}

/// One sync.
async fn sync(
    dir: &Path,
    etcd: &mut Etcd,
    m: &Membership,
    state: &mut ClusterState,
    mem: &mut Memory,
) -> Result<()> {
    let started = std::time::Instant::now();
    let store = match mem.store.take() {
        Some(s) => s,
        None => crate::store::Store::open(dir)?,
    };
    let mut node = Node::with_store(dir, store)?;
    node.lease_blocks(etcd, m, state).await?;
    if mem.last.is_none() {
        mem.read_at = std::time::Instant::now();
        mem.reread = reread_interval();
    }
    let (c, now) = node.apply_cluster(m, state, mem.last.as_ref())?;
    mem.last = Some(now);
    node.publish_endpoints(etcd, m, state).await?;
    mem.store = Some(node.into_store());
    crate::trace::phase("cluster: synced");
    crate::metrics::CLUSTER_SYNC.observe(started.elapsed());
    STATUS.syncs.fetch_add(1, Relaxed);
    STATUS.added.fetch_add(c.added as u64, Relaxed);
    STATUS.removed.fetch_add(c.removed as u64, Relaxed);
    STATUS
        .peers
        .store(state.nodes.len().saturating_sub(1) as u64, Relaxed);
    if c.added + c.removed > 0 {
        log(format_args!(
            "{} entries added, {} removed",
            c.added, c.removed
        ));
    }
    Ok(())
}
