//! Stale flows: a UDP client that keeps one source port keeps its conntrack entry, and the
//! entry, not the nft maps, decides where its datagrams go. These tests change the backend
//! under such a client (detach/attach, re-attach with a new address, service backend
//! rm/add) and expect the very next datagrams from the same socket at the new backend;
//! and they read the node's conntrack table to see that detach removed the entries that
//! pointed at the detached address (and only those).

mod common;
use common::*;
use knit::conntrack::{self, Entry};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Runs knit, expects success and no warning (a failed conntrack flush only warns).
fn quiet_ok(w: &World, args: &[&str]) {
    let o = w.run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "knit {args:?} failed: {err}");
    assert!(!err.contains("warning"), "knit {args:?} warned: {err}");
}

/// A UDP socket created in `ns` (it stays there), so every datagram has one source port.
fn client(ns: &str) -> UdpSocket {
    in_ns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind client");
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s
    })
}

/// Sends from `s` to `to` until an answer comes (up to 3 tries); returns who answered.
fn ask(s: &UdpSocket, to: &str) -> Option<String> {
    let to: SocketAddr = to.parse().unwrap();
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        s.send_to(b"hi", to).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
            return answer.split_whitespace().next().map(str::to_string);
        }
    }
    None
}

/// One datagram without waiting for an answer (a client that keeps sending meanwhile).
fn fire(s: &UdpSocket, to: &str) {
    let _ = s.send_to(b"hi", to.parse::<SocketAddr>().unwrap());
    std::thread::sleep(Duration::from_millis(50));
}

/// The node's conntrack table, through knit's own dump.
fn table(w: &World) -> Vec<Entry> {
    in_ns(&w.node, || conntrack::dump().expect("conntrack dump"))
}

fn mentions(e: &Entry, ip: IpAddr) -> bool {
    [e.orig.src, e.orig.dst, e.reply.src, e.reply.dst].contains(&ip)
}

fn count(w: &World, ip: &str) -> usize {
    let ip: IpAddr = ip.parse().unwrap();
    table(w).iter().filter(|e| mentions(e, ip)).count()
}

/// `conntrack -L` in the node (None if the tool is not installed): a second opinion.
fn conntrack_tool(w: &World) -> Option<String> {
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &w.node, "conntrack", "-L", "-f", "ipv4"])
        .output()
        .ok()?;
    let o2 = std::process::Command::new("ip")
        .args(["netns", "exec", &w.node, "conntrack", "-L", "-f", "ipv6"])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o2.stdout))
}

/// Whether `conntrack -L` lists `ip` as a whole address (not as a prefix of another).
fn tool_mentions(listing: &str, ip: &str) -> bool {
    listing
        .split_whitespace()
        .any(|f| f.split_once('=').is_some_and(|(_, v)| v == ip))
}

#[test]
fn udp_flow_to_a_published_port_follows_detach_and_attach() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "n", "--subnet", "10.61.0.0/24"]);
    let s1 = w.sandbox("s1");
    let s2 = w.sandbox("s2");
    let c = w.sandbox("c");
    quiet_ok(&w, &["attach", "n", &c]);
    quiet_ok(&w, &["attach", "n", &s1, "--publish", "5353:53/udp"]);
    let _a = udp_server(&s1, "0.0.0.0:53", "s1");
    let _b = udp_server(&s2, "0.0.0.0:53", "s2");
    // A sandbox through the gateway (hairpin) and a host outside through the uplink, each
    // with one socket for the whole test.
    let gw = "10.61.0.1:5353";
    let up = format!("{NODE_UPLINK4}:5353");
    let from_c = client(&c);
    let from_out = client(w.outside());
    assert_eq!(ask(&from_c, gw).as_deref(), Some("s1"));
    assert_eq!(ask(&from_out, &up).as_deref(), Some("s1"));

    // The backend moves to another sandbox; the clients keep sending in between (nothing
    // serves the port then: those datagrams reach the node itself, un-NATed).
    quiet_ok(&w, &["detach", "n", &s1]);
    fire(&from_c, gw);
    fire(&from_out, &up);
    quiet_ok(&w, &["attach", "n", &s2, "--publish", "5353:53/udp"]);
    assert_eq!(ask(&from_c, gw).as_deref(), Some("s2"), "from a sandbox");
    assert_eq!(ask(&from_out, &up).as_deref(), Some("s2"), "from outside");

    // And back to s1, re-attached with a new address, without a pause in between.
    quiet_ok(&w, &["detach", "n", &s2]);
    quiet_ok(
        &w,
        &[
            "attach",
            "n",
            &s1,
            "--ip",
            "10.61.0.77",
            "--publish",
            "5353:53/udp",
        ],
    );
    assert_eq!(ask(&from_c, gw).as_deref(), Some("s1"));
    assert_eq!(ask(&from_out, &up).as_deref(), Some("s1"));
}

