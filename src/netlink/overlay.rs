//! What a cluster node programs for its peers: VXLAN devices, their forwarding database
//! and neighbour entries, and routes to remote blocks. Routes carry knit's own protocol
//! number, so knit finds (and removes) only the routes it made; FDB and neighbour entries
//! live on knit's own VXLAN devices.

use super::{Netlink, family_of};
use crate::error::{Error, IoContext, Result};
use crate::model::Mac;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::IpAddr;

/// The rtnetlink protocol number on knit's cluster routes ("knit" is not registered in
/// rt_protos; 75 is unassigned there).
pub const KNIT_PROTO: u8 = 75;

/// A new VXLAN device: point-to-point by FDB entries only (no multicast group, no
/// learning), bound to the underlay address and link.
pub struct VxlanRequest<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub local: IpAddr,
    pub underlay_index: u32,
    pub port: u16,
    pub mac: Mac,
    pub mtu: u32,
}

/// A route to a remote block (knit's protocol): via the remote VTEP address on the VXLAN
/// device (onlink), or via the remote node's underlay address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterRoute {
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub oif: u32,
    pub onlink: bool,
}

/// A forwarding entry of a VXLAN device: frames for `mac` go to underlay address `dst`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fdb {
    pub index: u32,
    pub mac: Mac,
    pub dst: IpAddr,
}

impl Netlink {
    /// Creates a VXLAN device (EEXIST if the name is taken: callers decide whether the
    /// existing one is theirs).
    pub fn create_vxlan(&mut self, req: &VxlanRequest) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(req.name.to_string()));
        msg.attributes
            .push(LinkAttribute::Address(req.mac.0.to_vec()));
        msg.attributes.push(LinkAttribute::Mtu(req.mtu));
        let mut info = vec![
            InfoVxlan::Id(req.vni),
            InfoVxlan::Link(req.underlay_index),
            InfoVxlan::Port(req.port),
            InfoVxlan::Learning(false),
        ];
        info.push(match req.local {
            IpAddr::V4(a) => InfoVxlan::Local(a),
            IpAddr::V6(a) => InfoVxlan::Local6(a),
        });
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(info)),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create vxlan {} (vni {})", req.name, req.vni),
        )
    }

    fn fdb_message(&self, f: &Fdb) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = f.index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(addr(f.dst)));
        msg
    }

    /// Adds (or replaces) an FDB entry of a VXLAN device.
    pub fn add_fdb(&mut self, f: &Fdb) -> Result<()> {
        let msg = self.fdb_message(f);
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add fdb {} dst {} on link {}", f.mac, f.dst, f.index),
        )
    }

    /// Removes an FDB entry (Ok if it was gone).
    pub fn del_fdb(&mut self, f: &Fdb) -> Result<()> {
        let msg = self.fdb_message(f);
        ignore_missing(
            self.exchange(RouteNetlinkMessage::DelNeighbour(msg), 0),
            || format!("delete fdb {} on link {}", f.mac, f.index),
        )
    }

    /// The FDB entries with a remote destination on link `index`.
    pub fn fdb(&mut self, index: u32) -> Result<Vec<Fdb>> {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        req.attributes.push(NeighbourAttribute::IfIndex(index));
        let replies = self.dump(RouteNetlinkMessage::GetNeighbour(req), "list fdb")?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => {
                    let mac = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                            let mut m = [0u8; 6];
                            m.copy_from_slice(b);
                            Some(Mac(m))
                        }
                        _ => None,
                    })?;
                    let dst = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                            Some(IpAddr::V4(*v))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                            Some(IpAddr::V6(*v))
                        }
                        // In a bridge-family message the destination comes undecoded.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                            match b.len() {
                                4 => <[u8; 4]>::try_from(&b[..]).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(&b[..]).ok().map(IpAddr::from),
                                _ => None,
                            }
                        }
                        _ => None,
                    })?;
                    Some(Fdb { index, mac, dst })
                }
                _ => None,
            })
            .collect())
    }

    /// Removes a neighbour entry (Ok if it was gone).
    pub fn del_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(&ip);
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(addr(ip)));
        ignore_missing(
            self.exchange(RouteNetlinkMessage::DelNeighbour(msg), 0),
            || format!("delete neighbour {ip} on link {index}"),
        )
    }

    fn cluster_route_message(r: &ClusterRoute) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(&r.dst.addr());
        msg.header.destination_prefix_length = r.dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Other(KNIT_PROTO);
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = RouteScope::Universe;
        if r.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.network(),
            )));
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(r.gateway)));
        msg.attributes.push(RouteAttribute::Oif(r.oif));
        msg
    }

    /// Adds or replaces a cluster route.
    pub fn add_cluster_route(&mut self, r: &ClusterRoute) -> Result<()> {
        let msg = Self::cluster_route_message(r);
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add route {} via {}", r.dst, r.gateway),
        )
    }

    /// Removes a cluster route (Ok if it was gone).
    pub fn del_cluster_route(&mut self, r: &ClusterRoute) -> Result<()> {
        let msg = Self::cluster_route_message(r);
        ignore_missing(self.exchange(RouteNetlinkMessage::DelRoute(msg), 0), || {
            format!("delete route {} via {}", r.dst, r.gateway)
        })
    }

    /// The routes knit's cluster agent made (its protocol number), both families.
    pub fn cluster_routes(&mut self) -> Result<Vec<ClusterRoute>> {
        let mut out = vec![];
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            req.header.table = RouteHeader::RT_TABLE_MAIN;
            for m in self.dump(RouteNetlinkMessage::GetRoute(req), "list routes")? {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if r.header.protocol != RouteProtocol::Other(KNIT_PROTO) {
                    continue;
                }
                let (mut dst, mut gw, mut oif) = (None, None, None);
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(v)) => {
                            dst = Some(IpAddr::V4(*v))
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(v)) => {
                            dst = Some(IpAddr::V6(*v))
                        }
                        RouteAttribute::Gateway(RouteAddress::Inet(v)) => gw = Some(IpAddr::V4(*v)),
                        RouteAttribute::Gateway(RouteAddress::Inet6(v)) => {
                            gw = Some(IpAddr::V6(*v))
                        }
                        RouteAttribute::Oif(o) => oif = Some(*o),
                        _ => {}
                    }
                }
                let (Some(dst), Some(gateway), Some(oif)) = (dst, gw, oif) else {
                    continue;
                };
                let Ok(dst) = IpNet::new(dst, r.header.destination_prefix_length) else {
                    continue;
                };
                out.push(ClusterRoute {
                    dst,
                    gateway,
                    oif,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                });
            }
        }
        Ok(out)
    }
}

