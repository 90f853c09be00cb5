//! This node in a cluster: joining and leaving, cluster networks, and `sync` — making
//! the node match what etcd says (its blocks leased, a local network per cluster network
//! on its blocks with a VXLAN device, every peer programmed, the VXLAN peer set in the
//! firewall). `knit node join`, `network create --scope cluster` and the daemon's agent
//! all run the same `sync`.

use crate::cluster::etcd::{Etcd, block_on};
use crate::cluster::state::ClusterState;
use crate::cluster::{blocks, keys, peers, program};
use crate::error::{Error, Result};
use crate::model::cluster::{Backend, BlockRecord, ClusterNetwork, JoinSpec, NodeRecord};
use crate::model::{Driver, Mac, NetworkRequest, NetworkSpec};
use crate::netlink::Netlink;
use crate::nft::{Batch, Elem};
use crate::node::Node;
use crate::store::{ClusterLink, Membership, Network};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// How many times a node asks for another block after losing a race for one.
const BLOCK_ATTEMPTS: usize = 32;

/// The VXLAN device of local network `id`.
pub fn vxlan_name(id: i64) -> String {
    format!("knvx{id}")
}

/// Overhead of VXLAN encapsulation over an IPv4 (IPv6) underlay.
pub fn vxlan_mtu(m: &Membership) -> u32 {
    let overhead = if m.underlay.addr().is_ipv4() { 50 } else { 70 };
    m.mtu.saturating_sub(overhead)
}

