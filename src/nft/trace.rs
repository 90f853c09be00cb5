//! nf_tables trace events: what `nft monitor trace` prints, read straight from netlink.
//! A rule with `meta nftrace set 1` marks a packet; from then on every rule that gives it a
//! verdict (and each chain policy or return it reaches) is reported to the
//! NFNLGRP_NFTRACE multicast group of the namespace, with the table, chain, rule handle,
//! verdict, interfaces and the packet's headers as they are at that point (so NAT shows
//! as a header that changed between two events).

use super::wire::raw_attr;
use netlink_sys::{Socket as NlSocket, protocols::NETLINK_NETFILTER};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Tables `knit trace` adds for the time of one trace are `knit_trace_PID`.
pub const TABLE_PREFIX: &str = "knit_trace_";

/// The nf_tables trace multicast group.
const NFNLGRP_NFTRACE: u32 = 9;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_TRACE: u16 = 17;

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A rule gave a verdict.
    Rule,
    /// The end of a base chain: its policy.
    Policy,
    /// The end of a regular chain: back to the caller.
    Return,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// NF_QUEUE, NF_STOLEN and codes this reader does not know.
    Other(i32),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Other(n) => write!(f, "verdict {n}"),
        }
    }
}

/// The packet's addresses and ports as an event shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte, or the ICMP type.
    pub flags: u8,
}

#[derive(Debug, Clone)]
pub struct Event {
    /// One packet's passage through the hooks of one namespace.
    pub id: u32,
    /// The table's family (NFPROTO_*: 1 inet, 2 ip, 7 bridge, 10 ip6).
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub kind: Kind,
    pub verdict: Option<Verdict>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub headers: Option<Headers>,
}

pub fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn string(b: &[u8]) -> String {
    let b = b.split(|c| *c == 0).next().unwrap_or(b);
    String::from_utf8_lossy(b).into_owned()
}

fn verdict(nested: &[u8]) -> Option<Verdict> {
    let code = be32(raw_attr(nested, NFTA_VERDICT_CODE)?)? as i32;
    let chain = || {
        raw_attr(nested, NFTA_VERDICT_CHAIN)
            .map(string)
            .unwrap_or_default()
    };
    Some(match code {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        -1 => Verdict::Continue,
        -3 => Verdict::Jump(chain()),
        -4 => Verdict::Goto(chain()),
        -5 => Verdict::Return,
        n => Verdict::Other(n),
    })
}

