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

use crate::error::{Error, IoContext, Result};
use crate::model::{PortMapping, Proto};
use crate::nft::service::ServiceFw;
use crate::nft::wire::{acks, message, open_netfilter, proto_num};
use crate::store::Attachment;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const IPPROTO_UDP: u8 = 17;

/// Deletes per `send`: their acks (and the echoed request of an error ack) must fit the
/// socket's default receive buffer.
const DELETE_CHUNK: usize = 256;

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
}

impl Entry {
    /// Whether the original destination was rewritten (DNAT: a published port, a service).
    pub fn dnatted(&self) -> bool {
        self.reply.src != self.orig.dst || self.reply.sport != self.orig.dport
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

/// Attributes of one netlink attribute stream: (type without flags, payload, whole
/// attribute with its header). Stops at the first malformed length.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let item = (kind, &buf[4..len], &buf[..len]);
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some(item)
    })
}

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for (kind, payload, _) in attrs(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, p, _) in attrs(payload) {
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = ip_of(p),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = ip_of(p),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, p, _) in attrs(payload) {
                    match k {
                        CTA_PROTO_NUM => proto = p.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(p)?,
                        CTA_PROTO_DST_PORT => dport = be16(p)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        sport,
        dport,
    })
}

/// Appends a copied attribute, padded to 4 bytes.
fn copy_attr(out: &mut Vec<u8>, whole: &[u8]) {
    out.extend_from_slice(whole);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One entry from the payload of an IPCTNL_MSG_CT_NEW message (after nlmsghdr), if it
/// has both tuples and `keep` wants it. Only kept entries copy their delete key.
fn parse_entry(payload: &[u8], keep: &dyn Fn(&Entry) -> bool) -> Option<Entry> {
    let family = *payload.first()?;
    let body = payload.get(4..)?;
    let (mut orig, mut reply) = (None, None);
    for (kind, p, _) in attrs(body) {
        match kind {
            CTA_TUPLE_ORIG => orig = parse_tuple(p),
            CTA_TUPLE_REPLY => reply = parse_tuple(p),
            _ => {}
        }
    }
    let mut e = Entry {
        orig: orig?,
        reply: reply?,
        family,
        key: vec![],
    };
    if !keep(&e) {
        return None;
    }
    let mut extra = vec![];
    for (kind, _, whole) in attrs(body) {
        match kind {
            CTA_TUPLE_ORIG => copy_attr(&mut e.key, whole),
            CTA_ZONE | CTA_ID => copy_attr(&mut extra, whole),
            _ => {}
        }
    }
    e.key.extend_from_slice(&extra);
    Some(e)
}

/// Outcome of one datagram of a dump.
enum Part {
    More,
    Done,
}

/// Reads the entries of one datagram of dump replies into `out`.
fn parse_dump(buf: &[u8], out: &mut Vec<Entry>, keep: &dyn Fn(&Entry) -> bool) -> Result<Part> {
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = word(off) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            return Err(Error::io(
                "conntrack dump",
                io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply"),
            ));
        }
        match kind {
            NLMSG_DONE => return Ok(Part::Done),
            NLMSG_ERROR if len >= 20 => {
                let code = word(off + 16) as i32;
                if code != 0 {
                    return Err(Error::io(
                        "conntrack dump",
                        io::Error::from_raw_os_error(-code),
                    ));
                }
            }
            k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                if let Some(e) = parse_entry(&buf[off + 16..off + len], keep) {
                    out.push(e);
                }
            }
            _ => {}
        }
        off += (len + 3) & !3;
    }
    Ok(Part::More)
}

/// The dump request: all families, no filter.
fn dump_request(seq: u32) -> Vec<u8> {
    let mut msg = vec![];
    message(
        &mut msg,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0, // AF_UNSPEC: IPv4 and IPv6
        0,
        &[],
    );
    msg
}

/// Appends the delete of one entry.
fn delete_request(out: &mut Vec<u8>, e: &Entry, seq: u32) {
    message(
        out,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        e.family,
        0,
        &e.key,
    );
}

struct Socket(netlink_sys::Socket);

impl Socket {
    fn open() -> Result<Socket> {
        let s = open_netfilter().op(|| "open conntrack netlink socket".into())?;
        // A kernel that does not answer must not hang a detach.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a pointer to a local timeval.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Socket(s))
    }