fn addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn ignore_missing(
    r: std::io::Result<Vec<RouteNetlinkMessage>>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e).op(what),
    }
}

/// Whether this kernel has the VXLAN checksum trap: before 5.7, TX checksum offload on a
/// VXLAN device corrupts the checksums of packets that were NATed on their way into the
/// tunnel (a service's SNATed hairpin to a backend on another node), and TCP stalls for
/// about a minute (flannel#1282, kubernetes#88986; Calico's `ChecksumOffloadBroken`
/// detection uses the same bound). Later kernels get it right, and turning offload off
/// there costs most of the tunnel's throughput (segmentation in software).
pub fn checksum_offload_broken() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    broken_release(&release)
}

fn broken_release(release: &str) -> bool {
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) < (5, 7)
}

/// Turns off TX checksum offload of a device (the trap above). ETHTOOL_STXCSUM through
/// SIOCETHTOOL on a socket of the calling thread's namespace.
pub fn disable_tx_checksum(ifname: &str) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const ETHTOOL_STXCSUM: u32 = 0x17;
    if ifname.len() >= 16 {
        return Err(Error::invalid("ifname", ifname, "longer than 15 bytes"));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = Ifreq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a datagram socket we own, closed below; `req` and `value` outlive the call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).op(|| "ethtool socket".into());
    }
    // SAFETY: SIOCETHTOOL with a valid ifreq pointing at a valid ethtool_value.
    let r = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req as *mut Ifreq) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(err).op(|| format!("turn off tx checksum offload on {ifname}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernels_with_the_checksum_trap() {
        assert!(super::broken_release("4.19.0-21-amd64"));
        assert!(super::broken_release("5.6.19"));
        assert!(!super::broken_release("5.7.0"));
        assert!(!super::broken_release("6.18.2-knit\n"));
    }
}
