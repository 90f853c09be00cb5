//! Network policy with real connections: default deny, allow rules by sandbox, label and
//! CIDR, ports, statefulness, through a service and a published port, cleanup.

mod common;
use common::*;

/// Network `n` with web (app=web), db (app=db), client (role=client) and other; web and
/// db serve on 8080 and 9090, TCP; web also publishes 8088 → 8080.
fn lab() -> Lab {
    let mut l = Lab::new(World::new().with_outside(), &["10.61.0.0/24", "fd61::/64"]);
    l.attach("web", &["--label", "app=web", "-p", "8088:8080"]);
    l.attach("db", &["--label", "app=db"]);
    l.attach("client", &["--label", "role=client"]);
    l.attach("other", &[]);
    for name in ["web", "db"] {
        let ns = l[name].to_string();
        l.serve(tcp_server(&ns, "0.0.0.0:8080", name));
        l.serve(tcp_server(&ns, "0.0.0.0:9090", name));
        let v6 = l.w.ip_of("n", &ns, 6);
        l.serve(tcp_server(&ns, &format!("[{v6}]:8080"), name));
    }
    l
}

fn reaches(from: &str, addr: &str) -> bool {
    tcp_get(from, addr).is_ok()
}

#[test]
fn default_deny_with_allow_rules() {
    let mut l = lab();
    let web4 = l.w.ip_of("n", &l["web"], 4);
    let web6 = l.w.ip_of("n", &l["web"], 6);
    let db4 = l.w.ip_of("n", &l["db"], 4);
    let web = format!("{web4}:8080");
    let web_other_port = format!("{web4}:9090");
    let db = format!("{db4}:8080");
    // Default allow: today's behaviour.
    assert!(reaches(&l["other"], &web));
    assert!(ping(&l["client"], &web4));
    assert!(reaches(&l["client"], &db));
    let before = l.w.nft_table();
    assert!(before.contains("table inet knit"), "{before}");

    l.w.ok(&["policy", "default", "n", "deny"]);
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--from",
        "role=client",
        "--to",
        "app=web",
        "--port",
        "8080",
    ]);
    l.w.ok(&[
        "policy", "allow", "n", "--from", &l["web"], "--to", "app=db",
    ]);
    let matrix = [
        (&l["client"], &web, true),
        (&l["client"], &web_other_port, false),
        (&l["client"], &db, false),
        (&l["web"], &db, true),
        (&l["other"], &web, false),
        (&l["db"], &web, false),
    ];
    for (from, to, want) in matrix {
        assert_eq!(reaches(from, to), want, "{from} -> {to}");
    }
    // Stateful: the allowed connection got its answer back (above); ICMP is not allowed.
    assert!(!ping(&l["client"], &web4));
    // IPv6 follows the same rules.
    assert!(reaches(&l["client"], &format!("[{web6}]:8080")));
    assert!(!reaches(&l["other"], &format!("[{web6}]:8080")));
    // The node itself is not filtered.
    assert!(reaches(&l.w.node, &web_other_port));

    // A sandbox attached later with a matching label is allowed at once.
    let late = l.w.sandbox("late");
    l.w.ok(&["attach", "n", &late, "--label", "role=client"]);
    assert!(reaches(&late, &web));
    l.w.ok(&["detach", "n", &late]);

    // Rules listed; removing one closes it again.
    let v = l.w.json(&["policy", "ls"]);
    let rules = v["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{v}");
    let id = rules[0]["id"].to_string();
    l.w.ok(&["policy", "rm", &id]);
    assert!(!reaches(&l["client"], &web));
    assert!(reaches(&l["web"], &db));
    // Back to allow, and everything goes: the table is as it was.
    let id = rules[1]["id"].to_string();
    l.w.ok(&["policy", "rm", &id]);
    l.w.ok(&["policy", "default", "n", "allow"]);
    assert!(reaches(&l["other"], &web));
    assert_eq!(l.w.nft_table(), before);
}

