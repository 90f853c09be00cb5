//! knit changes its nftables tables two ways: whole-table and rule changes as nft text
//! (`Batch::render`, through libnftables), element and service-chain batches (attach,
//! detach, service changes) by encoding the netlink messages itself (`nftnl::encode` +
//! `Socket::apply`). The goldens check the text; this checks that the bytes mean the same:
//! in two fresh namespaces with the same base table (and networks, and a policy), the same
//! batch of every element kind the encoder speaks is applied once over netlink (A) and
//! once with `nft -f` of its text (B), and `nft list table inet knit` / `bridge knit` of
//! the two must be identical; then the same for removing them, which must also give back
//! the table as it was before.

mod common;
use common::*;
use knit::model::policy::Direction;
use knit::model::service::Vip;
use knit::model::{Mac, PortMapping, Proto};
use knit::nft::policy::{PolSet, PolicyChains, Shape, element};
use knit::nft::service::ServiceFw;
use knit::nft::socket::Socket;
use knit::nft::wire::encode;
use knit::nft::{AttachFw, Batch, Cmd, Elem, Guard, NetFw, TABLE};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::Stdio;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A dual-stack bridge network with DNS, and an internal ptp network.
fn networks() -> Vec<NetFw> {
    vec![
        NetFw {
            id: 1,
            bridge: Some("knbr1".into()),
            subnets: vec![
                "10.70.0.0/24".parse().unwrap(),
                "fd70::/64".parse().unwrap(),
            ],
            internal: false,
            masquerade: true,
            dns_servers: vec![ip("10.70.0.1"), ip("fd70::1")],
            cluster_nets: vec![],
            tunnel: None,
        },
        NetFw {
            id: 2,
            bridge: None,
            subnets: vec![
                "10.71.0.0/24".parse().unwrap(),
                "fd71::/64".parse().unwrap(),
            ],
            internal: true,
            masquerade: false,
            dns_servers: vec![],
            cluster_nets: vec![],
            tunnel: None,
        },
    ]
}

/// Network 1's policy sets: every shape, both families, ingress and egress.
fn policy_sets() -> Vec<PolSet> {
    let set = |dir, v4, shape, plen| PolSet {
        net_id: 1,
        dir,
        v4,
        shape,
        plen,
    };
    vec![
        set(Direction::Ingress, true, Shape::Any, 16),
        set(Direction::Ingress, true, Shape::Port, 32),
        set(Direction::Ingress, true, Shape::Range, 32),
        set(Direction::Ingress, false, Shape::Port, 128),
        set(Direction::Ingress, false, Shape::Range, 64),
        set(Direction::Egress, true, Shape::Isolate, 0),
        set(Direction::Egress, false, Shape::Any, 128),
        set(Direction::Egress, true, Shape::Range, 24),
    ]
}

/// What both namespaces start from, as knit creates it (text): the base table, the two
/// networks, and network 1's policy chains and sets (default deny).
fn setup() -> Batch {
    let mut b = Batch::new();
    b.base();
    for n in &networks() {
        b.network(n, true);
    }
    let policy = PolicyChains {
        net_id: 1,
        deny_in: true,
        deny_eg: false,
        eg_dns: true,
        // The jumps into the policy chains are elements: they are in the batch under test.
        ifaces: vec![],
        sets: policy_sets(),
    };
    b.policy_chains(&policy, &[]);
    b
}

fn port(host: Option<&str>, host_port: u16, to: &str, to_port: u16, proto: Proto) -> PortMapping {
    PortMapping {
        host_ip: host.map(ip),
        host_port,
        container_ip: ip(to),
        container_port: to_port,
        proto,
    }
}

