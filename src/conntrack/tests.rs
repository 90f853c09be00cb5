//! Unit tests of `conntrack`.

use super::wire::*;
use super::*;
use crate::model::service::Vip;
use crate::nft::wire::message;
use crate::nft::wire::{attr, nested};

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tuple_attrs(b: &mut Vec<u8>, t: &Tuple) {
    nested(b, CTA_TUPLE_IP, |b| {
        let (s, d) = if t.src.is_ipv4() {
            (CTA_IP_V4_SRC, CTA_IP_V4_DST)
        } else {
            (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        };
        let bytes = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        attr(b, s, |b| b.extend_from_slice(&bytes(t.src)));
        attr(b, d, |b| b.extend_from_slice(&bytes(t.dst)));
    });
    nested(b, CTA_TUPLE_PROTO, |b| {
        attr(b, CTA_PROTO_NUM, |b| b.push(t.proto));
        attr(b, CTA_PROTO_SRC_PORT, |b| {
            b.extend_from_slice(&t.sport.to_be_bytes())
        });
        attr(b, CTA_PROTO_DST_PORT, |b| {
            b.extend_from_slice(&t.dport.to_be_bytes())
        });
    });
}

fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: ip(src),
        dst: ip(dst),
        proto: IPPROTO_UDP,
        sport,
        dport,
    }
}

/// A CT_NEW message as the kernel dumps it: tuples, a status, a zone, an id.
fn ct_msg(out: &mut Vec<u8>, orig: &Tuple, reply: &Tuple, id: u32) {
    let mut a = vec![];
    nested(&mut a, CTA_TUPLE_ORIG, |b| tuple_attrs(b, orig));
    nested(&mut a, CTA_TUPLE_REPLY, |b| tuple_attrs(b, reply));
    attr(&mut a, 3, |b| b.extend_from_slice(&8u32.to_be_bytes())); // CTA_STATUS
    attr(&mut a, CTA_ZONE, |b| {
        b.extend_from_slice(&7u16.to_be_bytes())
    });
    attr(&mut a, CTA_ID, |b| b.extend_from_slice(&id.to_be_bytes()));
    let family = if orig.src.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    };
    message(
        out,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW,
        2,
        1,
        family,
        0,
        &a,
    );
}

fn done(out: &mut Vec<u8>) {
    out.extend_from_slice(&20u32.to_ne_bytes());
    out.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    out.extend_from_slice(&[0u8; 14]);
}

#[test]
fn dump_replies_are_parsed_and_deletes_name_the_entry() {
    // A client 10.0.0.9 → published 192.0.2.1:5353, DNATed to 10.0.0.2:53 and
    // masqueraded; then an IPv6 flow.
    let o = tuple("10.0.0.9", 40000, "192.0.2.1", 5353);
    let r = tuple("10.0.0.2", 53, "10.0.0.1", 40000);
    let o6 = tuple("fd00::9", 1000, "fd00::2", 53);
    let r6 = tuple("fd00::2", 53, "fd00::9", 1000);
    let mut buf = vec![];
    ct_msg(&mut buf, &o, &r, 0xdead);
    ct_msg(&mut buf, &o6, &r6, 2);
    let mut got = vec![];
    assert!(matches!(
        parse_dump(&buf, &mut got, &|_| true).unwrap(),
        Part::More
    ));
    done(&mut buf);
    got.clear();
    assert!(matches!(
        parse_dump(&buf, &mut got, &|_| true).unwrap(),
        Part::Done
    ));
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].orig, got[0].reply), (o, r));
    assert_eq!(
        (got[1].orig, got[1].reply, got[1].family),
        (o6, r6, AF_INET6)
    );
    assert!(got[0].dnatted() && !got[1].dnatted());

    // The delete carries the original tuple, the zone and the id, nothing else.
    let mut del = vec![];
    delete_request(&mut del, &got[0], 9);
    assert_eq!(
        u32::from_ne_bytes(del[..4].try_into().unwrap()) as usize,
        del.len()
    );
    assert_eq!(
        u16::from_ne_bytes([del[4], del[5]]),
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    );
    assert_eq!(
        u16::from_ne_bytes([del[6], del[7]]),
        NLM_F_REQUEST | NLM_F_ACK
    );
    assert_eq!(u32::from_ne_bytes(del[8..12].try_into().unwrap()), 9);
    assert_eq!(del[16], AF_INET);
    let kinds: Vec<u16> = attrs(&del[20..]).map(|(k, _, _)| k).collect();
    assert_eq!(kinds, vec![CTA_TUPLE_ORIG, CTA_ZONE, CTA_ID]);
    let (_, orig, _) = attrs(&del[20..]).next().unwrap();
    assert_eq!(parse_tuple(orig), Some(o));
    let (_, id, _) = attrs(&del[20..]).nth(2).unwrap();
    assert_eq!(id, 0xdeadu32.to_be_bytes());
}

#[test]
fn dump_errors_and_cut_messages_are_errors() {
    let mut buf = vec![];
    buf.extend_from_slice(&36u32.to_ne_bytes());
    buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
    buf.extend_from_slice(&[0u8; 10]);
    buf.extend_from_slice(&(-libc::EPERM).to_ne_bytes());
    buf.extend_from_slice(&[0u8; 16]);
    let e = parse_dump(&buf, &mut vec![], &|_| true).err().unwrap();
    assert_eq!(e.errno(), Some(libc::EPERM));
    let mut buf = vec![];
    ct_msg(
        &mut buf,
        &tuple("10.0.0.1", 1, "10.0.0.2", 2),
        &tuple("10.0.0.2", 2, "10.0.0.1", 1),
        1,
    );
    assert!(parse_dump(&buf[..buf.len() - 4], &mut vec![], &|_| true).is_err());
    // A tuple without addresses is skipped, not misread.
    assert_eq!(parse_tuple(&[]), None);
}

