//! Network policy as data, with real connections: egress (to the outside, to another
//! sandbox, to the node), CIDR exceptions, port ranges, AND selectors, NetworkPolicy
//! import and re-import (only the difference applied), per-rule counters, and 10,000
//! rules that leave the table exactly as it was once removed.

mod common;
use common::*;

fn reaches(from: &str, addr: &str) -> bool {
    tcp_get(from, addr).is_ok()
}

fn rule_packets(w: &World, id: &str) -> u64 {
    let v = w.json(&["policy", "ls"]);
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].to_string().as_str() == id)
        .unwrap_or_else(|| panic!("no rule {id} in {v}"))["packets"]
        .as_u64()
        .unwrap()
}

fn net_counter(w: &World, field: &str) -> u64 {
    let v = w.json(&["policy", "ls"]);
    v["networks"][0][field].as_u64().unwrap_or(0)
}

fn id_of(out: &serde_json::Value) -> String {
    out["id"].to_string()
}

#[test]
fn egress_to_the_outside_another_sandbox_and_the_node() {
    let mut l = Lab::new(World::new().with_outside(), &["10.64.0.0/24"]);
    let app = l.attach("app", &["--label", "app=a"]);
    let web = l.attach("web", &["--label", "app=web"]);
    l.serve(tcp_server(&web, "0.0.0.0:8080", "web"));
    let outside = l.w.outside().to_string();
    l.serve(tcp_server(&outside, "0.0.0.0:9000", "outside"));
    let node = l.w.node.clone();
    l.serve(tcp_server(&node, "0.0.0.0:7000", "node"));
    let web4 = l.w.ip_of("n", &web, 4);
    let to_web = format!("{web4}:8080");
    let to_outside = format!("{OUTSIDE4}:9000");
    let to_node = "10.64.0.1:7000".to_string();
    for t in [&to_web, &to_outside, &to_node] {
        assert!(reaches(&app, t), "before policy: {t}");
    }
    let before = l.w.nft_table();

    l.w.ok(&["policy", "default", "n", "egress", "deny"]);
    for t in [&to_web, &to_outside, &to_node] {
        assert!(!reaches(&app, t), "egress deny: {t}");
    }
    assert!(net_counter(&l.w, "egress_dropped") > 0);
    // Ingress is still default allow: the outside side is not what is filtered.
    let out = l.w.json(&[
        "policy",
        "allow",
        "n",
        "--egress",
        "--from",
        "app=a",
        "--to",
        &format!("{OUTSIDE4}/24"),
        "--port",
        "9000",
    ]);
    let to_outside_rule = id_of(&out);
    assert_eq!(rule_packets(&l.w, &to_outside_rule), 0);
    assert!(reaches(&app, &to_outside));
    assert!(
        rule_packets(&l.w, &to_outside_rule) > 0,
        "the rule counted its packets"
    );
    assert!(!reaches(&app, &to_web));
    assert!(!reaches(&app, &to_node));
    // Egress deny is the network's: web may not go out either.
    assert!(!reaches(&web, &to_outside));

    l.w.ok(&[
        "policy", "allow", "n", "--egress", "--from", "app=a", "--to", "app=web", "--port", "8080",
    ]);
    assert!(reaches(&app, &to_web));
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--egress",
        "--from",
        &app,
        "--to",
        "10.64.0.1",
        "--port",
        "7000",
    ]);
    assert!(reaches(&app, &to_node));
    // An egress rule's own side is the network's sandboxes, never an address.
    let e = l.w.fail(&[
        "policy",
        "allow",
        "n",
        "--egress",
        "--from",
        "10.0.0.0/8",
        "--to",
        "app=web",
    ]);
    assert!(e.contains("invalid from \"10.0.0.0/8\""), "{e}");

    // Everything removed: the table is as it was.
    let v = l.w.json(&["policy", "ls"]);
    for r in v["rules"].as_array().unwrap() {
        l.w.ok(&["policy", "rm", &r["id"].to_string()]);
    }
    l.w.ok(&["policy", "default", "n", "egress", "allow"]);
    assert!(reaches(&app, &to_outside));
    assert_eq!(l.w.nft_table(), before);
}

