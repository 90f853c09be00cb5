//! nf_tables set-element batches spoken directly over netlink. Attach and detach only add or
//! remove elements of knit's sets and maps; encoding those few message types here keeps the
//! hot path free of loading libnftables and of its cache fetches, and keeps it one atomic
//! batch (BATCH_BEGIN, NEWSETELEM/DELSETELEM..., BATCH_END) like every other nft change.

use crate::error::{Error, IoContext, Result};
use crate::firewall::{Cmd, DnatRule, Elem};
use crate::model::{PortMapping, Proto};
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_NETFILTER};
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_BRIDGE: u8 = 7;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
// Registers: NFT_REG_1 and NFT_REG_2 are the 16-byte data registers 1 and 2.
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const IFNAMSIZ: usize = 16;

/// Appends one attribute; `f` writes its payload. Returns nothing: lengths are patched in.
pub(crate) fn attr(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

pub(crate) fn nested(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
    attr(buf, kind | NLA_F_NESTED, f);
}

fn cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// One field of a concatenation: big-endian bytes padded to a 4-byte register.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ifname_key(name: &str) -> Option<Vec<u8>> {
    if name.len() >= IFNAMSIZ {
        return None;
    }
    let mut k = name.as_bytes().to_vec();
    k.resize(IFNAMSIZ, 0);
    Some(k)
}

/// `[ip .] proto . port`, the key shape of the port, service and node-port maps.
fn l4_key(ip: Option<IpAddr>, proto: Proto, port: u16) -> Vec<u8> {
    let mut k = vec![];
    if let Some(ip) = ip {
        field(&mut k, &ip_bytes(ip));
    }
    field(&mut k, &[proto_num(proto)]);
    field(&mut k, &port.to_be_bytes());
    k
}

fn port_key(p: &PortMapping) -> Vec<u8> {
    l4_key(p.host_ip, p.proto, p.host_port)
}

pub(crate) fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

/// `ip . port`, a DNAT target as the maps store it.
fn target_value(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut d = vec![];
    field(&mut d, &ip_bytes(ip));
    field(&mut d, &port.to_be_bytes());
    d
}

fn port_data(p: &PortMapping) -> Vec<u8> {
    target_value(p.container_ip, p.container_port)
}

fn be32(b: &mut Vec<u8>, kind: u16, v: u32) {
    attr(b, kind, |b| b.extend_from_slice(&v.to_be_bytes()));
}

/// One expression of a rule: name and nested data.
fn expr(b: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    nested(b, NFTA_LIST_ELEM, |b| {
        attr(b, NFTA_EXPR_NAME, |b| cstr(b, name));
        nested(b, NFTA_EXPR_DATA, data);
    });
}

fn cmp_eq(b: &mut Vec<u8>, value: &[u8]) {
    expr(b, "cmp", |b| {
        be32(b, 1, REG_1); // NFTA_CMP_SREG
        be32(b, 2, 0); // NFTA_CMP_OP: NFT_CMP_EQ
        nested(b, 3, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(value))
        });
    });
}

fn immediate(b: &mut Vec<u8>, reg: u32, value: &[u8]) {
    expr(b, "immediate", |b| {
        be32(b, 1, reg); // NFTA_IMMEDIATE_DREG
        nested(b, 2, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(value))
        });
    });
}

