//! What a node programs for its peers, from the cluster state alone (pure): per remote
//! block of a cluster network this node is on, either a route via the peer's underlay
//! address (routed: same segment, same family) or, over VXLAN, a permanent neighbour
//! entry (remote VTEP address → remote VTEP MAC), an FDB entry (that MAC → the peer's
//! underlay address) and a route via the VTEP address on the VXLAN device, onlink.

use super::state::ClusterState;
use crate::model::Mac;
use crate::model::cluster::{Backend, NodeRecord, vtep_addr};
use crate::netlink::{ClusterRoute, Fdb};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A permanent neighbour entry on a VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neigh {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// Everything knit's cluster programming should hold on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeSet<ClusterRoute>,
    pub fdb: BTreeSet<Fdb>,
    pub neigh: BTreeSet<Neigh>,
    /// Underlay addresses VXLAN is accepted from.
    pub peers: BTreeSet<IpAddr>,
}

/// `devices`: the VXLAN device (index) of each cluster network this node is on;
/// `underlay`: the index of the underlay link.
pub fn desired(
    state: &ClusterState,
    me: &NodeRecord,
    underlay: u32,
    devices: &BTreeMap<String, u32>,
) -> Desired {
    let mut d = Desired::default();
    for (name, (peer, _)) in &state.nodes {
        if *name != me.name {
            d.peers.insert(peer.underlay.addr());
        }
    }
    for ((network, block), b) in &state.blocks {
        if b.node == me.name {
            continue;
        }
        let (Some(dev), Some((peer, _))) = (devices.get(network), state.nodes.get(&b.node)) else {
            continue;
        };
        let same_family = block.addr().is_ipv4() == peer.underlay.addr().is_ipv4();
        if me.path_to(peer) == Backend::Routed && same_family {
            d.routes.insert(ClusterRoute {
                dst: *block,
                gateway: peer.underlay.addr(),
                oif: underlay,
                onlink: false,
            });
            continue;
        }
        let vtep = vtep_addr(block);
        d.neigh.insert(Neigh {
            index: *dev,
            ip: vtep,
            mac: b.vtep_mac,
        });
        d.fdb.insert(Fdb {
            index: *dev,
            mac: b.vtep_mac,
            dst: peer.underlay.addr(),
        });
        d.routes.insert(ClusterRoute {
            dst: *block,
            gateway: vtep,
            oif: *dev,
            onlink: true,
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut ClusterState, key: &str, v: &str) {
        assert_eq!(s.apply(key, Some(v.as_bytes()), 1), None, "{key}");
    }

    #[test]
    fn routed_on_the_segment_vxlan_beyond() {
        let mut s = ClusterState::default();
        let node = |n: &str, ip: &str| {
            format!(
                r#"{{"name":"{n}","underlay":"{ip}","backend":"auto","vni":1,"vxlan_port":4789,"mtu":1500}}"#
            )
        };
        put(&mut s, "/knit/nodes/a", &node("a", "192.168.1.2/24"));
        put(&mut s, "/knit/nodes/b", &node("b", "192.168.1.3/24"));
        put(&mut s, "/knit/nodes/c", &node("c", "192.168.2.2/24"));
        let block = |n: &str, b: &str, mac: &str| {
            format!(r#"{{"network":"p","block":"{b}","node":"{n}","vtep_mac":"{mac}"}}"#)
        };
        put(
            &mut s,
            "/knit/blocks/p/10.244.0.0_24",
            &block("a", "10.244.0.0/24", "02:00:00:00:00:0a"),
        );
        put(
            &mut s,
            "/knit/blocks/p/10.244.1.0_24",
            &block("b", "10.244.1.0/24", "02:00:00:00:00:0b"),
        );
        put(
            &mut s,
            "/knit/blocks/p/10.244.2.0_24",
            &block("c", "10.244.2.0/24", "02:00:00:00:00:0c"),
        );
        put(
            &mut s,
            "/knit/blocks/p/fd44:2::_64",
            &block("c", "fd44:2::/64", "02:00:00:00:00:0c"),
        );
        let me = s.nodes["a"].0.clone();
        let devices: BTreeMap<String, u32> = [("p".to_string(), 9)].into();
        let d = desired(&s, &me, 2, &devices);
        let routes: Vec<String> = d
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{} via {} dev {}{}",
                    r.dst,
                    r.gateway,
                    r.oif,
                    if r.onlink { " onlink" } else { "" }
                )
            })
            .collect();
        assert_eq!(
            routes,
            vec![
                "10.244.1.0/24 via 192.168.1.3 dev 2",
                "10.244.2.0/24 via 10.244.2.0 dev 9 onlink",
                "fd44:2::/64 via fd44:2:: dev 9 onlink"
            ]
        );
        // One FDB entry for c's device (both families share it), two neighbours.
        assert_eq!(d.fdb.len(), 1);
        assert_eq!(d.neigh.len(), 2);
        assert_eq!(d.peers.len(), 2);
        // Not on the network: nothing for its blocks.
        let none = desired(&s, &me, 2, &BTreeMap::new());
        assert!(none.routes.is_empty() && none.fdb.is_empty());
    }
}
