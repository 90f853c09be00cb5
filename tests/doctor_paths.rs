//! `knit doctor` on translated and outside paths: published ports (from a sandbox and from
//! outside), services, the node's own input hook, masquerade, neighbour entries, rp_filter,
//! DNS without a daemon and stale conntrack entries. Each case breaks the lab one way, checks
//! the named step and fix, and checks with real packets that the lab really is broken (and
//! works again once fixed).

mod common;
use common::*;

/// (exit status, the JSON diagnosis).
fn doctor(w: &World, src: &str, dst: &str) -> (i32, serde_json::Value) {
    w.json_status(&["doctor", src, dst])
}

fn healthy(w: &World, src: &str, dst: &str) -> serde_json::Value {
    let (code, v) = doctor(w, src, dst);
    assert_eq!(code, 0, "{src} -> {dst}: {v}");
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true)
    );
    v
}

/// Expects exit 2 with `step` the first broken one; gives its detail and fix.
fn broken(w: &World, src: &str, dst: &str, step: &str) -> (String, String) {
    let (code, v) = doctor(w, src, dst);
    assert_eq!(code, 2, "{src} -> {dst}: {v}");
    let s = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ok"] == false)
        .unwrap();
    assert_eq!(s["step"], step, "{v}");
    (
        s["detail"].as_str().unwrap().into(),
        s["fix"].as_str().unwrap_or_default().into(),
    )
}

/// Which server answered (`tcp_server` says "NAME saw CLIENT").
fn who(reply: Result<String, String>) -> String {
    let r = reply.unwrap_or_else(|e| panic!("no answer: {e}"));
    r.split(' ').next().unwrap_or_default().to_string()
}

fn nft_in(ns: &str, script: &str) {
    sh_ok(&["ip", "netns", "exec", ns, "nft", script]);
}

#[test]
fn published_ports_services_and_the_node_input_hook() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "pp",
        "--subnet",
        "10.66.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "pp", &a]);
    w.ok(&["attach", "pp", &b, "--publish", "8080:80"]);

    // Published, nobody listening behind it.
    let (detail, _) = broken(&w, &a, "node:8080", "listener");
    assert!(
        detail.contains(&format!("80/tcp in {b}")) && detail.contains("published as 8080"),
        "{detail}"
    );
    assert!(tcp_get(&a, "10.66.0.1:8080").is_err(), "refused indeed");
    let _srv = tcp_server(&b, "0.0.0.0:80", "b");
    let v = healthy(&w, &a, "node:8080");
    assert!(v["steps"].to_string().contains("published port"), "{v}");
    assert_eq!(who(tcp_get(&a, "10.66.0.1:8080")), "b", "hairpin works");
    // From outside, to the node's uplink address.
    let v = healthy(&w, OUTSIDE4, "node:8080");
    assert!(
        v["steps"].to_string().contains("firewall (prerouting)"),
        "{v}"
    );
    assert_eq!(
        who(tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080"))),
        "b"
    );

    // A service without backends refuses at once.
    w.ok(&["service", "create", "web", "--vip", "10.96.0.10:80"]);
    let (detail, fix) = broken(&w, &a, "web", "service");
    assert!(detail.contains("has no backends"), "{detail}");
    assert_eq!(fix, "knit service backend add web SANDBOX:PORT");
    assert!(tcp_get(&a, "10.96.0.10:80").is_err());
    w.ok(&["service", "backend", "add", "web", &format!("{b}:80")]);
    let v = healthy(&w, &a, "web");
    assert!(v["steps"].to_string().contains(&format!("{b} ")), "{v}");
    assert_eq!(who(tcp_get(&a, "10.96.0.10:80")), "b");
    healthy(&w, &a, "10.96.0.10:80");

    // The node's own listener behind a foreign input policy drop.
    let _node_srv = tcp_server(&w.node, "0.0.0.0:9000", "node");
    healthy(&w, &a, "node:9000");
    nft_in(&w.node, "add table ip filter");
    nft_in(
        &w.node,
        "add chain ip filter INPUT { type filter hook input priority 0; policy drop; }",
    );
    let (detail, fix) = broken(&w, &a, "node:9000", "firewall (input)");
    assert!(detail.contains("table ip filter, chain INPUT"), "{detail}");
    assert!(fix.contains("iptables -I INPUT"), "{fix}");
    assert!(tcp_get(&a, "10.66.0.1:9000").is_err(), "dropped indeed");
    // An accept rule for the sandbox's subnet is read as such: no false alarm.
    nft_in(
        &w.node,
        "add rule ip filter INPUT ip saddr 10.66.0.0/24 accept",
    );
    healthy(&w, &a, "node:9000");
    assert_eq!(who(tcp_get(&a, "10.66.0.1:9000")), "node");
}