#[test]
fn cidr_exceptions_port_ranges_and_label_conjunctions() {
    let mut l = Lab::new(World::new(), &["10.65.0.0/24"]);
    let web = l.attach("web", &["--label", "app=web", "--ip", "10.65.0.10"]);
    for port in [8080, 8085, 9090] {
        l.serve(tcp_server(&web, &format!("0.0.0.0:{port}"), "web"));
    }
    let c1 = l.attach(
        "c1",
        &[
            "--ip",
            "10.65.0.21",
            "--label",
            "role=c",
            "--label",
            "tier=x",
        ],
    );
    let c2 = l.attach("c2", &["--ip", "10.65.0.22", "--label", "role=c"]);
    let to = |p: u16| format!("10.65.0.10:{p}");
    l.w.ok(&["policy", "default", "n", "deny"]);
    for c in [&c1, &c2] {
        assert!(!reaches(c, &to(8080)));
    }
    // A CIDR with an exception, and a port range.
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--from",
        "10.65.0.0/24",
        "--except",
        "10.65.0.22/32",
        "--to",
        "app=web",
        "--port",
        "8080-8085",
    ]);
    assert!(reaches(&c1, &to(8080)));
    assert!(reaches(&c1, &to(8085)));
    assert!(!reaches(&c1, &to(9090)), "outside the range");
    assert!(!reaches(&c2, &to(8080)), "the exception");
    // An overlapping range from the same source, added and removed again: the ranges are
    // cut into pieces and put back together without losing what the first allows.
    let out = l.w.json(&[
        "policy",
        "allow",
        "n",
        "--from",
        "10.65.0.21",
        "--to",
        "app=web",
        "--port",
        "8083-9090",
    ]);
    assert!(reaches(&c1, &to(9090)));
    assert!(reaches(&c1, &to(8080)));
    l.w.ok(&["policy", "rm", &id_of(&out)]);
    assert!(reaches(&c1, &to(8080)) && reaches(&c1, &to(8085)));
    assert!(!reaches(&c1, &to(9090)));
    // Two labels in one selector: both must match.
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--from",
        "role=c,tier=x",
        "--to",
        "app=web",
        "--port",
        "9090",
    ]);
    assert!(reaches(&c1, &to(9090)));
    assert!(!reaches(&c2, &to(9090)));
    let e = l.w.fail(&[
        "policy",
        "allow",
        "n",
        "--from",
        "10.65.0.0/24",
        "--except",
        "10.66.0.0/24",
        "--to",
        "app=web",
    ]);
    assert!(
        e.contains("10.66.0.0/24") && e.contains("not inside"),
        "{e}"
    );
}