#[test]
fn udp_service_flow_follows_backend_replacement() {
    let mut w = World::new();
    w.ok(&["network", "create", "n", "--subnet", "10.62.0.0/24"]);
    let s1 = w.sandbox("s1");
    let s2 = w.sandbox("s2");
    let c = w.sandbox("c");
    for s in [&s1, &s2, &c] {
        quiet_ok(&w, &["attach", "n", s]);
    }
    let _a = udp_server(&s1, "0.0.0.0:53", "s1");
    let _b = udp_server(&s2, "0.0.0.0:53", "s2");
    let b1 = format!("{s1}:53");
    let b2 = format!("{s2}:53");
    quiet_ok(
        &w,
        &[
            "service",
            "create",
            "dns",
            "--vip",
            "10.96.0.53:53/udp",
            "--backend",
            &b1,
            "--node-port",
            "30053",
        ],
    );
    let vip = "10.96.0.53:53";
    let np = "10.62.0.1:30053";
    let from_c = client(&c);
    let via_np = client(&c);
    assert_eq!(ask(&from_c, vip).as_deref(), Some("s1"));
    assert_eq!(ask(&via_np, np).as_deref(), Some("s1"));

    // s1 is still up and serving: only its entry keeps the client there.
    quiet_ok(&w, &["service", "backend", "rm", "dns", &b1]);
    quiet_ok(&w, &["service", "backend", "add", "dns", &b2]);
    assert_eq!(ask(&from_c, vip).as_deref(), Some("s2"), "through the VIP");
    assert_eq!(
        ask(&via_np, np).as_deref(),
        Some("s2"),
        "through the node port"
    );

    // Adding a backend leaves existing flows where they are.
    quiet_ok(&w, &["service", "backend", "add", "dns", &b1]);
    for _ in 0..5 {
        assert_eq!(ask(&from_c, vip).as_deref(), Some("s2"));
    }

    // Removing the service removes its flows.
    let vip_ip: IpAddr = "10.96.0.53".parse().unwrap();
    assert!(table(&w).iter().any(|e| e.orig.dst == vip_ip));
    quiet_ok(&w, &["service", "rm", "dns"]);
    let left: Vec<Entry> = table(&w)
        .into_iter()
        .filter(|e| e.orig.dst == vip_ip || e.orig.dport == 30053)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn detach_removes_the_entries_of_the_detached_address_only() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "n",
        "--subnet",
        "10.63.0.0/24",
        "--subnet",
        "fd63::/64",
    ]);
    let s1 = w.sandbox("s1");
    let s2 = w.sandbox("s2");
    quiet_ok(&w, &["attach", "n", &s1, "--publish", "8053:53/udp"]);
    quiet_ok(&w, &["attach", "n", &s2, "--publish", "8054:53/udp"]);
    let _a = udp_server(&s1, "0.0.0.0:53", "s1");
    let _b = udp_server(&s2, "0.0.0.0:53", "s2");
    let _t = tcp_server(&s1, "0.0.0.0:80", "s1");
    let ip1 = w.ip_of("n", &s1, 4);
    let ip1v6 = w.ip_of("n", &s1, 6);
    let ip2 = w.ip_of("n", &s2, 4);
    // Flows to s1: UDP through its published port, TCP and ICMP from the node, ICMPv6;
    // and one UDP flow to s2 that must survive.
    let out = client(w.outside());
    assert_eq!(
        ask(&out, &format!("{NODE_UPLINK4}:8053")).as_deref(),
        Some("s1")
    );
    assert_eq!(
        ask(&out, &format!("{NODE_UPLINK4}:8054")).as_deref(),
        Some("s2")
    );
    assert!(tcp_get(&w.node, &format!("{ip1}:80")).is_ok());
    assert!(ping(&w.node, &ip1));
    assert!(ping(&w.node, &ip1v6));
    assert!(count(&w, &ip1) >= 3, "{:?}", table(&w));
    assert!(count(&w, &ip1v6) >= 1, "{:?}", table(&w));
    let to_s2 = count(&w, &ip2);
    assert!(to_s2 >= 1);
    if let Some(l) = conntrack_tool(&w) {
        assert!(tool_mentions(&l, &ip1), "conntrack -L misses {ip1}: {l}");
    }

    quiet_ok(&w, &["detach", "n", &s1]);
    assert_eq!(count(&w, &ip1), 0, "{:?}", table(&w));
    assert_eq!(count(&w, &ip1v6), 0, "{:?}", table(&w));
    assert_eq!(count(&w, &ip2), to_s2, "s2's flows are not touched");
    if let Some(l) = conntrack_tool(&w) {
        assert!(
            !tool_mentions(&l, &ip1),
            "conntrack -L still has {ip1}: {l}"
        );
        assert!(
            !tool_mentions(&l, &ip1v6),
            "conntrack -L still has {ip1v6}: {l}"
        );
        assert!(tool_mentions(&l, &ip2), "conntrack -L lost {ip2}: {l}");
    }
    // s2's flow still answers from the same socket.
    assert_eq!(
        ask(&out, &format!("{NODE_UPLINK4}:8054")).as_deref(),
        Some("s2")
    );
}

