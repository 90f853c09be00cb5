//! doctor's hops: leaving the source (its route, the next hop's neighbour entry, both ends
//! of its link), crossing the node (forwarding, the kernel's own input route with
//! reverse-path filtering, foreign firewalls, masquerade, conntrack entries in the way) and
//! arriving (the destination's link, its way back, the path MTU, a listener).

use super::ends::{Dest, End, Source, Via, proto_name};
use super::firewall::{self, Packet};
use super::{Halt, Report, Walk};
use crate::netlink::{LinkInfoSummary, Netlink};
use crate::node::Node;
use crate::store::{Attachment, Network};
use std::net::IpAddr;

/// The source's side, as the node sees the packet arrive.
pub struct Leg {
    /// Where the probe starts (`ip -n NAME` works for named sandboxes).
    pub name: String,
    pub src_ip: Option<IpAddr>,
    /// The source's knit attachment the packet leaves through.
    pub att: Option<Attachment>,
    /// The node link the packet arrives on (bridge or ptp veth, or the uplink).
    pub iif: Option<LinkInfoSummary>,
    pub mtu: u32,
    /// The packet goes through the node's IP layer (routed, or translated there).
    pub routed: bool,
}

/// The MAC the next hop `nh` on `att`'s link must have: the network's bridge (its
/// gateway), the node end of a ptp veth, or a sandbox on the same network.
pub(super) fn expected_mac(
    node: &Node,
    nl: &mut Netlink,
    nh: IpAddr,
    att: &Attachment,
    net: Option<&Network>,
) -> Walk<Option<String>> {
    let gateway = net.is_some_and(|n| n.subnets.iter().any(|s| s.gateway == nh));
    if gateway || att.ips.iter().all(|i| !i.contains(&nh)) {
        let link = match net.and_then(|n| n.bridge.clone()) {
            Some(b) => nl.link_by_name(&b)?,
            None => nl.link_by_name(&att.host_ifname)?,
        };
        return Ok(link.and_then(|l| l.mac));
    }
    Ok(node
        .store
        .attachments_of_network(att.network_id)?
        .into_iter()
        .find(|a| a.ips.iter().any(|i| i.addr() == nh))
        .map(|a| a.mac))
}

/// The neighbour entry for `nh` on `oif` in a namespace, against the MAC it must have.
pub(super) fn neighbour_step(
    r: &mut Report,
    nl: &mut Netlink,
    who: &str,
    oif: &LinkInfoSummary,
    nh: IpAddr,
    want: Option<String>,
) -> Walk {
    let entry = nl
        .neighbours()?
        .into_iter()
        .find(|n| n.index == oif.index && n.ip == nh);
    match (entry, want) {
        (Some(e), Some(want))
            if e.mac
                .as_ref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(&want)) =>
        {
            let have = e.mac.unwrap_or_default();
            Err(r.fail(
                "neighbour",
                format!("{who} has a {} neighbour entry {nh} → {have} on {}, but {nh} is {want}: its frames go to a MAC nobody has", e.state, oif.name),
                format!("ip -n {who} neigh del {nh} dev {} (the kernel then asks ARP/ND again)", oif.name),
            ))
        }
        (Some(e), _) => {
            r.pass(
                "neighbour",
                format!("{who}: {nh} is {} ({})", e.mac.unwrap_or_default(), e.state),
            );
            Ok(())
        }
        (None, _) => {
            r.pass(
                "neighbour",
                format!("{who}: no entry for {nh} yet (ARP/ND will ask)"),
            );
            Ok(())
        }
    }
}

fn fam_ip(att: &Attachment, v4: bool) -> Option<IpAddr> {
    att.ips.iter().map(|i| i.addr()).find(|a| a.is_ipv4() == v4)
}

