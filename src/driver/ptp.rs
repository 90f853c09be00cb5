//! The ptp driver: no bridge. Each sandbox gets a /32 (/128) and a default route via a
//! link-local gateway (169.254.1.1, fe80::1) backed by static neighbour entries on both
//! sides; the node routes each sandbox address to its host veth.

use super::{NetworkDriver, unspecified};
use crate::error::Result;
use crate::model::{Mac, RouteSpec};
use crate::netlink::{Netlink, Route};
use crate::store::{Attachment, Network};
use crate::sysctl;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The ptp driver's gateway as sandboxes see it: link-local, answered by a static
/// neighbour entry pointing at the host-side veth.
pub const PTP_GW4: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));
pub const PTP_GW6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

pub struct Ptp;

fn gateway(v4: bool) -> IpAddr {
    if v4 { PTP_GW4 } else { PTP_GW6 }
}

impl NetworkDriver for Ptp {
    fn default_bridge(&self, _id: i64) -> Option<String> {
        None
    }

    fn cni_bridge(&self, _requested: Option<&str>) -> Option<String> {
        None
    }

    fn gateway_on_node(&self) -> bool {
        true
    }

    fn bridged(&self) -> bool {
        false
    }

    fn ifaces(&self, net: &Network, atts: &[Attachment]) -> Vec<String> {
        atts.iter()
            .filter(|a| a.network_id == net.id)
            .map(|a| a.host_ifname.clone())
            .collect()
    }

    fn attachment_iface(&self, att: &Attachment) -> Option<String> {
        Some(att.host_ifname.clone())
    }

    fn controller(&self, _: &mut Netlink, _: &Network) -> Result<Option<u32>> {
        Ok(None)
    }

    fn plumb_host(
        &self,
        nl: &mut Netlink,
        _net: &Network,
        att: &Attachment,
        host: u32,
    ) -> Result<()> {
        let mac = Mac::parse("mac", &att.mac)?;
        for ip in &att.ips {
            nl.add_route(&Route {
                dst: self.sandbox_addr(ip),
                gateway: None,
                oif: Some(host),
                onlink: false,
                link_scope: true,
            })?;
            nl.add_neighbour(host, ip.addr(), mac)?;
        }
        if !att.ports.is_empty() {
            // Lets DNAT to the sandbox work for connections to 127.0.0.1 published ports.
            sysctl::ensure_path(
                &sysctl::iface_key("ipv4", &att.host_ifname, "route_localnet"),
                "1",
            )?;
        }
        Ok(())
    }

    fn sandbox_addr(&self, ip: &IpNet) -> IpNet {
        IpNet::new(ip.addr(), if ip.addr().is_ipv4() { 32 } else { 128 }).unwrap_or(*ip)
    }

    fn plumb_sandbox(
        &self,
        snl: &mut Netlink,
        net: &Network,
        index: u32,
        host_mac: Mac,
    ) -> Result<()> {
        for s in &net.subnets {
            snl.add_neighbour(index, gateway(s.subnet.addr().is_ipv4()), host_mac)?;
        }
        Ok(())
    }

    fn sandbox_routes(&self, net: &Network, _att: &Attachment) -> Vec<Route> {
        net.subnets
            .iter()
            .map(|s| {
                let v4 = s.subnet.addr().is_ipv4();
                Route {
                    dst: if net.internal {
                        s.subnet
                    } else {
                        unspecified(v4)
                    },
                    gateway: Some(gateway(v4)),
                    oif: None,
                    onlink: true,
                    link_scope: false,
                }
            })
            .collect()
    }

    fn result_gateway(&self, _net: &Network, v4: bool) -> Option<IpAddr> {
        Some(gateway(v4))
    }

    fn result_routes(&self, net: &Network, _att: &Attachment) -> Vec<RouteSpec> {
        net.subnets
            .iter()
            .map(|s| {
                let v4 = s.subnet.addr().is_ipv4();
                RouteSpec {
                    dst: unspecified(v4),
                    gw: Some(gateway(v4)),
                }
            })
            .collect()
    }

    fn checks_routes(&self) -> bool {
        false
    }
}
