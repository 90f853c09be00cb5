//! `knit node ls` and `knit inspect`'s view of the cluster: each node with its underlay,
//! the path this node takes to it, its blocks and VTEP MACs, the time left on its lease,
//! and whether this node's kernel holds what etcd says it should for it.

use crate::cluster::etcd::{Etcd, block_on};
use crate::cluster::{peers, program};
use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::node::Node;
use crate::node::cluster::node_record;
use ipnet::IpNet;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PeerReport {
    pub name: String,
    /// This node itself.
    pub me: bool,
    pub underlay: IpNet,
    pub backend: String,
    /// How this node reaches it: routed or vxlan ("self" for this node).
    pub path: String,
    pub blocks: Vec<IpNet>,
    pub vtep_macs: Vec<String>,
    pub lease_left: Option<i64>,
    /// Every route, FDB and neighbour entry this node needs for it is in the kernel.
    pub programmed: bool,
}

impl Node {
    pub fn cluster_report(&self) -> Result<Vec<PeerReport>> {
        let m = self.store.membership()?.ok_or_else(|| {
            Error::Conflict(
                "this node is not in a cluster (`knit node join --etcd URL` first)".into(),
            )
        })?;
        let (state, leases) = block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            let (state, _, _) = etcd.list().await?;
            let mut leases = std::collections::BTreeMap::new();
            for (name, (_, lease)) in &state.nodes {
                leases.insert(name.clone(), etcd.ttl_left(*lease).await?);
            }
            Ok((state, leases))
        })?;
        let mut nl = Netlink::open()?;
        let mut devices = std::collections::BTreeMap::new();
        for n in self.store.networks()? {
            if let Some(c) = &n.cluster
                && let Some(i) = nl.link_index(&c.vxlan)?
            {
                devices.insert(n.name.clone(), i);
            }
        }
        let underlay = nl.link_index(&m.underlay_if)?.unwrap_or(0);
        let me = node_record(&m);
        let want = peers::desired(&state, &me, underlay, &devices);
        let now = program::current(&mut nl, &devices.values().copied().collect::<Vec<_>>())?;
        let mut out = vec![];
        for (name, (rec, _)) in &state.nodes {
            let blocks: Vec<_> = state.blocks.values().filter(|b| b.node == *name).collect();
            let is_me = *name == m.name;
            let programmed = is_me
                || blocks.iter().all(|b| {
                    want.routes
                        .iter()
                        .filter(|r| r.dst == b.block)
                        .all(|r| now.routes.contains(r))
                        && want
                            .fdb
                            .iter()
                            .filter(|f| f.mac == b.vtep_mac)
                            .all(|f| now.fdb.contains(f))
                        && want
                            .neigh
                            .iter()
                            .filter(|n| n.mac == b.vtep_mac)
                            .all(|n| now.neigh.contains(n))
                });
            let mut macs: Vec<String> = blocks.iter().map(|b| b.vtep_mac.to_string()).collect();
            macs.sort();
            macs.dedup();
            out.push(PeerReport {
                name: name.clone(),
                me: is_me,
                underlay: rec.underlay,
                backend: rec.backend.as_str().into(),
                path: if is_me {
                    "self".into()
                } else {
                    me.path_to(rec).as_str().into()
                },
                blocks: blocks.iter().map(|b| b.block).collect(),
                vtep_macs: macs,
                lease_left: leases.get(name).copied().flatten(),
                programmed,
            });
        }
        Ok(out)
    }
}
