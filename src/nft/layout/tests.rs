//! Unit tests of `nft/layout`.

use super::*;
use crate::model::Mac;
use crate::model::Proto;
use crate::nft::batch::TABLE;
use crate::nft::expected_rule_counts;

fn bridge_net() -> NetFw {
    NetFw {
        id: 1,
        bridge: Some("knbr1".into()),
        subnets: vec![
            "10.88.0.0/24".parse().unwrap(),
            "fd88::/64".parse().unwrap(),
        ],
        internal: false,
        masquerade: true,
        dns_servers: vec!["10.88.0.1".parse().unwrap(), "fd88::1".parse().unwrap()],
        cluster_nets: vec![],
        tunnel: None,
    }
}

fn ports() -> Vec<PortMapping> {
    vec![
        PortMapping {
            host_ip: None,
            host_port: 8080,
            container_ip: "10.88.0.2".parse().unwrap(),
            container_port: 80,
            proto: Proto::Tcp,
        },
        PortMapping {
            host_ip: Some("127.0.0.1".parse().unwrap()),
            host_port: 5353,
            container_ip: "10.88.0.2".parse().unwrap(),
            container_port: 53,
            proto: Proto::Udp,
        },
        PortMapping {
            host_ip: None,
            host_port: 8080,
            container_ip: "fd88::2".parse().unwrap(),
            container_port: 80,
            proto: Proto::Tcp,
        },
    ]
}

#[test]
fn base_table() {
    golden("base.nft", &Batch::new().base().render());
}

#[test]
fn network_create_and_remove() {
    golden(
        "network_add.nft",
        &Batch::new().network(&bridge_net(), true).render(),
    );
    golden(
        "network_del.nft",
        &Batch::new().network(&bridge_net(), false).render(),
    );
    let internal = NetFw {
        id: 2,
        bridge: Some("knbr2".into()),
        subnets: vec!["10.99.0.0/24".parse().unwrap()],
        internal: true,
        masquerade: false,
        dns_servers: vec![],
        cluster_nets: vec![],
        tunnel: None,
    };
    golden(
        "network_internal.nft",
        &Batch::new().network(&internal, true).render(),
    );
}

fn guard(host_if: &str, bridged: bool) -> Guard {
    Guard {
        host_if: host_if.into(),
        bridged,
        mac: Some(Mac([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee])),
        ips: vec!["10.88.0.2".parse().unwrap(), "fd88::2".parse().unwrap()],
    }
}

#[test]
fn attachment_elements() {
    let a = AttachFw {
        net_id: 1,
        internal: false,
        ptp_host_if: None,
        ports: ports(),
        guard: guard("kv00aabbccdd", true),
    };
    golden(
        "attach_ports.nft",
        &Batch::new().attachment(&a, true).render(),
    );
    golden(
        "detach_ports.nft",
        &Batch::new().attachment(&a, false).render(),
    );
    let p = AttachFw {
        net_id: 3,
        internal: false,
        ptp_host_if: Some("kv0011223344".into()),
        ports: vec![],
        guard: guard("kv0011223344", false),
    };
    golden(
        "attach_ptp.nft",
        &Batch::new().attachment(&p, true).render(),
    );
}

#[test]
fn attach_cost_is_constant() {
    // One element per published port and per anti-spoofing fact, and nothing else: no
    // rules, no per-port chains.
    for bridged in [true, false] {
        let a = AttachFw {
            net_id: 1,
            internal: false,
            ptp_host_if: (!bridged).then(|| "kv00aabbccdd".into()),
            ports: ports(),
            guard: guard("kv00aabbccdd", bridged),
        };
        let b = Batch {
            cmds: Batch::new().attachment(&a, true).cmds.clone(),
        };
        let elements = |c: &Cmd| matches!(c, Cmd::AddElements { .. });
        // `all` is true of an empty batch: the attachment must have produced elements (its
        // port maps and its anti-spoofing sets) and nothing else.
        assert!(b.cmds.len() >= 2, "{:?}", b.cmds);
        assert!(b.cmds.iter().all(|c| match c {
            Cmd::Bridge(inner) => bridged && elements(inner),
            c => elements(c),
        }));
        let ports_added: usize = b
            .cmds
            .iter()
            .filter_map(|c| match c {
                Cmd::AddElements { set, elems } if set.starts_with("pub") => Some(elems.len()),
                _ => None,
            })
            .sum();
        assert_eq!(ports_added, ports().len(), "one element per published port");
        assert!(crate::nft::wire::encode(TABLE, &b.cmds).is_some());
        let rm = Batch::new().attachment(&a, false).cmds.clone();
        assert!(crate::nft::wire::encode(TABLE, &rm).is_some());
    }
}

#[test]
fn anti_spoofing_is_in_the_rebuild() {
    // `knit reconcile` restores both tables: the bridge table is replaced like the inet
    // one, and the attachment's elements land in it.
    let a = AttachFw {
        net_id: 1,
        internal: false,
        ptp_host_if: None,
        ports: vec![],
        guard: guard("kv00aabbccdd", true),
    };
    let text = Batch::rebuild(&[bridge_net()], &[a]).render();
    assert!(text.contains("delete table bridge knit\n"));
    assert!(text.contains("add chain bridge knit prerouting { type filter hook prerouting priority -300; policy accept; }"));
    assert!(
        text.contains("add element bridge knit as_macs { \"kv00aabbccdd\" . 02:aa:bb:cc:dd:ee }")
    );
    assert!(text.contains("add element bridge knit as_ports { \"kv00aabbccdd\" }"));
    assert!(!text.contains("add element inet knit as_"));
}

#[test]
fn expected_rule_counts_match_a_whole_build() {
    // The cached fixed-chain counts plus each network's equal counting one full batch.
    let nets = [bridge_net()];
    let mut b = Batch::new();
    b.base();
    b.network(&nets[0], true);
    let whole = crate::nft::apply::rule_counts(&b);
    assert_eq!(expected_rule_counts(&nets), whole);
    assert_eq!(
        expected_rule_counts(&nets),
        whole,
        "second call, from the cache"
    );
    assert!(whole[0].get("n1_out").is_some_and(|n| *n >= 2));
    assert!(whole[0].get("forward").is_some_and(|n| *n > 0));
}