/// Two bridge ports (one with all four kinds of published port, one without a MAC on
/// record) and a ptp veth on the internal network.
fn attachments() -> Vec<AttachFw> {
    vec![
        AttachFw {
            net_id: 1,
            internal: false,
            ptp_host_if: None,
            ports: vec![
                port(None, 8080, "10.70.0.2", 80, Proto::Tcp),
                port(Some("127.0.0.1"), 5353, "10.70.0.2", 53, Proto::Udp),
                port(Some("198.51.100.1"), 8443, "10.70.0.2", 443, Proto::Sctp),
                port(None, 8080, "fd70::2", 80, Proto::Tcp),
                port(Some("2001:db8::1"), 9090, "fd70::2", 9000, Proto::Udp),
                port(Some("::1"), 9091, "fd70::2", 9001, Proto::Tcp),
            ],
            guard: Guard {
                host_if: "kv00000a0001".into(),
                bridged: true,
                mac: Some(Mac([0x02, 0, 0, 0, 0x0a, 0x01])),
                ips: vec![ip("10.70.0.2"), ip("fd70::2")],
            },
        },
        AttachFw {
            net_id: 1,
            internal: false,
            ptp_host_if: None,
            ports: vec![],
            guard: Guard {
                host_if: "kv00000a0002".into(),
                bridged: true,
                mac: None,
                ips: vec![ip("10.70.0.3")],
            },
        },
        AttachFw {
            net_id: 2,
            internal: true,
            ptp_host_if: Some("kv00000b0001".into()),
            ports: vec![port(None, 7000, "10.71.0.2", 7000, Proto::Udp)],
            guard: Guard {
                host_if: "kv00000b0001".into(),
                bridged: false,
                mac: Some(Mac([0x02, 0, 0, 0, 0x0b, 0x01])),
                ips: vec![ip("10.71.0.2"), ip("fd71::2"), ip("2001:db8:71::5")],
            },
        },
    ]
}

fn service(
    id: i64,
    vip: (&str, u16, Proto),
    node_port: Option<u16>,
    backends: &[(&str, u16)],
) -> ServiceFw {
    ServiceFw {
        id,
        vip: Vip {
            ip: ip(vip.0),
            port: vip.1,
            proto: vip.2,
        },
        affinity: None,
        node_port,
        backends: backends
            .iter()
            .enumerate()
            .map(|(i, (a, p))| (100 + i as i64, ip(a), *p))
            .collect(),
    }
}

/// Services in every layout the netlink path carries: maps only (class sets and endpoint
/// maps, both families, every protocol, with and without node ports), without backends
/// (refusal sets), and with more backends than the maps take (a chain per service with a
/// DNAT ladder, `Cmd::AddDnat`, IPv4 and IPv6). Affinity services have text rules and go
/// through libnftables, so they are not here.
fn services() -> Vec<ServiceFw> {
    let v4: Vec<String> = (0..17).map(|i| format!("10.70.0.{}", 10 + i)).collect();
    let v6: Vec<String> = (0..17).map(|i| format!("fd70::{:x}", 0x10 + i)).collect();
    fn many(addrs: &[String]) -> Vec<(&str, u16)> {
        addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (a.as_str(), 8000 + i as u16))
            .collect()
    }
    vec![
        service(
            11,
            ("10.96.0.10", 80, Proto::Tcp),
            Some(30080),
            &[
                ("10.70.0.2", 8080),
                ("10.70.0.3", 8080),
                ("10.71.0.2", 8081),
            ],
        ),
        service(
            12,
            ("fd96::10", 53, Proto::Udp),
            Some(30053),
            &[("fd70::2", 5353), ("fd71::2", 53)],
        ),
        service(
            13,
            ("10.96.0.11", 9, Proto::Sctp),
            None,
            &[("10.70.0.2", 9)],
        ),
        service(14, ("10.96.0.12", 80, Proto::Tcp), Some(30004), &[]),
        service(15, ("fd96::12", 443, Proto::Tcp), None, &[]),
        service(16, ("10.96.0.13", 80, Proto::Tcp), Some(30006), &many(&v4)),
        service(17, ("fd96::13", 80, Proto::Tcp), Some(30007), &many(&v6)),
    ]
}

/// Policy elements of every set (single ports and port ranges, exact and masked far
/// sides), and the jumps into network 1's chains.
fn policy_elems() -> Vec<(String, Vec<Elem>)> {
    let sets = policy_sets();
    let e = |i: usize, own: &str, far: &str, l4| {
        (
            sets[i].name(),
            vec![element(&sets[i], ip(own), ip(far), l4)],
        )
    };
    let mut out = vec![
        e(0, "10.70.0.2", "192.168.0.0", None),
        e(1, "10.70.0.2", "10.70.0.3", Some((6, 80, 80))),
        e(2, "10.70.0.2", "10.70.0.3", Some((17, 1000, 2000))),
        e(2, "10.70.0.2", "10.70.0.3", Some((17, 2001, 2001))),
        e(3, "fd70::2", "fd70::3", Some((132, 443, 443))),
        e(4, "fd70::2", "2001:db8::", Some((6, 8000, 8100))),
        e(5, "10.70.0.2", "10.70.0.2", None),
        e(6, "fd70::2", "fd70::4", None),
        e(7, "10.70.0.4", "203.0.113.0", Some((6, 1, 65535))),
    ];
    out.push(("cl_vxlan".into(), vec![Elem::Service(4789)]));
    out.push(("cl_peers4".into(), vec![Elem::Addr(ip("192.168.7.2"))]));
    out.push(("cl_peers6".into(), vec![Elem::Addr(ip("fd07::2"))]));
    for (map, chain) in [("pol_out", "pol1"), ("egr_from", "egr1")] {
        out.push((
            map.into(),
            ["knbr1", "kv00000b0001"]
                .iter()
                .map(|i| Elem::Jump {
                    ifname: i.to_string(),
                    chain: chain.into(),
                })
                .collect(),
        ));
    }
    out
}

