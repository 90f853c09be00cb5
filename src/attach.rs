//! Attaching a sandbox to a network and detaching it. Setup order: reserve in the store
//! (pending) → links, addresses, routes → one nft transaction → mark ready. Teardown
//! mirrors it: nft → links → release. A failure undoes what was done; a crash leaves a
//! pending record that detach or reconcile cleans up.

use crate::error::{Error, Result};
use crate::firewall::Batch;
use crate::model::{Driver, Mac, PublishSpec, RouteSpec, SandboxRef};
use crate::netlink::{Netlink, Route, VethRequest};
use crate::netns::Netns;
use crate::node::{Node, attach_fw};
use crate::store::{AttachRequest, AttachState, Attachment, Network, Reserved};
use crate::sysctl;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ptp driver's gateway as sandboxes see it: link-local, answered by a static
/// neighbour entry pointing at the host-side veth.
pub const PTP_GW4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));
pub const PTP_GW6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

pub struct AttachArgs<'a> {
    pub network: &'a str,
    pub sandbox: &'a SandboxRef,
    /// None: the sandbox's next free ethN (eth0, then eth1 for a second network, ...).
    pub ifname: Option<&'a str>,
    pub static_ips: &'a [IpAddr],
    pub mac: Option<Mac>,
    pub publish: &'a [PublishSpec],
    pub container_id: Option<&'a str>,
    /// Routes to install instead of the network's default route (CNI ipam.routes).
    pub routes: Option<&'a [RouteSpec]>,
    /// Extra DNS names.
    pub aliases: &'a [String],
    /// `--label k=v` (what policies select).
    pub labels: &'a crate::policy::spec::Labels,
}

pub struct Attached {
    pub network: Network,
    pub attachment: Attachment,
    /// The sandbox was already attached; nothing changed.
    pub existed: bool,
}

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
    let mut snl = Netlink::open_in(ns)?;
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
    match net.driver {
        Driver::Bridge => {
            for r in bridge_routes(net, att) {
                snl.add_route(&Route {
                    dst: r.dst,
                    gateway: r.gw,
                    oif: Some(index),
                    onlink: false,
                    link_scope: false,
                })?;
            }
        }
        Driver::Ptp => {
            for s in &net.subnets {
                let gw = if s.subnet.addr().is_ipv4() {
                    PTP_GW4
                } else {
                    PTP_GW6
                };
                snl.add_neighbour(index, gw, host_mac)?;
                let dst = if net.internal {
                    s.subnet
                } else {
                    IpNet::new(
                        if gw.is_ipv4() {
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                        } else {
                            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                        },
                        0,
                    )
                    .map_err(|_| Error::invalid("gateway", gw, "bad family"))?
                };
                snl.add_route(&Route {
                    dst,
                    gateway: Some(gw),
                    oif: Some(index),
                    onlink: true,
                    link_scope: false,
                })?;
            }
        }
    }
    Ok(())
}