#[test]
fn policy_applies_through_services_and_published_ports() {
    let mut l = lab();
    l.w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.1.10:80",
        "--backend",
        &format!("{}:8080", &l["web"]),
    ]);
    l.w.ok(&["policy", "default", "n", "deny"]);
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--from",
        &l["client"],
        "--to",
        &l["web"],
    ]);
    // Through the VIP: the backend's policy decides, by the real client.
    assert!(reaches(&l["client"], "10.96.1.10:80"));
    assert!(!reaches(&l["other"], "10.96.1.10:80"));
    // A published port from outside: closed until the outside CIDR is allowed.
    let published = format!("{NODE_UPLINK4}:8088");
    assert!(!reaches(l.w.outside(), &published));
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--from",
        "198.51.100.0/24",
        "--to",
        "app=web",
        "--port",
        "8080/tcp",
    ]);
    assert_eq!(
        tcp_get(l.w.outside(), &published).unwrap(),
        format!("web saw {OUTSIDE4}")
    );
    // Other networks' sandboxes are still isolated from this one unless through the VIP.
    l.w.ok(&["network", "create", "m", "--subnet", "10.62.0.0/24"]);
    let m = l.w.sandbox("m");
    l.w.ok(&["attach", "m", &m, "--label", "role=client"]);
    assert!(
        !reaches(&m, "10.96.1.10:80"),
        "no rule selects m's address for web"
    );
    l.w.ok(&[
        "policy",
        "allow",
        "n",
        "--from",
        "role=client",
        "--to",
        "app=web",
    ]);
    assert!(reaches(&m, "10.96.1.10:80"));
    // Removing the network removes its policies; the service keeps working for others.
    l.w.ok(&["detach", "m", &m]);
    l.w.ok(&["network", "rm", "m"]);
    assert!(!l.w.nft_table().contains("10.62.0."), "{}", l.w.nft_table());
    assert!(reaches(&l["client"], "10.96.1.10:80"));
}

#[test]
fn bad_policy_input_is_refused() {
    let l = lab();
    let before = l.w.nft_table();
    assert!(before.contains("table inet knit"), "{before}");
    for (args, want) in [
        (
            vec!["policy", "default", "n", "maybe"],
            "invalid default \"maybe\"",
        ),
        (vec!["policy", "default", "nosuch", "deny"], "not found"),
        (
            vec!["policy", "allow", "n", "--from", "a b", "--to", "x"],
            "invalid from",
        ),
        (
            vec!["policy", "allow", "n", "--from", "x", "--to", "10.0.0.0/8"],
            "invalid to",
        ),
        (
            vec![
                "policy", "allow", "n", "--from", "x", "--to", "y", "--port", "0",
            ],
            "invalid port",
        ),
        (
            vec![
                "policy", "allow", "n", "--from", "x", "--to", "y", "--port", "80/icmp",
            ],
            "invalid port",
        ),
        (vec!["policy", "rm", "abc"], "invalid id"),
        (vec!["policy", "rm", "999"], "not found"),
        (
            vec!["attach", "n", "whatever", "--label", "novalue"],
            "--label",
        ),
    ] {
        let e = l.w.fail(&args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert_eq!(l.w.nft_table(), before);
}

#[test]
fn ptp_network_policy() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "p",
        "--driver",
        "ptp",
        "--subnet",
        "10.63.0.0/24",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "p", &a]);
    w.ok(&["attach", "p", &b, "--label", "app=web"]);
    let b4 = w.ip_of("p", &b, 4);
    let _s = tcp_server(&b, "0.0.0.0:8080", "b");
    let target = format!("{b4}:8080");
    assert!(reaches(&a, &target));
    w.ok(&["policy", "default", "p", "deny"]);
    assert!(!reaches(&a, &target));
    w.ok(&["policy", "allow", "p", "--from", &a, "--to", "app=web"]);
    assert!(reaches(&a, &target));
    // A sandbox attached to the deny network later is covered too (its own host veth).
    let c = w.sandbox("c");
    w.ok(&["attach", "p", &c, "--label", "app=web"]);
    let c4 = w.ip_of("p", &c, 4);
    let _t = tcp_server(&c, "0.0.0.0:8080", "c");
    assert!(reaches(&a, &format!("{c4}:8080")));
    assert!(!reaches(&b, &format!("{c4}:8080")));
}