pub fn node_record(m: &Membership) -> NodeRecord {
    NodeRecord {
        name: m.name.clone(),
        underlay: m.underlay,
        backend: m.backend,
        vni: m.vni,
        vxlan_port: m.vxlan_port,
        mtu: m.mtu,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Records are plain data: serializing cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The underlay: an address (its link and prefix found on this node) or a link name (its
/// first global address), or the link of the default route.
fn resolve_underlay(spec: Option<&str>) -> Result<(IpNet, String, u32)> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let addrs = nl.addresses()?;
    let global = |a: &IpNet| match a.addr() {
        IpAddr::V4(v) => !v.is_loopback() && !v.is_link_local(),
        IpAddr::V6(v) => !v.is_loopback() && (v.segments()[0] & 0xffc0) != 0xfe80,
    };
    let index = match spec {
        Some(s) if s.parse::<IpAddr>().is_ok() => {
            let ip: IpAddr = s
                .parse()
                .map_err(|_| Error::invalid("underlay", s, "bad address"))?;
            addrs
                .iter()
                .find(|(_, a)| a.addr() == ip)
                .map(|(i, _)| *i)
                .ok_or_else(|| {
                    Error::invalid("underlay", s, "no link of this node has this address")
                })?
        }
        Some(s) => links
            .iter()
            .find(|l| l.name == s)
            .map(|l| l.index)
            .ok_or_else(|| Error::invalid("underlay", s, "no such link"))?,
        None => {
            let routes = nl.routes(netlink_packet_route::AddressFamily::Inet)?;
            routes
                .iter()
                .find(|r| r.dst.prefix_len() == 0)
                .and_then(|r| r.oif)
                .ok_or_else(|| {
                    Error::invalid(
                        "underlay",
                        "",
                        "no default route: name the underlay (--underlay IP|IFACE)",
                    )
                })?
        }
    };
    let link = links
        .iter()
        .find(|l| l.index == index)
        .ok_or_else(|| Error::invalid("underlay", spec.unwrap_or(""), "its link vanished"))?;
    let want: Option<IpAddr> = spec.and_then(|s| s.parse().ok());
    let addr = addrs
        .iter()
        .filter(|(i, a)| *i == index && global(a))
        .map(|(_, a)| *a)
        .find(|a| want.is_none_or(|w| a.addr() == w))
        .ok_or_else(|| Error::invalid("underlay", &link.name, "the link has no usable address"))?;
    Ok((addr, link.name.clone(), link.mtu.unwrap_or(1500)))
}

impl Node {
    fn joined(&self) -> Result<Membership> {
        self.store.membership()?.ok_or_else(|| {
            Error::Conflict(
                "this node is not in a cluster (`knit node join --etcd URL` first)".into(),
            )
        })
    }

    /// `knit node join`: registers the node under a new lease, then one `sync`. On
    /// failure nothing stays behind (the lease is revoked, local state removed).
    pub fn join(&mut self, spec: &JoinSpec) -> Result<Membership> {
        if let Some(m) = self.store.membership()? {
            return Err(Error::Conflict(format!(
                "this node already joined a cluster as {:?} (etcd {}); `knit node leave` first",
                m.name,
                m.etcd.join(",")
            )));
        }
        let (underlay, underlay_if, mtu) = resolve_underlay(spec.underlay.as_deref())?;
        let mut m = Membership {
            name: spec.name.clone(),
            etcd: spec.etcd.clone(),
            etcd_tls: spec.tls.clone(),
            underlay,
            underlay_if,
            backend: spec.backend,
            vni: spec.vni,
            vxlan_port: spec.vxlan_port,
            lease_ttl: spec.lease_ttl,
            lease_id: 0,
            mtu,
        };
        let record = node_record(&m);
        m.lease_id = block_on(async {
            let mut etcd = Etcd::connect(&spec.access()).await?;
            let lease = etcd.grant(spec.lease_ttl).await?;
            if !etcd
                .create(&[(keys::node(&spec.name), json(&record))], Some(lease))
                .await?
            {
                let _ = etcd.revoke(lease).await;
                return Err(Error::invalid(
                    "name",
                    &spec.name,
                    "a node of this name is already in the cluster",
                ));
            }
            Ok(lease)
        })?;
        self.store.set_membership(&m)?;
        if let Err(e) = self.sync_once() {
            let _ = self.leave();
            return Err(e);
        }
        Ok(m)
    }

    /// `knit node leave`: the node's keys go at once (its lease is revoked), then its
    /// peers' programming, its cluster networks (which must have no attachments) and the
    /// membership.
    pub fn leave(&mut self) -> Result<Membership> {
        let m = self.joined()?;
        let locals: Vec<Network> = self
            .store
            .networks()?
            .into_iter()
            .filter(|n| n.cluster.is_some())
            .collect();
        for n in &locals {
            let atts = self.store.attachments_of_network(n.id)?;
            if !atts.is_empty() {
                return Err(Error::Conflict(format!(
                    "cluster network {:?} still has {} attachment(s) on this node; detach them first",
                    n.name,
                    atts.len()
                )));
            }
        }
        self.set_vxlan_peers(&[], &[])?;
        // The membership goes before the lease: a running daemon then stops instead of
        // registering the node again when it sees the node's keys deleted.
        self.store.clear_membership()?;
        // An unreachable etcd must not keep a node in: its lease expires on its own.
        if let Err(e) = block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            etcd.revoke(m.lease_id).await
        }) {
            tracing::warn!(
                "{e}; the node's keys expire with its lease ({} s)",
                m.lease_ttl
            );
        }
        let rest = (|| {
            let devices = self.vxlan_devices()?;
            let mut nl = Netlink::open()?;
            let now = program::current(&mut nl, &devices.values().copied().collect::<Vec<_>>())?;
            program::apply(&mut nl, &now, &peers::Desired::default())?;
            for n in &locals {
                self.remove_network(&n.name)?;
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = rest {
            // Still a member as far as this node's own state goes: `leave` can be run again.
            let _ = self.store.set_membership(&m);
            return Err(e);
        }
        Ok(m)
    }

    /// This node's VXLAN devices by cluster network name (those that exist).
    fn vxlan_devices(&self) -> Result<BTreeMap<String, u32>> {
        let mut nl = Netlink::open()?;
        let mut out = BTreeMap::new();
        for n in self.store.networks()? {
            if let Some(c) = &n.cluster
                && let Some(i) = nl.link_index(&c.vxlan)?
            {
                out.insert(n.name.clone(), i);
            }
        }
        Ok(out)
    }

    /// `knit network create --scope cluster`: records the network in etcd (with a VNI of
    /// its own), then this node's `sync` builds its part.
    pub fn create_cluster_network(
        &mut self,
        name: &str,
        subnets: Vec<IpNet>,
        node_prefix4: u8,
        node_prefix6: u8,
    ) -> Result<Network> {
        let m = self.joined()?;
        if self.store.find_network(name)?.is_some() {
            return Err(Error::exists("network", name));
        }
        let mut net = ClusterNetwork {
            name: name.to_string(),
            subnets,
            node_prefix4,
            node_prefix6,
            vni: m.vni,
        };
        net.validate()?;
        block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            for _ in 0..BLOCK_ATTEMPTS {
                let (state, _, _) = etcd.list().await?;
                if state.networks.contains_key(name) {
                    return Err(Error::exists("network", name));
                }
                for other in state.networks.values() {
                    for s in &net.subnets {
                        if other.subnets.iter().any(|o| o.contains(s) || s.contains(o)) {
                            return Err(Error::invalid(
                                "subnet",
                                s,
                                format!("overlaps cluster network {:?}", other.name),
                            ));
                        }
                    }
                }
                let used: BTreeSet<u32> = state.networks.values().map(|n| n.vni).collect();
                net.vni = (m.vni..=16_777_215)
                    .find(|v| !used.contains(v))
                    .unwrap_or(m.vni);
                let kvs = [
                    (keys::network(name), json(&net)),
                    (keys::vni(net.vni), name.as_bytes().to_vec()),
                ];
                if etcd.create(&kvs, None).await? {
                    return Ok(());
                }
            }
            Err(Error::Conflict(format!(
                "network {name:?}: no free VNI after {BLOCK_ATTEMPTS} tries"
            )))
        })?;
        self.sync_once()?;
        self.store.network(name)
    }

    /// Removes a cluster network cluster-wide (its record, VNI and every block), then here.
    pub fn remove_cluster_network(&mut self, net: &Network) -> Result<()> {
        let m = self.joined()?;
        let atts = self.store.attachments_of_network(net.id)?;
        if !atts.is_empty() {
            return Err(Error::Conflict(format!(
                "network {:?} still has {} attachment(s); detach them first",
                net.name,
                atts.len()
            )));
        }
        let vni = net.cluster.as_ref().map(|c| c.vni);
        block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            // Sandboxes on other nodes keep it: their nodes would lose each other.
            let (state, _, _) = etcd.list().await?;
            let elsewhere: Vec<String> = state
                .endpoints
                .values()
                .filter(|e| e.network == net.name && e.node != m.name)
                .map(|e| format!("{} on {}", e.sandbox, e.node))
                .collect();
            if !elsewhere.is_empty() {
                return Err(Error::Conflict(format!(
                    "network {:?} still has {} attachment(s) on other nodes ({}); detach them first",
                    net.name,
                    elsewhere.len(),
                    elsewhere.join(", ")
                )));
            }
            etcd.delete(&keys::network(&net.name), false).await?;
            if let Some(v) = vni {
                etcd.delete(&keys::vni(v), false).await?;
            }
            etcd.delete(&keys::blocks(&net.name), true).await
        })?;
        self.remove_network(&net.name)?;
        Ok(())
    }

    /// One full sync from a fresh etcd listing (CLI commands).
    pub fn sync_once(&mut self) -> Result<program::Changes> {
        let m = self.joined()?;
        let state = block_on(async {
            let mut etcd = Etcd::connect(&m.access()).await?;
            let (mut state, _, _) = etcd.list().await?;
            self.lease_blocks(&mut etcd, &m, &mut state).await?;
            self.publish_endpoints(&mut etcd, &m, &mut state).await?;
            Ok(state)
        })?;
        self.apply_cluster(&m, &state, None).map(|(c, _)| c)
    }

    /// Leases this node's missing blocks (one per subnet of every cluster network): the
    /// block it held before if free, else the first free one, by a create-if-absent
    /// transaction under the node's lease; `state` learns the blocks taken.
    pub async fn lease_blocks(
        &self,
        etcd: &mut Etcd,
        m: &Membership,
        state: &mut ClusterState,
    ) -> Result<()> {
        let nets: Vec<ClusterNetwork> = state.networks.values().cloned().collect();
        for net in nets {
            let local = self.store.find_network(&net.name)?;
            // One VTEP MAC per node and network: the local device's, else the one a block
            // of this node already carries, else a new one.
            let vtep_mac = local
                .as_ref()
                .and_then(|n| n.cluster.as_ref().map(|c| c.vtep_mac))
                .or_else(|| {
                    state
                        .blocks_of(&net.name, &m.name)
                        .first()
                        .map(|b| b.vtep_mac)
                })
                .unwrap_or_else(Mac::random);
            for subnet in &net.subnets {
                let mine = state
                    .blocks_of(&net.name, &m.name)
                    .iter()
                    .any(|b| subnet.contains(&b.block));
                if mine {
                    continue;
                }
                let preferred: Option<IpNet> = local.as_ref().and_then(|n| {
                    n.subnets
                        .iter()
                        .map(|s| s.subnet)
                        .find(|s| subnet.contains(s))
                });
                let prefix = net.node_prefix(subnet);
                // A node whose local network sits on a block must get that block back: its
                // sandboxes hold addresses from it. If another node holds it now (this node's
                // lease ran out while it was cut off), say so rather than take another.
                if let Some(p) = &preferred
                    && let Some(holder) = state
                        .blocks
                        .get(&(net.name.clone(), *p))
                        .filter(|b| b.node != m.name)
                {
                    return Err(Error::Conflict(format!(
                        "network {:?}: this node's block {p} is held by node {:?} now (this node's lease expired meanwhile); its sandboxes keep their addresses here, so knit takes no other block: detach them and remove the network here, or have {:?} leave",
                        net.name, holder.node, holder.node
                    )));
                }
                let mut got = None;
                for _ in 0..BLOCK_ATTEMPTS {
                    let taken: BTreeSet<IpNet> = state
                        .blocks
                        .keys()
                        .filter(|(n, _)| *n == net.name)
                        .map(|(_, b)| *b)
                        .collect();
                    let Some(block) = blocks::next_free(subnet, prefix, &taken, preferred.as_ref())
                    else {
                        return Err(Error::Exhausted {
                            network: net.name.clone(),
                            subnet: subnet.to_string(),
                        });
                    };
                    let rec = BlockRecord {
                        network: net.name.clone(),
                        block,
                        node: m.name.clone(),
                        vtep_mac,
                    };
                    if etcd
                        .create(
                            &[(keys::block(&net.name, &block), json(&rec))],
                            Some(m.lease_id),
                        )
                        .await?
                    {
                        state.blocks.insert((net.name.clone(), block), rec);
                        got = Some(block);
                        break;
                    }
                    // Lost a race: learn who holds what now (another process of this node,
                    // the agent or a command, may have leased this subnet's block for us).
                    *state = etcd.list().await?.0;
                    if let Some(b) = state
                        .blocks_of(&net.name, &m.name)
                        .iter()
                        .find(|b| subnet.contains(&b.block))
                    {
                        got = Some(b.block);
                        break;
                    }
                }
                if got.is_none() {
                    return Err(Error::Conflict(format!(
                        "network {:?}: no block of {subnet} after {BLOCK_ATTEMPTS} tries",
                        net.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes the kernel and the local store match `state` (blocks already leased).
    /// `last`: what the previous sync of this process programmed (the kernel is then
    /// not dumped again: a sync costs the same with 10 or 1,000 peers); None reads the
    /// kernel (a start, a reconnect, a CLI command). Returns the programming now held.
    pub fn apply_cluster(
        &mut self,
        m: &Membership,
        state: &ClusterState,
        last: Option<&peers::Desired>,
    ) -> Result<(program::Changes, peers::Desired)> {
        for net in state.networks.values() {
            let mine: Vec<&BlockRecord> = state.blocks_of(&net.name, &m.name);
            if mine.is_empty() {
                continue;
            }
            if let Err(e) = self.ensure_cluster_local(m, net, &mine) {
                tracing::error!("cluster network {:?}: {e}", net.name);
            }
        }
        // Cluster networks removed cluster-wide go here too, unless still in use.
        for n in self.store.networks()? {
            if n.cluster.is_some()
                && !state.networks.contains_key(&n.name)
                && self.store.attachments_of_network(n.id)?.is_empty()
            {
                self.remove_network(&n.name)?;
            }
        }
        crate::trace::phase("cluster: local networks");
        self.mirror_endpoints(m, state)?;
        crate::trace::phase("cluster: endpoints mirrored");
        if let Err(e) = self.mirror_services(state) {
            tracing::error!("cluster services: {e}");
        }
        let devices = self.vxlan_devices()?;
        let mut nl = Netlink::open()?;
        let underlay = nl.link_index(&m.underlay_if)?.ok_or_else(|| {
            Error::Conflict(format!("the underlay link {} is gone", m.underlay_if))
        })?;
        let want = peers::desired(state, &node_record(m), underlay, &devices);
        let dumped;
        let now = match last {
            Some(l) => l,
            None => {
                dumped = program::current(&mut nl, &devices.values().copied().collect::<Vec<_>>())?;
                &dumped
            }
        };
        let changes = program::apply(&mut nl, now, &want)?;
        crate::trace::phase("cluster: peers programmed");
        if last.is_none_or(|l| l.peers != want.peers) {
            let ports: Vec<u16> = if devices.is_empty() {
                vec![]
            } else {
                vec![m.vxlan_port]
            };
            self.set_vxlan_peers(&want.peers.iter().copied().collect::<Vec<_>>(), &ports)?;
        }
        Ok((changes, want))
    }

    /// The firewall's VXLAN peers and ports, as element changes against what the store
    /// says the firewall holds.
    fn set_vxlan_peers(&mut self, peers: &[IpAddr], ports: &[u16]) -> Result<()> {
        let before: BTreeSet<IpAddr> = self.store.cluster_peers()?.into_iter().collect();
        let after: BTreeSet<IpAddr> = peers.iter().copied().collect();
        let mut b = Batch::new();
        let set = |ip: &IpAddr| {
            if ip.is_ipv4() {
                "cl_peers4"
            } else {
                "cl_peers6"
            }
        };
        for ip in before.difference(&after) {
            b.elems(set(ip), vec![Elem::Addr(*ip)], false);
        }
        for ip in after.difference(&before) {
            b.elems(set(ip), vec![Elem::Addr(*ip)], true);
        }
        // The port of this node's devices (adding an element twice is harmless); without
        // devices (or leaving) it goes, or VXLAN to it from anyone would stay dropped.
        let membership = self.store.membership()?;
        match (ports.first(), &membership) {
            (Some(p), _) => b.elems("cl_vxlan", vec![Elem::Service(*p)], true),
            (None, Some(m)) => b.elems("cl_vxlan", vec![Elem::Service(m.vxlan_port)], false),
            (None, None) => {}
        }
        let _k = self.kernel_lock()?;
        // The record and the firewall change together: the store commits only once the
        // kernel took it, so a failure is retried by the next sync.
        self.store.begin()?;
        let done = (|| {
            if membership.is_some() {
                self.store.set_cluster_peers(peers)?;
            }
            self.apply_or_rebuild(&b, crate::node::network::Leaving::default())
        })();
        self.store.finish(done.is_ok())?;
        done.map(|_| ())
    }

    /// This node's local network for cluster network `net` on its blocks, with its VXLAN
    /// device (created on first use; `build_network` keeps the device right).
    fn ensure_cluster_local(
        &mut self,
        m: &Membership,
        net: &ClusterNetwork,
        mine: &[&BlockRecord],
    ) -> Result<()> {
        let vtep_mac = mine[0].vtep_mac;
        if let Some(local) = self.store.find_network(&net.name)? {
            if local.cluster.is_none() {
                return Err(Error::Conflict(format!(
                    "a network of this node is named {:?} too; cluster network skipped",
                    net.name
                )));
            }
            if !local.ready {
                let mut l = local;
                self.finish_network(&mut l)?;
            }
            return Ok(());
        }
        let subnets: Vec<String> = mine.iter().map(|b| b.block.to_string()).collect();
        let mtu = (m.backend != Backend::Routed).then(|| vxlan_mtu(m));
        let spec = NetworkSpec::new(&NetworkRequest {
            name: &net.name,
            driver: Driver::Bridge,
            bridge: None,
            subnets: &subnets,
            gateways: &[],
            internal: false,
            masquerade: true,
            mtu,
        })?;
        let link = |id: i64| ClusterLink {
            subnets: net.subnets.clone(),
            vni: net.vni,
            vxlan: vxlan_name(id),
            vtep_mac,
        };
        self.create_cluster_network_local(&spec, &link)?;
        Ok(())
    }
}
