//! Network drivers: what differs between a bridge network and a routed (ptp) one — the
//! node side, how a sandbox is plumbed in (links, addresses, routes, neighbours), what the
//! firewall, CNI results and CHECK see of it — behind one trait, with one file per driver.
//! Nothing outside this module asks which driver a network has. The multi-host drivers
//! (VXLAN, routed) are new files here.

mod bridge;
mod ptp;

use crate::error::{Error, Result};
use crate::model::{Driver, Mac, RouteSpec};
use crate::netlink::{Netlink, Route, VethRequest};
use crate::netns::Netns;
use crate::store::{Attachment, Network};
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use ptp::{PTP_GW4, PTP_GW6};

/// What a network driver does.
pub trait NetworkDriver: Sync {
    /// A new network's bridge name, from its id (None: the driver has no bridge).
    fn default_bridge(&self, id: i64) -> Option<String>;
    /// The bridge a CNI configuration gets (its `bridge` key, else the default).
    fn cni_bridge(&self, requested: Option<&str>) -> Option<String>;
    /// Whether the node side always holds the gateway address (CNI's `isGateway` aside).
    fn gateway_on_node(&self) -> bool;
    /// Whether an attachment's host veth is a bridge port.
    fn bridged(&self) -> bool;
    /// The node-side interfaces through which traffic reaches the network's sandboxes
    /// (`atts`: any attachments; those of this network count).
    fn ifaces(&self, net: &Network, atts: &[Attachment]) -> Vec<String>;
    /// The attachment's own node-side interface, if the firewall must know it (a routed
    /// host veth; bridge ports are covered by their bridge).
    fn attachment_iface(&self, att: &Attachment) -> Option<String>;
    /// The link a new host veth is enslaved to, if any.
    fn controller(&self, nl: &mut Netlink, net: &Network) -> Result<Option<u32>>;
    /// Node side of an attachment, once its veth exists and is up.
    fn plumb_host(
        &self,
        nl: &mut Netlink,
        net: &Network,
        att: &Attachment,
        host: u32,
    ) -> Result<()>;
    /// The address as configured inside the sandbox.
    fn sandbox_addr(&self, ip: &IpNet) -> IpNet;
    /// Sandbox side, after its addresses (static neighbours of the gateway).
    fn plumb_sandbox(
        &self,
        snl: &mut Netlink,
        net: &Network,
        index: u32,
        host_mac: Mac,
    ) -> Result<()>;
    /// The routes an attachment installs inside the sandbox (without the interface).
    fn sandbox_routes(&self, net: &Network, att: &Attachment) -> Vec<Route>;
    /// The gateway a CNI result names for the family.
    fn result_gateway(&self, net: &Network, v4: bool) -> Option<IpAddr>;
    /// The routes a CNI result lists (and CHECK expects inside the sandbox).
    fn result_routes(&self, net: &Network, att: &Attachment) -> Vec<RouteSpec>;
    /// Whether CHECK compares the sandbox's routes with `result_routes`.
    fn checks_routes(&self) -> bool;
}

/// The driver of a kind.
pub fn of(kind: Driver) -> &'static dyn NetworkDriver {
    match kind {
        Driver::Bridge => &bridge::Bridge,
        Driver::Ptp => &ptp::Ptp,
    }
}

/// The driver of a network.
pub fn for_network(net: &Network) -> &'static dyn NetworkDriver {
    of(net.driver)
}

fn mac_of(field: &'static str, s: &str) -> Result<Mac> {
    Mac::parse(field, s)
}

pub(crate) fn unspecified(v4: bool) -> IpNet {
    let any = if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    IpNet::new(any, 0).unwrap_or_else(|_| IpNet::from(any))
}

/// A host veth name knit generates (`kv` + 10 hex digits; see `is_knit_link`).
pub fn host_veth_name() -> String {
    let b = crate::model::random_bytes::<5>();
    format!(
        "kv{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// Creates the links, addresses, routes and neighbours of one attachment. Safe to run again
/// on a partially built attachment (reconcile): existing pieces are kept or replaced.
pub fn plumb(net: &Network, att: &Attachment, ns: &Netns) -> Result<()> {
    plumb_with(net, att, Some(ns), &mut None)
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
/// With `ns` None (a handoff) the sandbox end is created in this namespace under its
/// name, down and unconfigured: the runtime moves it and sets its addresses and routes.
pub fn plumb_with(
    net: &Network,
    att: &Attachment,
    ns: Option<&Netns>,
    sandbox_nl: &mut Option<Netlink>,
) -> Result<()> {
    let here;
    let peer_ns = match ns {
        Some(ns) => ns,
        None => {
            here = Netns::current()?;
            &here
        }
    };
    let mut nl = Netlink::open()?;
    let host_mac = mac_of("host_mac", &att.host_mac)?;
    let mac = mac_of("mac", &att.mac)?;
    let driver = for_network(net);
    let controller = driver.controller(&mut nl, net)?;
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
                    peer_netns: peer_ns.fd(),
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
    nl.prepare_host_port(host_index, driver.bridged())?;
    nl.set_up(host_index)?;
    driver.plumb_host(&mut nl, net, att, host_index)?;
    // The address may have been another sandbox's a moment ago (a restarted container
    // gets its address back with a new MAC): the node's ARP/ND cache on knit's bridge
    // would send it to the old MAC until the entry ages out, up to a minute.
    if let Some(bridge) = controller {
        for ip in &att.ips {
            nl.del_neighbour(bridge, ip.addr())?;
        }
    }
    let Some(ns) = ns else {
        return Ok(());
    };
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
        snl.add_address(index, driver.sandbox_addr(ip))
            .map_err(|e| match e.errno() {
                // Docker starts containers without IPv6 with net.ipv6.conf.all and
                // .default.disable_ipv6=1: the kernel then refuses the address with EACCES.
                Some(libc::EACCES) if ip.addr().is_ipv6() => Error::Conflict(format!(
                    "the sandbox has IPv6 disabled (net.ipv6.conf.all.disable_ipv6 or net.ipv6.conf.default.disable_ipv6 is 1 in it, as Docker sets for containers without IPv6), so {} cannot get {ip}: set them to 0 in the sandbox, or attach to a network without an IPv6 subnet",
                    att.ifname
                )),
                _ => e,
            })?;
    }
    driver.plumb_sandbox(snl, net, index, host_mac)?;
    // The first network a sandbox joins keeps its default route: a later attachment adds
    // one only for a family the sandbox has none for (and detach restores, see
    // `restore_default_routes`).
    let has_default = defaults_present(snl, Some(index))?;
    for r in driver.sandbox_routes(net, att) {
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
