//! The node: knit's view of the network namespace it runs in, its store and its lock.
//! Network lifecycle lives here; attachments in `attach`, repair in `reconcile`.

use crate::error::{Error, Result};
use crate::firewall::{AttachFw, Batch, NetFw};
use crate::lock::Lock;
use crate::model::{Driver, NetworkSpec};
use crate::netlink::Netlink;
use crate::store::{Attachment, Network, Store};
use crate::sysctl;
use ipnet::IpNet;
use std::path::{Path, PathBuf};

pub struct Node {
    pub state_dir: PathBuf,
    pub store: Store,
    _lock: Lock,
}

impl Node {
    /// Opens the store under `state_dir`. `exclusive` is for reconcile (see `lock`).
    pub fn open(state_dir: &Path, exclusive: bool) -> Result<Node> {
        let store = Store::open(state_dir)?;
        let lock = Lock::take(state_dir, exclusive)?;
        Ok(Node {
            state_dir: state_dir.to_path_buf(),
            store,
            _lock: lock,
        })
    }

    pub fn create_network(&mut self, spec: &NetworkSpec) -> Result<Network> {
        self.create_network_from(spec, "cli", false)
    }

    /// `adopt_bridge`: an existing bridge of that name is used (CNI configurations name a
    /// shared bridge such as cni0) instead of being an error.
    pub fn create_network_from(
        &mut self,
        spec: &NetworkSpec,
        origin: &str,
        adopt_bridge: bool,
    ) -> Result<Network> {
        let mut net = self.store.create_network(spec, origin)?;
        if let Err(e) = self.build_network(&net, !adopt_bridge) {
            let _ = self.teardown_network(&net);
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
        self.build_network(net, false)?;
        self.store.mark_network_ready(net.id)?;
        net.ready = true;
        Ok(())
    }

    /// Kernel state of a network: forwarding, bridge with gateway addresses, nft chain and
    /// elements. With `fresh` an existing bridge of that name is an error (someone else's).
    pub fn build_network(&mut self, net: &Network, fresh: bool) -> Result<()> {
        let v4 = net.subnets.iter().any(|s| s.subnet.addr().is_ipv4());
        let v6 = net.subnets.iter().any(|s| !s.subnet.addr().is_ipv4());
        sysctl::ensure_forwarding(v4, v6)?;
        if let Some(br) = &net.bridge {
            let mut nl = Netlink::open()?;
            let index = match nl.link_by_name(br)? {
                Some(l) if fresh => {
                    return Err(Error::invalid(
                        "--bridge",
                        br,
                        format!("a link with this name already exists (index {})", l.index),
                    ));
                }
                Some(l) => l.index,
                None => {
                    nl.create_bridge(br, net.bridge_mac, net.mtu)?;
                    nl.link_index(br)?
                        .ok_or_else(|| Error::not_found("link", br))?
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
            sysctl::ensure_path(&sysctl::iface_key("ipv4", br, "route_localnet"), "1")?;
            if v6 {
                // The bridge's link-local address appears with the first port; while it is
                // in duplicate-address detection the node cannot solicit neighbours, which
                // cost the first routed IPv6 connection of a new sandbox a 1 s SYN retry.
                // knit owns this link and its addresses: skip DAD.
                sysctl::ensure_path(&sysctl::iface_key("ipv6", br, "accept_dad"), "0")?;
            }
            if net.policy == crate::policy::spec::Default::Deny {
                nl.set_bridge_nf_call(index, true)?;
            }
        }
        let mut b = Batch::new();
        b.base().network(&net_fw(net), true);
        if net.policy == crate::policy::spec::Default::Deny {
            b.net_policy(&crate::policy::resolve(&self.store, net)?, &[]);
        }
        b.apply()
    }

    fn teardown_network(&mut self, net: &Network) -> Result<()> {
        let rules: Vec<i64> = self
            .store
            .rules_of_network(net.id)?
            .iter()
            .map(|r| r.id)
            .collect();
        let ifaces = crate::policy::ifaces(net, &[]);
        let mut b = Batch::new();
        b.net_policy_removed(net.id, &ifaces, &rules)
            .network(&net_fw(net), false);
        if b.apply().is_err() && crate::firewall::table_exists() {
            // knit's table is damaged: rewrite it from the store without this network.
            self.rebuild_firewall_without(Some(net.id), None)?;
        }
        if let Some(br) = &net.bridge {
            Netlink::open()?.delete_link(br)?;
        }
        Ok(())
    }

    pub fn remove_network(&mut self, name: &str) -> Result<Network> {
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
        self.rebuild_firewall_without(None, None)
    }

    /// The same, leaving out one network and/or one attachment that is being removed.
    pub fn rebuild_firewall_without(&self, net_id: Option<i64>, att_id: Option<i64>) -> Result<()> {
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
        let mut rules = self.store.rules()?;
        let policies: Vec<_> = nets
            .iter()
            .map(|n| {
                let (own, rest) = rules.drain(..).partition(|r| r.network_id == n.id);
                rules = rest;
                crate::policy::resolve_with(n, own, &all)
            })
            .filter(|p| !p.is_empty())
            .collect();
        let mut b = Batch::rebuild(&nets.iter().map(net_fw).collect::<Vec<_>>(), &atts);
        for p in &policies {
            b.net_policy(p, &[]);
        }
        for svc in self.store.services()? {
            b.service(None, Some(&crate::service::resolve_from(&svc, &all)));
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
    }
}

pub fn attach_fw(n: &Network, a: &Attachment) -> AttachFw {
    AttachFw {
        net_id: n.id,
        internal: n.internal,
        ptp_host_if: (n.driver == Driver::Ptp).then(|| a.host_ifname.clone()),
        ports: a.ports.clone(),
        guard: crate::firewall::Guard {
            host_if: a.host_ifname.clone(),
            bridged: n.driver == Driver::Bridge,
            mac: crate::model::Mac::parse("mac", &a.mac).ok(),
            ips: a.ips.iter().map(|ip| ip.addr()).collect(),
        },
    }
}
