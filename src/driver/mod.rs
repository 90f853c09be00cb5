//! Network drivers: how a network's node side is built and how a sandbox is plumbed into
//! it — links, addresses, routes, neighbours — per driver kind.

use crate::error::{Error, Result};
use crate::model::{Driver, Mac, RouteSpec};
use crate::netlink::{Netlink, Route, VethRequest};
use crate::netns::Netns;
use crate::store::{Attachment, Network};
use crate::sysctl;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ptp driver's gateway as sandboxes see it: link-local, answered by a static
/// neighbour entry pointing at the host-side veth.
pub const PTP_GW4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));
pub const PTP_GW6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

fn mac_of(field: &'static str, s: &str) -> Result<Mac> {
    Mac::parse(field, s)
}

/// The address as configured inside the sandbox: the subnet prefix on a bridge, a host
/// prefix on ptp (everything goes through the node).
fn sandbox_addr(net: &Network, ip: &IpNet) -> IpNet {
    match net.driver {
        Driver::Bridge => *ip,
        Driver::Ptp => {
            IpNet::new(ip.addr(), if ip.addr().is_ipv4() { 32 } else { 128 }).unwrap_or(*ip)
        }
    }
}

fn unspecified(v4: bool) -> IpNet {
    let any = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    IpNet::new(any, 0).unwrap_or_else(|_| IpNet::from(any))
}

/// Routes of a bridge attachment: the ones it asked for (gateway defaulting to the
/// subnet's of the same family), or a default route per subnet unless the network is
/// internal.
pub fn bridge_routes(net: &Network, att: &Attachment) -> Vec<RouteSpec> {
    let gw_for = |v4: bool| {
        net.subnets
            .iter()
            .find(|s| s.gateway.is_ipv4() == v4)
            .map(|s| s.gateway)
    };
    match &att.routes {
        Some(routes) => routes
            .iter()
            .map(|r| RouteSpec {
                dst: r.dst,
                gw: r.gw.or_else(|| gw_for(r.dst.addr().is_ipv4())),
            })
            .collect(),
        None if net.internal => vec![],
        None => net
            .subnets
            .iter()
            .map(|s| RouteSpec {
                dst: unspecified(s.gateway.is_ipv4()),
                gw: Some(s.gateway),
            })
            .collect(),
    }
}

/// Creates the links, addresses, routes and neighbours of one attachment. Safe to run again
/// on a partially built attachment (reconcile): existing pieces are kept or replaced.
pub fn plumb(net: &Network, att: &Attachment, ns: &Netns) -> Result<()> {
    plumb_with(net, att, ns, &mut None)
}

/// A netlink socket inside the sandbox, opened once per command (entering a namespace
/// costs a thread).
pub fn sandbox_netlink<'a>(ns: &Netns, slot: &'a mut Option<Netlink>) -> Result<&'a mut Netlink> {
    if slot.is_none() {
        *slot = Some(Netlink::open_in(ns)?);
    }
    slot.as_mut()
        .ok_or_else(|| Error::not_found("netlink socket in", ns.path().display()))
}