impl Node {
    /// Leaving a sandbox: the route it picks, the next hop's neighbour entry, both ends of
    /// the link.
    pub(super) fn leave_sandbox(
        &self,
        from: &super::names::Asker,
        dst: &Dest,
        nets: &[Network],
        nl: &mut Netlink,
        r: &mut Report,
    ) -> Walk<Leg> {
        let (key, ns, atts) = (from.name, from.ns, from.atts);
        let mut snl = Netlink::open_in(ns)?;
        let Some(lookup) = snl.route_get(dst.ip)? else {
            return Err(r.fail(
                "route in source",
                format!("Network is unreachable: {key} has no route to {}", dst.ip),
                format!("give {key} a default route via its network's gateway: `ip -n {key} route add default via GATEWAY` (knit attach adds one unless the sandbox had another)"),
            ));
        };
        let route = lookup.route;
        let links = snl.links()?;
        let Some(oif) = route.oif.and_then(|i| links.iter().find(|l| l.index == i)) else {
            return Err(r.fail(
                "route in source",
                format!("the route to {} has no interface", dst.ip),
                "knit reconcile",
            ));
        };
        let via = route
            .gateway
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        r.pass(
            "route in source",
            format!("{}{via} dev {}", dst.ip, oif.name),
        );
        if !oif.up {
            return Err(r.fail(
                "source interface",
                format!("{} in {key} is down", oif.name),
                format!("ip -n {key} link set {} up", oif.name),
            ));
        }
        let Some(att) = atts.iter().find(|a| a.ifname == oif.name) else {
            r.pass(
                "source interface",
                format!("{} is up (not knit's interface)", oif.name),
            );
            return Err(Halt::Done);
        };
        let net = nets.iter().find(|n| n.id == att.network_id);
        let nh = route.gateway.unwrap_or(dst.ip);
        let want = expected_mac(self, nl, nh, att, net)?;
        neighbour_step(r, &mut snl, key, oif, nh, want)?;
        let node_end = match nl.link_by_name(&att.host_ifname)? {
            Some(l) if l.up => l,
            Some(l) => {
                return Err(r.fail(
                    "source interface",
                    format!("the node end {} of {key}'s {} is down", l.name, oif.name),
                    format!(
                        "ip link set {} up (in the node namespace), or knit reconcile",
                        l.name
                    ),
                ));
            }
            None => {
                return Err(r.fail(
                    "source interface",
                    format!(
                        "the node end {} of {key}'s {} is gone",
                        att.host_ifname, oif.name
                    ),
                    "knit reconcile",
                ));
            }
        };
        bridge_port_step(r, nl, &node_end.name, "source interface")?;
        r.pass(
            "source interface",
            format!("{} up, node end {} up", oif.name, node_end.name),
        );
        let iif = match net.and_then(|n| n.bridge.clone()) {
            Some(b) => nl.link_by_name(&b)?,
            None => Some(node_end),
        };
        let same_l2 = matches!(dst.via, Via::Direct)
            && route.gateway.is_none()
            && matches!(&dst.end, End::Sandbox { att: d, .. } if d.network_id == att.network_id);
        Ok(Leg {
            name: key.to_string(),
            src_ip: lookup.prefsrc.or_else(|| fam_ip(att, dst.ip.is_ipv4())),
            att: Some(att.clone()),
            iif,
            mtu: oif.mtu.unwrap_or(1500),
            routed: !same_l2,
        })
    }

    /// Leaving the node itself, or arriving from outside.
    pub(super) fn leave_node_or_outside(
        &self,
        src: &Source,
        dst: &Dest,
        nl: &mut Netlink,
        r: &mut Report,
    ) -> Walk<Leg> {
        let (probe, label) = match src {
            Source::Outside(ip) => (*ip, format!("{ip}")),
            _ => (dst.ip, "node".to_string()),
        };
        let Some(lookup) = nl.route_get(probe)? else {
            return Err(r.fail(
                "route on node",
                format!("the node has no route to {probe}"),
                format!("add one: `ip route add {probe} via ROUTER` (or a default route) in the node namespace"),
            ));
        };
        let link = match lookup.route.oif {
            Some(i) => nl.links()?.into_iter().find(|l| l.index == i),
            None => None,
        };
        let name = link.as_ref().map_or("?".into(), |l| l.name.clone());
        if let Source::Outside(ip) = src {
            r.pass("arrival", format!("{ip} reaches the node through {name}"));
        } else {
            r.pass("route on node", format!("{} dev {name}", dst.ip));
        }
        if let Some(l) = link.as_ref().filter(|l| !l.up) {
            return Err(r.fail(
                "node interface",
                format!("{} on the node is down", l.name),
                format!("ip link set {} up (in the node namespace)", l.name),
            ));
        }
        Ok(Leg {
            name: label,
            src_ip: match src {
                Source::Outside(ip) => Some(*ip),
                _ => lookup.prefsrc,
            },
            att: None,
            mtu: link.as_ref().and_then(|l| l.mtu).unwrap_or(1500),
            iif: if matches!(src, Source::Outside(_)) {
                link
            } else {
                None
            },
            routed: true,
        })
    }

