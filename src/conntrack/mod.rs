//! Conntrack flushing over ctnetlink. NAT decisions live in conntrack entries: once a flow
//! has an entry, later packets follow it whatever the nft maps now say. So when a backend
//! goes away (a sandbox detached or re-attached with a new address, a service backend
//! removed, a published port unpublished) the entries that point at it are deleted, and
//! when a UDP port is published the entries that reached the node un-NATed before (a
//! client that kept sending while nothing was published) are deleted too; the next packet
//! then takes the new path. TCP flows to a service's removed backend are left alone, like
//! kube-proxy: a live connection keeps its backend.
//!
//! Finding the entries: /proc/net/nf_conntrack, read and matched here (the kernel walks its
//! hash table under RCU: ≈0.3 ms for a table of 262144 buckets), or where that file does
//! not exist, one ctnetlink dump (`IPCTNL_MSG_CT_GET` + `NLM_F_DUMP`), which takes every
//! bucket's lock in turn (≈13 ms for the same table, even with no entry in this
//! namespace). Then one `IPCTNL_MSG_CT_DELETE` per match (by original tuple and zone, plus
//! the id when the dump gave it) sent in batches on the same socket. Everything runs in the calling
//! thread's network namespace (knit's: the node's). Callers treat failures as warnings:
//! the kernel change they follow has already happened.

mod proc;
mod wire;

use crate::error::Result;
use crate::model::{PortMapping, Proto};
use crate::nft::service::ServiceFw;
use crate::nft::wire::proto_num;
use crate::store::Attachment;
use proc::proc_entries;
use wire::Socket;
pub use wire::dump;

use std::net::IpAddr;

const IPPROTO_UDP: u8 = 17;

/// One direction of a flow. Ports are 0 for protocols without them (ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// One conntrack entry as the dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    family: u8,
    /// The attributes that name exactly this entry to IPCTNL_MSG_CT_DELETE, copied from the
    /// dump: CTA_TUPLE_ORIG, CTA_ZONE (if any) and CTA_ID.
    key: Vec<u8>,
    /// What `knit inspect --flows` shows (the netlink dump has them; /proc parsing not).
    pub info: FlowInfo,
}

/// A flow's state as conntrack keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowInfo {
    /// Seconds until the entry expires.
    pub timeout: Option<u32>,
    /// TCP's state in conntrack (`TCP_CONNTRACK_*`).
    pub tcp_state: Option<u8>,
    /// `IPS_*` status bits.
    pub status: u32,
}

impl FlowInfo {
    /// Conntrack's name of the TCP state, as `conntrack -L` prints it.
    pub fn tcp_state_name(&self) -> Option<&'static str> {
        const NAMES: [&str; 10] = [
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
            "SYN_SENT2",
        ];
        self.tcp_state
            .and_then(|s| NAMES.get(usize::from(s)).copied())
    }

    /// Replies were seen and the flow is kept under pressure (`IPS_ASSURED`).
    pub fn assured(&self) -> bool {
        self.status & (1 << 2) != 0
    }
}

impl Entry {
    /// Whether the original destination was rewritten (DNAT: a published port, a service).
    pub fn dnatted(&self) -> bool {
        self.reply.src != self.orig.dst || self.reply.sport != self.orig.dport
    }

    /// Whether the original source was rewritten (SNAT, masquerade).
    pub fn snatted(&self) -> bool {
        self.reply.dst != self.orig.src || self.reply.dport != self.orig.sport
    }
}

/// Which flows to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flows {
    /// Every flow with this address at either end, in either direction: an address that
    /// went away (a detached sandbox's).
    Addr(IpAddr),
    /// Flows of `proto` to `ip:port` (original destination) or answered by it (reply
    /// source): a removed endpoint.
    Endpoint { ip: IpAddr, proto: u8, port: u16 },
    /// Flows DNATed from a published host port to its container address: `proto`, original
    /// destination port `port` (and address `host_ip` if the mapping names one), reply
    /// source `to:to_port`.
    Published {
        host_ip: Option<IpAddr>,
        proto: u8,
        port: u16,
        to: IpAddr,
        to_port: u16,
    },
    /// Flows that reached one of `local` (the node's addresses) on `proto`/`port` without
    /// being DNATed: they would keep bypassing a port published since.
    Undnatted {
        local: Vec<IpAddr>,
        proto: u8,
        port: u16,
    },
    /// Flows of a service that were sent to one backend: original destination the VIP (or
    /// the node port, DNATed), reply source the backend.
    ServiceBackend {
        vip: IpAddr,
        port: u16,
        node_port: Option<u16>,
        proto: u8,
        backend: IpAddr,
        backend_port: u16,
    },
}

impl Flows {
    pub fn published(p: &PortMapping) -> Flows {
        Flows::Published {
            host_ip: p.host_ip,
            proto: proto_num(p.proto),
            port: p.host_port,
            to: p.container_ip,
            to_port: p.container_port,
        }
    }

