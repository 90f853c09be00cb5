//! `knit://` backends resolved through the store: a service to its VIP and port (the
//! node's nftables spread it over the service's backends), a sandbox to its first address
//! on a knit network (IPv4 first). Re-read periodically, so attaching, detaching and
//! service changes reach the ingress without a reload.

use super::route::Target;
use crate::store::Store;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

pub struct Resolver {
    state_dir: PathBuf,
    known: RwLock<HashMap<Target, Vec<String>>>,
    /// One refresh at a time, so the last to write read the store last (a reload's
    /// refresh and the periodic one can overlap).
    refreshing: Mutex<()>,
}

impl Resolver {
    pub fn new(state_dir: PathBuf) -> Resolver {
        Resolver {
            state_dir,
            known: RwLock::new(HashMap::new()),
            refreshing: Mutex::new(()),
        }
    }

    /// The endpoints (`HOST:PORT`) of a target now; empty when a knit target does not
    /// resolve (no such service, sandbox not attached).
    pub fn endpoints(&self, t: &Target) -> Vec<String> {
        match t {
            Target::Http(authority) => vec![authority.clone()],
            _ => self
                .known
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(t)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Reads the store once for every knit target in `targets`, and says whether any
    /// answer changed. Answers for other targets stay (`retain` forgets those a table no
    /// longer has). A store that cannot be read leaves the last answers in place (and
    /// says why).
    pub fn refresh<'a>(&self, targets: impl Iterator<Item = &'a Target>) -> bool {
        let _one = self.lock();
        self.refresh_locked(targets)
    }

    /// Holds off refreshes (and `retain`s) while the guard lives: a reload resolves its
    /// new table's targets and swaps the table in under it, so a pruning pass cannot drop
    /// those answers between the two.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.refreshing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `refresh`, with `lock` already held.
    pub fn refresh_locked<'a>(&self, targets: impl Iterator<Item = &'a Target>) -> bool {
        let wanted: Vec<&Target> = targets.filter(|t| !matches!(t, Target::Http(_))).collect();
        if wanted.is_empty() {
            return false;
        }
        // A node where knit never ran has nothing to resolve (and opening would create a
        // store).
        if Store::is_blank(&self.state_dir) {
            tracing::warn!(state_dir = %self.state_dir.display(), "no knit store: knit:// backends do not resolve");
            return false;
        }
        let store = match Store::open(&self.state_dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "knit:// backends: the store cannot be read; keeping the last addresses");
                return false;
            }
        };
        let mut fresh = HashMap::new();
        for t in wanted {
            let eps = match t {
                Target::Service(name) => store
                    .service(name)
                    .map(|s| vec![SocketAddr::new(s.vip.ip, s.vip.port).to_string()])
                    .unwrap_or_default(),
                Target::Sandbox(name, port) => {
                    let mut ips: Vec<std::net::IpAddr> = store
                        .attachments_of_sandbox(name)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|a| a.state.in_kernel())
                        .flat_map(|a| a.ips.into_iter().map(|n| n.addr()))
                        .collect();
                    ips.sort_by_key(|ip| ip.is_ipv6());
                    ips.first()
                        .map(|ip| vec![SocketAddr::new(*ip, *port).to_string()])
                        .unwrap_or_default()
                }
                Target::Http(_) => continue,
            };
            fresh.insert(t.clone(), eps);
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for (t, eps) in fresh {
            if known.get(&t) != Some(&eps) {
                known.insert(t, eps);
                changed = true;
            }
        }
        changed
    }

    /// Forgets the answers for targets not in `keep` (with `lock` held, and `keep` read
    /// from the current table under it).
    pub fn retain_locked(&self, keep: &HashSet<Target>) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.retain(|t, _| keep.contains(t));
    }
}