/// `knit inspect --flows`: the sandbox's connections from the node's conntrack, with the
/// NAT, TCP state and timeout, filtered by port and protocol.
#[test]
fn inspect_shows_a_sandboxs_flows() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "fl", "--subnet", "10.57.0.0/24"]);
    let a = w.sandbox("a");
    w.ok(&["attach", "fl", &a, "-p", "8080:80"]);
    let _srv = echo_server(&a, "0.0.0.0:80", "a");
    let (mut conn, hello) = tcp_open(w.outside(), &format!("{NODE_UPLINK4}:8080"));
    assert!(hello.starts_with("a saw"), "{hello}");
    assert_eq!(tcp_echo(&mut conn, "ping").unwrap(), "ping");
    let v = w.json(&["inspect", &a, "--flows"]);
    let flows = v["flows"].as_array().unwrap();
    let f = flows
        .iter()
        .find(|f| {
            f["original"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{NODE_UPLINK4}:8080"))
        })
        .unwrap_or_else(|| panic!("no flow to the published port: {flows:?}"));
    assert_eq!(f["proto"], "tcp");
    assert_eq!(f["nat"], "dnat");
    assert_eq!(f["state"], "ESTABLISHED");
    assert!(f["reply"].as_str().unwrap().starts_with("10.57.0."), "{f}");
    assert!(f["timeout_s"].as_u64().unwrap() > 0);
    let none = w.json(&["inspect", &a, "--flows", "--port", "9999"]);
    assert!(none["flows"].as_array().unwrap().is_empty());
    let none = w.json(&["inspect", &a, "--flows", "--proto", "udp"]);
    assert!(none["flows"].as_array().unwrap().is_empty());
    let text = w.ok(&["inspect", &a, "--flows"]);
    assert!(
        text.contains("flows (node conntrack)") && text.contains("[dnat] ESTABLISHED"),
        "{text}"
    );
    assert!(
        w.fail(&["inspect", &a, "--flows", "--proto", "gre"])
            .contains("--proto")
    );
    drop(conn);
}
