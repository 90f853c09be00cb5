//! `knit daemon` answers only sandboxes: hosts on the node's uplink (also with a spoofed
//! sandbox source address) and the node itself are refused and never forwarded, PTRs of
//! other knit networks stay on the node, and one sandbox hogging TCP connections does not
//! lock the others out. Real namespaces, real packets, a counting upstream outside.

mod common;
use common::dns_client::*;
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The reverse (in-addr.arpa / ip6.arpa) name of an address.
fn arpa(ip: &str) -> String {
    Name::from(ip.parse::<IpAddr>().unwrap()).to_ascii()
}

/// A query that got no answer, or REFUSED with no data.
fn assert_refused(r: Result<Message, String>, what: &str) {
    if let Ok(m) = r {
        assert_eq!(m.response_code(), ResponseCode::Refused, "{what}: {m:?}");
        assert!(m.answers().is_empty(), "{what}: {m:?}");
    }
}

fn wait_ready(ns: &str, gw: &str) {
    eventually("daemon answering", || {
        ask(ns, gw, "knit-ready-probe.", RecordType::A).is_ok()
    });
}

fn metrics(w: &World) -> String {
    let addr: SocketAddr = "127.0.0.1:9153".parse().unwrap();
    in_ns(&w.node, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

fn refused_metric(w: &World, reason: &str) -> u64 {
    let text = metrics(w);
    let key = format!("knit_dns_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing: {text}"))
}

#[test]
fn hosts_on_the_uplink_and_the_node_are_refused_and_never_forwarded() {
    let mut w = World::new().with_outside();
    let out = w.outside().to_string();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {OUTSIDE4}\n")).unwrap();
    let up = Upstream::start(&out, dns_upstream::EXAMPLE);
    w.ok(&[
        "network",
        "create",
        "front",
        "--subnet",
        "10.91.0.0/24",
        "--subnet",
        "fd91::/64",
    ]);
    let web = w.sandbox("web");
    w.ok(&["attach", "front", &web]);
    let _d = start_daemon(&w, resolv.to_str().unwrap(), Some("127.0.0.1:9153"));
    wait_ready(&web, "10.91.0.1");
    // (The readiness probe is an external name: forwarded.)
    let probes = up.asked();
    let web4 = w.ip_of("front", &web, 4);
    let web6 = w.ip_of("front", &web, 6);
    // The sandbox is served: its name, its PTR, forwarding, IPv6, TCP.
    assert_eq!(
        addrs(&ask(&web, "10.91.0.1", &format!("{web}."), RecordType::A).unwrap()),
        vec![web4.clone()]
    );
    assert_eq!(
        addrs(&ask(&web, "10.91.0.1", &arpa(&web4), RecordType::PTR).unwrap()),
        vec![format!("{web}.")]
    );
    assert_eq!(
        addrs(&ask(&web, "10.91.0.1", "example.com.", RecordType::A).unwrap()),
        vec!["203.0.113.7".to_string()]
    );
    assert_eq!(up.asked(), probes + 1);
    eventually("daemon answering on IPv6", || {
        ask(&web, "fd91::1", "knit-ready-probe.", RecordType::A).is_ok()
    });
    assert_eq!(
        addrs(&ask(&web, "fd91::1", &format!("{web}."), RecordType::AAAA).unwrap()),
        vec![web6.clone()]
    );
    assert_eq!(
        addrs(&ask_tcp(&web, "10.91.0.1", &format!("{web}."), RecordType::A).unwrap()),
        vec![web4.clone()]
    );
    let asked = up.asked();

    // A host on the node's LAN that routes to the gateway addresses.
    sh_ok(&[
        "ip",
        "-n",
        &out,
        "route",
        "add",
        "10.91.0.0/24",
        "via",
        NODE_UPLINK4,
    ]);
    sh_ok(&[
        "ip",
        "-n",
        &out,
        "-6",
        "route",
        "add",
        "fd91::/64",
        "via",
        NODE_UPLINK6,
    ]);
    assert!(
        ping(&out, "10.91.0.1"),
        "the outside host reaches the gateway"
    );
    let before = refused_metric(&w, "wrong_link");
    for (gw, name, t) in [
        ("10.91.0.1", format!("{web}."), RecordType::A),
        ("10.91.0.1", arpa(&web4), RecordType::PTR),
        ("10.91.0.1", "example.com.".to_string(), RecordType::A),
        ("10.91.0.1", "leak.example.".to_string(), RecordType::A),
        ("fd91::1", format!("{web}."), RecordType::AAAA),
        ("fd91::1", arpa(&web6), RecordType::PTR),
        ("fd91::1", "example.com.".to_string(), RecordType::A),
    ] {
        assert_refused(
            ask(&out, gw, &name, t),
            &format!("outside, udp {gw} {name}"),
        );
        assert_refused(
            ask_tcp(&out, gw, &name, t),
            &format!("outside, tcp {gw} {name}"),
        );
    }
    // The node itself (source: its own address, arriving on lo) is not a sandbox either.
    assert_refused(
        ask(&w.node, "10.91.0.1", "example.com.", RecordType::A),
        "node",
    );
    // UDP from outside was refused for the link it came in on, TCP for its address.
    assert!(
        refused_metric(&w, "wrong_link") >= before + 7,
        "{}",
        metrics(&w)
    );
    assert!(refused_metric(&w, "not_attached") >= 7, "{}", metrics(&w));
    assert_eq!(up.asked(), asked, "nothing from outside was forwarded");
    let spoof_before = refused_metric(&w, "wrong_link");
    // The LAN host spoofing the sandbox's source address: arrives on the uplink, not the
    // bridge. (The reply, if any, would go to the sandbox: the upstream and the metrics
    // tell whether it was served.) Reverse-path filtering off in the node, so the daemon
    // does see it.
    for dev in ["all", "default", "uplink"] {
        sh_ok(&[
            "ip",
            "netns",
            "exec",
            &w.node,
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{dev}.rp_filter=0"),
        ]);
    }
    sh_ok(&[
        "ip",
        "-n",
        &out,
        "addr",
        "add",
        &format!("{web4}/32"),
        "dev",
        "wan",
    ]);
    for i in 0..3 {
        let _ = ask_from(
            &out,
            Some(web4.parse().unwrap()),
            "10.91.0.1".parse().unwrap(),
            &format!("spoof{i}.example."),
            RecordType::A,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.asked(), asked, "nothing from outside was forwarded");
    // All 3 spoofed queries were seen, and refused for the link they came in on.
    assert_eq!(
        refused_metric(&w, "wrong_link"),
        spoof_before + 3,
        "{}",
        metrics(&w)
    );
    // The sandbox is still served.
    assert_eq!(
        addrs(&ask(&web, "10.91.0.1", "example.com.", RecordType::A).unwrap()),
        vec!["203.0.113.7".to_string()]
    );
    assert_eq!(up.asked(), asked + 1);
    drop(up);
    let _ = std::fs::remove_file(&resolv);
    w.ok(&["sandbox", "rm", &web]);
}

#[test]
fn ptr_for_another_knit_network_is_not_forwarded() {
    let mut w = World::new().with_outside();
    let out = w.outside().to_string();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {OUTSIDE4}\n")).unwrap();
    let up = Upstream::start(&out, dns_upstream::EXAMPLE);
    w.ok(&[
        "network",
        "create",
        "na",
        "--subnet",
        "10.92.0.0/24",
        "--subnet",
        "fd92::/64",
    ]);
    w.ok(&[
        "network",
        "create",
        "nb",
        "--subnet",
        "10.93.0.0/24",
        "--subnet",
        "fd93::/64",
    ]);
    w.ok(&[
        "network",
        "create",
        "nc",
        "--subnet",
        "10.94.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    let c = w.sandbox("c");
    w.ok(&["attach", "na", &a]);
    w.ok(&["attach", "nb", &b]);
    w.ok(&["attach", "nc", &c]);
    let _d = start_daemon(&w, resolv.to_str().unwrap(), Some("127.0.0.1:9153"));
    wait_ready(&a, "10.92.0.1");
    let probes = up.asked();
    let a4 = w.ip_of("na", &a, 4);
    let b4 = w.ip_of("nb", &b, 4);
    let b6 = w.ip_of("nb", &b, 6);
    let c4 = w.ip_of("nc", &c, 4);
    // Its own network's PTR is answered.
    assert_eq!(
        addrs(&ask(&a, "10.92.0.1", &arpa(&a4), RecordType::PTR).unwrap()),
        vec![format!("{a}.")]
    );
    for (what, ip) in [
        ("b on another network", b4.as_str()),
        ("b's IPv6 address", b6.as_str()),
        ("the other network's gateway", "10.93.0.1"),
        ("an unassigned address of the other network", "10.93.0.200"),
        ("an unassigned address of its own network", "10.92.0.200"),
        ("a sandbox of a network without DNS", c4.as_str()),
    ] {
        let r = ask(&a, "10.92.0.1", &arpa(ip), RecordType::PTR).unwrap();
        assert!(
            matches!(
                r.response_code(),
                ResponseCode::NXDomain | ResponseCode::Refused
            ),
            "{what}: {r:?}"
        );
        assert!(r.answers().is_empty(), "{what}: {r:?}");
    }
    // A prefix inside a knit subnet stays local too.
    let r = ask(&a, "10.92.0.1", "0.93.10.in-addr.arpa.", RecordType::PTR).unwrap();
    assert!(r.answers().is_empty());
    assert_eq!(
        up.asked(),
        probes,
        "no knit reverse name reached the upstream"
    );
    // Other reverse names are still forwarded.
    let r = ask(&a, "10.92.0.1", &arpa("203.0.113.7"), RecordType::PTR).unwrap();
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert_eq!(up.asked(), probes + 1);
    drop(up);
    let _ = std::fs::remove_file(&resolv);
    for s in [&a, &b, &c] {
        w.ok(&["sandbox", "rm", s]);
    }
}

#[test]
fn a_sandbox_holding_600_tcp_connections_does_not_lock_others_out() {
    let mut w = World::new();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    w.ok(&["network", "create", "tc", "--subnet", "10.95.0.0/24"]);
    let hog = w.sandbox("hog");
    let ok = w.sandbox("ok");
    w.ok(&["attach", "tc", &hog]);
    w.ok(&["attach", "tc", &ok]);
    let _d = start_daemon(&w, resolv.to_str().unwrap(), Some("127.0.0.1:9153"));
    wait_ready(&ok, "10.95.0.1");
    // Room for 600 sockets in this process (other tests run beside this one).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(8192).max(lim.rlim_cur);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let server: SocketAddr = "10.95.0.1:53".parse().unwrap();
    let held: Vec<TcpStream> = in_ns(&hog, move || {
        (0..600)
            .filter_map(|_| TcpStream::connect_timeout(&server, Duration::from_secs(1)).ok())
            .collect()
    });
    assert!(held.len() >= 500, "opened {}", held.len());
    std::thread::sleep(Duration::from_millis(200));
    let name = format!("{hog}.");
    for _ in 0..3 {
        let t = Instant::now();
        let r = ask_tcp(&ok, "10.95.0.1", &name, RecordType::A)
            .expect("another sandbox's TCP query is answered");
        assert_eq!(addrs(&r), vec![w.ip_of("tc", &hog, 4)]);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}",
            t.elapsed()
        );
    }
    assert!(refused_metric(&w, "client_tcp_cap") > 0, "{}", metrics(&w));
    // UDP is unaffected for the hog itself.
    assert_eq!(
        addrs(&ask(&hog, "10.95.0.1", &format!("{ok}."), RecordType::A).unwrap()).len(),
        1
    );
    drop(held);
    let _ = std::fs::remove_file(&resolv);
    for s in [&hog, &ok] {
        w.ok(&["sandbox", "rm", s]);
    }
}