const DOCS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: n}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
      ports: [{protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: n}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
---
kind: NetworkPolicy
metadata: {name: client-out, namespace: n}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
    - to: [{podSelector: {matchLabels: {app: web}}}]
"#;

#[test]
fn import_applies_network_policies_and_reimport_applies_only_the_difference() {
    let mut l = Lab::new(World::new(), &["10.66.0.0/24"]);
    let web = l.attach("web", &["--label", "app=web"]);
    let db = l.attach("db", &["--label", "app=db"]);
    let client = l.attach("client", &["--label", "role=client"]);
    let other = l.attach("other", &[]);
    for (ns, port) in [(&web, 8080), (&web, 8081), (&db, 5432), (&other, 8080)] {
        l.serve(tcp_server(ns, &format!("0.0.0.0:{port}"), "s"));
    }
    let at = |ns: &str, p: u16| format!("{}:{p}", l.w.ip_of("n", ns, 4));
    let (web80, web81, db5432, other80) = (
        at(&web, 8080),
        at(&web, 8081),
        at(&db, 5432),
        at(&other, 8080),
    );
    let before = l.w.nft_table();
    let file = l.w.state.join("policies.yaml");
    std::fs::write(&file, DOCS).unwrap();
    let f = file.to_str().unwrap();
    let out = l.w.json(&["policy", "import", f]);
    assert_eq!(out["added"], 6, "{out}");
    // The network stays default allow; what the policies select is isolated.
    assert!(reaches(&client, &web80));
    assert!(
        !reaches(&client, &web81),
        "web is isolated: only 8080 from clients"
    );
    assert!(!reaches(&other, &web80));
    assert!(reaches(&web, &db5432));
    assert!(
        !reaches(&client, &db5432),
        "db: only from web; client egress: only to web"
    );
    assert!(
        reaches(&other, &other80),
        "not selected by any policy: open"
    );
    assert!(!reaches(&client, &other80), "client egress: only to web");
    assert!(!reaches(&other, &db5432));

    // Re-import of the same: nothing changes.
    let out = l.w.json(&["policy", "import", f]);
    assert_eq!(
        (out["added"].as_u64(), out["removed"].as_u64()),
        (Some(0), Some(0)),
        "{out}"
    );
    // Edited: web also on 8081, db's policy gone from the file (kept: no --prune).
    let edited = DOCS.replace(
        "ports: [{protocol: TCP, port: 8080}]",
        "ports: [{protocol: TCP, port: 8080, endPort: 8081}]",
    );
    std::fs::write(&file, &edited).unwrap();
    let out = l.w.json(&["policy", "import", f]);
    assert_eq!(
        (out["added"].as_u64(), out["removed"].as_u64()),
        (Some(1), Some(1)),
        "{out}"
    );
    assert!(reaches(&client, &web81));
    let only_web = edited.split("---").next().unwrap().to_string();
    std::fs::write(&file, &only_web).unwrap();
    let out = l.w.json(&["policy", "import", f, "--prune"]);
    assert_eq!(out["removed"].as_u64(), Some(4), "{out}");
    assert!(reaches(&other, &db5432));
    // Unsupported fields are named, and nothing changes.
    let table = l.w.nft_table();
    std::fs::write(
        &file,
        only_web.replace(
            "- from: [{podSelector:",
            "- from: [{namespaceSelector: {}, podSelector:",
        ),
    )
    .unwrap();
    let e = l.w.fail(&["policy", "import", f]);
    assert!(
        e.contains("spec.ingress[0].from[0].namespaceSelector"),
        "{e}"
    );
    assert_eq!(l.w.nft_table(), table);
    std::fs::write(&file, "[]").unwrap();
    l.w.ok(&["policy", "import", f, "--prune"]);
    assert_eq!(l.w.nft_table(), before);
}

#[test]
fn ten_thousand_rules_then_none_leave_the_table_as_it_was() {
    let mut l = Lab::new(World::new(), &["10.67.0.0/16"]);
    let srv = l.attach("srv", &["--label", "app=srv"]);
    let cli = l.attach("cli", &["--label", "role=cli"]);
    l.serve(tcp_server(&srv, "0.0.0.0:8080", "srv"));
    let to = format!("{}:8080", l.w.ip_of("n", &srv, 4));
    l.w.ok(&["policy", "default", "n", "deny"]);
    let before = l.w.nft_table();
    let blocks: Vec<String> = (0..10_000u32)
        .map(|i| {
            format!(
                r#"{{"ipBlock":{{"cidr":"198.18.{}.{}/32"}}}}"#,
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let doc = format!(
        r#"[{{"metadata":{{"name":"bulk","namespace":"n"}},"spec":{{"podSelector":{{"matchLabels":{{"app":"srv"}}}},"ingress":[{{"from":[{}],"ports":[{{"port":8080}}]}}]}}}}]"#,
        blocks.join(",")
    );
    let file = l.w.state.join("bulk.json");
    std::fs::write(&file, doc).unwrap();
    let f = file.to_str().unwrap();
    let out = l.w.json(&["policy", "import", f]);
    assert_eq!(out["added"], 10_001, "{out}");
    let listing = l.w.nft_table();
    assert!(
        listing.contains("198.18.39.250 . "),
        "the last block is an element"
    );
    // The chain did not grow with the rules: one lookup per set.
    let chain = sh_ok(&[
        "ip", "netns", "exec", &l.w.node, "nft", "list", "chain", "inet", "knit", "pol1",
    ]);
    assert!(chain.lines().count() < 20, "{chain}");
    assert!(!reaches(&cli, &to));
    let one = l.w.json(&[
        "policy", "allow", "n", "--from", "role=cli", "--to", "app=srv", "--port", "8080",
    ]);
    assert!(reaches(&cli, &to));
    l.w.ok(&["policy", "rm", &id_of(&one)]);
    std::fs::write(&file, "[]").unwrap();
    l.w.ok(&["policy", "import", f, "--prune"]);
    assert_eq!(l.w.nft_table(), before);
}

#[test]
fn dns_to_knit_passes_an_egress_deny_unless_denied_too() {
    use common::dns_client::*;
    use hickory_proto::rr::RecordType;
    let mut w = World::new();
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    w.ok(&["network", "create", "d", "--subnet", "10.68.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "d", &a]);
    w.ok(&["attach", "d", &b]);
    let b4 = w.ip_of("d", &b, 4);
    let _daemon = start_daemon(&w, resolv.to_str().unwrap(), None);
    let name = format!("{b}.");
    let resolves =
        || ask(&a, "10.68.0.1", &name, RecordType::A).is_ok_and(|m| addrs(&m) == vec![b4.clone()]);
    eventually("daemon answering", resolves);
    w.ok(&["policy", "default", "d", "egress", "deny"]);
    assert!(resolves(), "DNS to knit's resolver passes an egress deny");
    let _s = tcp_server(&b, "0.0.0.0:8080", "b");
    assert!(!reaches(&a, &format!("{b4}:8080")));
    w.ok(&["policy", "default", "d", "egress", "deny", "--dns", "deny"]);
    assert!(!resolves(), "denied explicitly");
    w.ok(&["policy", "default", "d", "egress", "deny", "--dns", "allow"]);
    assert!(resolves());
    let e = w.fail(&["policy", "default", "d", "ingress", "deny", "--dns", "deny"]);
    assert!(e.contains("invalid dns"), "{e}");
}
