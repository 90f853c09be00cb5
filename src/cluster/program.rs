//! Puts `Desired` into the kernel as a difference against what knit's cluster
//! programming holds now (its routes by protocol number, the FDB and permanent neighbour
//! entries of its VXLAN devices): entries already right are not touched, so a daemon
//! restart changes nothing; entries of nodes that are gone are removed. New peers get
//! neighbour and FDB entries before their route (the kernel never resolves the VTEP
//! address by ARP), removed ones lose the route first.

use super::peers::{Desired, Neigh};
use crate::error::Result;
use crate::model::Mac;
use crate::netlink::Netlink;
use std::collections::BTreeSet;

/// What a change did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
}

/// The cluster programming in the kernel now (`devices`: knit's VXLAN device indexes).
pub fn current(nl: &mut Netlink, devices: &[u32]) -> Result<Desired> {
    let mut d = Desired {
        routes: nl.cluster_routes()?.into_iter().collect(),
        ..Desired::default()
    };
    for i in devices {
        d.fdb.extend(nl.fdb(*i)?);
    }
    for n in nl.neighbours()? {
        if !devices.contains(&n.index) || n.state != "permanent" {
            continue;
        }
        let Some(mac) = n.mac.as_deref().and_then(|m| Mac::parse("mac", m).ok()) else {
            continue;
        };
        d.neigh.insert(Neigh {
            index: n.index,
            ip: n.ip,
            mac,
        });
    }
    Ok(d)
}

/// Takes the kernel from `now` to `want` (routes, FDB, neighbours; the peer set is the
/// firewall's, see `node::cluster`).
pub fn apply(nl: &mut Netlink, now: &Desired, want: &Desired) -> Result<Changes> {
    let mut c = Changes::default();
    for r in now.routes.difference(&want.routes) {
        nl.del_cluster_route(r)?;
        c.removed += 1;
    }
    for f in now.fdb.difference(&want.fdb) {
        nl.del_fdb(f)?;
        c.removed += 1;
    }
    // A neighbour whose MAC changed is replaced, not removed.
    let want_ips: BTreeSet<(u32, std::net::IpAddr)> =
        want.neigh.iter().map(|n| (n.index, n.ip)).collect();
    for n in now.neigh.difference(&want.neigh) {
        if !want_ips.contains(&(n.index, n.ip)) {
            nl.del_neighbour(n.index, n.ip)?;
            c.removed += 1;
        }
    }
    for n in want.neigh.difference(&now.neigh) {
        nl.add_neighbour(n.index, n.ip, n.mac)?;
        c.added += 1;
    }
    for f in want.fdb.difference(&now.fdb) {
        nl.add_fdb(f)?;
        c.added += 1;
    }
    for r in want.routes.difference(&now.routes) {
        nl.add_cluster_route(r)?;
        c.added += 1;
    }
    Ok(c)
}
