//! `knit inspect SANDBOX`: the whole stack of one sandbox as the kernel has it — links,
//! addresses, routes, neighbours and sysctls inside it, its host-side links, the node's
//! forwarding switches, and the lines of knit's nft table that mention it.

use crate::error::Result;
use crate::model::SandboxRef;
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::node::Node;
use crate::store::Attachment;
use crate::sysctl;
use netlink_packet_route::AddressFamily;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// An address on a link (`--json` gives these fields; the text report one line each).
#[derive(Debug, Serialize)]
pub struct AddressView {
    /// CIDR: the address and its prefix length.
    pub address: String,
    pub dev: String,
}

#[derive(Debug, Serialize)]
pub struct RouteView {
    /// CIDR; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub onlink: bool,
    /// Scope link: the destination is on `dev` itself.
    pub link_scope: bool,
}

#[derive(Debug, Serialize)]
pub struct NeighbourView {
    pub ip: String,
    pub dev: String,
    pub mac: Option<String>,
    pub state: String,
}

#[derive(Debug, Serialize)]
pub struct NetnsView {
    pub links: Vec<Link>,
    pub addresses: Vec<AddressView>,
    pub routes: Vec<RouteView>,
    pub neighbours: Vec<NeighbourView>,
    pub sysctls: BTreeMap<String, String>,
}

impl std::fmt::Display for AddressView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.address, self.dev)
    }
}

impl std::fmt::Display for RouteView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let default = self.dst == "0.0.0.0/0" || self.dst == "::/0";
        write!(f, "{}", if default { "default" } else { &self.dst })?;
        if let Some(g) = &self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if self.link_scope {
            write!(f, " scope link")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for NeighbourView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dev {} lladdr {} {}",
            self.ip,
            self.dev,
            self.mac.as_deref().unwrap_or("-"),
            self.state
        )
    }
}

#[derive(Debug, Serialize)]
pub struct SandboxView {
    pub sandbox: String,
    pub netns: String,
    pub attachments: Vec<Attachment>,
    pub inside: Option<NetnsView>,
    pub host_links: Vec<Link>,
    pub node_sysctls: BTreeMap<String, String>,
    pub nft_rules: Vec<String>,
    /// On a cluster network: every node of the cluster as this node sees it (None: no
    /// cluster network, or etcd unreachable: `cluster_error` says why).
    pub cluster_peers: Option<Vec<crate::node::cluster_report::PeerReport>>,
    pub cluster_error: Option<String>,
    /// With `--flows`: its connections as the node's conntrack has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<Vec<crate::node::flows::FlowView>>,
}

/// An attachment with its addresses as the sandbox has them: a ptp sandbox holds a /32
/// (/128), not the network's prefix the store allocates from.
pub fn as_configured(net: &crate::store::Network, mut att: Attachment) -> Attachment {
    let driver = crate::driver::for_network(net);
    att.ips = att.ips.iter().map(|ip| driver.sandbox_addr(ip)).collect();
    att
}

/// Reads links, addresses, routes and neighbours of the namespace `nl` is bound to.
fn view(nl: &mut Netlink, sysctl_keys: &[String]) -> Result<NetnsView> {
    let links = nl.links()?;
    let name_of = |i: u32| {
        links
            .iter()
            .find(|l| l.index == i)
            .map(|l| l.name.clone())
            .unwrap_or(i.to_string())
    };
    let addresses = nl
        .addresses()?
        .into_iter()
        .map(|(i, a)| AddressView {
            address: a.to_string(),
            dev: name_of(i),
        })
        .collect();
    let mut routes = Vec::new();
    for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
        for r in nl.routes(fam)? {
            routes.push(RouteView {
                dst: r.dst.to_string(),
                gateway: r.gateway.map(|g| g.to_string()),
                dev: r.oif.map(name_of),
                onlink: r.onlink,
                link_scope: r.link_scope,
            });
        }
    }
    let neighbours = nl
        .neighbours()?
        .into_iter()
        .map(|n| NeighbourView {
            ip: n.ip.to_string(),
            dev: name_of(n.index),
            mac: n.mac,
            state: n.state.to_string(),
        })
        .collect();
    let sysctls = sysctl_keys
        .iter()
        .filter_map(|k| sysctl::read(k).map(|v| (k.clone(), v)))
        .collect();
    Ok(NetnsView {
        links: links
            .into_iter()
            .map(|l| Link {
                index: l.index,
                name: l.name,
                kind: l.kind,
                mac: l.mac,
                mtu: l.mtu,
                up: l.up,
            })
            .collect(),
        addresses,
        routes,
        neighbours,
        sysctls,
    })
}

