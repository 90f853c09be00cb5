//! knit's nftables table, generated as data. Each command (network create, attach, ...)
//! becomes one `Batch` of typed commands, rendered to one nft script and applied as ONE
//! transaction. Per-container state lives only in set/map elements, so rule count and
//! evaluation cost do not grow with containers or published ports.
//!
//! Layout of `table inet knit`:
//! - publish: DNAT through maps keyed by (host ip, proto, port) and (proto, port), reached
//!   from prerouting (traffic from outside) and output (from the node itself).
//! - postrouting: masquerade egress of masquerading networks, hairpin and localhost DNAT.
//! - forward: isolation. `fwd_in` maps an ingress interface to its network's chain, which
//!   accepts traffic to the same network and drops traffic to other knit networks
//!   (internal networks drop everything else too); `fwd_out` guards internal networks.
//! - anti-spoofing: frames from a sandbox's host veth must carry the sandbox's MAC and
//!   addresses. Bridge ports are checked in knit's own `table bridge knit` (frames between
//!   two ports of one bridge never reach the inet hooks unless bridge-netfilter is on),
//!   ptp veths in the inet table's `raw_prerouting`; both by set lookups keyed by
//!   `ifname . addr`, so the cost per packet does not grow with the number of sandboxes.

use super::batch::{Batch, Cmd, Elem};
use super::guard::{GUARD_RULES, GUARD_RULES_BRIDGE, GUARD_SETS, Guard};
use crate::model::PortMapping;
use ipnet::IpNet;
use std::net::IpAddr;

/// What the firewall needs to know about one network.
#[derive(Debug, Clone)]
pub struct NetFw {
    pub id: i64,
    /// The bridge (bridge driver); ptp networks add their host veths per attachment.
    pub bridge: Option<String>,
    pub subnets: Vec<IpNet>,
    pub internal: bool,
    pub masquerade: bool,
    /// Addresses knit's DNS server answers on (the gateways of a DNS-enabled network).
    pub dns_servers: Vec<IpAddr>,
    /// A cluster network's whole subnets (`subnets` are this node's blocks): traffic to
    /// other nodes' blocks stays inside the network (not masqueraded).
    pub cluster_nets: Vec<IpNet>,
    /// A cluster network's VXLAN device: part of the network, like its bridge.
    pub tunnel: Option<String>,
}

/// What the firewall needs to know about one attachment.
#[derive(Debug, Clone)]
pub struct AttachFw {
    pub net_id: i64,
    pub internal: bool,
    /// The host-side veth of a ptp attachment (bridge ports are covered by the bridge).
    pub ptp_host_if: Option<String>,
    pub ports: Vec<PortMapping>,
    /// What the attachment's host veth may carry (anti-spoofing).
    pub guard: Guard,
}

const SETS: &[(&str, &str)] = &[
    ("knit_ifs", "type ifname;"),
    ("fwd_in", "type ifname : verdict;"),
    ("fwd_out", "type ifname : verdict;"),
    ("nets4", "type ipv4_addr; flags interval;"),
    ("nets6", "type ipv6_addr; flags interval;"),
    ("masq4", "type ipv4_addr; flags interval;"),
    ("masq6", "type ipv6_addr; flags interval;"),
    (
        "pub4",
        "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;",
    ),
    (
        "pub4any",
        "type inet_proto . inet_service : ipv4_addr . inet_service;",
    ),
    (
        "pub6",
        "type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service;",
    ),
    (
        "pub6any",
        "type inet_proto . inet_service : ipv6_addr . inet_service;",
    ),
    ("dns4", "type ipv4_addr;"),
    ("dns6", "type ipv6_addr;"),
    // Services: VIP → its chain; VIPs without backends; the same for node ports.
    (
        "svc4",
        "type ipv4_addr . inet_proto . inet_service : verdict;",
    ),
    (
        "svc6",
        "type ipv6_addr . inet_proto . inet_service : verdict;",
    ),
    ("svc_none4", "type ipv4_addr . inet_proto . inet_service;"),
    ("svc_none6", "type ipv6_addr . inet_proto . inet_service;"),
    ("np4", "type inet_proto . inet_service : verdict;"),
    ("np6", "type inet_proto . inet_service : verdict;"),
    ("np_none", "type inet_proto . inet_service;"),
    // Policy: the interface traffic leaves through towards a network's sandboxes → its
    // ingress chain; the interface traffic from its sandboxes arrives on → its egress chain.
    ("pol_out", "type ifname : verdict;"),
    ("egr_from", "type ifname : verdict;"),
    // Clusters: the VXLAN ports of this node's devices, and the peers' underlay addresses
    // VXLAN is accepted from.
    ("cl_vxlan", "type inet_service;"),
    ("cl_peers4", "type ipv4_addr;"),
    ("cl_peers6", "type ipv6_addr;"),
];