    fn recv<'a>(&mut self, buf: &'a mut [u8], what: &str) -> Result<&'a [u8]> {
        let n = self
            .0
            .recv(&mut &mut buf[..], 0)
            .op(|| format!("receive {what}"))?;
        Ok(&buf[..n.min(buf.len())])
    }

    /// The entries `keep` wants.
    fn dump(&mut self, keep: &dyn Fn(&Entry) -> bool) -> Result<Vec<Entry>> {
        self.0
            .send(&dump_request(1), 0)
            .op(|| "send conntrack dump request".into())?;
        let mut out = vec![];
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let got = self.recv(&mut buf, "conntrack dump")?;
            if let Part::Done = parse_dump(got, &mut out, keep)? {
                return Ok(out);
            }
        }
    }

    /// Deletes the entries; returns how many went (an entry already gone is not an error).
    fn delete(&mut self, entries: &[Entry]) -> Result<usize> {
        let mut deleted = 0;
        let mut seq = 1u32;
        let mut buf = vec![0u8; 64 * 1024];
        for chunk in entries.chunks(DELETE_CHUNK) {
            let first = seq + 1;
            let mut msgs = vec![];
            for e in chunk {
                seq += 1;
                delete_request(&mut msgs, e, seq);
            }
            self.0
                .send(&msgs, 0)
                .op(|| "send conntrack delete".into())?;
            let mut pending = chunk.len();
            let mut first_err = None;
            while pending > 0 {
                let got = self.recv(&mut buf, "conntrack delete ack")?;
                for (s, code) in acks(got)? {
                    if !(first..=seq).contains(&s) {
                        continue;
                    }
                    pending = pending.saturating_sub(1);
                    match -code {
                        0 => deleted += 1,
                        libc::ENOENT => {}
                        e => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(Error::io(
                    "delete conntrack entry",
                    io::Error::from_raw_os_error(e),
                ));
            }
        }
        Ok(deleted)
    }
}

/// Every conntrack entry of this namespace (IPv4 and IPv6).
pub fn dump() -> Result<Vec<Entry>> {
    Socket::open()?.dump(&|_| true)
}

const PROC_TABLE: &str = "/proc/net/nf_conntrack";
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

/// The entries `keep` wants, from /proc/net/nf_conntrack (this namespace's); None if the
/// kernel has no such file (then the netlink dump does the job).
fn proc_entries(keep: &dyn Fn(&Entry) -> bool) -> Option<Vec<Entry>> {
    let text = std::fs::read_to_string(PROC_TABLE).ok()?;
    Some(
        text.lines()
            .filter_map(parse_proc_line)
            .filter(|e| keep(e))
            .collect(),
    )
}

/// One line of /proc/net/nf_conntrack, e.g.
/// `ipv4 2 udp 17 29 src=10.0.0.2 dst=10.0.0.3 sport=5353 dport=53 [UNREPLIED] src=10.0.0.3
/// dst=10.0.0.2 sport=53 dport=5353 mark=0 zone=0 use=2`: the first src/dst/ports (or ICMP
/// type/code/id) are the original direction, the second the reply. The delete key is the
/// original tuple and the zone, encoded as ctnetlink wants them.
fn parse_proc_line(line: &str) -> Option<Entry> {
    let mut words = line.split_whitespace();
    let _l3 = words.next()?;
    let family: u8 = words.next()?.parse().ok()?;
    let _l4 = words.next()?;
    let proto: u8 = words.next()?.parse().ok()?;
    #[derive(Default, Clone, Copy)]
    struct Side {
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
        sport: u16,
        dport: u16,
        icmp: [Option<u16>; 3], // type, code, id
    }
    let mut sides = [Side::default(); 2];
    let mut side = 0;
    let mut zone: u16 = 0;
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            continue;
        };
        // A second `src=` starts the reply direction.
        if k == "src" && sides[0].src.is_some() {
            side = 1;
        }
        let s = &mut sides[side];
        match k {
            "src" => s.src = v.parse().ok(),
            "dst" => s.dst = v.parse().ok(),
            "sport" => s.sport = v.parse().ok()?,
            "dport" => s.dport = v.parse().ok()?,
            "type" => s.icmp[0] = v.parse().ok(),
            "code" => s.icmp[1] = v.parse().ok(),
            "id" => s.icmp[2] = v.parse().ok(),
            "zone" => zone = v.parse().ok()?,
            _ => {}
        }
    }
    let tuple = |s: &Side| {
        Some(Tuple {
            src: s.src?,
            dst: s.dst?,
            proto,
            sport: s.sport,
            dport: s.dport,
        })
    };
    let (orig, reply) = (tuple(&sides[0])?, tuple(&sides[1])?);
    let o = sides[0];
    let mut key = vec![];
    crate::nft::wire::nested(&mut key, CTA_TUPLE_ORIG, |b| {
        crate::nft::wire::nested(b, CTA_TUPLE_IP, |b| {
            let (sk, dk) = if orig.src.is_ipv4() {
                (CTA_IP_V4_SRC, CTA_IP_V4_DST)
            } else {
                (CTA_IP_V6_SRC, CTA_IP_V6_DST)
            };
            let bytes = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            crate::nft::wire::attr(b, sk, |b| b.extend(bytes(orig.src)));
            crate::nft::wire::attr(b, dk, |b| b.extend(bytes(orig.dst)));
        });
        crate::nft::wire::nested(b, CTA_TUPLE_PROTO, |b| {
            crate::nft::wire::attr(b, CTA_PROTO_NUM, |b| b.push(proto));
            let icmp = match proto {
                1 => Some((CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID)),
                58 => Some((
                    CTA_PROTO_ICMPV6_TYPE,
                    CTA_PROTO_ICMPV6_CODE,
                    CTA_PROTO_ICMPV6_ID,
                )),
                _ => None,
            };
            match icmp {
                Some((tk, ck, ik)) => {
                    if let [Some(t), Some(c), Some(id)] = o.icmp {
                        crate::nft::wire::attr(b, tk, |b| b.push(t as u8));
                        crate::nft::wire::attr(b, ck, |b| b.push(c as u8));
                        crate::nft::wire::attr(b, ik, |b| b.extend(id.to_be_bytes()));
                    }
                }
                None if matches!(proto, 6 | 17 | 132 | 33 | 136) => {
                    crate::nft::wire::attr(b, CTA_PROTO_SRC_PORT, |b| {
                        b.extend(o.sport.to_be_bytes())
                    });
                    crate::nft::wire::attr(b, CTA_PROTO_DST_PORT, |b| {
                        b.extend(o.dport.to_be_bytes())
                    });
                }
                None => {}
            }
        });
    });
    if zone != 0 {
        crate::nft::wire::attr(&mut key, CTA_ZONE, |b| b.extend(zone.to_be_bytes()));
    }
    Some(Entry {
        orig,
        reply,
        family,
        key,
    })
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
        Err(e) => eprintln!("knit: warning: {}: stale flows may remain: {e}", after()),
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
            eprintln!(
                "knit: warning: attach {} to {}: conntrack: stale flows may remain: {e}",
                att.sandbox, att.network
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