    pub fn matches(&self, e: &Entry) -> bool {
        let (o, r) = (&e.orig, &e.reply);
        match self {
            Flows::Addr(ip) => [o.src, o.dst, r.src, r.dst].contains(ip),
            Flows::Endpoint { ip, proto, port } => {
                o.proto == *proto
                    && ((o.dst == *ip && o.dport == *port) || (r.src == *ip && r.sport == *port))
            }
            Flows::Published {
                host_ip,
                proto,
                port,
                to,
                to_port,
            } => {
                o.proto == *proto
                    && o.dport == *port
                    && host_ip.is_none_or(|h| h == o.dst)
                    && r.src == *to
                    && r.sport == *to_port
                    && e.dnatted()
            }
            Flows::Undnatted { local, proto, port } => {
                o.proto == *proto && o.dport == *port && local.contains(&o.dst) && !e.dnatted()
            }
            Flows::ServiceBackend {
                vip,
                port,
                node_port,
                proto,
                backend,
                backend_port,
            } => {
                o.proto == *proto
                    && r.src == *backend
                    && r.sport == *backend_port
                    && e.dnatted()
                    && ((o.dst == *vip && o.dport == *port) || Some(o.dport) == *node_port)
            }
        }
    }
}

/// Whether this namespace's table is known to be empty. A dump walks every bucket of the
/// kernel's hash table, which is shared by all namespaces and sized by memory (262144
/// buckets: ≈13 ms here even with no entry in this namespace); the per-namespace count
/// is one read.
fn table_is_empty() -> bool {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .is_ok_and(|s| s.trim() == "0")
}

/// Deletes the entries matching any of `flows`; returns how many were deleted.
pub fn flush(flows: &[Flows]) -> Result<usize> {
    if flows.is_empty() || table_is_empty() {
        return Ok(0);
    }
    let keep = |e: &Entry| flows.iter().any(|f| f.matches(e));
    // The socket is opened only when there is something to delete (or no /proc file to
    // read): releasing a netfilter socket costs the kernel milliseconds, and its release is
    // handed to a detached child like nf_tables sockets are.
    let (matched, socket) = match proc_entries(&keep) {
        Some(entries) if entries.is_empty() => return Ok(0),
        Some(entries) => (entries, Socket::open()?),
        None => {
            let mut s = Socket::open()?;
            (s.dump(&keep)?, s)
        }
    };
    let mut socket = socket;
    let deleted = if matched.is_empty() {
        Ok(0)
    } else {
        socket.delete(&matched)
    };
    crate::deferred::close_detached(socket.0);
    deleted
}

/// `flush`, reporting a failure as a warning: the kernel change it follows has happened.
fn flush_or_warn(flows: &[Flows], after: impl FnOnce() -> String) {
    if flows.is_empty() {
        return;
    }
    match flush(flows) {
        Ok(n) => crate::trace::phase(&format!("conntrack: {n} entries deleted")),
        Err(e) => tracing::warn!("{}: stale flows may remain: {e}", after()),
    }
}

/// Flows of an attachment being removed: everything to or from its addresses (that
/// covers its published ports and the services it backs).
pub fn forget_attachment(att: &Attachment) {
    let flows: Vec<Flows> = att.ips.iter().map(|n| Flows::Addr(n.addr())).collect();
    flush_or_warn(&flows, || {
        format!("detach {} from {}: conntrack", att.sandbox, att.network)
    });
}

/// Flows that reached the node un-NATed on a UDP port this attachment now publishes (a
/// client that kept sending while nothing served the port), so its next datagram is
/// DNATed to the new container.
pub fn clear_published(att: &Attachment) {
    let udp: Vec<&PortMapping> = att.ports.iter().filter(|p| p.proto == Proto::Udp).collect();
    if udp.is_empty() {
        return;
    }
    let local = match crate::netlink::Netlink::open().and_then(|mut nl| nl.addresses()) {
        Ok(a) => a.into_iter().map(|(_, n)| n.addr()).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(
                "attach {} to {}: conntrack: stale flows may remain: {e}",
                att.sandbox,
                att.network
            );
            return;
        }
    };
    let flows: Vec<Flows> = udp
        .iter()
        .map(|p| Flows::Undnatted {
            local: match p.host_ip {
                Some(ip) => vec![ip],
                None => local.clone(),
            },
            proto: IPPROTO_UDP,
            port: p.host_port,
        })
        .collect();
    flush_or_warn(&flows, || {
        format!("attach {} to {}: conntrack", att.sandbox, att.network)
    });
}

/// The flows to delete when a service changes from `old` to `new` (None: removed): for a
/// UDP service, the flows sent to a backend that is no longer in it. (TCP and SCTP
/// connections keep their backend, as the README promises.)
pub fn service_flows(old: &ServiceFw, new: Option<&ServiceFw>) -> Vec<Flows> {
    if old.vip.proto != Proto::Udp {
        return vec![];
    }
    let kept = |ip: IpAddr, port: u16| {
        new.is_some_and(|n| {
            n.vip == old.vip
                && n.node_port == old.node_port
                && n.backends.iter().any(|&(_, i, p)| i == ip && p == port)
        })
    };
    old.backends
        .iter()
        .filter(|&&(_, ip, port)| !kept(ip, port))
        .map(|&(_, ip, port)| Flows::ServiceBackend {
            vip: old.vip.ip,
            port: old.vip.port,
            node_port: old.node_port,
            proto: IPPROTO_UDP,
            backend: ip,
            backend_port: port,
        })
        .collect()
}

/// Deletes a UDP service's flows to backends it no longer has (`new` None: removed).
pub fn service_changed(old: &ServiceFw, new: Option<&ServiceFw>) {
    flush_or_warn(&service_flows(old, new), || {
        format!("service {}: conntrack", old.vip)
    });
}

#[cfg(test)]
mod tests;