/// The expressions of `DnatRule::text()`, as nft itself encodes them:
/// [numgen random mod N; cmp eq 0;] meta l4proto; cmp; immediate addr; immediate port; nat.
fn dnat_exprs(b: &mut Vec<u8>, r: &DnatRule) {
    if let Some(n) = r.one_in {
        expr(b, "numgen", |b| {
            be32(b, 1, REG_1); // NFTA_NG_DREG
            be32(b, 2, n); // NFTA_NG_MODULUS
            be32(b, 3, 1); // NFTA_NG_TYPE: NFT_NG_RANDOM
        });
        cmp_eq(b, &0u32.to_ne_bytes());
    }
    expr(b, "meta", |b| {
        be32(b, 1, REG_1); // NFTA_META_DREG
        be32(b, 2, 16); // NFTA_META_KEY: NFT_META_L4PROTO
    });
    cmp_eq(b, &[proto_num(r.proto)]);
    immediate(b, REG_1, &ip_bytes(r.ip));
    immediate(b, REG_2, &r.port.to_be_bytes());
    expr(b, "nat", |b| {
        be32(b, 1, 1); // NFTA_NAT_TYPE: NFT_NAT_DNAT
        be32(b, 2, if r.ip.is_ipv4() { 2 } else { 10 }); // NFTA_NAT_FAMILY
        be32(b, 3, REG_1); // NFTA_NAT_REG_ADDR_MIN
        be32(b, 5, REG_2); // NFTA_NAT_REG_PROTO_MIN
        be32(b, 7, 2); // NFTA_NAT_FLAGS: NF_NAT_RANGE_PROTO_SPECIFIED
    });
}

/// What an element maps its key to.
enum Data<'a> {
    None,
    Value(Vec<u8>),
    Verdict(i32, &'a str),
}

/// One list element: key, and data or verdict.
fn write_element(out: &mut Vec<u8>, key: &[u8], data: Data) {
    nested(out, NFTA_LIST_ELEM, |b| {
        nested(b, NFTA_SET_ELEM_KEY, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(key))
        });
        match data {
            Data::None => {}
            Data::Value(v) => nested(b, NFTA_SET_ELEM_DATA, |b| {
                attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&v))
            }),
            Data::Verdict(code, chain) => nested(b, NFTA_SET_ELEM_DATA, |b| {
                nested(b, NFTA_DATA_VERDICT, |b| {
                    attr(b, NFTA_VERDICT_CODE, |b| {
                        b.extend_from_slice(&code.to_be_bytes())
                    });
                    attr(b, NFTA_VERDICT_CHAIN, |b| cstr(b, chain));
                });
            }),
        }
    });
}

fn goto(chain: &Option<String>) -> Data<'_> {
    match chain {
        Some(c) => Data::Verdict(NFT_GOTO, c),
        None => Data::None,
    }
}

/// Encodes one element; None for kinds this fast path does not handle (intervals).
fn element(buf: &mut Vec<u8>, e: &Elem) -> Option<()> {
    let (key, data) = match e {
        Elem::Iface(name) => (ifname_key(name)?, Data::None),
        Elem::Jump { ifname, chain } => (ifname_key(ifname)?, Data::Verdict(NFT_JUMP, chain)),
        Elem::Port(p) => (port_key(p), Data::Value(port_data(p))),
        Elem::Addr(ip) => (ip_bytes(*ip), Data::None),
        Elem::Svc {
            ip,
            proto,
            port,
            goto: chain,
        } => (l4_key(Some(*ip), *proto, *port), goto(chain)),
        Elem::NodePort {
            proto,
            port,
            goto: chain,
        } => (l4_key(None, *proto, *port), goto(chain)),
        Elem::Endpoint {
            vip,
            proto,
            port,
            index,
            ip,
            target_port,
        } => {
            let mut key = l4_key(*vip, *proto, *port);
            // numgen writes its result in host byte order.
            field(&mut key, &index.to_ne_bytes());
            (key, Data::Value(target_value(*ip, *target_port)))
        }
        Elem::IfaceMac { ifname, mac } => {
            let mut key = ifname_key(ifname)?;
            field(&mut key, &mac.0);
            (key, Data::None)
        }
        Elem::IfaceAddr { ifname, ip } => {
            let mut key = ifname_key(ifname)?;
            field(&mut key, &ip_bytes(*ip));
            (key, Data::None)
        }
        // The raw payload `@th,64,128` is the address's bytes in packet (network) order.
        Elem::IfaceNdTarget { ifname, ip } => {
            let mut key = ifname_key(ifname)?;
            field(&mut key, &ip.octets());
            (key, Data::None)
        }
        Elem::Prefix(_) => return None,
    };
    write_element(buf, &key, data);
    Some(())
}

