//! nf_tables set-element batches spoken directly over netlink. Attach and detach only add or
//! remove elements of knit's sets and maps; encoding those few message types here keeps the
//! hot path free of loading libnftables and of its cache fetches, and keeps it one atomic
//! batch (BATCH_BEGIN, NEWSETELEM/DELSETELEM..., BATCH_END) like every other nft change.

use crate::error::{Error, IoContext, Result};
use crate::firewall::{Cmd, Elem};
use crate::model::PortMapping;
use netlink_sys::{Socket as NlSocket, SocketAddr, protocols::NETLINK_NETFILTER};
use std::io;
use std::net::IpAddr;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
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
const IFNAMSIZ: usize = 16;

/// Appends one attribute; `f` writes its payload. Returns nothing: lengths are patched in.
fn attr(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
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

fn nested(buf: &mut Vec<u8>, kind: u16, f: impl FnOnce(&mut Vec<u8>)) {
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

fn port_key(p: &PortMapping) -> Vec<u8> {
    let mut k = vec![];
    if let Some(h) = p.host_ip {
        field(&mut k, &ip_bytes(h));
    }
    field(&mut k, &[proto_number(p)]);
    field(&mut k, &p.host_port.to_be_bytes());
    k
}

fn proto_number(p: &PortMapping) -> u8 {
    match p.proto {
        crate::model::Proto::Tcp => 6,
        crate::model::Proto::Udp => 17,
        crate::model::Proto::Sctp => 132,
    }
}

fn port_data(p: &PortMapping) -> Vec<u8> {
    let mut d = vec![];
    field(&mut d, &ip_bytes(p.container_ip));
    field(&mut d, &p.container_port.to_be_bytes());
    d
}

/// Encodes one element; None for kinds this fast path does not handle (intervals).
fn element(buf: &mut Vec<u8>, e: &Elem) -> Option<()> {
    let mut out = vec![];
    let ok = match e {
        Elem::Iface(name) => {
            let key = ifname_key(name)?;
            nested(&mut out, NFTA_LIST_ELEM, |b| {
                nested(b, NFTA_SET_ELEM_KEY, |b| {
                    attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&key))
                });
            });
            true
        }
        Elem::Jump { ifname, chain } => {
            let key = ifname_key(ifname)?;
            nested(&mut out, NFTA_LIST_ELEM, |b| {
                nested(b, NFTA_SET_ELEM_KEY, |b| {
                    attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&key))
                });
                nested(b, NFTA_SET_ELEM_DATA, |b| {
                    nested(b, NFTA_DATA_VERDICT, |b| {
                        attr(b, NFTA_VERDICT_CODE, |b| {
                            b.extend_from_slice(&NFT_JUMP.to_be_bytes())
                        });
                        attr(b, NFTA_VERDICT_CHAIN, |b| cstr(b, chain));
                    });
                });
            });
            true
        }
        Elem::Port(p) => {
            let (key, data) = (port_key(p), port_data(p));
            nested(&mut out, NFTA_LIST_ELEM, |b| {
                nested(b, NFTA_SET_ELEM_KEY, |b| {
                    attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&key))
                });
                nested(b, NFTA_SET_ELEM_DATA, |b| {
                    attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&data))
                });
            });
            true
        }
        Elem::Addr(ip) => {
            let key = ip_bytes(*ip);
            nested(&mut out, NFTA_LIST_ELEM, |b| {
                nested(b, NFTA_SET_ELEM_KEY, |b| {
                    attr(b, NFTA_DATA_VALUE, |b| b.extend_from_slice(&key))
                });
            });
            true
        }
        Elem::Prefix(_) | Elem::Svc { .. } | Elem::NodePort { .. } => false,
    };
    ok.then(|| buf.extend_from_slice(&out))
}

/// One netlink message: header, nfgenmsg, attributes.
fn message(
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

/// An encoded batch: the bytes and the sequence numbers that will be acknowledged.
pub struct Encoded {
    bytes: Vec<u8>,
    acked: Vec<u32>,
}

/// Encodes a batch made only of element additions/removals; None if it has anything else.
pub fn encode(table: &str, cmds: &[Cmd]) -> Option<Encoded> {
    let mut body = vec![];
    let mut acked = vec![];
    let mut seq = 1u32;
    let mut push =
        |body: &mut Vec<u8>, kind: u16, flags: u16, set: &str, elems: &[Elem]| -> Option<()> {
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
            seq += 1;
            message(
                body,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
                NFPROTO_INET,
                0,
                &attrs,
            );
            acked.push(seq);
            Some(())
        };
    for c in cmds {
        match c {
            Cmd::AddElements { set, elems } => {
                push(&mut body, NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elems)?
            }
            Cmd::RemoveElements { set, elems } => {
                // Re-adding first makes the delete valid even if an element is already gone.
                push(&mut body, NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, elems)?;
                push(&mut body, NFT_MSG_DELSETELEM, 0, set, elems)?;
            }
            _ => return None,
        }
    }
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

/// A NETLINK_NETFILTER socket in the calling thread's namespace.
pub struct Socket(NlSocket);

impl Socket {
    pub fn open() -> Result<Socket> {
        let mut s = NlSocket::new(NETLINK_NETFILTER).op(|| "open nftables socket".into())?;
        s.bind_auto().op(|| "bind nftables socket".into())?;
        s.connect(&SocketAddr::new(0, 0))
            .op(|| "connect nftables socket".into())?;
        Ok(Socket(s))
    }

    /// Sends the batch and waits for every acknowledgement; any error aborts the whole
    /// batch in the kernel and is returned.
    pub fn apply(&mut self, enc: &Encoded) -> Result<()> {
        self.0
            .send(&enc.bytes, 0)
            .op(|| "send nftables batch".into())?;
        let mut pending: Vec<u32> = enc.acked.clone();
        let mut first_err: Option<io::Error> = None;
        let mut buf = vec![0u8; 16384];
        while !pending.is_empty() {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables ack".into())?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let seq =
                    u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
                if len < 16 || off + len > n {
                    return Err(Error::Nft("malformed netlink reply".into()));
                }
                if kind == NLMSG_ERROR && len >= 20 {
                    let code = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    pending.retain(|s| *s != seq);
                    if code != 0 && first_err.is_none() {
                        first_err = Some(io::Error::from_raw_os_error(-code));
                    }
                    if code != 0 {
                        // After an error the kernel aborts the batch; later acks may not come.
                        pending.clear();
                    }
                }
                off += (len + 3) & !3;
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

    /// Hands the socket to `crate::deferred` so its close does not delay the caller.
    pub fn close_detached(self) {
        crate::deferred::close_detached(self);
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
    fn only_element_batches_are_encoded() {
        let add = Cmd::AddElements {
            set: "knit_ifs".into(),
            elems: vec![Elem::Iface("kv1".into())],
        };
        let e = encode("knit", std::slice::from_ref(&add)).unwrap();
        assert_eq!(e.acked.len(), 1);
        let rm = Cmd::RemoveElements {
            set: "knit_ifs".into(),
            elems: vec![Elem::Iface("kv1".into())],
        };
        assert_eq!(encode("knit", &[add, rm]).unwrap().acked.len(), 3);
        assert!(encode("knit", &[Cmd::AddTable]).is_none());
        let prefix = Cmd::AddElements {
            set: "nets4".into(),
            elems: vec![Elem::Prefix("10.0.0.0/24".parse().unwrap())],
        };
        assert!(encode("knit", &[prefix]).is_none());
    }
}
