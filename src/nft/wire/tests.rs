//! Unit tests of `nft/wire`.

use super::*;
use crate::model::Proto;
use crate::nft::socket::Socket;

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
    use crate::nft::{AttachFw, Batch, Guard};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || crate::nft::libnft::Session::new().is_err() {
        eprintln!("skipped: needs root and libnftables");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: moves only this thread into a new network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        crate::nft::libnft::run(&Batch::new().base().render()).unwrap();
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
            let mut out = crate::nft::libnft::run("list table bridge knit").unwrap();
            out += &crate::nft::libnft::run("list table inet knit").unwrap();
            out
        };
        let empty = list();
        let mut add = Batch::new();
        add.attachment(&att("kv00000000b1", true), true)
            .attachment(&att("kv00000000f1", false), true);
        let mut rm = Batch::new();
        rm.attachment(&att("kv00000000b1", true), false)
            .attachment(&att("kv00000000f1", false), false);
        let mut sock = Socket::own().unwrap();
        sock.apply(&encode("knit", &add.cmds).unwrap()).unwrap();
        let via_netlink = list();
        assert_ne!(via_netlink, empty);
        sock.apply(&encode("knit", &rm.cmds).unwrap()).unwrap();
        assert_eq!(list(), empty, "netlink removal leaves no element");
        crate::nft::libnft::run(&add.render()).unwrap();
        let via_text = list();
        assert_eq!(via_netlink, via_text);
        for c in &add.cmds {
            let (family, Cmd::AddElements { set, elems }) = (match c {
                Cmd::Bridge(inner) => ("bridge", &**inner),
                c => ("inet", c),
            }) else {
                panic!("an attachment adds elements only: {c:?}")
            };
            let listed = crate::nft::libnft::run(&format!("list set {family} knit {set}")).unwrap();
            for e in elems {
                assert!(
                    listed.contains(&e.text()),
                    "{} missing in {listed}",
                    e.text()
                );
            }
        }
        crate::nft::libnft::run(&rm.render()).unwrap();
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