const BASE_CHAINS: &[(&str, Option<&str>, &[&str])] = &[
    // Anti-spoofing of ptp veths (routed, no bridge): at prerouting priority raw, the
    // earliest inet hook, so a spoofed packet never reaches conntrack, NAT or policy. (A
    // netdev ingress chain would be earlier, but binds to named devices: one chain change
    // per sandbox instead of set elements.)
    ("antispoof", None, GUARD_RULES),
    // DNS to knit's own server is request/response with nothing to NAT or filter
    // statefully: skipping conntrack saves an entry (and the NAT lookups) per query.
    (
        "raw_prerouting",
        Some("type filter hook prerouting priority raw; policy accept;"),
        &[
            "iifname @as_ports jump antispoof comment \"anti-spoofing of sandbox ports\"",
            "ip daddr @dns4 udp dport 53 notrack comment \"knit DNS, untracked\"",
            "ip6 daddr @dns6 udp dport 53 notrack comment \"knit DNS, untracked\"",
        ],
    ),
    (
        "raw_output",
        Some("type filter hook output priority raw; policy accept;"),
        &[
            "ip saddr @dns4 udp sport 53 notrack comment \"knit DNS, untracked\"",
            "ip6 saddr @dns6 udp sport 53 notrack comment \"knit DNS, untracked\"",
        ],
    ),
    (
        "services",
        None,
        &[
            "ip daddr . meta l4proto . th dport vmap @svc4 comment \"services: VIP to its service\"",
            "ip6 daddr . meta l4proto . th dport vmap @svc6 comment \"services: VIP to its service\"",
            "meta nfproto ipv4 jump svc_data4 comment \"services: VIP to its backends\"",
            "meta nfproto ipv6 jump svc_data6 comment \"services: VIP to its backends\"",
            "fib daddr type local jump nodeports comment \"services: node ports\"",
        ],
    ),
    // A service without backends refuses at once instead of letting clients time out.
    (
        "svc_refuse",
        None,
        &[
            "meta l4proto tcp reject with tcp reset comment \"service without backends: refused\"",
            "reject comment \"service without backends: refused\"",
        ],
    ),
    (
        "svc_check",
        None,
        &[
            "ip daddr . meta l4proto . th dport @svc_none4 goto svc_refuse comment \"service without backends\"",
            "ip6 daddr . meta l4proto . th dport @svc_none6 goto svc_refuse comment \"service without backends\"",
            "fib daddr type local meta l4proto . th dport @np_none goto svc_refuse comment \"node port of a service without backends\"",
        ],
    ),
    (
        "publish",
        None,
        &[
            "dnat ip to ip daddr . meta l4proto . th dport map @pub4 comment \"published port: DNAT\"",
            "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pub4any comment \"published port: DNAT\"",
            "dnat ip6 to ip6 daddr . meta l4proto . th dport map @pub6 comment \"published port: DNAT\"",
            "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @pub6any comment \"published port: DNAT\"",
        ],
    ),
    (
        "prerouting",
        Some("type nat hook prerouting priority dstnat; policy accept;"),
        &[
            "jump services comment \"services\"",
            "fib daddr type local jump publish comment \"published ports\"",
        ],
    ),
    (
        "output",
        Some("type nat hook output priority -100; policy accept;"),
        &[
            "jump services comment \"services\"",
            "fib daddr type local jump publish comment \"published ports\"",
        ],
    ),
    (
        "filter_output",
        Some("type filter hook output priority filter; policy accept;"),
        &["ct state new jump svc_check comment \"services without backends\""],
    ),
    (
        "postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &[
            // Hairpin: a sandbox reached a published port; the answer must come back
            // through the node, so the node stands in as the source.
            "ct status dnat ip saddr @nets4 masquerade comment \"hairpin: a knit network reached a published port or service\"",
            "ct status dnat ip6 saddr @nets6 masquerade comment \"hairpin: a knit network reached a published port or service\"",
            // Published on 127.0.0.1: loopback sources cannot leave the node.
            "ct status dnat ip saddr 127.0.0.0/8 masquerade comment \"published on 127.0.0.1\"",
            "ip saddr @masq4 ip daddr != @nets4 masquerade comment \"masquerade: knit networks going out\"",
            "ip6 saddr @masq6 ip6 daddr != @nets6 masquerade comment \"masquerade: knit networks going out\"",
        ],
    ),
    (
        "forward",
        Some("type filter hook forward priority filter; policy accept;"),
        &[
            "ct state established,related accept comment \"stateful: replies and related packets\"",
            "ct state new jump svc_check comment \"services without backends\"",
            // Policy: new connections from a network's sandboxes pass its egress chain,
            // those to its sandboxes (also through a service or a published port: the
            // address here is already the backend's) its ingress chain.
            "iifname vmap @egr_from comment \"policy: egress of a network\"",
            "oifname vmap @pol_out comment \"policy: ingress of a network\"",
            // Published ports and services are reachable from every network, like from
            // outside.
            "ct status dnat accept comment \"published ports and services pass network isolation\"",
            "iifname vmap @fwd_in comment \"isolation: traffic from a knit network\"",
            "oifname vmap @fwd_out comment \"isolation: internal networks\"",
        ],
    ),
    (
        "input",
        Some("type filter hook input priority filter; policy accept;"),
        // route_localnet is on for knit interfaces (publishing on 127.0.0.1); never let
        // sandboxes address the node's loopback services directly.
        &[
            // VXLAN only from cluster peers: anything else to the port is a spoof.
            "udp dport @cl_vxlan ip saddr != @cl_peers4 drop comment \"cluster: VXLAN only from peers\"",
            "udp dport @cl_vxlan ip6 saddr != @cl_peers6 drop comment \"cluster: VXLAN only from peers\"",
            "iifname @knit_ifs ip daddr 127.0.0.0/8 ct direction original drop comment \"sandboxes never reach the node's loopback\"",
            "ct state new jump svc_check comment \"services without backends\"",
            // Egress to the node itself (DNS to knit's resolver is untracked, not new).
            "ct state { new, untracked } iifname vmap @egr_from comment \"policy: egress to the node\"",
        ],
    ),
];