/// Everything above added (`add`) or removed, as one batch, in the order knit would.
fn changes(add: bool) -> Batch {
    let mut b = Batch::new();
    for a in attachments() {
        b.attachment(&a, add);
    }
    for s in services() {
        match add {
            true => b.service(None, Some(&s)),
            false => b.service(Some(&s), None),
        };
    }
    for (set, elems) in policy_elems() {
        b.cmds.push(match add {
            true => Cmd::AddElements { set, elems },
            false => Cmd::RemoveElements { set, elems },
        });
    }
    b
}

/// Which `Elem` kind an element is, and for DNAT rules which family.
fn kind(e: &Elem) -> &'static str {
    match e {
        Elem::Iface(_) => "Iface",
        Elem::Jump { .. } => "Jump",
        Elem::Prefix(_) => "Prefix",
        Elem::Port(_) => "Port",
        Elem::Addr(_) => "Addr",
        Elem::Service(_) => "Service",
        Elem::Svc { goto: None, .. } => "Svc",
        Elem::Svc { goto: Some(_), .. } => "Svc goto",
        Elem::NodePort { goto: None, .. } => "NodePort",
        Elem::NodePort { goto: Some(_), .. } => "NodePort goto",
        Elem::Endpoint { vip: Some(_), .. } => "Endpoint",
        Elem::Endpoint { vip: None, .. } => "Endpoint node port",
        Elem::IfaceMac { .. } => "IfaceMac",
        Elem::IfaceAddr { ip, .. } if ip.is_ipv4() => "IfaceAddr v4",
        Elem::IfaceAddr { .. } => "IfaceAddr v6",
        Elem::IfaceNdTarget { .. } => "IfaceNdTarget",
        Elem::Pol { l4: None, .. } => "Pol",
        Elem::Pol {
            interval: false, ..
        } => "Pol port",
        Elem::Pol { .. } => "Pol range",
    }
}

/// The sets (prefixed by their table's family) and element kinds a batch touches.
fn coverage(b: &Batch) -> (BTreeSet<String>, BTreeSet<&'static str>) {
    let (mut sets, mut kinds) = (BTreeSet::new(), BTreeSet::new());
    for c in &b.cmds {
        let (family, c) = match c {
            Cmd::Bridge(inner) => ("bridge", &**inner),
            c => ("inet", c),
        };
        match c {
            Cmd::AddElements { set, elems } | Cmd::RemoveElements { set, elems } => {
                sets.insert(format!("{family} {set}"));
                kinds.extend(elems.iter().map(kind));
            }
            Cmd::AddDnat { rule, .. } => {
                kinds.insert(if rule.ip.is_ipv4() {
                    "dnat ip"
                } else {
                    "dnat ip6"
                });
                if rule.one_in.is_some() {
                    kinds.insert("dnat numgen");
                }
            }
            _ => {}
        }
    }
    (sets, kinds)
}

