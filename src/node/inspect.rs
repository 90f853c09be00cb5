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

#[derive(Debug, Serialize)]
pub struct NetnsView {
    pub links: Vec<Link>,
    pub addresses: Vec<String>,
    pub routes: Vec<String>,
    pub neighbours: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
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
        .map(|(i, a)| format!("{a} dev {}", name_of(i)))
        .collect();
    let mut routes = Vec::new();
    for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
        for r in nl.routes(fam)? {
            let mut s = r.describe();
            if let Some(o) = r.oif {
                s = s.replace(&format!("oif {o}"), &format!("dev {}", name_of(o)));
            }
            routes.push(s);
        }
    }
    let neighbours = nl
        .neighbours()?
        .into_iter()
        .map(|n| {
            format!(
                "{} dev {} lladdr {} {}",
                n.ip,
                name_of(n.index),
                n.mac.unwrap_or_else(|| "-".into()),
                n.state
            )
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
        let attachments = self.store.attachments_of_sandbox(&sandbox.key())?;
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
