//! A small blocking rtnetlink client (the netavark model): one socket per namespace, one
//! request at a time, typed messages from netlink-packet-route. A short-lived CLI or CNI
//! process pays no async runtime start-up, and every kernel change here is one message.

mod bridge;
mod overlay;
mod route;
pub use overlay::{ClusterRoute, Fdb, VxlanRequest, checksum_offload_broken, disable_tx_checksum};
pub use route::{Lookup, Route};

use crate::error::{Error, IoContext, Result};
use crate::model::Mac;
use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, BridgeStpState, In6AddrGenMode, InfoBridge, InfoBridgePort,
    InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// What knit needs to know about a link it found.
#[derive(Debug, Clone)]
pub struct LinkInfoSummary {
    pub index: u32,
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub controller: Option<u32>,
    pub kind: Option<String>,
}

/// A neighbour (ARP/ND) entry as read back for inspection.
#[derive(Debug, Clone)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<String>,
    pub state: String,
}

/// A new veth pair: `host` end stays here, `peer` end is created directly in `peer_netns`.
pub struct VethRequest<'a> {
    pub host_name: &'a str,
    pub host_mac: Mac,
    pub peer_name: &'a str,
    pub peer_mac: Mac,
    pub peer_netns: BorrowedFd<'a>,
    pub mtu: Option<u32>,
    pub controller: Option<u32>,
}