fn net_chain_out(id: i64) -> String {
    format!("n{id}_out")
}
fn net_chain_in(id: i64) -> String {
    format!("n{id}_in")
}
fn net_set(id: i64) -> String {
    format!("n{id}_ifs")
}

fn family_sets(net: &IpNet) -> (&'static str, &'static str) {
    match net {
        IpNet::V4(_) => ("nets4", "masq4"),
        IpNet::V6(_) => ("nets6", "masq6"),
    }
}

/// The map and element that publish one port.
pub fn port_element(p: &PortMapping) -> (&'static str, Elem) {
    let map = match (p.host_ip.is_some(), p.container_ip) {
        (true, IpAddr::V4(_)) => "pub4",
        (true, IpAddr::V6(_)) => "pub6",
        (false, IpAddr::V4(_)) => "pub4any",
        (false, IpAddr::V6(_)) => "pub6any",
    };
    (map, Elem::Port(p.clone()))
}

impl Batch {
    /// Table, sets and base chains. Idempotent: objects are `add`ed (no error when
    /// present) and base chains are flushed before their rules are re-added.
    pub fn base(&mut self) -> &mut Self {
        self.push(Cmd::AddTable);
        for (name, spec) in SETS.iter().chain(GUARD_SETS) {
            self.push(Cmd::AddSet {
                name: name.to_string(),
                spec: spec.to_string(),
            });
        }
        for (name, spec) in crate::nft::service::data_sets() {
            self.push(Cmd::AddSet { name, spec });
        }
        let service_chains = crate::nft::service::data_chains();
        let fixed = BASE_CHAINS.iter().map(|(name, hook, rules)| {
            (
                name.to_string(),
                *hook,
                rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            )
        });
        // Chains a base chain jumps to must exist first: the services' go in front.
        for (name, hook, rules) in service_chains
            .into_iter()
            .map(|(n, r)| (n, None, r))
            .chain(fixed)
        {
            self.push(Cmd::AddChain {
                name: name.clone(),
                hook,
            });
            self.push(Cmd::FlushChain(name.clone()));
            for rule in rules {
                self.push(Cmd::AddRule {
                    chain: name.clone(),
                    rule,
                });
            }
        }
        self.bridge_base()
    }

