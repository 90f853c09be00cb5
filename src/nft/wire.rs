//! nf_tables set-element batches spoken directly over netlink. Attach and detach only add or
//! remove elements of knit's sets and maps; encoding those few message types here keeps the
//! hot path free of loading libnftables and of its cache fetches, and keeps it one atomic
//! batch (BATCH_BEGIN, NEWSETELEM/DELSETELEM..., BATCH_END) like every other nft change.

use super::batch::{Cmd, DnatRule, Elem};
use crate::error::{Error, Result};
use crate::model::{PortMapping, Proto};
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_NETFILTER};

use std::io;
use std::net::IpAddr;

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(super) const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(super) const NFT_MSG_GETTABLE: u16 = 1;
pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(super) const NFT_MSG_DELCHAIN: u16 = 5;
pub(super) const NFT_MSG_NEWRULE: u16 = 6;
pub(super) const NFT_MSG_DELRULE: u16 = 8;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(super) const NFT_MSG_DELSETELEM: u16 = 14;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_BRIDGE: u8 = 7;

pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLMSG_ERROR: u16 = 0x2;
pub(super) const NLA_F_NESTED: u16 = 0x8000;

pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(super) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(super) const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFTA_VERDICT_CHAIN: u16 = 2;
pub(super) const NFT_JUMP: i32 = -3;
pub(super) const NFT_GOTO: i32 = -4;
pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
// Registers: NFT_REG_1 and NFT_REG_2 are the 16-byte data registers 1 and 2.
pub(super) const REG_1: u32 = 1;
pub(super) const REG_2: u32 = 2;
pub(super) const IFNAMSIZ: usize = 16;

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

pub(super) fn cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// One field of a concatenation: big-endian bytes padded to a 4-byte register.
pub(super) fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(super) fn ifname_key(name: &str) -> Option<Vec<u8>> {
    if name.len() >= IFNAMSIZ {
        return None;
    }
    let mut k = name.as_bytes().to_vec();
    k.resize(IFNAMSIZ, 0);
    Some(k)
}

/// `[ip .] proto . port`, the key shape of the port, service and node-port maps.
pub(super) fn l4_key(ip: Option<IpAddr>, proto: Proto, port: u16) -> Vec<u8> {
    let mut k = vec![];
    if let Some(ip) = ip {
        field(&mut k, &ip_bytes(ip));
    }
    field(&mut k, &[proto_num(proto)]);
    field(&mut k, &port.to_be_bytes());
    k
}

pub(super) fn port_key(p: &PortMapping) -> Vec<u8> {
    l4_key(p.host_ip, p.proto, p.host_port)
}

pub fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

/// `ip . port`, a DNAT target as the maps store it.
pub(super) fn target_value(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut d = vec![];
    field(&mut d, &ip_bytes(ip));
    field(&mut d, &port.to_be_bytes());
    d
}

pub(super) fn port_data(p: &PortMapping) -> Vec<u8> {
    target_value(p.container_ip, p.container_port)
}

pub(super) fn be32(b: &mut Vec<u8>, kind: u16, v: u32) {
    attr(b, kind, |b| b.extend_from_slice(&v.to_be_bytes()));
}

/// One expression of a rule: name and nested data.
pub(super) fn expr(b: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    nested(b, NFTA_LIST_ELEM, |b| {
        attr(b, NFTA_EXPR_NAME, |b| cstr(b, name));
        nested(b, NFTA_EXPR_DATA, data);
    });
}

pub(super) fn cmp_eq(b: &mut Vec<u8>, value: &[u8]) {
    expr(b, "cmp", |b| {
        be32(b, 1, REG_1); // NFTA_CMP_SREG
        be32(b, 2, 0); // NFTA_CMP_OP: NFT_CMP_EQ
        nested(b, 3, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(value))
        });
    });
}

pub(super) fn immediate(b: &mut Vec<u8>, reg: u32, value: &[u8]) {
    expr(b, "immediate", |b| {
        be32(b, 1, reg); // NFTA_IMMEDIATE_DREG
        nested(b, 2, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(value))
        });
    });
}

/// The expressions of `DnatRule::text()`, as nft itself encodes them:
/// [numgen random mod N; cmp eq 0;] meta l4proto; cmp; immediate addr; immediate port; nat.
pub(super) fn dnat_exprs(b: &mut Vec<u8>, r: &DnatRule) {
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
fn write_element(out: &mut Vec<u8>, key: &[u8], key_end: Option<&[u8]>, data: Data) {
    nested(out, NFTA_LIST_ELEM, |b| {
        nested(b, NFTA_SET_ELEM_KEY, |b| {
            attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(key))
        });
        if let Some(end) = key_end {
            nested(b, NFTA_SET_ELEM_KEY_END, |b| {
                attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(end))
            });
        }
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
pub(super) fn element(buf: &mut Vec<u8>, e: &Elem) -> Option<()> {
    let (key, data) = match e {
        Elem::Iface(name) => (ifname_key(name)?, Data::None),
        Elem::Jump { ifname, chain } => (ifname_key(ifname)?, Data::Verdict(NFT_JUMP, chain)),
        Elem::Port(p) => (port_key(p), Data::Value(port_data(p))),
        Elem::Addr(ip) => (ip_bytes(*ip), Data::None),
        Elem::Service(p) => (p.to_be_bytes().to_vec(), Data::None),
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
        // A concatenation with a port range (`flags interval`): the first and the last
        // key of the range, field by field.
        Elem::Pol {
            saddr,
            daddr,
            l4,
            interval,
        } => {
            let mut key = vec![];
            field(&mut key, &ip_bytes(*saddr));
            field(&mut key, &ip_bytes(*daddr));
            let Some((proto, lo, hi)) = l4 else {
                write_element(buf, &key, None, Data::None);
                return Some(());
            };
            let mut end = key.clone();
            field(&mut key, &[*proto]);
            field(&mut key, &lo.to_be_bytes());
            field(&mut end, &[*proto]);
            field(&mut end, &hi.to_be_bytes());
            write_element(buf, &key, interval.then_some(&end[..]), Data::None);
            return Some(());
        }
        Elem::Prefix(_) => return None,
    };
    write_element(buf, &key, None, data);
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
            return Err(Error::nft("malformed netlink reply"));
        }
        if kind == NLMSG_ERROR && len >= 20 {
            out.push((word(off + 8), word(off + 16) as i32));
        }
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The string value of the first top-level attribute `kind` in `attrs`.
pub(super) fn string_attr(attrs: &[u8], kind: u16) -> Option<String> {
    let v = raw_attr(attrs, kind)?;
    let v = v.split(|b| *b == 0).next().unwrap_or(v);
    String::from_utf8(v.to_vec()).ok()
}

/// The payload of the first top-level attribute `kind` in `attrs`.
pub(crate) fn raw_attr(attrs: &[u8], kind: u16) -> Option<&[u8]> {
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
    pub(super) bytes: Vec<u8>,
    pub(super) acked: Option<u32>,
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
pub(super) fn encode_cmd(msgs: &mut Vec<Msg>, table: &str, family: u8, c: &Cmd) -> Option<()> {
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

#[cfg(test)]
mod tests;