impl Node {
    pub fn attach(&mut self, args: &AttachArgs) -> Result<Attached> {
        let chosen;
        let ifname = match args.ifname {
            Some(i) => i,
            None => {
                chosen = self.next_ifname(args.network, &args.sandbox.key())?;
                chosen.as_str()
            }
        };
        crate::model::validate_ifname("--ifname", ifname)?;
        for a in args.aliases {
            crate::model::validate_dns_name("--alias", a)?;
        }
        let ns = Netns::open(args.sandbox.path())
            .map_err(|_| Error::not_found("sandbox", args.sandbox.key()))?;
        let path = args.sandbox.path();
        let reserved = self.store.reserve(&AttachRequest {
            network: args.network,
            sandbox: &args.sandbox.key(),
            netns_path: &path,
            ifname,
            static_ips: args.static_ips,
            mac: args.mac,
            publish: args.publish,
            container_id: args.container_id,
            routes: args.routes,
            aliases: args.aliases,
            labels: args.labels,
        })?;
        crate::trace::phase("store: reserved");
        let Reserved {
            mut network,
            attachment,
            existed,
        } = reserved;
        if !network.ready {
            // Its creation was interrupted: finish building it first.
            self.finish_network(&mut network)?;
        }
        let att = match (existed, attachment.state) {
            (true, AttachState::Ready) => {
                return Ok(Attached {
                    network,
                    attachment,
                    existed: true,
                });
            }
            // A crashed attach left this behind: clear its remnants and build it again.
            (true, AttachState::Pending) => {
                self.unplumb(&network, &attachment)?;
                attachment
            }
            (false, _) => attachment,
        };
        let built = plumb(&network, &att, &ns).and_then(|_| {
            crate::trace::phase("links, addresses, routes");
            let mut b = Batch::new();
            b.attachment(&attach_fw(&network, &att), true);
            self.policy_changes_for(&mut b, &network, &att, true)?;
            self.service_changes_for(&mut b, &att.sandbox, att.id, true)?;
            b.apply()
        });
        if let Err(e) = built {
            let _ = self.unplumb(&network, &att);
            let _ = self.store.release(att.id);
            return Err(e);
        }
        crate::trace::phase("nft elements added");
        crate::conntrack::clear_published(&att);
        self.store.mark_ready(att.id)?;
        crate::trace::phase("store: ready");
        let mut attachment = att;
        attachment.state = AttachState::Ready;
        Ok(Attached {
            network,
            attachment,
            existed: false,
        })
    }

    /// eth0, eth1, ...: the first name no other attachment of this sandbox uses (an
    /// existing attachment to this network keeps its name).
    fn next_ifname(&self, network: &str, sandbox: &str) -> Result<String> {
        let atts = self.store.attachments_of_sandbox(sandbox)?;
        if let Some(a) = atts.iter().find(|a| a.network == network) {
            return Ok(a.ifname.clone());
        }
        Ok((0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !atts.iter().any(|a| &a.ifname == n))
            .unwrap_or_else(|| "eth0".into()))
    }

    /// Removes an attachment's nft elements and links (the kernel removes the peer, its
    /// addresses and routes with it). Idempotent.
    pub fn unplumb(&mut self, net: &Network, att: &Attachment) -> Result<()> {
        // The link goes first: deleting it waits for RCU callbacks to drain (rcu_barrier),
        // and doing it before the nft deletion keeps the element frees out of that wait.
        // In between, DNAT to the vanished address just finds no host.
        Netlink::open()?.delete_link(&att.host_ifname)?;
        crate::trace::phase("host veth deleted");
        let mut b = Batch::new();
        b.attachment(&attach_fw(net, att), false);
        self.policy_changes_for(&mut b, net, att, false)?;
        self.service_changes_for(&mut b, &att.sandbox, att.id, false)?;
        // Closing the nft socket after deletions waits for an RCU grace period; keep that
        // off the caller's clock.
        let applied = b.apply_then(crate::nftnl::Socket::close_detached);
        crate::trace::phase("nft elements removed");
        crate::conntrack::forget_attachment(att);
        if applied.is_err() && crate::firewall::table_exists() {
            // The table is damaged: rebuild it from the store without this one. (If it is
            // gone altogether there is nothing to remove; `knit reconcile` rebuilds it.)
            self.rebuild_firewall_without(None, Some(att.id))?;
        }
        Ok(())
    }

    /// Detaches; Ok(None) if the sandbox was not attached (detach is idempotent).
    pub fn detach(&mut self, network: &str, sandbox: &SandboxRef) -> Result<Option<Attachment>> {
        let net = self.store.network(network)?;
        let Some(att) = self.store.attachment(net.id, &sandbox.key())? else {
            return Ok(None);
        };
        crate::trace::phase("store: found");
        self.detach_attachment(&net, &att)?;
        Ok(Some(att))
    }

    pub fn detach_attachment(&mut self, net: &Network, att: &Attachment) -> Result<()> {
        self.unplumb(net, att)?;
        self.store.release(att.id)?;
        crate::trace::phase("store: released");
        Ok(())
    }
}
