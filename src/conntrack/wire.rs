//! ctnetlink, the kernel's conntrack netlink interface: the dump and delete messages knit
//! sends and the entries it reads back.

use super::{Entry, Tuple};
use crate::error::{Error, IoContext, Result};
use crate::nft::wire::{acks, message, open_netfilter};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(super) const IPCTNL_MSG_CT_NEW: u16 = 0;
pub(super) const IPCTNL_MSG_CT_GET: u16 = 1;
pub(super) const IPCTNL_MSG_CT_DELETE: u16 = 2;

pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLA_TYPE_MASK: u16 = 0x3fff;

pub(super) const CTA_TUPLE_ORIG: u16 = 1;
pub(super) const CTA_TUPLE_REPLY: u16 = 2;
pub(super) const CTA_STATUS: u16 = 3;
pub(super) const CTA_PROTOINFO: u16 = 4;
pub(super) const CTA_TIMEOUT: u16 = 7;
pub(super) const CTA_ID: u16 = 12;
pub(super) const CTA_PROTOINFO_TCP: u16 = 1;
pub(super) const CTA_PROTOINFO_TCP_STATE: u16 = 1;
pub(super) const CTA_ZONE: u16 = 18;
pub(super) const CTA_TUPLE_IP: u16 = 1;
pub(super) const CTA_TUPLE_PROTO: u16 = 2;
pub(super) const CTA_IP_V4_SRC: u16 = 1;
pub(super) const CTA_IP_V4_DST: u16 = 2;
pub(super) const CTA_IP_V6_SRC: u16 = 3;
pub(super) const CTA_IP_V6_DST: u16 = 4;
pub(super) const CTA_PROTO_NUM: u16 = 1;
pub(super) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(super) const CTA_PROTO_DST_PORT: u16 = 3;

/// Deletes per `send`: their acks (and the echoed request of an error ack) must fit the
/// socket's default receive buffer.
pub(super) const DELETE_CHUNK: usize = 256;

/// Attributes of one netlink attribute stream: (type without flags, payload, whole
/// attribute with its header). Stops at the first malformed length.
pub(super) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
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

pub(super) fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

pub(super) fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

pub(super) fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
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
pub(super) fn copy_attr(out: &mut Vec<u8>, whole: &[u8]) {
    out.extend_from_slice(whole);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One entry from the payload of an IPCTNL_MSG_CT_NEW message (after nlmsghdr), if it
/// has both tuples and `keep` wants it. Only kept entries copy their delete key.
pub(super) fn parse_entry(payload: &[u8], keep: &dyn Fn(&Entry) -> bool) -> Option<Entry> {
    let family = *payload.first()?;
    let body = payload.get(4..)?;
    let (mut orig, mut reply) = (None, None);
    let mut info = super::FlowInfo::default();
    let be32 = |p: &[u8]| {
        p.get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    for (kind, p, _) in attrs(body) {
        match kind {
            CTA_TUPLE_ORIG => orig = parse_tuple(p),
            CTA_TUPLE_REPLY => reply = parse_tuple(p),
            CTA_STATUS => info.status = be32(p).unwrap_or(0),
            CTA_TIMEOUT => info.timeout = be32(p),
            CTA_PROTOINFO => {
                for (k, tcp, _) in attrs(p) {
                    if k == CTA_PROTOINFO_TCP {
                        for (k2, st, _) in attrs(tcp) {
                            if k2 == CTA_PROTOINFO_TCP_STATE {
                                info.tcp_state = st.first().copied();
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut e = Entry {
        orig: orig?,
        reply: reply?,
        family,
        key: vec![],
        info,
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
pub(super) enum Part {
    More,
    Done,
}

/// Reads the entries of one datagram of dump replies into `out`.
pub(super) fn parse_dump(
    buf: &[u8],
    out: &mut Vec<Entry>,
    keep: &dyn Fn(&Entry) -> bool,
) -> Result<Part> {
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
pub(super) fn dump_request(seq: u32) -> Vec<u8> {
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
pub(super) fn delete_request(out: &mut Vec<u8>, e: &Entry, seq: u32) {
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

pub(super) struct Socket(pub(super) netlink_sys::Socket);

impl Socket {
    pub(super) fn open() -> Result<Socket> {
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
    pub(super) fn dump(&mut self, keep: &dyn Fn(&Entry) -> bool) -> Result<Vec<Entry>> {
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
    pub(super) fn delete(&mut self, entries: &[Entry]) -> Result<usize> {
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
