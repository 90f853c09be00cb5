//! Networks: creation (store record, then kernel state, then ready), removal, and the
//! whole-table rebuild every repair falls back to. knit deletes only the bridge it created.

use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::model::NetworkSpec;
use crate::netlink::{LinkInfoSummary, Netlink};
use crate::nft::{AttachFw, Batch, NetFw};
use crate::node::Node;
use crate::store::{Attachment, Network};
use crate::sysctl;
use ipnet::IpNet;

/// How `build_network` treats a link that already has the bridge's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeUse {
    /// A new network: any existing link of that name is someone else's, refused.
    Fresh,
    /// CNI's shared bridge (`cni0`): an existing bridge is adopted (recorded, never
    /// deleted); any other kind of link is refused.
    Adopt,
    /// Rebuilding a recorded network: the link must be the bridge knit created (its MAC)
    /// or adopted; anything else in its place is refused and left alone.
    Repair,
}

/// What a whole-table rebuild leaves out: objects being removed, still in the store until
/// their removal is recorded.
#[derive(Debug, Default, Clone, Copy)]
pub struct Leaving {
    pub network: Option<i64>,
    pub attachment: Option<i64>,
    pub service: Option<i64>,
}

impl Leaving {
    /// Whether the change removes something (so a missing table means nothing to do).
    pub fn removes(&self) -> bool {
        self.network.is_some() || self.attachment.is_some() || self.service.is_some()
    }
}

/// How `apply_or_rebuild` got the change into the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Batch,
    /// The table was rewritten from the store instead.
    Rebuilt,
}

impl Node {
    pub fn create_network(&mut self, spec: &NetworkSpec) -> Result<Network> {
        self.create_network_from(spec, "cli", BridgeUse::Fresh)
    }

    /// Creates a network: store record (not ready), kernel state, ready. On failure only
    /// what this call created is removed.
    pub fn create_network_from(
        &mut self,
        spec: &NetworkSpec,
        origin: &str,
        bridge: BridgeUse,
    ) -> Result<Network> {
        let _net_lock = Lock::network(&self.state_dir, &spec.name, true)?;
        if let Some(old) = self.store.find_network(&spec.name)?
            && !old.ready
            && self.store.attachments_of_network(old.id)?.is_empty()
        {
            // A creation killed half-way: we hold the network's lock, so its process is
            // gone. Remove what it recorded and start again.
            self.teardown_network(&old)?;
            self.store.delete_network(old.id)?;
        }
        let driver = crate::driver::of(spec.driver);
        let mut net = self
            .store
            .create_network(spec, origin, &|id| driver.default_bridge(id))?;
        let mut created = false;
        if let Err(e) = self.build_network(&mut net, bridge, &mut created) {
            let _ = self.undo_network(&net, created);
            let _ = self.store.delete_network(net.id);
            return Err(e);
        }
        self.store.mark_network_ready(net.id)?;
        net.ready = true;
        Ok(net)
    }

    /// Builds a network whose kernel state is missing or incomplete (an interrupted
    /// creation, a bridge someone deleted) and records it as ready.
    pub fn finish_network(&mut self, net: &mut Network) -> Result<()> {
        let _net_lock = Lock::network(&self.state_dir, &net.name, true)?;
        // Re-read under the lock: while we waited, the creation may have finished, or the
        // network may have been removed (building it again would leave a bridge without
        // a record).
        match self.store.find_network(&net.name)? {
            Some(current) if current.id == net.id => *net = current,
            _ => return Err(Error::not_found("network", &net.name)),
        }
        let use_ = if net.origin == "cni" && !net.ready {
            BridgeUse::Adopt
        } else {
            BridgeUse::Repair
        };
        self.build_network(net, use_, &mut false)?;
        self.store.mark_network_ready(net.id)?;
        net.ready = true;
        Ok(())
    }