    /// Through the node's IP layer: forwarding, the kernel's input route (with rp_filter),
    /// the foreign firewall chains on the hooks crossed, masquerade, conntrack.
    pub(super) fn cross_node(
        &self,
        leg: &Leg,
        dst: &Dest,
        nl: &mut Netlink,
        r: &mut Report,
    ) -> Walk {
        let listing = crate::nft::libnft::run("list ruleset")?;
        let v4 = dst.final_ip.is_ipv4();
        let to_node = matches!(dst.end, End::Node);
        let from_node = leg.iif.is_none();
        if !leg.routed {
            // Two ports of one bridge: bridge-family chains see the frame, and the IP
            // hooks too when br_netfilter hands bridged frames to them (knit turns that on
            // for a bridge whose network has policy; Docker for every bridge).
            self.foreign_hook(r, &listing, "forward", true, leg, dst, None)?;
            if let Some(br) = &leg.iif
                && bridged_to_ip(nl, &br.name, v4)?
            {
                for hook in ["prerouting", "forward", "postrouting"] {
                    self.foreign_hook(r, &listing, hook, false, leg, dst, Some(br.name.clone()))?;
                }
            }
            return Ok(());
        }
        if !to_node && !from_node {
            let key = if v4 {
                "net.ipv4.ip_forward"
            } else {
                "net.ipv6.conf.all.forwarding"
            };
            if crate::sysctl::read(key).as_deref() != Some("1") {
                return Err(r.fail(
                    "node forwarding",
                    format!("{key} is off on the node: it does not route between networks or to the outside"),
                    format!("sysctl -w {key}=1 (knit turns it on when it creates a network; something turned it off)"),
                ));
            }
            r.pass("node forwarding", format!("{key} = 1"));
        }
        // The kernel's own routing decision for the packet as it arrives (after DNAT),
        // reverse-path filter included.
        let oif_name;
        match (&leg.iif, leg.src_ip) {
            (Some(iif), Some(src)) if v4 && src.is_ipv4() => {
                match nl.route_input(dst.final_ip, src, iif.index)? {
                    Ok(route) => {
                        oif_name = link_name(nl, route.oif)?;
                        r.pass(
                            "route on node",
                            format!(
                                "{} from {src} in {}: out {}",
                                dst.final_ip,
                                iif.name,
                                oif_name.as_deref().unwrap_or("locally")
                            ),
                        );
                    }
                    // A martian source: EXDEV from the reverse-path check, EINVAL once
                    // the kernel logged it as martian.
                    Err(libc::EXDEV | libc::EINVAL) if rp_drops(nl, src, iif)? => {
                        let back = back_link(nl, src)?;
                        let rp = rp_filter(&iif.name);
                        return Err(r.fail(
                            "reverse path",
                            format!("packets from {src} arrive on {} but the node routes {src} back via {back}; rp_filter is {rp} (strict), so the kernel drops them as spoofed", iif.name),
                            format!("remove the route that sends {src} via {back} (`ip route get {src}` on the node shows it), or make rp_filter loose: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{}.rp_filter=2", iif.name),
                        ));
                    }
                    Err(errno) => {
                        return Err(r.fail(
                            "route on node",
                            format!("the node does not route {} from {src} arriving on {}: {}", dst.final_ip, iif.name, std::io::Error::from_raw_os_error(errno)),
                            format!("`ip route get {} from {src} iif {}` on the node shows the same; add a route to {}", dst.final_ip, iif.name, dst.final_ip),
                        ));
                    }
                }
            }
            _ => match nl.route_to(dst.final_ip)? {
                Some(route) => {
                    oif_name = link_name(nl, route.oif)?;
                }
                None => {
                    return Err(r.fail(
                        "route on node",
                        format!("the node has no route to {}", dst.final_ip),
                        format!("add a route to {} in the node namespace", dst.final_ip),
                    ));
                }
            },
        }
        let hooks: &[&str] = match (from_node, to_node) {
            (true, _) => &["output", "postrouting"],
            (false, true) => &["prerouting", "input"],
            (false, false) => &["prerouting", "forward", "postrouting"],
        };
        for hook in hooks {
            self.foreign_hook(r, &listing, hook, false, leg, dst, oif_name.clone())?;
        }
        if matches!(dst.end, End::Outside) && matches!(dst.via, Via::Direct) {
            self.masquerade_step(r, &listing, leg, dst)?;
        }
        if !matches!(dst.via, Via::Direct) {
            self.conntrack_step(r, leg, dst)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn foreign_hook(
        &self,
        r: &mut Report,
        listing: &str,
        hook: &str,
        bridged: bool,
        leg: &Leg,
        dst: &Dest,
        oif: Option<String>,
    ) -> Walk {
        let p = Packet {
            iif: leg.iif.as_ref().map(|l| l.name.clone()),
            oif,
            saddr: leg.src_ip,
            daddr: Some(if hook == "prerouting" || hook == "output" {
                dst.ip
            } else {
                dst.final_ip
            }),
            proto: dst
                .final_port
                .map_or(if dst.ip.is_ipv4() { 1 } else { 58 }, |p| p.1),
            dport: if hook == "prerouting" || hook == "output" {
                dst.port.map(|p| p.0)
            } else {
                dst.final_port.map(|p| p.0)
            },
        };
        let step = if bridged {
            format!("firewall (bridge {hook})")
        } else {
            format!("firewall ({hook})")
        };
        if let Some(d) = firewall::foreign_drop(listing, hook, bridged, &p) {
            let fix = if bridged {
                "accept the traffic in that chain or set its policy to accept; knit never edits tables it did not create".to_string()
            } else {
                let chain = hook.to_uppercase();
                format!(
                    "accept the traffic there (e.g. `iptables -I {chain} -s SUBNET -j ACCEPT` for knit's subnets, both directions) or set that chain's policy to accept; knit never edits tables it did not create"
                )
            };
            return Err(r.fail(&step, format!("{d}; it is not knit's table"), fix));
        }
        r.pass(&step, "no foreign table drops it");
        Ok(())
    }

    fn masquerade_step(&self, r: &mut Report, listing: &str, leg: &Leg, dst: &Dest) -> Walk {
        let (Some(att), Some(src)) = (&leg.att, leg.src_ip) else {
            return Ok(());
        };
        let Some(net) = self
            .store
            .networks()?
            .into_iter()
            .find(|n| n.id == att.network_id)
        else {
            return Ok(());
        };
        let set = if src.is_ipv4() { "masq4" } else { "masq6" };
        if !net.masquerade {
            return Err(r.fail(
                "masquerade",
                format!("network {} does not masquerade (created with --no-masquerade): {src} leaves the node as is, and {} has no route back to it", net.name, dst.final_ip),
                format!("route {} to this node on the outside (the upstream router), or recreate {} without --no-masquerade", att.ips.iter().find(|i| i.addr() == src).map_or(src.to_string(), |i| i.trunc().to_string()), net.name),
            ));
        }
        let covered = firewall::knit_set(listing, set)
            .iter()
            .any(|p| p.contains(&src));
        if !covered || !firewall::knit_masquerades(listing, set) {
            return Err(r.fail(
                "masquerade",
                format!("network {} should masquerade {src}, but knit's table lacks it (set {set} or its postrouting rule was changed behind knit's back)", net.name),
                "knit reconcile (it rebuilds knit's table from the store)",
            ));
        }
        r.pass(
            "masquerade",
            format!("{src} leaves as the node's address (network {})", net.name),
        );
        Ok(())
    }

    /// A conntrack entry for this very flow that still translates to an address no
    /// backend has (a container gone, a backend moved): new packets of the flow follow it.
    fn conntrack_step(&self, r: &mut Report, leg: &Leg, dst: &Dest) -> Walk {
        let Some(src) = leg.src_ip else {
            return Ok(());
        };
        let Some((port, proto)) = dst.port else {
            return Ok(());
        };
        let live: Vec<IpAddr> = match &dst.via {
            Via::Service(_) => dst.backends.iter().map(|b| b.1).collect(),
            _ => vec![dst.final_ip],
        };
        let entries = crate::conntrack::dump()?;
        let stale = entries.into_iter().find(|e| {
            e.orig.src == src
                && e.orig.dst == dst.ip
                && e.orig.proto == proto
                && e.orig.dport == port
                && !live.contains(&e.reply.src)
        });
        if let Some(e) = stale {
            return Err(r.fail(
                "conntrack",
                format!(
                    "a conntrack entry {src}:{} → {}:{port}/{} still sends this flow to {}, which is not where it goes now ({}): packets of it keep going there until the entry expires{}",
                    e.orig.sport,
                    dst.ip,
                    proto_name(proto),
                    e.reply.src,
                    live.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "),
                    e.info.timeout.map(|t| format!(" (in {t} s)")).unwrap_or_default()
                ),
                format!("conntrack -D -p {} -s {src} -d {} --dport {port} (in the node namespace)", proto_name(proto), dst.ip),
            ));
        }
        r.pass("conntrack", "no stale entry for this flow");
        Ok(())
    }
}

/// Whether frames bridged by `bridge` also cross the IP hooks: br_netfilter is loaded and
/// asked to, node-wide (its sysctls, per namespace) or for this bridge.
fn bridged_to_ip(nl: &mut Netlink, bridge: &str, v4: bool) -> crate::error::Result<bool> {
    let key = if v4 {
        "net.bridge.bridge-nf-call-iptables"
    } else {
        "net.bridge.bridge-nf-call-ip6tables"
    };
    let Some(global) = crate::sysctl::read(key) else {
        // No br_netfilter: bridged frames never reach the IP hooks.
        return Ok(false);
    };
    let (own4, own6) = nl.bridge_nf_call(bridge)?;
    Ok(global == "1" || if v4 { own4 } else { own6 })
}

/// A bridge port that does not forward (its STP state set to disabled or blocking by hand
/// or by STP) drops every frame, with both its ends up.
pub(super) fn bridge_port_step(r: &mut Report, nl: &mut Netlink, port: &str, step: &str) -> Walk {
    match nl.bridge_port_state(port)? {
        Some(state) if state != "forwarding" => Err(r.fail(
            step,
            format!("bridge port {port} is in state {state}: the bridge drops every frame it receives or would send there"),
            format!("bridge link set dev {port} state 3 (forwarding; knit's bridges run no STP)"),
        )),
        _ => Ok(()),
    }
}

/// The name of link `index` (of a route's output interface), if it has one.
fn link_name(nl: &mut Netlink, index: Option<u32>) -> crate::error::Result<Option<String>> {
    let Some(i) = index else {
        return Ok(None);
    };
    Ok(nl
        .links()?
        .into_iter()
        .find(|l| l.index == i)
        .map(|l| l.name))
}

/// The node link the node routes `src` back through.
fn back_link(nl: &mut Netlink, src: IpAddr) -> crate::error::Result<String> {
    let oif = nl.route_to(src)?.and_then(|b| b.oif);
    Ok(link_name(nl, oif)?.unwrap_or_else(|| "nowhere".into()))
}

/// Whether strict reverse-path filtering on `iif` drops packets from `src`: the route
/// back to `src` leaves through another link.
fn rp_drops(nl: &mut Netlink, src: IpAddr, iif: &LinkInfoSummary) -> crate::error::Result<bool> {
    let back = nl.route_to(src)?.and_then(|b| b.oif);
    Ok(rp_filter(&iif.name) == "1" && back != Some(iif.index))
}

/// rp_filter in effect on `iface`: the higher of `all` and the interface's own.
fn rp_filter(iface: &str) -> String {
    let all = crate::sysctl::read("net.ipv4.conf.all.rp_filter").unwrap_or_default();
    let own = crate::sysctl::read_path(&crate::sysctl::iface_key("ipv4", iface, "rp_filter"))
        .unwrap_or_default();
    all.max(own).to_string()
}