fn entry(o: Tuple, r: Tuple) -> Entry {
    Entry {
        orig: o,
        reply: r,
        family: AF_INET,
        key: vec![],
        info: Default::default(),
    }
}

#[test]
fn matching() {
    // Published 5353/udp → 10.0.0.2:53, from a client, hairpin-masqueraded.
    let pubd = entry(
        tuple("10.0.0.9", 40000, "192.0.2.1", 5353),
        tuple("10.0.0.2", 53, "10.0.0.1", 40000),
    );
    // The same client's datagrams while nothing was published (to the node itself).
    let local = entry(
        tuple("10.0.0.9", 40000, "192.0.2.1", 5353),
        tuple("192.0.2.1", 5353, "10.0.0.9", 40000),
    );
    // The node's own query to an upstream resolver on that port: not local, kept.
    let upstream = entry(
        tuple("192.0.2.1", 40001, "203.0.113.5", 5353),
        tuple("203.0.113.5", 5353, "192.0.2.1", 40001),
    );
    // Through a service VIP to backend 10.0.0.3:53.
    let svc = entry(
        tuple("10.0.0.9", 40002, "10.96.0.10", 53),
        tuple("10.0.0.3", 53, "10.0.0.9", 40002),
    );
    // Through the service's node port 30053.
    let np = entry(
        tuple("198.51.100.2", 40003, "192.0.2.1", 30053),
        tuple("10.0.0.3", 53, "10.0.0.1", 40003),
    );
    // A client talking to 10.0.0.3:53 directly (no service).
    let direct = entry(
        tuple("10.0.0.9", 40004, "10.0.0.3", 53),
        tuple("10.0.0.3", 53, "10.0.0.9", 40004),
    );
    let all = [&pubd, &local, &upstream, &svc, &np, &direct];
    let hits =
        |f: &Flows| -> Vec<usize> { (0..all.len()).filter(|&i| f.matches(all[i])).collect() };

    assert_eq!(hits(&Flows::Addr(ip("10.0.0.2"))), vec![0]);
    assert_eq!(hits(&Flows::Addr(ip("10.0.0.3"))), vec![3, 4, 5]);
    assert_eq!(hits(&Flows::Addr(ip("10.0.0.9"))), vec![0, 1, 3, 5]);
    assert_eq!(
        hits(&Flows::Endpoint {
            ip: ip("10.0.0.3"),
            proto: IPPROTO_UDP,
            port: 53
        }),
        vec![3, 4, 5]
    );
    assert!(
        hits(&Flows::Endpoint {
            ip: ip("10.0.0.3"),
            proto: 6,
            port: 53
        })
        .is_empty()
    );
    let p = PortMapping {
        host_ip: None,
        host_port: 5353,
        container_ip: ip("10.0.0.2"),
        container_port: 53,
        proto: Proto::Udp,
    };
    assert_eq!(hits(&Flows::published(&p)), vec![0]);
    let on_other_ip = PortMapping {
        host_ip: Some(ip("127.0.0.1")),
        ..p.clone()
    };
    assert!(hits(&Flows::published(&on_other_ip)).is_empty());
    assert_eq!(
        hits(&Flows::Undnatted {
            local: vec![ip("192.0.2.1"), ip("127.0.0.1")],
            proto: IPPROTO_UDP,
            port: 5353
        }),
        vec![1]
    );
    let backend = Flows::ServiceBackend {
        vip: ip("10.96.0.10"),
        port: 53,
        node_port: Some(30053),
        proto: IPPROTO_UDP,
        backend: ip("10.0.0.3"),
        backend_port: 53,
    };
    assert_eq!(hits(&backend), vec![3, 4]);
    let other_backend = Flows::ServiceBackend {
        vip: ip("10.96.0.10"),
        port: 53,
        node_port: None,
        proto: IPPROTO_UDP,
        backend: ip("10.0.0.4"),
        backend_port: 53,
    };
    assert!(hits(&other_backend).is_empty());
}

#[test]
fn only_removed_backends_of_udp_services_are_flushed() {
    let fw = |proto, backends: &[(i64, &str, u16)]| ServiceFw {
        id: 1,
        vip: Vip {
            ip: ip("10.96.0.10"),
            port: 53,
            proto,
        },
        affinity: None,
        node_port: None,
        backends: backends.iter().map(|&(i, a, p)| (i, ip(a), p)).collect(),
    };
    let old = fw(Proto::Udp, &[(1, "10.0.0.3", 53), (2, "10.0.0.4", 53)]);
    let new = fw(Proto::Udp, &[(2, "10.0.0.4", 53), (3, "10.0.0.5", 53)]);
    let f = service_flows(&old, Some(&new));
    assert_eq!(f.len(), 1);
    assert!(matches!(f[0], Flows::ServiceBackend { backend, .. } if backend == ip("10.0.0.3")));
    // A backend re-resolved to a new address counts as removed.
    let moved = fw(Proto::Udp, &[(1, "10.0.0.7", 53), (2, "10.0.0.4", 53)]);
    assert_eq!(service_flows(&old, Some(&moved)).len(), 1);
    assert_eq!(service_flows(&old, None).len(), 2);
    assert!(service_flows(&old, Some(&old)).is_empty());
    let tcp = fw(Proto::Tcp, &[(1, "10.0.0.3", 53)]);
    assert!(service_flows(&tcp, None).is_empty());
}