/// Addresses and ports from the network and transport headers an event carries.
pub fn headers(net: &[u8], transport: &[u8]) -> Option<Headers> {
    let (src, dst, proto) = match net.first()? >> 4 {
        4 if net.len() >= 20 => (
            IpAddr::from(<[u8; 4]>::try_from(&net[12..16]).ok()?),
            IpAddr::from(<[u8; 4]>::try_from(&net[16..20]).ok()?),
            net[9],
        ),
        6 if net.len() >= 40 => (
            IpAddr::from(<[u8; 16]>::try_from(&net[8..24]).ok()?),
            IpAddr::from(<[u8; 16]>::try_from(&net[24..40]).ok()?),
            net[6],
        ),
        _ => return None,
    };
    let port = |i: usize| {
        transport
            .get(i..i + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (sport, dport, flags) = match proto {
        6 => (port(0), port(2), transport.get(13).copied().unwrap_or(0)),
        17 | 132 => (port(0), port(2), 0),
        // ICMP echo: the identifier stands in for the ports.
        1 | 58 => (port(4), port(4), transport.first().copied().unwrap_or(0)),
        _ => (0, 0, 0),
    };
    Some(Headers {
        src,
        dst,
        proto,
        sport,
        dport,
        flags,
    })
}

/// The trace events in one datagram read from the group.
pub fn decode(buf: &[u8]) -> Vec<Event> {
    let mut out = vec![];
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        // Header (16) and nfgenmsg (4: family, version, resource id).
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE && len >= 20 {
            let family = buf[off + 16];
            let attrs = &buf[off + 20..off + len];
            if let Some(e) = event(family, attrs) {
                out.push(e);
            }
        }
        off += (len + 3) & !3;
    }
    out
}

fn event(family: u8, a: &[u8]) -> Option<Event> {
    let kind = match be32(raw_attr(a, NFTA_TRACE_TYPE)?)? {
        1 => Kind::Policy,
        2 => Kind::Return,
        3 => Kind::Rule,
        _ => return None,
    };
    let _nfproto = raw_attr(a, NFTA_TRACE_NFPROTO).and_then(be32);
    Some(Event {
        id: be32(raw_attr(a, NFTA_TRACE_ID)?)?,
        family,
        table: raw_attr(a, NFTA_TRACE_TABLE)
            .map(string)
            .unwrap_or_default(),
        chain: raw_attr(a, NFTA_TRACE_CHAIN)
            .map(string)
            .unwrap_or_default(),
        handle: raw_attr(a, NFTA_TRACE_RULE_HANDLE).and_then(be64),
        kind,
        // A chain's policy comes as its own attribute, a rule's verdict nested.
        verdict: match kind {
            Kind::Policy => raw_attr(a, NFTA_TRACE_POLICY).and_then(be32).map(|p| {
                if p == 0 {
                    Verdict::Drop
                } else {
                    Verdict::Accept
                }
            }),
            _ => raw_attr(a, NFTA_TRACE_VERDICT).and_then(verdict),
        },
        iif: raw_attr(a, NFTA_TRACE_IIF).and_then(be32),
        oif: raw_attr(a, NFTA_TRACE_OIF).and_then(be32),
        headers: headers(
            raw_attr(a, NFTA_TRACE_NETWORK_HEADER).unwrap_or_default(),
            raw_attr(a, NFTA_TRACE_TRANSPORT_HEADER).unwrap_or_default(),
        ),
    })
}

/// A subscription to the trace events of the namespace it was opened in.
pub struct Listener(NlSocket);

impl Listener {
    /// Subscribes in the calling thread's namespace (the socket stays bound to it).
    pub fn open() -> io::Result<Listener> {
        let mut s = NlSocket::new(NETLINK_NETFILTER)?;
        s.bind_auto()?;
        s.add_membership(NFNLGRP_NFTRACE)?;
        s.set_non_blocking(true)?;
        // Room for a burst: every rule a packet crosses is one message.
        let _ = s.set_rx_buf_sz(1 << 20);
        Ok(Listener(s))
    }
}

/// Reads every listener until none has had an event for `quiet` (or `limit` passes):
/// (listener index, event), in arrival order per listener.
pub fn collect(listeners: &mut [Listener], quiet: Duration, limit: Instant) -> Vec<(usize, Event)> {
    let mut out = vec![];
    let mut last = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= limit || now.duration_since(last) >= quiet {
            return out;
        }
        let mut fds: Vec<libc::pollfd> = listeners
            .iter()
            .map(|l| libc::pollfd {
                fd: l.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = (quiet - now.duration_since(last)).min(limit - now);
        // SAFETY: fds is a valid array of pollfd for the call's duration.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis() as i32 + 1,
            )
        };
        if n <= 0 {
            continue;
        }
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            while let Ok(len) = listeners[i].0.recv(&mut &mut buf[..], 0) {
                out.extend(decode(&buf[..len]).into_iter().map(|e| (i, e)));
                last = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(out: &mut Vec<u8>, kind: u16, v: &[u8]) {
        let len = 4 + v.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(v);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    #[test]
    fn a_trace_message_decodes_with_its_headers_and_verdict() {
        let mut a = vec![];
        attr(&mut a, NFTA_TRACE_TABLE, b"knit\0");
        attr(&mut a, NFTA_TRACE_CHAIN, b"publish\0");
        attr(&mut a, NFTA_TRACE_RULE_HANDLE, &7u64.to_be_bytes());
        attr(&mut a, NFTA_TRACE_TYPE, &3u32.to_be_bytes());
        let mut v = vec![];
        attr(&mut v, NFTA_VERDICT_CODE, &(-3i32).to_be_bytes());
        attr(&mut v, NFTA_VERDICT_CHAIN, b"svc3\0");
        attr(&mut a, NFTA_TRACE_VERDICT | 0x8000, &v);
        attr(&mut a, NFTA_TRACE_ID, &0xabcdu32.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 63, 0, 2, 198, 51, 100, 1]);
        attr(&mut a, NFTA_TRACE_NETWORK_HEADER, &ip);
        let mut tcp = vec![0x9c, 0x41, 0x1f, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02];
        tcp.extend_from_slice(&[0, 0]);
        attr(&mut a, NFTA_TRACE_TRANSPORT_HEADER, &tcp);
        attr(&mut a, NFTA_TRACE_IIF, &4u32.to_be_bytes());
        let mut msg = vec![];
        let len = 20 + a.len();
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&[1, 0, 0, 0]);
        msg.extend_from_slice(&a);
        let ev = decode(&msg);
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(
            (e.family, e.table.as_str(), e.chain.as_str()),
            (1, "knit", "publish")
        );
        assert_eq!(
            (e.id, e.handle, e.kind, e.iif),
            (0xabcd, Some(7), Kind::Rule, Some(4))
        );
        assert_eq!(e.verdict, Some(Verdict::Jump("svc3".into())));
        let h = e.headers.unwrap();
        assert_eq!(
            (h.src.to_string(), h.dst.to_string()),
            ("10.63.0.2".into(), "198.51.100.1".into())
        );
        assert_eq!((h.proto, h.sport, h.dport, h.flags), (6, 40001, 8080, 2));
    }
}