/// `plumb` with the sandbox's netlink socket of this command (opened on first use).
pub fn plumb_with(
    net: &Network,
    att: &Attachment,
    ns: &Netns,
    sandbox_nl: &mut Option<Netlink>,
) -> Result<()> {
    let mut nl = Netlink::open()?;
    let host_mac = mac_of("host_mac", &att.host_mac)?;
    let mac = mac_of("mac", &att.mac)?;
    let controller =
        match (&net.driver, &net.bridge) {
            (Driver::Bridge, Some(br)) => Some(nl.link_index(br)?.ok_or_else(|| {
                Error::not_found("bridge", format!("{br} (run `knit reconcile`)"))
            })?),
            _ => None,
        };
    let host_index = match nl.link_by_name(&att.host_ifname)? {
        Some(l) => {
            // The bridge may have been re-created under it (reconcile).
            if let Some(c) = controller
                && l.controller != Some(c)
            {
                nl.set_controller(l.index, c)?;
            }
            l.index
        }
        None => {
            let echoed = nl
                .create_veth(&VethRequest {
                    host_name: &att.host_ifname,
                    host_mac,
                    peer_name: &att.ifname,
                    peer_mac: mac,
                    peer_netns: ns.fd(),
                    mtu: net.mtu,
                    controller,
                })
                .map_err(|e| match e.errno() {
                    Some(libc::EEXIST) => Error::invalid(
                        "--ifname",
                        &att.ifname,
                        "an interface with this name already exists in the sandbox",
                    ),
                    _ => e,
                })?;
            match echoed {
                Some(i) => i,
                None => nl
                    .link_index(&att.host_ifname)?
                    .ok_or_else(|| Error::not_found("link", &att.host_ifname))?,
            }
        }
    };
    nl.prepare_host_port(host_index, net.driver == Driver::Bridge)?;
    nl.set_up(host_index)?;
    match net.driver {
        Driver::Bridge => {}
        Driver::Ptp => {
            for ip in &att.ips {
                let host = sandbox_addr(net, ip);
                nl.add_route(&Route {
                    dst: host,
                    gateway: None,
                    oif: Some(host_index),
                    onlink: false,
                    link_scope: true,
                })?;
                nl.add_neighbour(host_index, ip.addr(), mac)?;
            }
            if !att.ports.is_empty() {
                sysctl::ensure_path(
                    &sysctl::iface_key("ipv4", &att.host_ifname, "route_localnet"),
                    "1",
                )?;
            }
        }
    }
    let snl = sandbox_netlink(ns, sandbox_nl)?;
    let index = snl
        .link_index(&att.ifname)?
        .ok_or_else(|| Error::not_found("sandbox interface", &att.ifname))?;
    // An IPv4-only attachment has no use for IPv6 link-local chatter (DAD, MLD, RS), which
    // the bridge floods to every port: keep the interface quiet before it comes up.
    if !att.ips.iter().any(|ip| ip.addr().is_ipv6()) {
        snl.disable_link_local(index)?;
    }
    snl.set_up(index)?;
    for ip in &att.ips {
        snl.add_address(index, sandbox_addr(net, ip))?;
    }
    if net.driver == Driver::Ptp {
        for gw in net.subnets.iter().map(|s| {
            if s.subnet.addr().is_ipv4() {
                PTP_GW4
            } else {
                PTP_GW6
            }
        }) {
            snl.add_neighbour(index, gw, host_mac)?;
        }
    }
    // The first network a sandbox joins keeps its default route: a later attachment adds
    // one only for a family the sandbox has none for (and detach restores, see
    // `restore_default_routes`).
    let has_default = defaults_present(snl, Some(index))?;
    for r in sandbox_routes(net, att)? {
        let fam = usize::from(!r.dst.addr().is_ipv4());
        if r.dst.prefix_len() == 0 && has_default[fam] {
            continue;
        }
        snl.add_route(&Route {
            oif: Some(index),
            ..r
        })?;
    }
    Ok(())
}

/// Whether the sandbox has an IPv4 / IPv6 default route through a link other than
/// `except` (the attachment's own interface).
pub fn defaults_present(snl: &mut Netlink, except: Option<u32>) -> Result<[bool; 2]> {
    let mut found = [false; 2];
    for (i, fam) in [AddressFamily::Inet, AddressFamily::Inet6]
        .into_iter()
        .enumerate()
    {
        found[i] = snl
            .routes(fam)?
            .iter()
            .any(|r| r.dst.prefix_len() == 0 && r.oif.is_some() && r.oif != except);
    }
    Ok(found)
}

/// The routes an attachment installs inside the sandbox (without the interface index).
pub fn sandbox_routes(net: &Network, att: &Attachment) -> Result<Vec<Route>> {
    let mut out = Vec::new();
    match net.driver {
        Driver::Bridge => {
            for r in bridge_routes(net, att) {
                out.push(Route {
                    dst: r.dst,
                    gateway: r.gw,
                    oif: None,
                    onlink: false,
                    link_scope: false,
                });
            }
        }
        Driver::Ptp => {
            for s in &net.subnets {
                let v4 = s.subnet.addr().is_ipv4();
                let gw = if v4 { PTP_GW4 } else { PTP_GW6 };
                out.push(Route {
                    dst: if net.internal {
                        s.subnet
                    } else {
                        unspecified(v4)
                    },
                    gateway: Some(gw),
                    oif: None,
                    onlink: true,
                    link_scope: false,
                });
            }
        }
    }
    Ok(out)
}

/// Link names knit generates; anything else on the node is left alone.
pub fn is_knit_link(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    (name.len() == 12 && name.starts_with("kv") && hex(&name[2..]))
        || (name.starts_with("knbr")
            && name[4..].chars().all(|c| c.is_ascii_digit())
            && name.len() > 4)
}

#[cfg(test)]
mod tests {
    #[test]
    fn knit_link_names() {
        assert!(super::is_knit_link("kv0a1b2c3d4e"));
        assert!(super::is_knit_link("knbr12"));
        assert!(!super::is_knit_link("kvm"));
        assert!(!super::is_knit_link("knbrx"));
        assert!(!super::is_knit_link("eth0"));
        assert!(!super::is_knit_link("kv0a1b2c3d4z"));
    }
}
