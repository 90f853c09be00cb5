//! Unit tests of `dns/server`.

use super::*;
use crate::dns::records::{Host, NetView};
use hickory_proto::op::Query;

fn records() -> Records {
    Records::build(
        vec![
            NetView {
                id: 1,
                gateways: vec!["10.0.0.1".parse().unwrap()],
                domain: None,
                internal: false,
                subnets: vec!["10.0.0.0/24".parse().unwrap()],
                bridge_ifindex: 7,
            },
            NetView {
                id: 2,
                gateways: vec!["10.0.9.1".parse().unwrap()],
                domain: None,
                internal: true,
                subnets: vec!["10.0.9.0/24".parse().unwrap()],
                bridge_ifindex: 9,
            },
        ],
        vec![
            Host {
                sandbox: "web".into(),
                network_id: 1,
                names: vec!["web".into()],
                ips: vec!["10.0.0.2".parse().unwrap()],
            },
            Host {
                sandbox: "client".into(),
                network_id: 1,
                names: vec!["client".into()],
                ips: vec!["10.0.0.3".parse().unwrap()],
            },
            Host {
                sandbox: "db".into(),
                network_id: 2,
                names: vec!["db".into()],
                ips: vec!["10.0.9.4".parse().unwrap()],
            },
        ],
    )
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(77).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn now(r: Reply) -> Message {
    match r {
        Reply::Now(b) => Message::from_vec(&b).unwrap(),
        _ => panic!("expected an immediate answer"),
    }
}

#[test]
fn answers_forwards_and_refuses() {
    let (r, m) = (records(), Metrics::default());
    let client: IpAddr = "10.0.0.3".parse().unwrap();
    let a = now(handle(
        &query("web.", RecordType::A),
        client,
        1,
        &r,
        512,
        &m,
    ));
    assert_eq!(a.id(), 77);
    assert_eq!(a.answers().len(), 1);
    assert!(a.authoritative());
    let ptr = now(handle(
        &query("2.0.0.10.in-addr.arpa.", RecordType::PTR),
        client,
        1,
        &r,
        512,
        &m,
    ));
    assert_eq!(ptr.answers()[0].data().to_string(), "web.");
    let mx = now(handle(
        &query("web.", RecordType::MX),
        client,
        1,
        &r,
        512,
        &m,
    ));
    assert_eq!(mx.response_code(), ResponseCode::NoError);
    assert!(mx.answers().is_empty());
    assert!(matches!(
        handle(
            &query("example.com.", RecordType::A),
            client,
            1,
            &r,
            512,
            &m
        ),
        Reply::Forward
    ));
    let refused = now(handle(
        &query("example.com.", RecordType::A),
        "10.0.9.5".parse().unwrap(),
        2,
        &r,
        512,
        &m,
    ));
    assert_eq!(refused.response_code(), ResponseCode::Refused);
}

#[test]
fn malformed_input_never_panics() {
    let (r, m) = (records(), Metrics::default());
    let client: IpAddr = "10.0.0.3".parse().unwrap();
    assert!(matches!(handle(&[], client, 1, &r, 512, &m), Reply::Drop));
    assert!(matches!(
        handle(&[1, 2, 3], client, 1, &r, 512, &m),
        Reply::Drop
    ));
    let good = query("web.", RecordType::A);
    let Reply::Now(formerr) = handle(&good[..good.len() - 3], client, 1, &r, 512, &m) else {
        panic!("FORMERR expected")
    };
    assert_eq!(formerr[3] & 0x0f, 1);
    assert_eq!(&formerr[..2], &good[..2]);
    // A response packet is never answered (no reflection).
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert!(matches!(handle(&resp, client, 1, &r, 512, &m), Reply::Drop));
    let mut seed = 7u32;
    for len in 0..300 {
        let mut p = good.clone();
        p.resize(len.min(200), 0);
        for b in p.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if seed.is_multiple_of(7) {
                *b = (seed >> 16) as u8;
            }
        }
        let _ = handle(&p, client, 1, &r, 512, &m);
    }
}

fn refused(m: &Metrics, reason: usize) -> u64 {
    m.refused[reason].load(Relaxed)
}