    /// knit's `table bridge knit` (all of it is knit's): anti-spoofing of bridge ports at
    /// the bridge's prerouting hook, priority -300 (before bridge conntrack at -200 and
    /// br_netfilter at 0), which every frame entering a bridge through a port passes,
    /// whether it is bridged to another port or delivered to the node.
    fn bridge_base(&mut self) -> &mut Self {
        let br = |c| Cmd::Bridge(Box::new(c));
        self.push(br(Cmd::AddTable));
        for (name, spec) in GUARD_SETS {
            self.push(br(Cmd::AddSet {
                name: name.to_string(),
                spec: spec.to_string(),
            }));
        }
        let chains: [(&str, Option<&'static str>, Vec<&str>); 2] = [
            (
                "antispoof",
                None,
                GUARD_RULES
                    .iter()
                    .chain(GUARD_RULES_BRIDGE)
                    .copied()
                    .collect(),
            ),
            (
                "prerouting",
                Some("type filter hook prerouting priority -300; policy accept;"),
                vec!["iifname @as_ports jump antispoof"],
            ),
        ];
        for (name, hook, rules) in chains {
            self.push(br(Cmd::AddChain {
                name: name.to_string(),
                hook,
            }));
            self.push(br(Cmd::FlushChain(name.to_string())));
            for rule in rules {
                self.push(br(Cmd::AddRule {
                    chain: name.to_string(),
                    rule: rule.to_string(),
                }));
            }
        }
        self
    }

    /// A whole-table rebuild: the old table (if any) is replaced in the same transaction.
    pub fn rebuild(nets: &[NetFw], atts: &[AttachFw]) -> Self {
        let mut b = Batch::new();
        b.push(Cmd::AddTable);
        b.push(Cmd::DeleteTable);
        b.push(Cmd::Bridge(Box::new(Cmd::AddTable)));
        b.push(Cmd::Bridge(Box::new(Cmd::DeleteTable)));
        b.base();
        for n in nets {
            b.network(n, true);
        }
        for a in atts {
            b.attachment(a, true);
        }
        b
    }

    /// Adds (`add`) or removes a network's chain, set and elements.
    pub fn network(&mut self, n: &NetFw, add: bool) -> &mut Self {
        let (out, inn, set) = (net_chain_out(n.id), net_chain_in(n.id), net_set(n.id));
        if add {
            self.push(Cmd::AddSet {
                name: set.clone(),
                spec: "type ifname;".into(),
            });
            for (chain, wanted) in [(&out, true), (&inn, n.internal)] {
                if !wanted {
                    continue;
                }
                self.push(Cmd::AddChain {
                    name: chain.clone(),
                    hook: None,
                });
                self.push(Cmd::FlushChain(chain.clone()));
            }
            self.push(Cmd::AddRule {
                chain: out.clone(),
                rule: format!(
                    "oifname @{set} accept comment \"network {}: same network\"",
                    n.id
                ),
            });
            self.push(Cmd::AddRule {
                chain: out.clone(),
                rule: format!("oifname @knit_ifs drop comment \"network {}: isolated from other knit networks\"", n.id),
            });
            if n.internal {
                self.push(Cmd::AddRule {
                    chain: out.clone(),
                    rule: format!("drop comment \"network {}: internal\"", n.id),
                });
                self.push(Cmd::AddRule {
                    chain: inn.clone(),
                    rule: format!(
                        "iifname @{set} accept comment \"network {}: same network\"",
                        n.id
                    ),
                });
                self.push(Cmd::AddRule {
                    chain: inn.clone(),
                    rule: format!("drop comment \"network {}: internal\"", n.id),
                });
            }
        }
        for i in n.bridge.iter().chain(&n.tunnel) {
            self.iface(n.id, n.internal, i, add);
        }
        for net in &n.cluster_nets {
            let (nets, _) = family_sets(net);
            self.elems(nets, vec![Elem::Prefix(*net)], add);
        }
        for ip in &n.dns_servers {
            let set = if ip.is_ipv4() { "dns4" } else { "dns6" };
            self.elems(set, vec![Elem::Addr(*ip)], add);
        }
        for net in &n.subnets {
            let (nets, masq) = family_sets(net);
            // A cluster network's blocks are inside its cluster subnets (added above; an
            // interval set refuses overlapping elements).
            if !n.cluster_nets.iter().any(|c| c.contains(net)) {
                self.elems(nets, vec![Elem::Prefix(*net)], add);
            }
            if n.masquerade && !n.internal {
                self.elems(masq, vec![Elem::Prefix(*net)], add);
            }
        }
        if !add {
            // Elements that jump to the chains are gone above; now the objects themselves.
            for chain in [&out, &inn] {
                if chain == &inn && !n.internal {
                    continue;
                }
                self.push(Cmd::AddChain {
                    name: chain.clone(),
                    hook: None,
                });
                self.push(Cmd::FlushChain(chain.clone()));
                self.push(Cmd::DeleteChain(chain.clone()));
            }
            self.push(Cmd::AddSet {
                name: set.clone(),
                spec: "type ifname;".into(),
            });
            self.push(Cmd::DeleteSet(set));
        }
        self
    }

    /// An interface that belongs to network `id` (its bridge, or a ptp host veth).
    fn iface(&mut self, id: i64, internal: bool, ifname: &str, add: bool) {
        let i = || Elem::Iface(ifname.to_string());
        let jump = |chain| Elem::Jump {
            ifname: ifname.to_string(),
            chain,
        };
        self.elems("knit_ifs", vec![i()], add);
        self.elems(net_set(id), vec![i()], add);
        self.elems("fwd_in", vec![jump(net_chain_out(id))], add);
        if internal {
            self.elems("fwd_out", vec![jump(net_chain_in(id))], add);
        }
    }

    pub fn attachment(&mut self, a: &AttachFw, add: bool) -> &mut Self {
        if let Some(hif) = &a.ptp_host_if {
            self.iface(a.net_id, a.internal, hif, add);
        }
        self.guard(&a.guard, add);
        let mut by_map: Vec<(&'static str, Vec<Elem>)> = Vec::new();
        for p in &a.ports {
            let (map, e) = port_element(p);
            match by_map.iter_mut().find(|(m, _)| *m == map) {
                Some((_, v)) => v.push(e),
                None => by_map.push((map, vec![e])),
            }
        }
        for (map, elems) in by_map {
            self.elems(map, elems, add);
        }
        self
    }

    /// Anti-spoofing elements of one host veth: what it may send, then the port itself in
    /// `as_ports` (one transaction either way; removal mirrors it).
    fn guard(&mut self, g: &Guard, add: bool) {
        let ifname = || g.host_if.clone();
        let mut sets: Vec<(&str, Vec<Elem>)> = vec![];
        if let Some(mac) = g.mac {
            sets.push((
                "as_macs",
                vec![Elem::IfaceMac {
                    ifname: ifname(),
                    mac,
                }],
            ));
        }
        let addrs = |v4: bool| -> Vec<Elem> {
            g.ips
                .iter()
                .filter(|ip| ip.is_ipv4() == v4)
                .map(|ip| Elem::IfaceAddr {
                    ifname: ifname(),
                    ip: *ip,
                })
                .collect()
        };
        sets.push(("as_addrs4", addrs(true)));
        sets.push(("as_addrs6", addrs(false)));
        let targets = g
            .ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(ip) => Some(Elem::IfaceNdTarget {
                    ifname: ifname(),
                    ip: *ip,
                }),
                IpAddr::V4(_) => None,
            })
            .collect();
        sets.push(("as_nd6", targets));
        sets.push(("as_ports", vec![Elem::Iface(ifname())]));
        if !add {
            sets.reverse();
        }
        for (set, elems) in sets {
            if elems.is_empty() {
                continue;
            }
            let set = set.to_string();
            let c = if add {
                Cmd::AddElements { set, elems }
            } else {
                Cmd::RemoveElements { set, elems }
            };
            self.push(if g.bridged {
                Cmd::Bridge(Box::new(c))
            } else {
                c
            });
        }
    }
}

/// Compares generated rules with `tests/golden/NAME` (UPDATE_GOLDEN=1 rewrites it).
#[cfg(test)]
pub(crate) fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(
        got, want,
        "golden file {name} differs; UPDATE_GOLDEN=1 to accept"
    );
}

#[cfg(test)]
mod tests;
