//! Anti-spoofing with real packets: a sandbox cannot borrow another sandbox's address or
//! MAC to get past a policy, poison neighbour caches with ARP or IPv6 neighbour
//! advertisements, or send from an address it was not given on a ptp network; duplicate
//! MACs are refused.

mod common;
use common::cni::*;
use common::*;
use serde_json::json;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The MAC of `ifname` in namespace `ns`.
fn mac_of(ns: &str, ifname: &str) -> String {
    let out = sh_ok(&["ip", "-n", ns, "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// The link-layer address `ns` has for `ip` (on `dev` if given), "" if none.
fn neigh_mac(ns: &str, ip: &str, dev: Option<&str>) -> String {
    let mut args = vec!["ip", "-n", ns, "-j", "neigh", "show", "to", ip];
    if let Some(d) = dev {
        args.extend(["dev", d]);
    }
    let v: serde_json::Value = serde_json::from_str(&sh_ok(&args)).unwrap_or_default();
    v[0]["lladdr"].as_str().unwrap_or_default().to_string()
}

fn sandbox_ip(ns: &str, args: &[&str]) {
    let mut a = vec!["ip", "-n", ns];
    a.extend_from_slice(args);
    sh_ok(&a);
}

/// Whether a UDP datagram sent from `sender` (bound to `from`) reaches a socket of
/// `receiver` on `to` (the receiver records only datagrams whose source is `from`).
fn udp_arrives(receiver: &str, to: SocketAddr, sender: &str, from: IpAddr) -> bool {
    let (ready_tx, ready_rx) = mpsc::channel();
    let rns = receiver.to_string();
    let got = std::thread::spawn(move || {
        in_ns(&rns, move || {
            let s = UdpSocket::bind(to).expect("bind receiver");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_millis(1500);
            let mut buf = [0u8; 64];
            while Instant::now() < deadline {
                if let Ok((_, peer)) = s.recv_from(&mut buf)
                    && peer.ip() == from
                {
                    return true;
                }
            }
            false
        })
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    in_ns(sender, move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind sender");
        for _ in 0..5 {
            let _ = s.send_to(b"spoof?", to);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    got.join().unwrap()
}

/// Sends one raw Ethernet frame out of `ifname` in `ns` (AF_PACKET).
fn send_frame(ns: &str, ifname: &str, frame: Vec<u8>) {
    let ifname = CString::new(ifname).unwrap();
    in_ns(ns, move || {
        // SAFETY: plain socket calls on a descriptor we own; the address is a zeroed
        // sockaddr_ll with the fields AF_PACKET needs for sending.
        unsafe {
            let index = libc::if_nametoindex(ifname.as_ptr());
            assert!(index > 0, "no such interface");
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let mut sa: libc::sockaddr_ll = std::mem::zeroed();
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_ifindex = index as i32;
            sa.sll_halen = 6;
            sa.sll_addr[..6].copy_from_slice(&frame[..6]);
            for _ in 0..3 {
                let n = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(n as usize, frame.len(), "sendto");
                std::thread::sleep(Duration::from_millis(50));
            }
            libc::close(fd);
        }
    });
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut b = [0u8; 6];
    for (o, p) in b.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(p, 16).unwrap();
    }
    b
}

/// A gratuitous ARP (`op` 1: request, 2: reply) from `src_mac` claiming `ip` is at
/// `claimed_mac` (broadcast, sender IP = target IP = `ip`).
fn garp(src_mac: [u8; 6], claimed_mac: [u8; 6], ip: Ipv4Addr, op: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
    f.extend_from_slice(&claimed_mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// An unsolicited IPv6 neighbour advertisement (override flag) from `src` / `src_mac`,
/// to all nodes, saying `target` is at `src_mac`.
fn unsolicited_na(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst: Ipv6Addr = "ff02::1".parse().unwrap();
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&src_mac);
    // Checksum over the pseudo-header and the message.
    let mut sum: u32 = 0;
    let mut words = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    words(&src.octets());
    words(&dst.octets());
    words(&(icmp.len() as u32).to_be_bytes());
    words(&[0, 0, 0, 58]);
    words(&icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Bridge network `n` (dual-stack) with sandboxes x, y, t; default deny, `allow --from X
/// --to T --port 80` (TCP and UDP); T serves TCP 80 on both families.
fn lab() -> Lab {
    let mut l = Lab::new(World::new(), &["10.71.0.0/24", "fd71::/64"]);
    for s in ["x", "y", "t"] {
        l.attach(s, &[]);
    }
    l.w.ok(&["policy", "default", "n", "deny"]);
    for port in ["80", "80/udp"] {
        l.w.ok(&[
            "policy", "allow", "n", "--from", &l["x"], "--to", &l["t"], "--port", port,
        ]);
    }
    let t = l["t"].to_string();
    let t6 = l.w.ip_of("n", &t, 6);
    l.serve(tcp_server(&t, "0.0.0.0:80", "t"));
    l.serve(tcp_server(&t, &format!("[{t6}]:80"), "t"));
    l
}

#[test]
fn a_spoofed_address_or_mac_gets_no_further_than_its_own_port() {
    let l = lab();
    let (x4, x6) = (l.w.ip_of("n", &l["x"], 4), l.w.ip_of("n", &l["x"], 6));
    let (t4, t6) = (l.w.ip_of("n", &l["t"], 4), l.w.ip_of("n", &l["t"], 6));
    let (web4, web6) = (format!("{t4}:80"), format!("[{t6}]:80"));
    // The policy as written: X in, Y out.
    assert_eq!(tcp_get(&l["x"], &web4).unwrap(), format!("t saw {x4}"));
    assert_eq!(tcp_get(&l["x"], &web6).unwrap(), format!("t saw {x6}"));
    assert!(tcp_get(&l["y"], &web4).is_err());
    assert!(tcp_get(&l["y"], &web6).is_err());

    // Y takes X's addresses as secondary addresses. One-way traffic (UDP, a SYN) from
    // them would pass X's allow rule: it must not leave Y's port.
    sandbox_ip(
        &l["y"],
        &["addr", "add", &format!("{x4}/24"), "dev", "eth0"],
    );
    sandbox_ip(
        &l["y"],
        &["addr", "add", &format!("{x6}/64"), "dev", "eth0", "nodad"],
    );
    let to4: SocketAddr = web4.parse().unwrap();
    let to6: SocketAddr = web6.parse().unwrap();
    assert!(
        !udp_arrives(&l["t"], to4, &l["y"], x4.parse().unwrap()),
        "T received a datagram Y sent from X's IPv4 address"
    );
    assert!(
        !udp_arrives(&l["t"], to6, &l["y"], x6.parse().unwrap()),
        "T received a datagram Y sent from X's IPv6 address"
    );
    // The same datagrams from X arrive (the receiver and the rule work).
    assert!(udp_arrives(&l["t"], to4, &l["x"], x4.parse().unwrap()));
    assert!(udp_arrives(&l["t"], to6, &l["x"], x6.parse().unwrap()));

    // Y also takes X's MAC and connects from X's addresses: without anti-spoofing the
    // bridge learns X's MAC on Y's port and T's answers go to Y (X loses its traffic).
    let x_mac = mac_of(&l["x"], "eth0");
    let y_mac = mac_of(&l["y"], "eth0");
    sandbox_ip(&l["y"], &["link", "set", "eth0", "address", &x_mac]);
    sandbox_ip(
        &l["y"],
        &[
            "route",
            "replace",
            &format!("{t4}/32"),
            "dev",
            "eth0",
            "src",
            &x4,
        ],
    );
    sandbox_ip(
        &l["y"],
        &[
            "-6",
            "route",
            "replace",
            &format!("{t6}/128"),
            "dev",
            "eth0",
            "src",
            &x6,
        ],
    );
    assert!(
        tcp_get(&l["y"], &web4).is_err(),
        "Y reached T:80 with X's MAC and IPv4 address"
    );
    assert!(
        tcp_get(&l["y"], &web6).is_err(),
        "Y reached T:80 with X's MAC and IPv6 address"
    );
    // X is unaffected while Y still holds its MAC and addresses.
    assert_eq!(tcp_get(&l["x"], &web4).unwrap(), format!("t saw {x4}"));
    assert_eq!(tcp_get(&l["x"], &web6).unwrap(), format!("t saw {x6}"));

    // Y back to its own MAC and addresses: its own traffic passes the check.
    sandbox_ip(&l["y"], &["link", "set", "eth0", "address", &y_mac]);
    sandbox_ip(&l["y"], &["route", "del", &format!("{t4}/32")]);
    sandbox_ip(&l["y"], &["-6", "route", "del", &format!("{t6}/128")]);
    sandbox_ip(
        &l["y"],
        &["addr", "del", &format!("{x4}/24"), "dev", "eth0"],
    );
    sandbox_ip(
        &l["y"],
        &["addr", "del", &format!("{x6}/64"), "dev", "eth0"],
    );
    assert!(ping(&l["y"], "10.71.0.1"), "Y's own traffic passes");
    assert!(ping(&l["y"], "fd71::1"), "Y's own IPv6 traffic passes");
}

#[test]
fn spoofed_arp_and_neighbour_advertisements_poison_nothing() {
    let l = lab();
    let bridge = l.bridge();
    let (x4, x6) = (l.w.ip_of("n", &l["x"], 4), l.w.ip_of("n", &l["x"], 6));
    let (t4, t6) = (l.w.ip_of("n", &l["t"], 4), l.w.ip_of("n", &l["t"], 6));
    let y6: Ipv6Addr = l.w.ip_of("n", &l["y"], 6).parse().unwrap();
    let x_mac = mac_of(&l["x"], "eth0");
    let y_mac = mac_bytes(&mac_of(&l["y"], "eth0"));
    // T and the node learn X's neighbour entries (X talks to both; the policy lets X
    // reach T on port 80 only).
    assert!(tcp_get(&l["x"], &format!("{t4}:80")).is_ok());
    assert!(tcp_get(&l["x"], &format!("[{t6}]:80")).is_ok());
    assert!(ping(&l["x"], "10.71.0.1"));
    assert!(ping(&l["x"], "fd71::1"));
    let learnt = |ns: &str, ip: &str, dev: Option<&str>| neigh_mac(ns, ip, dev) == x_mac;
    eventually("T and the node know X's MAC", || {
        learnt(&l["t"], &x4, None)
            && learnt(&l["t"], &x6, None)
            && learnt(&l.w.node, &x4, Some(&bridge))
            && learnt(&l.w.node, &x6, Some(&bridge))
    });

    // Y, from its own MAC, claims X's addresses: gratuitous ARP requests and replies,
    // and an unsolicited neighbour advertisement from Y's own IPv6 address.
    let x4a: Ipv4Addr = x4.parse().unwrap();
    send_frame(&l["y"], "eth0", garp(y_mac, y_mac, x4a, 1));
    send_frame(&l["y"], "eth0", garp(y_mac, y_mac, x4a, 2));
    send_frame(
        &l["y"],
        "eth0",
        unsolicited_na(y_mac, y6, x6.parse().unwrap()),
    );
    // Y claiming its own addresses is fine (the frames themselves are well-formed: this
    // is what a real gratuitous ARP / advertisement looks like).
    let y4: Ipv4Addr = l.w.ip_of("n", &l["y"], 4).parse().unwrap();
    send_frame(&l["y"], "eth0", garp(y_mac, y_mac, y4, 2));
    send_frame(&l["y"], "eth0", unsolicited_na(y_mac, y6, y6));
    std::thread::sleep(Duration::from_millis(300));
    for (ns, dev) in [(&l["t"], None), (&l.w.node, Some(bridge.as_str()))] {
        for ip in [&x4, &x6] {
            assert_eq!(
                neigh_mac(ns, ip, dev),
                x_mac,
                "{ns}'s neighbour entry for {ip} was changed by Y"
            );
        }
    }
    assert!(ping(&l["y"], "10.71.0.1"), "Y's own traffic passes");
    assert_eq!(
        tcp_get(&l["x"], &format!("{t4}:80")).unwrap(),
        format!("t saw {x4}")
    );
}

#[test]
fn ptp_sandboxes_send_only_from_their_own_addresses() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "p",
        "--driver",
        "ptp",
        "--subnet",
        "10.72.0.0/24",
        "--subnet",
        "fd72::/64",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "p", &a]);
    w.ok(&["attach", "p", &b]);
    let (a4, a6) = (w.ip_of("p", &a, 4), w.ip_of("p", &a, 6));
    let (b4, b6) = (w.ip_of("p", &b, 4), w.ip_of("p", &b, 6));
    let to4: SocketAddr = format!("{a4}:7000").parse().unwrap();
    let to6: SocketAddr = format!("[{a6}]:7000").parse().unwrap();
    // B's own addresses reach A through the node.
    assert!(udp_arrives(&a, to4, &b, b4.parse().unwrap()));
    assert!(udp_arrives(&a, to6, &b, b6.parse().unwrap()));
    // Addresses B was not given (a free one of the subnet, and A's own) do not.
    for (spoof, to) in [
        ("10.72.0.99", to4),
        ("fd72::99", to6),
        (a4.as_str(), to4),
        (a6.as_str(), to6),
    ] {
        let ip: IpAddr = spoof.parse().unwrap();
        let plen = if ip.is_ipv4() { "32" } else { "128" };
        sandbox_ip(
            &b,
            &[
                "addr",
                "add",
                &format!("{spoof}/{plen}"),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        assert!(
            !udp_arrives(&a, to, &b, ip),
            "a datagram B sent from {spoof} was routed to A"
        );
        sandbox_ip(
            &b,
            &["addr", "del", &format!("{spoof}/{plen}"), "dev", "eth0"],
        );
    }
    assert!(udp_arrives(&a, to4, &b, b4.parse().unwrap()));
    // Nor B's own address with another MAC. (A MAC change flushes B's neighbour entries,
    // the gateway's static one too: put it back.)
    let gw_mac = neigh_mac(&b, "169.254.1.1", Some("eth0"));
    assert!(!gw_mac.is_empty());
    sandbox_ip(&b, &["link", "set", "eth0", "address", "02:00:00:00:00:99"]);
    sandbox_ip(
        &b,
        &[
            "neigh",
            "replace",
            "169.254.1.1",
            "dev",
            "eth0",
            "lladdr",
            &gw_mac,
            "nud",
            "permanent",
        ],
    );
    assert!(
        !udp_arrives(&a, to4, &b, b4.parse().unwrap()),
        "B's frames with a foreign MAC were routed"
    );
    // Detach leaves no anti-spoofing element behind.
    w.ok(&["detach", "p", &b]);
    w.ok(&["detach", "p", &a]);
    let table = w.nft_table();
    for set in ["as_ports", "as_macs", "as_addrs4", "as_addrs6", "as_nd6"] {
        assert!(table.contains(&format!("set {set} {{")), "{table}");
    }
    assert!(!table.contains("kv"), "elements left after detach: {table}");
}

#[test]
fn elements_follow_attachments_and_reconcile_restores_them() {
    let l = lab();
    let host_if = |s: &str| {
        let v = l.w.json(&["network", "inspect", "n"]);
        v["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["sandbox"] == s)
            .unwrap()["host_ifname"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let xh = host_if(&l["x"]);
    let x4 = l.w.ip_of("n", &l["x"], 4);
    let table = l.w.nft_bridge_table();
    assert!(table.contains(&format!("\"{xh}\" . {x4}")), "{table}");
    assert!(
        table.contains(&format!("\"{xh}\" . {}", mac_of(&l["x"], "eth0"))),
        "{table}"
    );
    // Rebuilt from the store after someone deleted it.
    sh_ok(&[
        "ip", "netns", "exec", &l.w.node, "nft", "delete", "table", "bridge", "knit",
    ]);
    l.w.ok(&["reconcile"]);
    let rebuilt = l.w.nft_bridge_table();
    assert!(rebuilt.contains(&format!("\"{xh}\" . {x4}")), "{rebuilt}");
    assert!(
        rebuilt.contains("hook prerouting priority dstnat"),
        "{rebuilt}"
    );
    // Y spoofing X is dropped again.
    sandbox_ip(
        &l["y"],
        &["addr", "add", &format!("{x4}/24"), "dev", "eth0"],
    );
    let t4 = l.w.ip_of("n", &l["t"], 4);
    assert!(!udp_arrives(
        &l["t"],
        format!("{t4}:80").parse().unwrap(),
        &l["y"],
        x4.parse().unwrap()
    ));
    // The last detach and network rm leave the table without elements.
    for s in [&l["x"], &l["y"], &l["t"]] {
        l.w.ok(&["detach", "n", s]);
    }
    l.w.ok(&["network", "rm", "n"]);
    let left = l.w.nft_bridge_table();
    assert!(left.contains("set as_ports {"), "{left}");
    assert!(!left.contains("elements"), "{left}");
}

#[test]
fn duplicate_macs_are_refused() {
    let mut w = World::new();
    w.ok(&["network", "create", "n", "--subnet", "10.73.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "n", &a, "--mac", "02:00:00:00:73:01"]);
    let links = w.knit_links();
    let e = w.fail(&["attach", "n", &b, "--mac", "02:00:00:00:73:01"]);
    assert_eq!(
        e.trim(),
        format!(
            "knit: error: mac 02:00:00:00:73:01 is already used on network \"n\" by sandbox \"{a}\""
        )
    );
    let bridge = w.json(&["network", "inspect", "n"])["network"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    let bridge_mac = mac_of(&w.node, &bridge);
    let e = w.fail(&["attach", "n", &b, "--mac", &bridge_mac]);
    assert!(
        e.contains(&format!(
            "mac {bridge_mac} is already used on network \"n\" by its bridge"
        )),
        "{e}"
    );
    // Nothing of the refused attempts is left; A is still reachable.
    assert_eq!(w.knit_links(), links);
    assert!(ping(&a, "10.73.0.1"));
    // The same through CNI (`MAC=` and the `mac` capability): code 100, nothing left.
    let mut conf = knit_plugins("cni-sp0", "10.74.0.0/24")[0].clone();
    conf["name"] = json!("sp");
    conf["cniVersion"] = json!("1.0.0");
    let c1 = w.sandbox("c1");
    let c2 = w.sandbox("c2");
    let add = |ns: &str, id: &str, args: &str, conf: &serde_json::Value| {
        let path = format!("/run/netns/{ns}");
        w.cni_exec(
            "knit",
            conf,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", args),
            ],
        )
    };
    let o = add(&c1, "m1", "IgnoreUnknown=1;MAC=02:00:00:00:74:01", &conf);
    assert_eq!(o.code, 0, "{}", o.stdout);
    let mut conf2 = conf.clone();
    conf2["runtimeConfig"] = json!({"mac": "02:00:00:00:74:01"});
    let o = add(&c2, "m2", "IgnoreUnknown=1", &conf2);
    assert_eq!(o.err_code(), 100, "{}", o.stdout);
    assert!(
        o.json()["msg"]
            .as_str()
            .unwrap()
            .contains("mac 02:00:00:00:74:01 is already used on network \"sp\""),
        "{}",
        o.stdout
    );
    assert!(
        sh(&["ip", "-n", &c2, "link", "show", "eth0"])
            .stdout
            .is_empty()
    );
}