    /// Kernel state of a network: forwarding, bridge with gateway addresses, nft chain and
    /// elements. `created` is set once this call created the bridge (what a failed
    /// creation must remove, and nothing else).
    pub fn build_network(
        &mut self,
        net: &mut Network,
        bridge: BridgeUse,
        created: &mut bool,
    ) -> Result<()> {
        let v4 = net.subnets.iter().any(|s| s.subnet.addr().is_ipv4());
        let v6 = net.subnets.iter().any(|s| !s.subnet.addr().is_ipv4());
        sysctl::ensure_forwarding(v4, v6)?;
        if let Some(br) = net.bridge.clone() {
            let mut nl = Netlink::open()?;
            let index = match nl.link_by_name(&br)? {
                Some(l) => {
                    let kind = l.kind.clone().unwrap_or_else(|| "unknown".into());
                    let is_bridge = kind == "bridge";
                    let ours = is_bridge && (net.bridge_adopted || owned_bridge(net, &l));
                    match bridge {
                        BridgeUse::Fresh => {
                            return Err(Error::invalid(
                                "bridge",
                                &br,
                                format!(
                                    "a link with this name already exists ({kind}, index {}); knit only creates new bridges for its networks",
                                    l.index
                                ),
                            ));
                        }
                        _ if !is_bridge => {
                            return Err(Error::invalid(
                                "bridge",
                                &br,
                                format!(
                                    "is an existing {kind} link (index {}), not a bridge; knit never uses or changes it",
                                    l.index
                                ),
                            ));
                        }
                        BridgeUse::Adopt if !ours => {
                            // Recorded before anything is changed on it.
                            self.store.mark_bridge_adopted(net.id)?;
                            net.bridge_adopted = true;
                        }
                        BridgeUse::Repair if !ours => {
                            return Err(Error::Conflict(format!(
                                "link {br:?} is a bridge knit did not create for network {:?} (its MAC is {}); knit leaves it alone: remove or rename it, then run `knit reconcile`",
                                net.name,
                                l.mac.as_deref().unwrap_or("unknown")
                            )));
                        }
                        _ => {}
                    }
                    l.index
                }
                None => {
                    nl.create_bridge(&br, net.bridge_mac, net.mtu)?;
                    *created = true;
                    nl.link_index(&br)?
                        .ok_or_else(|| Error::not_found("link", &br))?
                }
            };
            nl.set_up(index)?;
            if net.promisc {
                nl.set_promisc(index)?;
            }
            for s in net.subnets.iter().filter(|_| net.bridge_gateway) {
                let gw = IpNet::new(s.gateway, s.subnet.prefix_len())
                    .map_err(|_| Error::invalid("gateway", s.gateway, "bad prefix"))?;
                nl.add_address(index, gw)?;
            }
            // Lets DNAT to a sandbox work for connections to 127.0.0.1 published ports.
            sysctl::ensure_path(&sysctl::iface_key("ipv4", &br, "route_localnet"), "1")?;
            if v6 {
                // The bridge's link-local address appears with the first port; while it is
                // in duplicate-address detection the node cannot solicit neighbours, which
                // cost the first routed IPv6 connection of a new sandbox a 1 s SYN retry.
                // knit owns this link and its addresses: skip DAD.
                sysctl::ensure_path(&sysctl::iface_key("ipv6", &br, "accept_dad"), "0")?;
            }
            if net.policy == crate::model::policy::Default::Deny
                || net.egress == crate::model::policy::Default::Deny
                || !self.store.sets_in_use(net.id)?.is_empty()
            {
                nl.set_bridge_nf_call(index, true)?;
            }
        }
        self.ensure_tunnel(net)?;
        let _k = self.kernel_lock()?;
        let mut b = Batch::new();
        b.base().network(&net_fw(net), true);
        self.full_policy(&mut b, net, None)?;
        self.apply_or_rebuild(&b, Leaving::default()).map(|_| ())
    }