#[test]
fn masquerade_missing_is_named_and_reconcile_restores_it() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "nm",
        "--subnet",
        "10.67.0.0/24",
        "--no-masquerade",
        "--no-dns",
    ]);
    w.ok(&[
        "network",
        "create",
        "ms",
        "--subnet",
        "10.68.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let c = w.sandbox("c");
    w.ok(&["attach", "nm", &a]);
    w.ok(&["attach", "ms", &c]);
    let (detail, _) = broken(&w, &a, OUTSIDE4, "masquerade");
    assert!(detail.contains("does not masquerade"), "{detail}");
    assert!(!ping(&a, OUTSIDE4), "the outside has no route back");

    healthy(&w, &c, OUTSIDE4);
    assert!(ping(&c, OUTSIDE4));
    // knit's own set element removed behind its back.
    nft_in(&w.node, "delete element inet knit masq4 { 10.68.0.0/24 }");
    let (_, fix) = broken(&w, &c, OUTSIDE4, "masquerade");
    assert!(fix.starts_with("knit reconcile"), "{fix}");
    assert!(!ping(&c, OUTSIDE4));
    w.ok(&["reconcile"]);
    healthy(&w, &c, OUTSIDE4);
    assert!(ping(&c, OUTSIDE4));
}

#[test]
fn wrong_neighbour_entries_and_strict_rp_filter() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "nb",
        "--subnet",
        "10.69.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "nb", &a]);
    w.ok(&["attach", "nb", &b]);
    let a_ip = w.ip_of("nb", &a, 4);
    let b_ip = w.ip_of("nb", &b, 4);
    healthy(&w, &a, &b_ip);

    // A static neighbour entry with the wrong MAC, at the source.
    sh_ok(&[
        "ip",
        "-n",
        &a,
        "neigh",
        "replace",
        &b_ip,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let (detail, fix) = broken(&w, &a, &b_ip, "neighbour");
    assert!(detail.contains("02:00:00:00:00:99"), "{detail}");
    assert_eq!(
        fix,
        format!("ip -n {a} neigh del {b_ip} dev eth0 (the kernel then asks ARP/ND again)")
    );
    assert!(!ping(&a, &b_ip), "frames go nowhere");
    sh_ok(&["ip", "-n", &a, "neigh", "del", &b_ip, "dev", "eth0"]);
    // ... and at the destination, for the way back.
    sh_ok(&[
        "ip",
        "-n",
        &b,
        "neigh",
        "replace",
        &a_ip,
        "lladdr",
        "02:00:00:00:00:98",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let (detail, _) = broken(&w, &a, &b_ip, "neighbour");
    assert!(detail.starts_with(&b), "{detail}");
    assert!(!ping(&a, &b_ip));
    sh_ok(&["ip", "-n", &b, "neigh", "del", &a_ip, "dev", "eth0"]);
    healthy(&w, &a, &b_ip);
    assert!(ping(&a, &b_ip));

    // b's bridge port no longer forwarding (STP state set by hand).
    let b_port = w.json(&["network", "inspect", "nb"])["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["sandbox"] == b.as_str())
        .unwrap()["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    sh_ok(&[
        "ip", "netns", "exec", &w.node, "bridge", "link", "set", "dev", &b_port, "state", "0",
    ]);
    let (detail, fix) = broken(&w, &a, &b_ip, "destination interface");
    assert!(detail.contains("state disabled"), "{detail}");
    assert!(
        fix.starts_with(&format!("bridge link set dev {b_port} state 3")),
        "{fix}"
    );
    assert!(!ping(&a, &b_ip), "the bridge drops it");
    sh_ok(&[
        "ip", "netns", "exec", &w.node, "bridge", "link", "set", "dev", &b_port, "state", "3",
    ]);
    healthy(&w, &a, &b_ip);

    // Strict rp_filter and a route on the node that sends a's address elsewhere.
    healthy(&w, &a, OUTSIDE4);
    let sysctl = |v: &str| {
        sh_ok(&[
            "ip",
            "netns",
            "exec",
            &w.node,
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.all.rp_filter={v}"),
        ])
    };
    sysctl("1");
    w.node_ip(&["route", "add", &format!("{a_ip}/32"), "via", OUTSIDE4]);
    let (detail, fix) = broken(&w, &a, OUTSIDE4, "reverse path");
    assert!(
        detail.contains("uplink") && detail.contains("strict"),
        "{detail}"
    );
    assert!(fix.contains("rp_filter=2"), "{fix}");
    assert!(!ping(&a, OUTSIDE4));
    w.node_ip(&["route", "del", &format!("{a_ip}/32")]);
    sysctl("0");
    healthy(&w, &a, OUTSIDE4);
}

#[test]
fn dns_without_a_daemon_is_named() {
    let mut w = World::new();
    w.ok(&["network", "create", "dd", "--subnet", "10.70.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "dd", &a]);
    w.ok(&["attach", "dd", &b]);
    let (detail, fix) = broken(&w, &a, &b, "dns");
    assert!(detail.contains("no knit daemon"), "{detail}");
    assert!(fix.contains("knit daemon"), "{fix}");
    // By address there is nothing to resolve.
    healthy(&w, &a, &w.ip_of("dd", &b, 4));
}

#[test]
fn a_stale_conntrack_entry_is_named() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "ct",
        "--subnet",
        "10.71.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "ct", &a]);
    w.ok(&["attach", "ct", &b]);
    let a_ip = w.ip_of("ct", &a, 4);
    let _srv = udp_server(&b, "0.0.0.0:5353", "b");
    w.ok(&[
        "service",
        "create",
        "dns",
        "--vip",
        "10.96.0.53:5353/udp",
        "--backend",
        &format!("{b}:5353"),
    ]);
    healthy(&w, &a, "10.96.0.53:5353/udp");
    assert!(udp_get(&a, "10.96.0.53:5353").unwrap().starts_with("b "));
    // An entry from before: the flow was translated to a backend that is gone.
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &w.node,
        "conntrack",
        "-I",
        "-p",
        "udp",
        "-s",
        &a_ip,
        "-d",
        "10.96.0.53",
        "--sport",
        "40000",
        "--dport",
        "5353",
        "--reply-src",
        "10.71.0.99",
        "--reply-dst",
        &a_ip,
        "--reply-port-src",
        "5353",
        "--reply-port-dst",
        "40000",
        "--timeout",
        "120",
    ]);
    let (detail, fix) = broken(&w, &a, "10.96.0.53:5353/udp", "conntrack");
    assert!(detail.contains("10.71.0.99"), "{detail}");
    assert!(fix.starts_with("conntrack -D -p udp"), "{fix}");
}

#[test]
fn loopback_listeners_and_same_bridge_traffic_in_the_ip_hooks() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "sb",
        "--subnet",
        "10.74.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "sb", &a, "--label", "app=client"]);
    w.ok(&["attach", "sb", &b, "--label", "app=web"]);
    let b_ip = w.ip_of("sb", &b, 4);
    let dst = format!("{b_ip}:80");

    // A server bound to 127.0.0.1 only does not serve the network.
    let lo = tcp_server(&b, "127.0.0.1:80", "lo");
    let (detail, _) = broken(&w, &a, &dst, "listener");
    assert!(detail.contains("bound to 127.0.0.1 only"), "{detail}");
    assert!(tcp_get(&a, &dst).is_err());
    drop(lo);
    let _srv = tcp_server(&b, "0.0.0.0:80", "b");

    // With policy on the network knit hands bridged frames to the IP hooks, where a
    // foreign FORWARD policy drop catches them too.
    w.ok(&["policy", "default", "sb", "deny"]);
    w.ok(&[
        "policy",
        "allow",
        "sb",
        "--from",
        "app=client",
        "--to",
        "app=web",
        "--port",
        "80",
    ]);
    healthy(&w, &a, &dst);
    assert_eq!(who(tcp_get(&a, &dst)), "b");
    let br_netfilter = sh(&[
        "ip",
        "netns",
        "exec",
        &w.node,
        "cat",
        "/proc/sys/net/bridge/bridge-nf-call-iptables",
    ])
    .status
    .success();
    if !br_netfilter {
        eprintln!("br_netfilter is not loaded: bridged frames never reach the IP hooks here");
        return;
    }
    nft_in(&w.node, "add table ip filter");
    nft_in(
        &w.node,
        "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    );
    let (detail, _) = broken(&w, &a, &dst, "firewall (forward)");
    assert!(
        detail.contains("table ip filter, chain FORWARD"),
        "{detail}"
    );
    assert!(tcp_get(&a, &dst).is_err(), "dropped indeed");
}
