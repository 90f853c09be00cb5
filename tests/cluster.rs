//! Multi-host: a real etcd, node namespaces on two underlay segments joined by a router,
//! `knit daemon` on every node. Cross-node traffic routed (same segment) and over VXLAN
//! (across the router), MTU and bulk TCP, leave and death, etcd outages, daemon restarts,
//! spoofed VXLAN, racing joins, bad input.

mod common;
use common::cluster::Cluster;
use common::*;
use std::time::{Duration, Instant};

/// a, b on segment 0; c, d on segment 1; network `pods` (dual-stack); daemons running; a
/// sandbox `s` on every node.
fn four_nodes(ttl: &str) -> (Cluster, Vec<String>) {
    four_nodes_and(ttl, &[])
}

/// The same with `spare` nodes on segment 0 that have not joined.
fn four_nodes_and(ttl: &str, spare: &[&'static str]) -> (Cluster, Vec<String>) {
    let mut seg0 = vec!["a", "b"];
    seg0.extend_from_slice(spare);
    let mut c = Cluster::new(&[&seg0, &["c", "d"]]);
    for n in ["a", "b", "c", "d"] {
        c.join(n, &["--lease-ttl", ttl]);
    }
    c.node("a").w.ok(&[
        "network",
        "create",
        "pods",
        "--scope",
        "cluster",
        "--subnet",
        "10.245.0.0/16",
        "--subnet",
        "fd45::/48",
    ]);
    for n in ["a", "b", "c", "d"] {
        c.start_daemon(n);
    }
    for n in ["a", "b", "c", "d"] {
        c.wait_programmed(n, 4, Duration::from_secs(10));
    }
    let sandboxes = ["a", "b", "c", "d"]
        .iter()
        .map(|n| c.sandbox(n, "s", "pods"))
        .collect();
    (c, sandboxes)
}

fn addr(c: &Cluster, node: &str, ns: &str, fam: u8) -> String {
    c.node(node).w.ip_of("pods", ns, fam)
}

#[test]
fn cross_node_traffic_routed_and_over_vxlan() {
    let (c, s) = four_nodes("15");
    let path = |n: &str| c.peer("a", n)["path"].as_str().unwrap_or("").to_string();
    assert_eq!(path("b"), "routed");
    assert_eq!(path("c"), "vxlan");
    // `inspect` of a sandbox on the cluster network shows the peers too.
    let i = c.node("a").w.json(&["inspect", &s[0]]);
    let peers = i["cluster_peers"]
        .as_array()
        .expect("cluster peers in inspect");
    assert_eq!(peers.len(), 4, "{i}");
    assert!(
        peers
            .iter()
            .all(|p| p["programmed"] == true && p["lease_left"].as_i64().is_some())
    );
    // Every pair, both families (IPv6 blocks cross the IPv4 underlay over VXLAN).
    let nodes = ["a", "b", "c", "d"];
    for (i, from) in nodes.iter().enumerate() {
        for (j, to) in nodes.iter().enumerate() {
            if i != j {
                let ip4 = addr(&c, to, &s[j], 4);
                assert!(ping(&s[i], &ip4), "{from} -> {to} {ip4}");
            }
        }
    }
    let c6 = addr(&c, "c", &s[2], 6);
    assert!(ping(&s[0], &c6), "a -> c over IPv6");
    // TCP and UDP across both paths.
    for (j, to) in [(1, "b"), (2, "c")] {
        let ip = addr(&c, to, &s[j], 4);
        let _t = echo_server(&s[j], "0.0.0.0:7000", to);
        let (mut conn, _) = tcp_open(&s[0], &format!("{ip}:7000"));
        assert_eq!(tcp_echo(&mut conn, "hello").unwrap(), "hello");
        let _u = udp_server(&s[j], "0.0.0.0:7001", to);
        // Not masqueraded: the peer sees the sandbox's own address.
        let a4 = addr(&c, "a", &s[0], 4);
        assert_eq!(
            udp_get(&s[0], &format!("{ip}:7001")).unwrap(),
            format!("{to} saw {a4}")
        );
    }
    // MTU: sandboxes on the cluster network got the VXLAN MTU; a 1400-byte payload with
    // DF set crosses the tunnel; bulk TCP crosses at full size (no checksum stall).
    let link = sh_ok(&["ip", "netns", "exec", &s[0], "ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    let c4 = addr(&c, "c", &s[2], 4);
    let df = sh(&[
        "ip", "netns", "exec", &s[0], "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1400", &c4,
    ]);
    assert!(
        df.status.success(),
        "{}",
        String::from_utf8_lossy(&df.stdout)
    );
    for (j, to) in [(1, "b"), (2, "c")] {
        let ip = addr(&c, to, &s[j], 4);
        let got = bulk_tcp(&s[0], &s[j], &ip, 64 << 20);
        assert_eq!(got, 64 << 20, "bulk TCP to {to}");
    }
}

/// Sends `bytes` from `from` to a sink in `to` at `ip`, within 20 s; returns what arrived.
fn bulk_tcp(from: &str, to: &str, ip: &str, bytes: usize) -> usize {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let to = to.to_string();
    std::thread::spawn(move || {
        in_ns(&to, move || {
            let l = std::net::TcpListener::bind("0.0.0.0:7100").unwrap();
            tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k;
            }
            n
        })
    });
    rx.recv().unwrap();
    let ip = ip.to_string();
    let t0 = Instant::now();
    let sent = in_ns(from, move || {
        let mut s = std::net::TcpStream::connect((ip.as_str(), 7100)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![7u8; 1 << 16];
        let mut n = 0;
        while n < bytes {
            s.write_all(&chunk).unwrap();
            n += chunk.len();
        }
        n
    });
    assert!(t0.elapsed() < Duration::from_secs(20));
    sent
}

#[test]
fn names_and_policy_labels_across_nodes() {
    use common::dns_client::*;
    use hickory_proto::rr::RecordType;
    let (mut c, s) = four_nodes("15");
    let web = c.sandbox_with(
        "c",
        "web",
        "pods",
        &["--label", "app=web", "--alias", "www"],
    );
    let cli = c.sandbox_with("d", "cli", "pods", &["--label", "role=client"]);
    let web4 = c.node("c").w.ip_of("pods", &web, 4);
    let cli4 = c.node("d").w.ip_of("pods", &cli, 4);
    // a's sandbox resolves c's by name and alias, through a's own gateway.
    let gw = "10.245.0.1";
    let name = format!("{web}.");
    eventually("c's sandbox known on a", || {
        ask(&s[0], gw, &name, RecordType::A).is_ok_and(|m| addrs(&m) == vec![web4.clone()])
    });
    assert_eq!(
        addrs(&ask(&s[0], gw, "www.", RecordType::A).unwrap()),
        vec![web4.clone()]
    );
    // Policy on a by label: only d's client (role=client) may reach a's server.
    let srv = c.sandbox_with("a", "srv", "pods", &["--label", "app=srv"]);
    let _t = tcp_server(&srv, "0.0.0.0:8080", "srv");
    let srv4 = c.node("a").w.ip_of("pods", &srv, 4);
    let a = &c.node("a").w;
    a.ok(&["policy", "default", "pods", "deny"]);
    a.ok(&[
        "policy",
        "allow",
        "pods",
        "--from",
        "role=client",
        "--to",
        "app=srv",
        "--port",
        "8080",
    ]);
    let target = format!("{srv4}:8080");
    assert!(
        tcp_get(&cli, &target).is_ok(),
        "d's client {cli4} allowed by label"
    );
    assert!(tcp_get(&s[2], &target).is_err(), "c's other sandbox denied");
    // A client attached later on b is allowed as soon as it is known.
    let late = c.sandbox_with("b", "late", "pods", &["--label", "role=client"]);
    eventually("b's late client allowed on a", || {
        tcp_get(&late, &target).is_ok()
    });
    let late4 = c.node("b").w.ip_of("pods", &late, 4);
    assert!(
        c.node("a")
            .w
            .nft_table()
            .contains(&format!("{late4} . {srv4}"))
    );
    // And detached there: its address leaves a's policy sets.
    c.node("b").w.ok(&["detach", "pods", &late]);
    eventually("its address gone from a's sets", || {
        !c.node("a").w.nft_table().contains(&format!("{late4} . "))
    });
}

#[test]
fn a_cluster_service_reaches_backends_on_every_node() {
    let (c, s) = four_nodes("15");
    let names = ["b", "c", "d"];
    let _servers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| tcp_server(&s[i + 1], "0.0.0.0:8080", n))
        .collect();
    let mut args = vec!["service", "create", "web", "--vip", "10.96.7.7:80"];
    let backends: Vec<String> = s[1..].iter().map(|ns| format!("{ns}:8080")).collect();
    for b in &backends {
        args.extend(["--backend", b.as_str()]);
    }
    // a learns of the other nodes' sandboxes within moments of their attach.
    eventually("the service created on a", || {
        c.node("a").w.run(&args).status.success()
    });
    // From a sandbox and from the node itself, on every node: all three backends answer.
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        for from in [s[i].clone(), c.node(n).w.node.clone()] {
            let mut seen = std::collections::BTreeSet::new();
            let t0 = Instant::now();
            while seen.len() < 3 {
                if let Ok(who) = tcp_get(&from, "10.96.7.7:80") {
                    seen.insert(who);
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "{n} ({from}) saw only {seen:?}"
                );
            }
        }
    }
    // Removed on b: gone everywhere.
    c.node("b").w.ok(&["service", "rm", "web"]);
    for n in ["a", "c", "d"] {
        eventually("the service gone", || {
            !c.node(n).w.ok(&["service", "ls"]).contains("web")
        });
    }
    assert!(tcp_get(&s[0], "10.96.7.7:80").is_err());
    // The network cannot go while other nodes have sandboxes on it.
    c.node("a").w.ok(&["detach", "pods", &s[0]]);
    let e = c.node("a").w.fail(&["network", "rm", "pods"]);
    assert!(e.contains("on other nodes"), "{e}");
}

#[test]
fn leave_removes_a_node_at_once_and_death_within_the_ttl() {
    let (mut c, s) = four_nodes_and("5", &["e", "f"]);
    let d_block = addr(&c, "d", &s[3], 4);
    let c_ip = addr(&c, "c", &s[2], 4);
    // d leaves: it must detach first, then its routes are gone everywhere at once.
    let e = c.node("d").w.fail(&["node", "leave"]);
    assert!(e.contains("detach them first"), "{e}");
    c.node("d").w.ok(&["detach", "pods", &s[3]]);
    c.stop_daemon("d");
    c.node("d").w.ok(&["node", "leave"]);
    c.wait_programmed("a", 3, Duration::from_secs(3));
    let prefix: String = d_block.rsplit_once('.').unwrap().0.to_string();
    assert!(
        !c.programming("a").contains(&prefix),
        "{}",
        c.programming("a")
    );
    // c dies: its daemon killed, its namespace gone; peers drop it within the lease TTL.
    c.stop_daemon("c");
    let t0 = Instant::now();
    sh_ok(&["ip", "netns", "del", &c.node("c").w.node]);
    // Until its lease expires, c's block stays c's: a node joining now gets another (d's,
    // freed by its leave).
    let block_of = |c: &Cluster, n: &str| -> String {
        c.peer("a", n)["blocks"][0]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let c_block = block_of(&c, "c");
    // (e runs no daemon: a long lease keeps its block for the rest of the test.)
    c.join("e", &["--lease-ttl", "60"]);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "e joined before c's lease ran out"
    );
    let e_block = block_of(&c, "e");
    assert_ne!(
        e_block, c_block,
        "c's block was handed out while c's lease held it"
    );
    c.wait_programmed("a", 3, Duration::from_secs(8));
    let took = t0.elapsed();
    assert!(took <= Duration::from_secs(7), "removed after {took:?}");
    assert!(!ping(&s[0], &c_ip));
    assert!(
        ping(&s[0], &addr(&c, "b", &s[1], 4)),
        "the others keep working"
    );
    // Expired: the block is free again.
    c.join("f", &["--lease-ttl", "5"]);
    assert_eq!(block_of(&c, "f"), c_block);
}

#[test]
fn etcd_down_disturbs_no_traffic_and_a_join_right_after_it_returns_works() {
    let mut c = Cluster::new(&[&["a"], &["b"], &["e"]]);
    for n in ["a", "b"] {
        c.join(n, &["--lease-ttl", "15"]);
    }
    c.node("a").w.ok(&[
        "network",
        "create",
        "pods",
        "--scope",
        "cluster",
        "--subnet",
        "10.246.0.0/16",
    ]);
    c.start_daemon("a");
    c.start_daemon("b");
    c.wait_programmed("a", 2, Duration::from_secs(10));
    let sa = c.sandbox("a", "s", "pods");
    let sb = c.sandbox("b", "s", "pods");
    let b4 = c.node("b").w.ip_of("pods", &sb, 4);
    let before = c.programming("a");
    let _echo = echo_server(&sb, "0.0.0.0:7000", "b");
    let (mut conn, _) = tcp_open(&sa, &format!("{b4}:7000"));
    // A ping every 100 ms for 13 s while etcd is gone for 10 s of it.
    let pinger = {
        let (sa, b4) = (sa.clone(), b4.clone());
        std::thread::spawn(move || {
            sh(&[
                "ip", "netns", "exec", &sa, "ping", "-i", "0.1", "-c", "130", "-W", "1", &b4,
            ])
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    c.stop_etcd();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(tcp_echo(&mut conn, "still").unwrap(), "still");
    }
    c.start_etcd();
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("130 received"), "{text}");
    assert_eq!(
        c.programming("a"),
        before,
        "nothing changed while etcd was down"
    );
    // The daemons say so and reconnect; a node joins right away.
    eventually("etcd errors counted", || {
        c.daemon_log("a").contains("retrying")
    });
    c.join("e", &["--lease-ttl", "15"]);
    c.start_daemon("e");
    c.wait_programmed("a", 3, Duration::from_secs(15));
    let se = c.sandbox("e", "s", "pods");
    assert!(ping(&se, &b4));
    assert_eq!(tcp_echo(&mut conn, "after").unwrap(), "after");
}

#[test]
fn a_daemon_restart_changes_nothing() {
    let (mut c, _s) = four_nodes("15");
    let before = c.programming("a");
    assert!(
        before.contains("knvx1 onlink") && before.contains("dst 192.168.81"),
        "{before}"
    );
    c.stop_daemon("a");
    c.start_daemon("a");
    eventually("a back in sync", || c.daemon_log("a").contains("in sync"));
    assert_eq!(c.programming("a"), before);
    let log = c.daemon_log("a");
    assert!(
        !log.contains("entries added"),
        "a restart re-added entries: {log}"
    );
}

#[test]
fn vxlan_only_from_cluster_members() {
    let (c, s) = four_nodes("15");
    // An inner UDP datagram for a's sandbox, in a VXLAN frame to a's underlay port,
    // sent from a member's underlay (c: accepted) and from a non-member (the fabric
    // router: dropped).
    let a4 = addr(&c, "a", &s[0], 4);
    let c4 = addr(&c, "c", &s[2], 4);
    let mac = |n: &str| {
        c.peer("c", n)["vtep_macs"][0]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let (a_mac, c_mac) = (mac("a"), mac("c"));
    let send = |from_ns: &str| {
        let script = format!(
            r#"
import socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton("{c4}"), socket.inet_aton("{a4}")
payload = b"spoof"
udp = struct.pack("!HHHH", 40000, 7200, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex("{dst}".replace(":", "")) + bytes.fromhex("{srcmac}".replace(":", "")) + b"\x08\x00"
vx = struct.pack("!II", 0x08000000, 1 << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(vx + eth + ip + udp, ("{under}", 4789))
"#,
            dst = a_mac,
            srcmac = c_mac,
            under = c.node("a").ip,
        );
        sh_ok(&["ip", "netns", "exec", from_ns, "python3", "-c", &script]);
    };
    let recv = {
        let ns = s[0].clone();
        move || {
            in_ns(&ns, || {
                let u = std::net::UdpSocket::bind("0.0.0.0:7200").unwrap();
                u.set_read_timeout(Some(Duration::from_millis(800)))
                    .unwrap();
                let mut b = [0u8; 64];
                u.recv_from(&mut b).is_ok()
            })
        }
    };
    let got_from_fab = {
        let r = std::thread::spawn(recv.clone());
        std::thread::sleep(Duration::from_millis(200));
        send(&c.fab);
        r.join().unwrap()
    };
    assert!(
        !got_from_fab,
        "a VXLAN frame from a non-member reached the sandbox"
    );
    let got_from_member = {
        let r = std::thread::spawn(recv);
        std::thread::sleep(Duration::from_millis(200));
        send(&c.node("c").w.node);
        r.join().unwrap()
    };
    assert!(
        got_from_member,
        "the same frame from a member must arrive (test check)"
    );
}

#[test]
fn racing_nodes_get_distinct_blocks_and_bad_input_leaves_nothing() {
    let c = Cluster::new(&[&["a", "b", "x"]]);
    // Unreachable etcd: a clear error, no membership, nothing in the kernel.
    let e = c.node("x").w.fail(&[
        "node",
        "join",
        "--etcd",
        "http://192.168.80.1:2999",
        "--name",
        "x",
        "--underlay",
        "ul0",
    ]);
    assert!(e.contains("etcd http://192.168.80.1:2999"), "{e}");
    let e = c.node("x").w.fail(&["node", "ls"]);
    assert!(e.contains("not in a cluster"), "{e}");
    c.join("a", &[]);
    let e = c
        .node("a")
        .w
        .fail(&["node", "join", "--etcd", &c.etcd_url, "--name", "a2"]);
    assert!(e.contains("already joined"), "{e}");
    let e = c.node("x").w.fail(&[
        "node",
        "join",
        "--etcd",
        &c.etcd_url,
        "--name",
        "a",
        "--underlay",
        "ul0",
    ]);
    assert!(e.contains("already in the cluster"), "{e}");
    let e = c.node("a").w.fail(&[
        "network",
        "create",
        "big",
        "--scope",
        "cluster",
        "--subnet",
        "10.247.0.0/24",
        "--node-prefix",
        "16",
    ]);
    assert!(e.contains("node-prefix"), "{e}");
    // Two blocks only: a holds one; b and x race for the other, exactly one wins.
    c.node("a").w.ok(&[
        "network",
        "create",
        "tiny",
        "--scope",
        "cluster",
        "--subnet",
        "10.247.0.0/23",
    ]);
    let (rb, rx) = std::thread::scope(|sc| {
        let join = |n: &'static str| {
            let c = &c;
            sc.spawn(move || {
                c.node(n).w.run(&[
                    "node",
                    "join",
                    "--etcd",
                    &c.etcd_url,
                    "--name",
                    n,
                    "--underlay",
                    "ul0",
                ])
            })
        };
        let (b, x) = (join("b"), join("x"));
        (b.join().unwrap(), x.join().unwrap())
    });
    assert!(
        rb.status.success() != rx.status.success(),
        "exactly one wins: b {:?} x {:?}",
        String::from_utf8_lossy(&rb.stderr),
        String::from_utf8_lossy(&rx.stderr)
    );
    let (winner, loser) = if rb.status.success() {
        ("b", rx)
    } else {
        ("x", rb)
    };
    let err = String::from_utf8_lossy(&loser.stderr).to_string();
    assert!(err.contains("no free address"), "{err}");
    // The loser left nothing: not a member, no key (a sees a and the winner).
    let other = if winner == "b" { "x" } else { "b" };
    assert!(
        c.node(other)
            .w
            .fail(&["node", "ls"])
            .contains("not in a cluster")
    );
    let v = c.node("a").w.json(&["node", "ls"]);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", winner], "{v}");
    let blocks: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["blocks"][0].as_str().unwrap().to_string())
        .collect();
    assert_ne!(blocks[0], blocks[1]);
}

#[test]
fn demo_cluster_proves_the_chapter_and_cleans_up() {
    let out = std::process::Command::new(KNIT)
        .args(["demo", "cluster"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "n1 -> n2 routed (same segment): ping",
        "n1 -> n3 over VXLAN (behind the router): ping",
        "reaches n1, n2 and n3",
        "resolves on n1",
        "n3's routes gone from n1",
    ] {
        assert!(
            text.lines().any(|l| l.contains("[ok]") && l.contains(step)),
            "{step}: {text}"
        );
    }
    assert!(!text.contains("FAILED"), "{text}");
    let tag = text
        .lines()
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_end_matches(','))
        .find(|w| w.starts_with("knitcl") && w.ends_with("-fab"))
        .map(|w| w.trim_end_matches("-fab").to_string())
        .expect("the demo names its namespaces");
    let left = sh_ok(&["ip", "netns", "list"]);
    assert!(!left.contains(&tag), "left behind: {left}");
    assert!(!std::path::Path::new(&format!("/tmp/{tag}-state")).exists());
}

#[test]
fn tls_to_etcd_with_a_client_certificate() {
    let mut c = Cluster::new(&[&["a", "b"]]);
    c.stop_etcd();
    let dir = c.node("a").w.state.with_extension("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let script = format!(
        r#"set -e; cd {d}
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=knit-test-ca 2>/dev/null
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
done
printf 'subjectAltName=IP:192.168.80.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 1 -extfile $who.ext 2>/dev/null
done"#
    );
    sh_ok(&["bash", "-c", &script]);
    let url = "https://192.168.80.1:2379";
    c.start_etcd_with(&[
        "--listen-client-urls".into(),
        "https://0.0.0.0:2379".into(),
        "--advertise-client-urls".into(),
        url.into(),
        "--cert-file".into(),
        format!("{d}/server.pem"),
        "--key-file".into(),
        format!("{d}/server.key"),
        "--trusted-ca-file".into(),
        format!("{d}/ca.pem"),
        "--client-cert-auth".into(),
    ]);
    let join = |n: &str, cert: bool| {
        let ca = format!("{d}/ca.pem");
        let (crt, key) = (format!("{d}/client.pem"), format!("{d}/client.key"));
        let mut args = vec![
            "node",
            "join",
            "--etcd",
            url,
            "--name",
            n,
            "--underlay",
            "ul0",
            "--etcd-ca",
            &ca,
        ];
        if cert {
            args.extend(["--etcd-cert", &crt, "--etcd-key", &key]);
        }
        c.node(n).w.run(&args)
    };
    // Without a client certificate etcd refuses: a clear error, no membership.
    let o = join("b", false);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("etcd https://192.168.80.1:2379"),
        "{:?} {e} {}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        c.node("b")
            .w
            .fail(&["node", "ls"])
            .contains("not in a cluster")
    );
    // With one, the node joins and works over TLS (and its daemon keeps it in).
    assert!(join("a", true).status.success());
    assert!(join("b", true).status.success());
    c.node("a").w.ok(&[
        "network",
        "create",
        "pods",
        "--scope",
        "cluster",
        "--subnet",
        "10.248.0.0/16",
    ]);
    c.start_daemon("a");
    c.start_daemon("b");
    c.wait_programmed("a", 2, Duration::from_secs(10));
    let e = c.node("a").w.fail(&[
        "node",
        "join",
        "--etcd",
        url,
        "--name",
        "z",
        "--etcd-cert",
        "/nonexistent",
    ]);
    assert!(e.contains("etcd-cert") && e.contains("--etcd-ca"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_whose_block_was_taken_while_it_was_gone_says_so() {
    let mut c = Cluster::new(&[&["a", "x"]]);
    c.join("a", &["--lease-ttl", "5"]);
    c.node("a").w.ok(&[
        "network",
        "create",
        "two",
        "--scope",
        "cluster",
        "--subnet",
        "10.249.0.0/23",
    ]);
    // a runs no daemon: its lease runs out, and x gets the block a's network sits on.
    std::thread::sleep(Duration::from_secs(7));
    c.join("x", &["--lease-ttl", "30"]);
    let v = c.node("x").w.json(&["node", "ls"]);
    let nodes = v.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    assert_eq!(nodes[0]["blocks"][0], "10.249.0.0/24", "{v}");
    // a's daemon comes back: a new lease, but not another block under its sandboxes.
    c.start_daemon("a");
    eventually("a reports the conflict", || {
        c.daemon_log("a").contains("is held by node \"x\"")
    });
    let v = c.node("x").w.json(&["node", "ls"]);
    let a = v.as_array().unwrap().iter().find(|p| p["name"] == "a");
    assert!(
        a.is_none_or(|a| a["blocks"].as_array().unwrap().is_empty()),
        "a took another block: {v}"
    );
}