    /// Applies a batch; if nftables refuses it because the kernel lost knit's table or part
    /// of it (a flushed or deleted table, a missing set or chain), rewrites the whole table
    /// from the store instead, minus `leaving`. The one place that falls back to a rebuild.
    /// Callers hold the kernel lock and have recorded the change in the store (or name
    /// what they are removing in `leaving`).
    pub fn apply_or_rebuild(&self, b: &Batch, leaving: Leaving) -> Result<Applied> {
        // Closing an nf_tables socket after deletions waits for an RCU grace period; keep
        // that off the caller's clock.
        match b.apply_then(crate::nft::socket::Socket::close_detached) {
            Ok(()) => Ok(Applied::Batch),
            Err(Error::Nft { .. }) if leaving.removes() && !crate::nft::table_exists() => {
                // Nothing of knit's is in the kernel to remove (and creating the table
                // now would leave something behind a failed command).
                Ok(Applied::Batch)
            }
            Err(Error::Nft { .. }) => {
                crate::trace::phase("nft: batch refused, rebuilding the table");
                self.rebuild_firewall_without(leaving)?;
                Ok(Applied::Rebuilt)
            }
            Err(e) => Err(e),
        }
    }

    /// Verifies knit's whole table (all networks) and rewrites it from the store if it was
    /// deleted, flushed or lost rules (a firewall reload, `nft flush ruleset`): runtimes'
    /// recovery flows (podman `network reload`) re-ADD every container and expect the
    /// firewall back. Callers hold the kernel lock.
    pub fn ensure_table_intact(&self) -> Result<()> {
        let nets: Vec<NetFw> = self.store.networks()?.iter().map(net_fw).collect();
        crate::trace::phase("nft: networks loaded for the table check");
        if !crate::nft::table_intact(&nets)? {
            crate::trace::phase("nft: table damaged, rebuilding");
            self.rebuild_firewall()?;
        }
        Ok(())
    }

    /// Undoes a failed creation: knit's nft objects of the network, and the bridge only if
    /// this call created it.
    pub(crate) fn undo_network(&mut self, net: &Network, created: bool) -> Result<()> {
        // Both halves are tried: a firewall that cannot be cleaned must not leave the
        // bridge this call created behind.
        let fw = self.teardown_firewall(net);
        if created && let Some(br) = &net.bridge {
            delete_owned_bridge(net, br)?;
        }
        fw
    }

    fn teardown_firewall(&mut self, net: &Network) -> Result<()> {
        let _k = self.kernel_lock()?;
        let sets = self.store.sets_in_use(net.id)?;
        let ifaces = crate::policy::ifaces(net, &[]);
        let mut b = Batch::new();
        b.policy_removed(net.id, &ifaces, &sets)
            .network(&net_fw(net), false);
        self.apply_or_rebuild(
            &b,
            Leaving {
                network: Some(net.id),
                ..Leaving::default()
            },
        )?;
        Ok(())
    }

    /// Removes a network's kernel state: its nft objects, and its bridge unless adopted
    /// or no longer the one knit created.
    fn teardown_network(&mut self, net: &Network) -> Result<()> {
        self.teardown_firewall(net)?;
        self.delete_tunnel(net)?;
        if let Some(br) = &net.bridge
            && !net.bridge_adopted
        {
            delete_owned_bridge(net, br)?;
        }
        Ok(())
    }

    pub fn remove_network(&mut self, name: &str) -> Result<Network> {
        let _net_lock = Lock::network(&self.state_dir, name, true)?;
        let net = self.store.network(name)?;
        let atts = self.store.attachments_of_network(net.id)?;
        if !atts.is_empty() {
            let names: Vec<&str> = atts.iter().map(|a| a.sandbox.as_str()).collect();
            return Err(Error::Conflict(format!(
                "network {name:?} still has {} attachment(s) ({}); detach them first",
                atts.len(),
                names.join(", ")
            )));
        }
        self.teardown_network(&net)?;
        self.store.delete_network(net.id)?;
        Ok(net)
    }

    /// Rewrites knit's whole table from the store in one transaction (reconcile, and the
    /// fallback when an incremental change finds the table damaged).
    pub fn rebuild_firewall(&self) -> Result<()> {
        self.rebuild_firewall_without(Leaving::default())
    }

