//! The cluster agent's health, for the daemon's metrics endpoint and log.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Status {
    /// 1 while the agent is connected to etcd.
    pub etcd_up: AtomicU64,
    pub etcd_errors: AtomicU64,
    pub syncs: AtomicU64,
    /// Kernel entries (routes, FDB, neighbours) added and removed by syncs.
    pub added: AtomicU64,
    pub removed: AtomicU64,
    pub peers: AtomicU64,
    pub relists: AtomicU64,
}

pub static STATUS: Status = Status {
    etcd_up: AtomicU64::new(0),
    etcd_errors: AtomicU64::new(0),
    syncs: AtomicU64::new(0),
    added: AtomicU64::new(0),
    removed: AtomicU64::new(0),
    peers: AtomicU64::new(0),
    relists: AtomicU64::new(0),
};

impl Status {
    /// Prometheus text lines.
    pub fn render(&self, out: &mut String) {
        for (name, help, v) in [
            (
                "knit_cluster_etcd_up",
                "1 while connected to etcd",
                &self.etcd_up,
            ),
            (
                "knit_cluster_etcd_errors_total",
                "etcd failures (each retried with backoff)",
                &self.etcd_errors,
            ),
            ("knit_cluster_syncs_total", "cluster syncs", &self.syncs),
            (
                "knit_cluster_entries_added_total",
                "routes, FDB and neighbour entries added",
                &self.added,
            ),
            (
                "knit_cluster_entries_removed_total",
                "routes, FDB and neighbour entries removed",
                &self.removed,
            ),
            (
                "knit_cluster_peers",
                "other nodes in the cluster",
                &self.peers,
            ),
            (
                "knit_cluster_relists_total",
                "full re-reads of etcd (start, compaction, reconnect)",
                &self.relists,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n{name} {}", v.load(Relaxed));
        }
    }
}
