//! The node: knit's view of the network namespace it runs in, its store and its lock —
//! the one home of `Node`. Its work is spread over one file per concern: networks,
//! attach/detach, sandboxes, services, policy, reconcile, inspect.

pub mod agent;
pub mod attach;
pub mod cluster;
mod cluster_endpoints;
pub mod cluster_report;
mod cluster_services;
pub mod doctor;
pub mod flows;
pub mod graph;
pub mod inspect;
pub mod metrics_view;
pub mod network;
pub mod policy;
pub mod policy_report;
pub mod reconcile;
mod runtime_network;
pub mod sandbox;
pub mod services;
pub mod trace;
mod tunnel;

use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::netlink::Netlink;
use crate::store::Store;
use std::path::{Path, PathBuf};

pub use network::BridgeUse;

pub struct Node {
    pub state_dir: PathBuf,
    pub store: Store,
    _lock: Lock,
}

impl Node {
    /// Opens the store under `state_dir`. `exclusive` is for reconcile (see `lock`).
    pub fn open(state_dir: &Path, exclusive: bool) -> Result<Node> {
        if Store::is_blank(state_dir) {
            refuse_to_start_over(state_dir)?;
        }
        let store = Store::open(state_dir)?;
        let lock = Lock::take(state_dir, exclusive)?;
        let mut node = Node {
            state_dir: state_dir.to_path_buf(),
            store,
            _lock: lock,
        };
        if node.store.migrated_policies {
            node.index_legacy_policies()?;
        }
        Ok(node)
    }

    /// A node over a store already open (the daemon's agent keeps one for a whole round
    /// of syncs): only the node lock is taken again, so `reconcile` can still get it
    /// between two syncs.
    pub fn with_store(state_dir: &Path, store: Store) -> Result<Node> {
        Ok(Node {
            state_dir: state_dir.to_path_buf(),
            store,
            _lock: Lock::take(state_dir, false)?,
        })
    }

    /// Gives the store back (and releases the node lock).
    pub fn into_store(self) -> Store {
        self.store
    }

    /// The kernel lock (see `lock`): held from reading the state a firewall change is
    /// derived from until that change is applied and recorded.
    pub fn kernel_lock(&self) -> Result<crate::lock::KernelGuard> {
        Lock::kernel(&self.state_dir)
    }
}

/// A blank store next to knit's kernel state means the database was lost (truncated,
/// deleted): starting over would hand out addresses and bridge names that are in use and
/// later delete live links. Refuse, and say how to recover.
fn refuse_to_start_over(state_dir: &Path) -> Result<()> {
    let mut found = Vec::new();
    if crate::nft::socket::Socket::own()
        .and_then(|mut s| s.table_exists(crate::nft::TABLE))
        .unwrap_or(false)
    {
        found.push("nft table inet knit".to_string());
    }
    if let Ok(mut nl) = Netlink::open() {
        found.extend(
            nl.links()?
                .into_iter()
                .filter(|l| crate::driver::is_knit_link(&l.name))
                .map(|l| format!("link {}", l.name)),
        );
    }
    if found.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
    Err(Error::Conflict(format!(
        "the store {}/knit.db is missing or empty, but this namespace holds knit's kernel state ({}{}); knit will not start over on top of it: restore knit.db (and knit.db-wal) from a backup, or remove knit's objects (`nft delete table inet knit`, and its knbr*/kv* links) first",
        state_dir.display(),
        shown.join(", "),
        if found.len() > shown.len() {
            format!(" and {} more", found.len() - shown.len())
        } else {
            String::new()
        }
    )))
}