    /// The same, leaving out what is being removed (still in the store until the removal
    /// is recorded). Only attachments the kernel holds count (a pending one belongs to a
    /// command still building it, which adds its own elements).
    pub fn rebuild_firewall_without(&self, leaving: Leaving) -> Result<()> {
        let (net_id, att_id) = (leaving.network, leaving.attachment);
        let _k = self.kernel_lock()?;
        let nets: Vec<Network> = self
            .store
            .networks()?
            .into_iter()
            .filter(|n| Some(n.id) != net_id)
            .collect();
        let all: Vec<Attachment> = self
            .store
            .all_attachments()?
            .into_iter()
            .filter(|a| Some(a.id) != att_id)
            .filter(|a| a.state.in_kernel())
            .filter(|a| nets.iter().any(|n| n.id == a.network_id))
            .collect();
        let atts: Vec<AttachFw> = all
            .iter()
            .filter_map(|a| {
                nets.iter()
                    .find(|n| n.id == a.network_id)
                    .map(|n| attach_fw(n, a))
            })
            .collect();
        let mut b = Batch::rebuild(&nets.iter().map(net_fw).collect::<Vec<_>>(), &atts);
        for n in &nets {
            self.full_policy(&mut b, n, att_id)?;
        }
        // Cluster peers VXLAN is accepted from, and the port of this node's devices.
        for ip in self.store.cluster_peers()? {
            let set = if ip.is_ipv4() {
                "cl_peers4"
            } else {
                "cl_peers6"
            };
            b.elems(set, vec![crate::nft::Elem::Addr(ip)], true);
        }
        if let Some(m) = self.store.membership()?
            && nets.iter().any(|n| n.cluster.is_some())
        {
            b.elems(
                "cl_vxlan",
                vec![crate::nft::Elem::Service(m.vxlan_port)],
                true,
            );
        }
        for svc in self.store.services()? {
            if Some(svc.id) != leaving.service {
                b.service(None, Some(&crate::service::resolve_from(&svc, &all)));
            }
        }
        b.apply()
    }
}

pub fn net_fw(n: &Network) -> NetFw {
    NetFw {
        id: n.id,
        bridge: n.bridge.clone(),
        subnets: n.subnets.iter().map(|s| s.subnet).collect(),
        internal: n.internal,
        masquerade: n.masquerade,
        dns_servers: if n.serves_dns() {
            n.subnets.iter().map(|s| s.gateway).collect()
        } else {
            vec![]
        },
        cluster_nets: n.cluster.iter().flat_map(|c| c.subnets.clone()).collect(),
        tunnel: n.cluster.as_ref().map(|c| c.vxlan.clone()),
    }
}

pub fn attach_fw(n: &Network, a: &Attachment) -> AttachFw {
    AttachFw {
        net_id: n.id,
        internal: n.internal,
        ptp_host_if: crate::driver::for_network(n).attachment_iface(a),
        ports: a.ports.clone(),
        guard: crate::nft::Guard {
            host_if: a.host_ifname.clone(),
            bridged: crate::driver::for_network(n).bridged(),
            mac: crate::model::Mac::parse("mac", &a.mac).ok(),
            ips: a.ips.iter().map(|ip| ip.addr()).collect(),
        },
    }
}

/// Whether `link` is the bridge knit created for `net` (knit gives its bridges the MAC it
/// recorded; a link of that name with another MAC is someone else's).
fn owned_bridge(net: &Network, link: &LinkInfoSummary) -> bool {
    link.kind.as_deref() == Some("bridge")
        && link
            .mac
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(&net.bridge_mac.to_string()))
}

/// Deletes the network's bridge if it is still the one knit created; anything else of
/// that name is left alone.
fn delete_owned_bridge(net: &Network, br: &str) -> Result<()> {
    let mut nl = Netlink::open()?;
    if let Some(l) = nl.link_by_name(br)?
        && owned_bridge(net, &l)
    {
        nl.delete_link(br)?;
    }
    Ok(())
}