pub(super) fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Brings `lo` up in the calling thread's namespace (a new namespace starts with it down;
/// sandboxes expect it up).
pub fn bring_up_loopback() -> Result<()> {
    Netlink::open()?.set_up(1)
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE).op(|| "open netlink socket".into())?;
        sock.bind_auto().op(|| "bind netlink socket".into())?;
        sock.connect(&SocketAddr::new(0, 0))
            .op(|| "connect netlink socket".into())?;
        // Strict checking makes filtered dumps (e.g. routes of one table) honour the filter.
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A socket inside another namespace; it stays bound to that namespace, so it can be
    /// used from this thread afterwards.
    pub fn open_in(netns: &crate::netns::Netns) -> Result<Self> {
        netns.run(Netlink::open)?
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        nl.header.flags = NLM_F_REQUEST | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut out = vec![0; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0).op(|| "netlink send".into())?;
        Ok(self.seq)
    }

    /// Sends one request and collects replies until the ACK (or DONE for dumps).
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self
            .send(msg, flags | NLM_F_ACK)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut replies = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "zero-length netlink message",
                    ));
                }
                off += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// One request and its replies (for the submodules' queries).
    pub(crate) fn exchange_public(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, 0)
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        self.exchange(msg, flags).map(|_| ()).op(what)
    }

    fn dump(&mut self, msg: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_DUMP).op(|| what.to_string())
    }

    // ---- links -------------------------------------------------------------------------

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfoSummary>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.exchange(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(summarize(&l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(Error::io(format!("look up link {name}"), e)),
        }
    }

    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self.link_by_name(name)?.map(|l| l.index))
    }

    pub fn links(&mut self) -> Result<Vec<LinkInfoSummary>> {
        let replies = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "list links",
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(summarize(l)),
                _ => None,
            })
            .collect())
    }

    pub fn create_bridge(&mut self, name: &str, mac: Mac, mtu: Option<u32>) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        // A fixed MAC keeps the bridge address stable as ports come and go.
        msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        if let Some(m) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::StpState(
                BridgeStpState::Disabled,
            )])),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create bridge {name}"),
        )
    }

    /// Creates the pair in one message: host end (enslaved), peer end inside the sandbox
    /// with its final name and MAC. Both are down.
    /// Returns the host end's ifindex (from the kernel's echo of the new link).
    pub fn create_veth(&mut self, req: &VethRequest) -> Result<Option<u32>> {
        // The peer cannot be brought up in this message (veth_open fails with ENOTCONN
        // until both ends exist); the caller sets it up from inside the sandbox.
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(req.peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::Address(req.peer_mac.0.to_vec()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(req.peer_netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes
            .push(LinkAttribute::IfName(req.host_name.to_string()));
        msg.attributes
            .push(LinkAttribute::Address(req.host_mac.0.to_vec()));
        if let Some(m) = req.mtu {
            msg.attributes.push(LinkAttribute::Mtu(m));
            peer.attributes.push(LinkAttribute::Mtu(m));
        }
        if let Some(c) = req.controller {
            msg.attributes.push(LinkAttribute::Controller(c));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let replies = match self.exchange(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
        ) {
            // The bridge's port numbers are 10 bits: the kernel refuses a 1024th port.
            Err(e) if e.raw_os_error() == Some(libc::EXFULL) && req.controller.is_some() => {
                return Err(crate::error::Error::Conflict(
                    "the network's bridge is full: the kernel allows at most 1023 ports per bridge"
                        .into(),
                ));
            }
            r => r.op(|| format!("create veth {} <-> {}", req.host_name, req.peer_name))?,
        };
        Ok(replies.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) if summarize(l).name == req.host_name => {
                Some(l.header.index)
            }
            _ => None,
        }))
    }

    /// Stops the kernel from giving a link an IPv6 link-local address (set while it is down).
    pub fn disable_link_local(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(no_link_local());
        self.request(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set addrgenmode none on link {index}")
        })
    }

    /// Prepares a host-side veth while it is still down: no IPv6 link-local address (it is
    /// a bridge port or a routed hop, never an IPv6 endpoint, and without one it sends no
    /// DAD/MLD/RS, which a bridge floods to every other port: a cost that grows with the
    /// number of containers) and, on a bridge, hairpin so a sandbox can reach its own
    /// published port through the node address.
    pub fn prepare_host_port(&mut self, index: u32, bridge_port: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if bridge_port {
            msg.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                    true,
                )])),
            ]));
        }
        msg.attributes.push(no_link_local());
        self.request(RouteNetlinkMessage::NewLink(msg), 0, || {
            format!("configure host port {index}")
        })
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set link {index} up")
        })
    }

    /// Enslaves a link to a bridge (reconcile, when the bridge was re-created).
    pub fn set_controller(&mut self, index: u32, controller: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Controller(controller));
        self.request(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("attach link {index} to bridge {controller}")
        })
    }

    /// Makes the bridge pass bridged (port to port) IPv4/IPv6 traffic through the inet
    /// netfilter hooks, so policy also sees traffic between sandboxes of one network,
    /// whatever the node-wide bridge-nf-call sysctls say.
    pub fn set_bridge_nf_call(&mut self, index: u32, on: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::NfCallIpTables(on),
                InfoBridge::NfCallIp6Tables(on),
            ])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), 0, || {
            format!("set netfilter calls on bridge {index}")
        })
    }

    pub fn set_promisc(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Promisc;
        msg.header.change_mask = LinkFlags::Promisc;
        self.request(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("set link {index} promiscuous")
        })
    }

    /// Deletes a link by name; Ok(false) if it was already gone.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.exchange(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(Error::io(format!("delete link {name}"), e)),
        }
    }

    // ---- addresses, routes, neighbours ------------------------------------------------

    pub fn add_address(&mut self, index: u32, net: IpNet) -> Result<()> {
        let mut msg = AddressMessage::default();
        let ip = net.addr();
        msg.header.family = family_of(&ip);
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        if let IpAddr::V4(_) = ip
            && net.prefix_len() < 31
        {
            msg.attributes
                .push(AddressAttribute::Broadcast(match net.broadcast() {
                    IpAddr::V4(b) => b,
                    IpAddr::V6(_) => unreachable!("an IPv4 net has an IPv4 broadcast"),
                }));
        }
        // No duplicate-address detection: knit's IPAM already guarantees uniqueness and DAD
        // would leave IPv6 addresses unusable for a second or more.
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        // REPLACE makes re-adding the same address (reconcile, retries) a no-op.
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add address {net} to link {index}"),
        )
    }

    pub fn addresses(&mut self) -> Result<Vec<(u32, IpNet)>> {
        let replies = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "list addresses",
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => {
                    let ip = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let ip = ip.or_else(|| {
                        a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    IpNet::new(ip, a.header.prefix_len)
                        .ok()
                        .map(|n| (a.header.index, n))
                }
                _ => None,
            })
            .collect())
    }

    /// Adds (or replaces) a route in the main table. `onlink` lets a gateway sit outside
    /// every on-link prefix, which the ptp driver's link-local gateway needs.
    pub fn add_route(&mut self, route: &Route) -> Result<()> {
        let msg = route.to_message();
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add route {}", route.describe()),
        )
    }

    pub fn routes(&mut self, family: AddressFamily) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        req.header.table = RouteHeader::RT_TABLE_MAIN;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(req), "list routes")?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.table == RouteHeader::RT_TABLE_MAIN =>
                {
                    Route::from_message(r)
                }
                _ => None,
            })
            .collect())
    }

    /// A permanent neighbour entry (static ARP/ND), used by the ptp driver so neither side
    /// depends on proxy ARP.
    pub fn add_neighbour(&mut self, index: u32, ip: IpAddr, mac: Mac) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(&ip);
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.request(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add neighbour {ip} lladdr {mac} on link {index}"),
        )
    }

    pub fn neighbours(&mut self) -> Result<Vec<Neighbour>> {
        let replies = self.dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            "list neighbours",
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => {
                    let ip = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                            Some(IpAddr::V4(*v))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                            Some(IpAddr::V6(*v))
                        }
                        _ => None,
                    })?;
                    let mac = n.attributes.iter().find_map(|a| match a {
                        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                            let mut m = [0u8; 6];
                            m.copy_from_slice(b);
                            Some(Mac(m).to_string())
                        }
                        _ => None,
                    });
                    Some(Neighbour {
                        index: n.header.ifindex,
                        ip,
                        mac,
                        state: format!("{:?}", n.header.state).to_lowercase(),
                    })
                }
                _ => None,
            })
            .collect())
    }
}

fn no_link_local() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

fn summarize(l: &LinkMessage) -> LinkInfoSummary {
    let mut s = LinkInfoSummary {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        up: l.header.flags.contains(LinkFlags::Up),
        controller: None,
        kind: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(b);
                s.mac = Some(Mac(m).to_string());
            }
            LinkAttribute::Mtu(m) => s.mtu = Some(*m),
            LinkAttribute::Controller(c) => s.controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        s.kind = Some(format!("{k:?}").to_lowercase());
                    }
                }
            }
            _ => {}
        }
    }
    s
}