/// One netlink message: header, nfgenmsg, attributes.
pub(crate) fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// The (sequence, error code) of every NLMSG_ERROR (ack or error) in one datagram of
/// replies; other messages (a GETTABLE's answer) are skipped.
pub(crate) fn acks(buf: &[u8]) -> Result<Vec<(u32, i32)>> {
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let mut out = vec![];
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = word(off) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            return Err(Error::Nft("malformed netlink reply".into()));
        }
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((word(off + 8), word(off + 16) as i32));
        }
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The string value of the first top-level attribute `kind` in `attrs`.
fn string_attr(attrs: &[u8], kind: u16) -> Option<String> {
    let v = raw_attr(attrs, kind)?;
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    String::from_utf8(v.to_vec()).ok()
}

/// The payload of the first top-level attribute `kind` in `attrs`.
fn raw_attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
    let mut off = 0;
    while off + 4 <= attrs.len() {
        let len = u16::from_ne_bytes([attrs[off], attrs[off + 1]]) as usize;
        let k = u16::from_ne_bytes([attrs[off + 2], attrs[off + 3]]) & !NLA_F_NESTED;
        if len < 4 || off + len > attrs.len() {
            return None;
        }
        if k == kind {
            return Some(&attrs[off + 4..off + len]);
        }
        off += (len + 3) & !3;
    }
    None
}

/// An encoded batch: the bytes and the sequence number of its last message, the only one
/// that asks for an acknowledgement (None for an empty batch).
pub struct Encoded {
    bytes: Vec<u8>,
    acked: Option<u32>,
}

/// Encodes a batch of the command kinds this fast path speaks (elements, regular chains,
/// chain flushes, service DNAT rules); None if it has anything else. Only the last
/// message asks for an acknowledgement: errors are reported whatever the flags, and one
/// ack per message would overflow the socket's receive buffer on large batches.
pub fn encode(table: &str, cmds: &[Cmd]) -> Option<Encoded> {
    let mut msgs: Vec<Msg> = vec![];
    for c in cmds {
        match c {
            Cmd::Bridge(inner) if !matches!(**inner, Cmd::Bridge(_)) => {
                encode_cmd(&mut msgs, table, NFPROTO_BRIDGE, inner)?
            }
            c => encode_cmd(&mut msgs, table, NFPROTO_INET, c)?,
        }
    }
    let mut body = vec![];
    let mut seq = 1u32;
    let last = msgs.len();
    for (i, (kind, flags, family, attrs)) in msgs.iter().enumerate() {
        seq += 1;
        let ack = if i + 1 == last { NLM_F_ACK } else { 0 };
        message(
            &mut body,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | ack | flags,
            seq,
            *family,
            0,
            attrs,
        );
    }
    let acked = (last > 0).then_some(seq);
    let mut bytes = vec![];
    message(
        &mut bytes,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    bytes.extend_from_slice(&body);
    message(
        &mut bytes,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq + 1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    Some(Encoded { bytes, acked })
}

/// One message of a batch: type, flags, family (of the table it acts on), attributes.
type Msg = (u16, u16, u8, Vec<u8>);

/// The messages of one command on knit's table of `family`; None for a kind this fast
/// path does not speak.
fn encode_cmd(msgs: &mut Vec<Msg>, table: &str, family: u8, c: &Cmd) -> Option<()> {
    let table_attr = |kind: u16, b: &mut Vec<u8>| attr(b, kind, |b| cstr(b, table));
    let elem_msg = |kind: u16, flags: u16, set: &str, elems: &[Elem]| -> Option<Msg> {
        let mut attrs = vec![];
        attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, |b| cstr(b, table));
        attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, |b| cstr(b, set));
        let mut list = vec![];
        for e in elems {
            element(&mut list, e)?;
        }
        nested(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
            b.extend_from_slice(&list)
        });
        Some((kind, flags, family, attrs))
    };
    match c {
        Cmd::AddElements { set, elems } => {
            msgs.push(elem_msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elems)?)
        }
        Cmd::RemoveElements { set, elems } => {
            // Re-adding first makes the delete valid even if an element is already gone.
            msgs.push(elem_msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elems)?);
            msgs.push(elem_msg(NFT_MSG_DELSETELEM, 0, set, elems)?);
        }
        Cmd::AddChain { name, hook: None } | Cmd::DeleteChain(name) => {
            let mut a = vec![];
            table_attr(NFTA_CHAIN_TABLE, &mut a);
            attr(&mut a, NFTA_CHAIN_NAME, |b| cstr(b, name));
            msgs.push(match c {
                Cmd::DeleteChain(_) => (NFT_MSG_DELCHAIN, 0, family, a),
                _ => (NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, a),
            });
        }
        Cmd::FlushChain(name) => {
            let mut a = vec![];
            table_attr(NFTA_RULE_TABLE, &mut a);
            attr(&mut a, NFTA_RULE_CHAIN, |b| cstr(b, name));
            msgs.push((NFT_MSG_DELRULE, 0, family, a));
        }
        Cmd::AddDnat { chain, rule } => {
            let mut a = vec![];
            table_attr(NFTA_RULE_TABLE, &mut a);
            attr(&mut a, NFTA_RULE_CHAIN, |b| cstr(b, chain));
            nested(&mut a, NFTA_RULE_EXPRESSIONS, |b| dnat_exprs(b, rule));
            msgs.push((NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, a));
        }
        _ => return None,
    }
    Some(())
}