/// `nft -f -` of `text` inside namespace `ns`.
fn nft_f(ns: &str, text: &str) {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "nft -f in {ns} failed: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The batch over netlink, the way knit sends it, inside namespace `ns`.
fn netlink(ns: &str, b: &Batch) {
    let enc = encode(TABLE, &b.cmds).expect("the netlink encoder speaks every command here");
    in_ns(ns, move || {
        let mut s = Socket::own().expect("nf_tables socket");
        s.apply(&enc)
    })
    .unwrap_or_else(|e| panic!("netlink batch in {ns}: {e}"));
}

/// Both of knit's tables in `w`'s node, elements sorted.
fn tables(w: &World) -> String {
    sorted_elements(&(w.nft_table() + &w.nft_bridge_table()))
}

/// Equal listings, or a failure that shows the first lines that differ.
fn assert_same(what: &str, netlink: &str, text: &str) {
    if netlink == text {
        return;
    }
    let diff: Vec<String> = netlink
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .take(6)
        .map(|(a, b)| format!("  netlink: {}\n  nft -f:  {}", a.trim(), b.trim()))
        .collect();
    panic!(
        "{what}: netlink and nft -f differ ({} vs {} lines):\n{}\n--- netlink:\n{netlink}\n--- nft -f:\n{text}",
        netlink.lines().count(),
        text.lines().count(),
        diff.join("\n")
    );
}

#[test]
fn the_batch_covers_every_element_kind_the_encoder_speaks() {
    let (sets, kinds) = coverage(&changes(true));
    for set in [
        "inet knit_ifs",
        "inet n2_ifs",
        "inet fwd_in",
        "inet fwd_out",
        "inet pub4",
        "inet pub4any",
        "inet pub6",
        "inet pub6any",
        "inet svc4_k3",
        "inet svc6_k2",
        "inet svc4_k1",
        "inet ep4_tcp",
        "inet ep6_udp",
        "inet ep4_sctp",
        "inet np4_k3",
        "inet np6_k2",
        "inet npep4_tcp",
        "inet npep6_udp",
        "inet svc_none4",
        "inet svc_none6",
        "inet np_none",
        "inet svc4",
        "inet svc6",
        "inet np4",
        "inet np6",
        "inet pol_out",
        "inet egr_from",
        "inet cl_vxlan",
        "inet cl_peers4",
        "inet cl_peers6",
        "inet pol1_in4_a16",
        "inet pol1_in4_p32",
        "inet pol1_in4_r32",
        "inet pol1_in6_p128",
        "inet pol1_in6_r64",
        "inet pol1_eg4_iso",
        "inet pol1_eg6_a128",
        "inet pol1_eg4_r24",
        "inet as_ports",
        "inet as_macs",
        "inet as_addrs4",
        "inet as_addrs6",
        "inet as_nd6",
        "bridge as_ports",
        "bridge as_macs",
        "bridge as_addrs4",
        "bridge as_addrs6",
        "bridge as_nd6",
    ] {
        assert!(sets.contains(set), "{set} not in the batch: {sets:?}");
    }
    let all: BTreeSet<&str> = [
        "Iface",
        "Jump",
        "Port",
        "Addr",
        "Service",
        "Svc",
        "Svc goto",
        "NodePort",
        "NodePort goto",
        "Endpoint",
        "Endpoint node port",
        "IfaceMac",
        "IfaceAddr v4",
        "IfaceAddr v6",
        "IfaceNdTarget",
        "Pol",
        "Pol port",
        "Pol range",
        "dnat ip",
        "dnat ip6",
        "dnat numgen",
    ]
    .into();
    assert_eq!(kinds, all, "element kinds (Prefix is text-only)");
    // All of it goes over netlink: encode takes the whole batch, both ways.
    assert!(encode(TABLE, &changes(true).cmds).is_some());
    assert!(encode(TABLE, &changes(false).cmds).is_some());
    // Prefixes (interval sets) are the one kind it refuses.
    let prefix = Cmd::AddElements {
        set: "nets4".into(),
        elems: vec![Elem::Prefix("10.0.0.0/8".parse().unwrap())],
    };
    assert!(encode(TABLE, &[prefix]).is_none());
}

#[test]
fn netlink_batches_list_exactly_like_nft_text() {
    let a = World::new();
    let b = World::new();
    for w in [&a, &b] {
        nft_f(&w.node, &setup().render());
    }
    let base = tables(&a);
    assert_same("setup", &base, &tables(&b));
    assert!(base.contains("chain pol1 {"), "{base}");

    let add = changes(true);
    netlink(&a.node, &add);
    nft_f(&b.node, &add.render());
    let added = tables(&a);
    assert_same("add", &added, &tables(&b));
    assert_ne!(added, base, "the batch added nothing");
    for needle in [
        "chain svc16 {",
        "numgen random mod 17 0 meta l4proto tcp dnat ip to 10.70.0.10:8000",
        "meta l4proto tcp dnat ip6 to [fd70::20]:8016",
        "\"kv00000b0001\" : jump n2_in",
        "\"knbr1\" : jump pol1",
    ] {
        assert!(added.contains(needle), "{needle} missing:\n{added}");
    }

    let rm = changes(false);
    netlink(&a.node, &rm);
    nft_f(&b.node, &rm.render());
    let removed = tables(&a);
    assert_same("remove", &removed, &tables(&b));
    assert_same("remove restores the setup", &removed, &base);
}