#[test]
fn strangers_are_refused_and_never_get_cached_answers_or_forwarding() {
    let (r, m) = (records(), Metrics::default());
    let mut cache = AnswerCache::default();
    let sandbox: IpAddr = "10.0.0.3".parse().unwrap();
    let web = query("web.", RecordType::A);
    // Served on its bridge (7): answered, and now cached for this client address.
    let a = now(datagram(&mut cache, &web, sandbox, 7, 1, &r, &m));
    assert_eq!(a.answers().len(), 1);
    // The same address arriving on the uplink (3): a spoofing LAN host. REFUSED, not
    // the cached answer.
    let spoofed = now(datagram(&mut cache, &web, sandbox, 3, 1, &r, &m));
    assert_eq!(spoofed.response_code(), ResponseCode::Refused);
    assert!(spoofed.answers().is_empty());
    assert_eq!(spoofed.id(), 77);
    // A LAN host asking for an external name and a PTR: REFUSED, never forwarded.
    let lan: IpAddr = "198.51.100.2".parse().unwrap();
    for q in [
        query("example.com.", RecordType::A),
        query("2.0.0.10.in-addr.arpa.", RecordType::PTR),
        web.clone(),
    ] {
        let reply = now(datagram(&mut cache, &q, lan, 3, 1, &r, &m));
        assert_eq!(reply.response_code(), ResponseCode::Refused);
    }
    assert_eq!(refused(&m, metrics::REFUSED_WRONG_LINK), 4);
    // On the right bridge, but not attached to this network (db is on network 2; an
    // unassigned address): REFUSED.
    for c in ["10.0.9.4", "10.0.0.99"] {
        let reply = now(datagram(&mut cache, &web, c.parse().unwrap(), 7, 1, &r, &m));
        assert_eq!(reply.response_code(), ResponseCode::Refused, "{c}");
    }
    assert_eq!(refused(&m, metrics::REFUSED_NOT_ATTACHED), 2);
    // Garbage from a stranger gets nothing at all.
    assert!(matches!(
        datagram(&mut cache, &[1, 2, 3], lan, 3, 1, &r, &m),
        Reply::Drop
    ));
    // The served client still gets its (cached) answer.
    let again = now(datagram(&mut cache, &web, sandbox, 7, 1, &r, &m));
    assert_eq!(again.answers().len(), 1);
    assert_eq!(m.forwarded.load(Relaxed), 0);
}

#[test]
fn ptr_for_another_networks_address_is_not_forwarded() {
    let (r, m) = (records(), Metrics::default());
    let client: IpAddr = "10.0.0.3".parse().unwrap();
    for name in [
        "4.9.0.10.in-addr.arpa.",  // db, on network 2
        "1.9.0.10.in-addr.arpa.",  // network 2's gateway
        "77.0.0.10.in-addr.arpa.", // unassigned in the client's own network
    ] {
        let reply = now(handle(
            &query(name, RecordType::PTR),
            client,
            1,
            &r,
            512,
            &m,
        ));
        assert_eq!(reply.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(reply.answers().is_empty());
    }
    // Other addresses still go upstream.
    assert!(matches!(
        handle(
            &query("7.113.0.203.in-addr.arpa.", RecordType::PTR),
            client,
            1,
            &r,
            512,
            &m
        ),
        Reply::Forward
    ));
}

#[test]
fn tcp_connections_are_capped_per_client() {
    let clients = TcpClients::default();
    let (a, b): (IpAddr, IpAddr) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
    let held: Vec<_> = (0..TCP_MAX_PER_CLIENT)
        .map(|_| clients.take(a, TCP_MAX_PER_CLIENT).unwrap())
        .collect();
    assert!(clients.take(a, TCP_MAX_PER_CLIENT).is_none());
    // Another client is not affected.
    let other = clients.take(b, TCP_MAX_PER_CLIENT);
    assert!(other.is_some());
    drop(held);
    assert_eq!(clients.held(a), 0);
    assert!(clients.take(a, TCP_MAX_PER_CLIENT).is_some());
    assert_eq!(clients.held(a), 0, "released on drop");
    assert_eq!(clients.held(b), 1);
}