/// A NETLINK_NETFILTER socket in the calling thread's namespace.
/// A fresh nf_tables netlink socket, bound and connected to the kernel (also what the
/// keeper lends).
pub fn open_netfilter() -> io::Result<NlSocket> {
    let mut s = NlSocket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

pub struct Socket(NlSocket, Option<std::os::unix::net::UnixStream>);

impl std::os::fd::AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Socket {
    /// A socket lent by this namespace's `nft_keeper` (so closing it costs the kernel
    /// nothing), else a fresh one. Fields drop in order: the descriptor before the
    /// connection that returns the loan.
    pub fn open() -> Result<Socket> {
        if let Some(loan) = crate::nft_keeper::borrow(true) {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the descriptor is ours alone (received over SCM_RIGHTS).
            let s = unsafe { NlSocket::from_raw_fd(loan.socket.into_raw_fd()) };
            crate::trace::phase("nft: socket lent by keeper");
            return Ok(Socket(s, Some(loan.connection)));
        }
        let s = open_netfilter().op(|| "open nftables socket".into())?;
        Ok(Socket(s, None))
    }

    /// A socket of this process's own, never a keeper's (and never starting one): for
    /// one-off questions such as whether knit's table exists on a blank state directory.
    pub fn own() -> Result<Socket> {
        let s = open_netfilter().op(|| "open nftables socket".into())?;
        Ok(Socket(s, None))
    }

    /// Sends the batch and waits for every acknowledgement; any error aborts the whole
    /// batch in the kernel and is returned.
    pub fn apply(&mut self, enc: &Encoded) -> Result<()> {
        self.fit(enc.bytes.len());
        self.0
            .send(&enc.bytes, 0)
            .op(|| "send nftables batch".into())?;
        // Wait for the last message's ack or the first error (the kernel then aborts the
        // whole batch; later acks may not come).
        let mut pending = enc.acked;
        let mut first_err: Option<io::Error> = None;
        let mut buf = vec![0u8; 16384];
        while pending.is_some() && first_err.is_none() {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables ack".into())?;
            for (seq, code) in acks(&buf[..n])? {
                if code != 0 && first_err.is_none() {
                    first_err = Some(io::Error::from_raw_os_error(-code));
                } else if Some(seq) == pending {
                    pending = None;
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::Nft(format!(
                "element batch rejected: {e} (knit's table or set is missing: `knit reconcile` rebuilds it)"
            ))),
            Some(e) => Err(Error::Nft(format!("element batch rejected: {e}"))),
        }
    }

    /// Whether `table` (family inet) exists: one GETTABLE request, so the answer costs the
    /// same however many chains and rules the table holds (an nft listing would fetch them).
    pub fn table_exists(&mut self, table: &str) -> Result<bool> {
        let mut attrs = vec![];
        attr(&mut attrs, NFTA_TABLE_NAME, |b| cstr(b, table));
        let mut msg = vec![];
        message(
            &mut msg,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            1,
            NFPROTO_INET,
            0,
            &attrs,
        );
        self.0
            .send(&msg, 0)
            .op(|| "send nftables get table".into())?;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables table".into())?;
            if let Some((_, code)) = acks(&buf[..n])?.first() {
                return match -code {
                    0 => Ok(true),
                    libc::ENOENT => Ok(false),
                    e => Err(Error::io(
                        "get nftables table",
                        io::Error::from_raw_os_error(e),
                    )),
                };
            }
        }
    }

    /// How many rules each chain of `table` (of `family`) holds: one dump request. `None`
    /// if the table does not exist.
    pub fn rule_counts(
        &mut self,
        family: u8,
        table: &str,
    ) -> Result<Option<BTreeMap<String, u32>>> {
        const NFT_MSG_GETRULE: u16 = 7;
        let mut counts = BTreeMap::new();
        let found = self.dump(family, table, NFT_MSG_GETRULE, NFTA_RULE_TABLE, |attrs| {
            if let Some(chain) = string_attr(attrs, NFTA_RULE_CHAIN) {
                *counts.entry(chain).or_insert(0) += 1;
            }
        })?;
        Ok(found.then_some(counts))
    }

    /// Each chain's use count in `table` (of `family`): the rules it holds plus the rules
    /// and map elements that jump to it (the kernel counts both so that a chain in use
    /// cannot be deleted). One dump of the chains, whose size does not depend on how many
    /// rules there are. `None` if the table does not exist.
    pub fn chain_uses(&mut self, family: u8, table: &str) -> Result<Option<BTreeMap<String, u32>>> {
        const NFT_MSG_GETCHAIN: u16 = 4;
        const NFTA_CHAIN_USE: u16 = 6;
        let mut uses = BTreeMap::new();
        let found = self.dump(family, table, NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE, |attrs| {
            if let (Some(name), Some(n)) = (
                string_attr(attrs, NFTA_CHAIN_NAME),
                raw_attr(attrs, NFTA_CHAIN_USE)
                    .and_then(|v| v.get(..4))
                    .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            ) {
                uses.insert(name, n);
            }
        })?;
        Ok(found.then_some(uses))
    }

    /// One dump request of `get` restricted to `table` (attribute `table_attr`); `each`
    /// sees the attributes of every object. False if the table does not exist.
    fn dump(
        &mut self,
        family: u8,
        table: &str,
        get: u16,
        table_attr: u16,
        mut each: impl FnMut(&[u8]),
    ) -> Result<bool> {
        const NLM_F_DUMP: u16 = 0x300;
        const NLMSG_DONE: u16 = 3;
        let mut attrs = vec![];
        attr(&mut attrs, table_attr, |b| cstr(b, table));
        let mut msg = vec![];
        message(
            &mut msg,
            (NFNL_SUBSYS_NFTABLES << 8) | get,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            family,
            0,
            &attrs,
        );
        self.0.send(&msg, 0).op(|| "send nftables dump".into())?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables dump".into())?;
            let data = &buf[..n];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                if len < 16 || off + len > data.len() {
                    return Err(Error::Nft("malformed netlink reply".into()));
                }
                let msg = &data[off..off + len];
                match kind {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR if len >= 20 => {
                        let code = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
                        return match -code {
                            0 => Ok(true),
                            libc::ENOENT => Ok(false),
                            e => Err(Error::io(
                                "dump nftables objects",
                                io::Error::from_raw_os_error(e),
                            )),
                        };
                    }
                    _ if len >= 20 => each(&msg[20..]),
                    _ => {}
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Large batches (a bulk service import) exceed the default socket buffer; netlink
    /// takes a batch as one message, so the buffer must hold all of it.
    fn fit(&mut self, len: usize) {
        if len < 128 * 1024 {
            return;
        }
        let size = (len + 64 * 1024).min(i32::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt on a socket we own with a pointer to a local int. Failure
        // (not root) leaves the default, and the send then reports EMSGSIZE.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// Closes without delaying the caller: a lent socket just goes back to the keeper,
    /// an own one is handed to `crate::deferred`.
    pub fn close_detached(self) {
        if self.1.is_some() {
            drop(self);
        } else {
            crate::deferred::close_detached(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    #[test]
    fn concatenated_keys_are_register_aligned() {
        let p = PortMapping {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: 8080,
            container_ip: "10.0.0.2".parse().unwrap(),
            container_port: 80,
            proto: Proto::Udp,
        };
        assert_eq!(
            port_key(&p),
            vec![127, 0, 0, 1, 17, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(port_data(&p), vec![10, 0, 0, 2, 0, 80, 0, 0]);
        assert_eq!(ifname_key("kv01").unwrap().len(), 16);
        assert!(ifname_key("sixteen-chars-xx").is_none());
    }

    #[test]
    fn acks_are_read_from_replies() {
        // An answer message (skipped), then an ack (seq 7, ok) and an error (seq 8, ENOENT).
        const NFT_MSG_NEWTABLE: u16 = 0;
        let mut buf = vec![];
        message(
            &mut buf,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE,
            0,
            6,
            1,
            0,
            &[1, 2, 3, 4],
        );
        for (seq, code) in [(7u32, 0i32), (8, -libc::ENOENT)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&code.to_ne_bytes());
            buf.extend_from_slice(&[0u8; 16]);
        }
        assert_eq!(acks(&buf).unwrap(), vec![(7, 0), (8, -libc::ENOENT)]);
        assert!(
            acks(&buf[..buf.len() - 4]).is_err(),
            "a cut message is malformed"
        );
    }

    #[test]
    fn guard_keys_are_ifname_then_address() {
        let mut b = vec![];
        let e = Elem::IfaceMac {
            ifname: "kv01".into(),
            mac: crate::model::Mac([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]),
        };
        element(&mut b, &e).unwrap();
        // list elem (4) + key (4) + data value (4) + 16 ifname bytes + 6 MAC bytes + 2 pad.
        assert_eq!(b.len(), 4 + 4 + 4 + 16 + 8);
        assert_eq!(&b[12..16], b"kv01");
        assert_eq!(&b[28..34], &[2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        let (mut a, mut t) = (vec![], vec![]);
        let ip: std::net::Ipv6Addr = "fd88::2".parse().unwrap();
        let ifname = String::from("kv01");
        element(
            &mut a,
            &Elem::IfaceAddr {
                ifname: ifname.clone(),
                ip: ip.into(),
            },
        )
        .unwrap();
        element(&mut t, &Elem::IfaceNdTarget { ifname, ip }).unwrap();
        assert_eq!(a, t, "an ND target is keyed by the address's own bytes");
        let bridged = Cmd::Bridge(Box::new(Cmd::AddElements {
            set: "as_ports".into(),
            elems: vec![Elem::Iface("kv01".into())],
        }));
        let enc = encode("knit", &[bridged]).unwrap();
        // BATCH_BEGIN (20 bytes), then the element message: its nfgenmsg family is bridge.
        assert_eq!(enc.bytes[20 + 16], NFPROTO_BRIDGE);
        let nested = Cmd::Bridge(Box::new(Cmd::Bridge(Box::new(Cmd::AddTable))));
        assert!(encode("knit", &[nested]).is_none());
    }

    /// The anti-spoofing elements sent over netlink are what nft lists for the same
    /// elements written as nft syntax (`render`), in both tables. Needs root and
    /// libnftables: runs in a fresh network namespace of its own thread.
    #[test]
    fn guard_elements_match_what_nft_lists() {
        use crate::firewall::{AttachFw, Batch, Guard};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || crate::nft::Session::new().is_err() {
            eprintln!("skipped: needs root and libnftables");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: moves only this thread into a new network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            crate::nft::run(&Batch::new().base().render()).unwrap();
            let att = |host_if: &str, bridged: bool| AttachFw {
                net_id: 1,
                internal: false,
                // The guard's elements only (the ptp veth's network sets are not made here).
                ptp_host_if: None,
                ports: vec![],
                guard: Guard {
                    host_if: host_if.into(),
                    bridged,
                    mac: Some(crate::model::Mac([2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e])),
                    ips: vec![
                        "10.88.0.2".parse().unwrap(),
                        "fd88::2".parse().unwrap(),
                        "2001:db8::a:b".parse().unwrap(),
                    ],
                },
            };
            let list = || {
                let mut out = crate::nft::run("list table bridge knit").unwrap();
                out += &crate::nft::run("list table inet knit").unwrap();
                out
            };
            let empty = list();
            let mut add = Batch::new();
            add.attachment(&att("kv00000000b1", true), true)
                .attachment(&att("kv00000000f1", false), true);
            let mut rm = Batch::new();
            rm.attachment(&att("kv00000000b1", true), false)
                .attachment(&att("kv00000000f1", false), false);
            let mut sock = Socket(open_netfilter().unwrap(), None);
            sock.apply(&encode("knit", &add.cmds).unwrap()).unwrap();
            let via_netlink = list();
            assert_ne!(via_netlink, empty);
            sock.apply(&encode("knit", &rm.cmds).unwrap()).unwrap();
            assert_eq!(list(), empty, "netlink removal leaves no element");
            crate::nft::run(&add.render()).unwrap();
            let via_text = list();
            assert_eq!(via_netlink, via_text);
            for c in &add.cmds {
                let (family, Cmd::AddElements { set, elems }) = (match c {
                    Cmd::Bridge(inner) => ("bridge", &**inner),
                    c => ("inet", c),
                }) else {
                    panic!("an attachment adds elements only: {c:?}")
                };
                let listed = crate::nft::run(&format!("list set {family} knit {set}")).unwrap();
                for e in elems {
                    assert!(
                        listed.contains(&e.text()),
                        "{} missing in {listed}",
                        e.text()
                    );
                }
            }
            crate::nft::run(&rm.render()).unwrap();
            assert_eq!(list(), empty, "text removal leaves no element");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn only_element_batches_are_encoded() {
        let add = Cmd::AddElements {
            set: "knit_ifs".into(),
            elems: vec![Elem::Iface("kv1".into())],
        };
        let e = encode("knit", std::slice::from_ref(&add)).unwrap();
        assert_eq!(e.acked, Some(2), "one message, seq 2 (1 is BATCH_BEGIN)");
        let rm = Cmd::RemoveElements {
            set: "knit_ifs".into(),
            elems: vec![Elem::Iface("kv1".into())],
        };
        // add: 1 message; remove: re-add + delete, 2 messages → the last is seq 4.
        assert_eq!(encode("knit", &[add, rm]).unwrap().acked, Some(4));
        assert!(encode("knit", &[Cmd::AddTable]).is_none());
        let prefix = Cmd::AddElements {
            set: "nets4".into(),
            elems: vec![Elem::Prefix("10.0.0.0/24".parse().unwrap())],
        };
        assert!(encode("knit", &[prefix]).is_none());
    }
}
