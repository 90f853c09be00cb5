//! The bridge driver: a bridge on the node holds the gateway address(es); every sandbox's
//! host veth is a port of it; sandboxes get the subnet's prefix and a default route via
//! the gateway.

use super::{NetworkDriver, unspecified};
use crate::error::{Error, Result};
use crate::model::{Mac, RouteSpec};
use crate::netlink::{Netlink, Route};
use crate::store::{Attachment, Network};
use ipnet::IpNet;
use std::net::IpAddr;

pub struct Bridge;

/// Routes of a bridge attachment: the ones it asked for (gateway defaulting to the
/// subnet's of the same family), or a default route per subnet unless the network is
/// internal.
fn routes(net: &Network, att: &Attachment) -> Vec<RouteSpec> {
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

impl NetworkDriver for Bridge {
    fn default_bridge(&self, id: i64) -> Option<String> {
        Some(format!("knbr{id}"))
    }

    fn cni_bridge(&self, requested: Option<&str>) -> Option<String> {
        Some(requested.unwrap_or("cni0").to_string())
    }

    fn gateway_on_node(&self) -> bool {
        false
    }

    fn bridged(&self) -> bool {
        true
    }

    fn ifaces(&self, net: &Network, _atts: &[Attachment]) -> Vec<String> {
        net.bridge.iter().cloned().collect()
    }

    fn attachment_iface(&self, _att: &Attachment) -> Option<String> {
        None
    }

    fn controller(&self, nl: &mut Netlink, net: &Network) -> Result<Option<u32>> {
        let Some(br) = &net.bridge else {
            return Ok(None);
        };
        Ok(Some(nl.link_index(br)?.ok_or_else(|| {
            Error::not_found("bridge", format!("{br} (run `knit reconcile`)"))
        })?))
    }

    fn plumb_host(&self, _: &mut Netlink, _: &Network, _: &Attachment, _: u32) -> Result<()> {
        Ok(())
    }

    fn sandbox_addr(&self, ip: &IpNet) -> IpNet {
        *ip
    }

    fn plumb_sandbox(&self, _: &mut Netlink, _: &Network, _: u32, _: Mac) -> Result<()> {
        Ok(())
    }

    fn sandbox_routes(&self, net: &Network, att: &Attachment) -> Vec<Route> {
        routes(net, att)
            .into_iter()
            .map(|r| Route {
                dst: r.dst,
                gateway: r.gw,
                oif: None,
                onlink: false,
                link_scope: false,
            })
            .collect()
    }

    fn result_gateway(&self, net: &Network, v4: bool) -> Option<IpAddr> {
        net.subnets
            .iter()
            .find(|s| s.gateway.is_ipv4() == v4)
            .map(|s| s.gateway)
    }

    fn result_routes(&self, net: &Network, att: &Attachment) -> Vec<RouteSpec> {
        routes(net, att)
    }

    fn checks_routes(&self) -> bool {
        true
    }
}
