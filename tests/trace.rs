//! `knit trace`: one real probe with nftables tracing for that flow only; the way it took
//! is told in hooks, rules and knit objects, and the trace rules are gone afterwards.

mod common;
use common::*;

fn trace(w: &World, src: &str, dst: &str) -> (i32, serde_json::Value) {
    w.json_status(&["trace", src, dst])
}

/// Every hop of every pass of `ns` (`None`: all namespaces).
fn hops<'a>(v: &'a serde_json::Value, ns: Option<&str>) -> Vec<&'a serde_json::Value> {
    v["passes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| ns.is_none_or(|n| p["namespace"] == n))
        .flat_map(|p| p["hops"].as_array().unwrap().iter())
        .collect()
}

fn has_hop(v: &serde_json::Value, ns: &str, hook: &str, knit_part: &str) -> bool {
    hops(v, Some(ns))
        .iter()
        .any(|h| h["hook"] == hook && h["knit"].as_str().is_some_and(|k| k.contains(knit_part)))
}

/// No trace table left in any of `namespaces`.
fn no_trace_tables(namespaces: &[&str]) {
    for ns in namespaces {
        let t = sh_ok(&["ip", "netns", "exec", ns, "nft", "list", "tables"]);
        assert!(!t.contains("knit_trace"), "{ns}: {t}");
    }
}

#[test]
fn published_port_from_outside_and_hairpin() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "tn",
        "--subnet",
        "10.72.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "tn", &a]);
    w.ok(&["attach", "tn", &b, "--publish", "8080:80"]);
    let _srv = tcp_server(&b, "0.0.0.0:80", "b");
    let out = w.outside().to_string();

    // From outside: DNAT in prerouting, forward accept, delivered to b.
    let (code, v) = trace(&w, &out, "node:8080");
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"], "delivered", "{v}");
    assert!(
        has_hop(&v, "node", "PREROUTING", "published port 8080/tcp"),
        "{v}"
    );
    assert!(
        hops(&v, Some("node"))
            .iter()
            .any(|h| h["hook"] == "FORWARD" && h["verdict"] == "accept"),
        "{v}"
    );
    assert!(
        hops(&v, Some("node")).iter().any(|h| h["nat"]
            .as_str()
            .is_some_and(|n| n.contains("destination 198.51.100.1:8080 → 10.72.0.3:80"))),
        "the DNAT is read off the headers: {v}"
    );
    let arrived = v["passes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["namespace"] == b.as_str() && p["direction"] == "probe");
    assert!(arrived, "the probe is seen arriving in b: {v}");
    assert!(
        v["passes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["direction"] == "reply"),
        "the SYN-ACK is traced back: {v}"
    );

    // Hairpin: a reaches b through the node's published port; the node masquerades.
    let (code, v) = trace(&w, &a, "node:8080");
    assert_eq!(code, 0, "{v}");
    assert!(has_hop(&v, "node", "POSTROUTING", "hairpin"), "{v}");
    let into_b = v["passes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["namespace"] == b.as_str() && p["direction"] == "probe")
        .unwrap_or_else(|| panic!("no pass in b: {v}"));
    assert!(
        into_b["nat"]
            .as_str()
            .unwrap_or_default()
            .contains("source 10.72.0.2"),
        "{into_b}"
    );
    // The text form names the hooks in order.
    let text = w.ok(&["trace", &a, "node:8080"]);
    let pre = text.find("PREROUTING").unwrap();
    let fwd = text.find("FORWARD").unwrap();
    assert!(pre < fwd, "{text}");
    assert!(text.contains("delivered:"), "{text}");
    no_trace_tables(&[&w.node, &out, &a, &b]);
}

#[test]
fn services_policy_and_foreign_drops() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "tp",
        "--subnet",
        "10.73.0.0/24",
        "--no-dns",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "tp", &a, "--label", "app=client"]);
    w.ok(&["attach", "tp", &b, "--label", "app=web"]);
    let _srv = tcp_server(&b, "0.0.0.0:80", "b");
    let b_ip = w.ip_of("tp", &b, 4);

    // A service hop.
    w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.0.20:80",
        "--backend",
        &format!("{b}:80"),
    ]);
    let (code, v) = trace(&w, &a, "web");
    assert_eq!(code, 0, "{v}");
    assert!(has_hop(&v, "node", "PREROUTING", "service web"), "{v}");
    // A service without backends: knit refuses.
    w.ok(&["service", "create", "empty", "--vip", "10.96.0.21:80"]);
    let (code, v) = trace(&w, &a, "empty");
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["result"], "refused", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("knit refused it"),
        "{v}"
    );

    // A policy drop names the network and what would allow it.
    w.ok(&["policy", "default", "tp", "deny"]);
    let (code, v) = trace(&w, &a, &format!("{b_ip}:80"));
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["result"], "dropped", "{v}");
    let d = v["detail"].as_str().unwrap();
    assert!(
        d.contains("policy of network tp") && d.contains("denied"),
        "{d}"
    );
    assert!(
        d.contains(&format!(
            "knit policy allow tp --from {a} --to {b} --port 80/tcp"
        )),
        "{d}"
    );
    w.ok(&[
        "policy",
        "allow",
        "tp",
        "--from",
        "app=client",
        "--to",
        "app=web",
        "--port",
        "80",
    ]);
    let (code, v) = trace(&w, &a, &format!("{b_ip}:80"));
    assert_eq!(code, 0, "{v}");
    assert!(has_hop(&v, "node", "FORWARD", "allowed by rule"), "{v}");

    // A foreign table's FORWARD policy drop.
    let nft = |s: &str| sh_ok(&["ip", "netns", "exec", &w.node, "nft", s]);
    nft("add table ip filter");
    nft("add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }");
    let (code, v) = trace(&w, &a, OUTSIDE4);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["result"], "dropped", "{v}");
    let d = v["detail"].as_str().unwrap();
    assert!(
        d.contains("FORWARD ip filter FORWARD") && d.contains("policy drop"),
        "{d}"
    );
    nft("delete table ip filter");
    let (code, v) = trace(&w, &a, OUTSIDE4);
    assert_eq!(code, 0, "ping delivered once the foreign drop is gone: {v}");
    let out = w.outside().to_string();
    no_trace_tables(&[&w.node, &out, &a, &b]);
}
