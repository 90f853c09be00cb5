//! A route as knit reads and writes it, converted to and from rtnetlink messages.

use super::family_of;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use std::net::IpAddr;

/// A route in the main table, as knit programs and reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub onlink: bool,
    /// Link scope: the destination is directly on `oif` (host routes of the ptp driver).
    pub link_scope: bool,
}

impl Route {
    pub(super) fn to_message(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        let ip = self.dst.addr();
        msg.header.address_family = family_of(&ip);
        msg.header.destination_prefix_length = self.dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if self.link_scope {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if self.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        if self.dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    self.dst.network(),
                )));
        }
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        msg
    }

    pub(super) fn from_message(r: &RouteMessage) -> Option<Route> {
        let mut dst = None;
        let mut gateway = None;
        let mut oif = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(v)) => dst = Some(IpAddr::V4(*v)),
                RouteAttribute::Destination(RouteAddress::Inet6(v)) => dst = Some(IpAddr::V6(*v)),
                RouteAttribute::Gateway(RouteAddress::Inet(v)) => gateway = Some(IpAddr::V4(*v)),
                RouteAttribute::Gateway(RouteAddress::Inet6(v)) => gateway = Some(IpAddr::V6(*v)),
                RouteAttribute::Oif(o) => oif = Some(*o),
                _ => {}
            }
        }
        let dst = dst.unwrap_or(match r.header.address_family {
            AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        });
        Some(Route {
            dst: IpNet::new(dst, r.header.destination_prefix_length).ok()?,
            gateway,
            oif,
            onlink: r.header.flags.contains(RouteFlags::Onlink),
            link_scope: r.header.scope == RouteScope::Link,
        })
    }

    pub fn describe(&self) -> String {
        let mut s = if self.dst.prefix_len() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        if let Some(gw) = self.gateway {
            s += &format!(" via {gw}");
        }
        if let Some(o) = self.oif {
            s += &format!(" oif {o}");
        }
        if self.onlink {
            s += " onlink";
        }
        if self.link_scope {
            s += " scope link";
        }
        s
    }
}

/// What `ip route get` answers.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub route: Route,
    pub prefsrc: Option<IpAddr>,
    /// The destination is one of the namespace's own addresses.
    pub local: bool,
}

impl super::Netlink {
    /// The route the kernel picks for `dst` (RTM_GETROUTE, as `ip route get`): None when
    /// it has none (unreachable).
    pub fn route_to(&mut self, dst: IpAddr) -> crate::error::Result<Option<Route>> {
        Ok(self.route_get(dst)?.map(|l| l.route))
    }

    /// `ip route get DST`: the route, its preferred source address, and whether DST is one
    /// of this namespace's own addresses. None when unreachable.
    pub fn route_get(&mut self, dst: IpAddr) -> crate::error::Result<Option<Lookup>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(&dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        match self.exchange_public(netlink_packet_route::RouteNetlinkMessage::GetRoute(msg)) {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                netlink_packet_route::RouteNetlinkMessage::NewRoute(r) => Some(Lookup {
                    route: Route::from_message(r)?,
                    prefsrc: r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::PrefSource(RouteAddress::Inet(v)) => Some(IpAddr::V4(*v)),
                        RouteAttribute::PrefSource(RouteAddress::Inet6(v)) => Some(IpAddr::V6(*v)),
                        _ => None,
                    }),
                    local: r.header.kind == RouteType::Local,
                }),
                _ => None,
            })),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(crate::error::Error::io(format!("route get {dst}"), e)),
        }
    }

    /// Whether `ip` is an address of this namespace.
    pub fn is_local(&mut self, ip: IpAddr) -> crate::error::Result<bool> {
        Ok(self.route_get(ip)?.is_some_and(|l| l.local))
    }

    /// Whether the node would route a packet from `src` arriving on link `iif` to `dst`
    /// (RTM_GETROUTE with RTA_IIF, as `ip route get DST from SRC iif DEV`): the kernel runs
    /// its input path, forwarding switch and reverse-path filter included. Err(errno) is
    /// its refusal (EXDEV: rp_filter, EHOSTUNREACH/ENETUNREACH: no route).
    pub fn route_input(
        &mut self,
        dst: IpAddr,
        src: IpAddr,
        iif: u32,
    ) -> crate::error::Result<std::result::Result<Route, i32>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(&dst);
        let full = if dst.is_ipv4() { 32 } else { 128 };
        msg.header.destination_prefix_length = full;
        msg.header.source_prefix_length = full;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        msg.attributes
            .push(RouteAttribute::Source(RouteAddress::from(src)));
        msg.attributes.push(RouteAttribute::Iif(iif));
        match self.exchange_public(netlink_packet_route::RouteNetlinkMessage::GetRoute(msg)) {
            Ok(replies) => Ok(replies
                .iter()
                .find_map(|m| match m {
                    netlink_packet_route::RouteNetlinkMessage::NewRoute(r) => {
                        Route::from_message(r)
                    }
                    _ => None,
                })
                .ok_or(libc::EHOSTUNREACH)),
            Err(e) => match e.raw_os_error() {
                Some(errno) if errno != libc::EPERM => Ok(Err(errno)),
                _ => Err(crate::error::Error::io(
                    format!("route get {dst} from {src} iif {iif}"),
                    e,
                )),
            },
        }
    }
}