impl Node {
    pub fn inspect_sandbox(&self, sandbox: &SandboxRef) -> Result<SandboxView> {
        let nets = self.store.networks()?;
        let attachments: Vec<Attachment> = self
            .store
            .attachments_of_sandbox(&sandbox.key())?
            .into_iter()
            .map(|a| match nets.iter().find(|n| n.id == a.network_id) {
                Some(n) => as_configured(n, a),
                None => a,
            })
            .collect();
        // CNI attachments are named by container; their namespace path is in the store.
        let path = match sandbox {
            SandboxRef::Container { .. } | SandboxRef::Handoff { .. } => attachments
                .first()
                .map(|a| a.netns_path.clone())
                .unwrap_or_default(),
            _ => sandbox.path(),
        };
        let inside = match Netns::open(&path) {
            Ok(ns) => {
                let mut keys: Vec<String> = vec![
                    "net.ipv4.ip_forward".into(),
                    "net.ipv6.conf.all.disable_ipv6".into(),
                ];
                for a in &attachments {
                    keys.push(format!("net.ipv4.conf.{}.rp_filter", a.ifname));
                    keys.push(format!("net.ipv6.conf.{}.accept_dad", a.ifname));
                }
                Some(ns.run(move || -> Result<NetnsView> {
                    let mut nl = Netlink::open()?;
                    view(&mut nl, &keys)
                })??)
            }
            Err(_) => None,
        };
        let mut nl = Netlink::open()?;
        let host_links = nl
            .links()?
            .into_iter()
            .filter(|l| attachments.iter().any(|a| a.host_ifname == l.name))
            .map(|l| Link {
                index: l.index,
                name: l.name,
                kind: l.kind,
                mac: l.mac,
                mtu: l.mtu,
                up: l.up,
            })
            .collect();
        let mut node_sysctls = BTreeMap::new();
        for k in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            if let Some(v) = sysctl::read(k) {
                node_sysctls.insert(k.to_string(), v);
            }
        }
        let mut needles: Vec<String> = Vec::new();
        for a in &attachments {
            needles.push(format!("\"{}\"", a.host_ifname));
            for ip in &a.ips {
                needles.push(format!("{} ", ip.addr()));
            }
            let Ok(net) = self.store.network(&a.network) else {
                continue;
            };
            needles.extend(net.subnets.iter().map(|s| format!("{} ", s.subnet)));
            if let Some(br) = &net.bridge {
                needles.push(format!("\"{br}\""));
                let key = sysctl::iface_key("ipv4", br, "route_localnet");
                if let Some(v) = sysctl::read_path(&key) {
                    node_sysctls.insert(format!("net.ipv4.conf.{br}.route_localnet"), v);
                }
            }
        }
        let table = crate::nft::list_table().unwrap_or_default();
        let nft_rules = table
            .lines()
            .map(str::trim)
            .flat_map(|l| l.split(", "))
            .map(|l| {
                l.trim_start_matches("elements = { ")
                    .trim_end_matches(" }")
                    .trim_end_matches(',')
            })
            .filter(|l| needles.iter().any(|n| format!("{l} ").contains(n.as_str())))
            .map(str::to_string)
            .collect();
        let on_cluster = attachments.iter().any(|a| {
            self.store
                .network(&a.network)
                .is_ok_and(|n| n.cluster.is_some())
        });
        let (cluster_peers, cluster_error) = if on_cluster {
            match self.cluster_report() {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        Ok(SandboxView {
            flows: None,
            cluster_peers,
            cluster_error,
            sandbox: sandbox.key(),
            netns: path,
            attachments,
            inside,
            host_links,
            node_sysctls,
            nft_rules,
        })
    }
}
