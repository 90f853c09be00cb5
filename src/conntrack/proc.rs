//! /proc/net/nf_conntrack: this namespace's entries as text, read in a fraction of the
//! time a ctnetlink dump takes (see the module comment of `conntrack`).

use super::wire::*;
use super::{Entry, Tuple};
use std::net::IpAddr;

const PROC_TABLE: &str = "/proc/net/nf_conntrack";
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

/// The entries `keep` wants, from /proc/net/nf_conntrack (this namespace's); None if the
/// kernel has no such file (then the netlink dump does the job).
pub(super) fn proc_entries(keep: &dyn Fn(&Entry) -> bool) -> Option<Vec<Entry>> {
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
pub(super) fn parse_proc_line(line: &str) -> Option<Entry> {
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
        info: Default::default(),
    })
}
