//! L4 services with real connections: spreading, affinity, backend changes, refusal
//! without backends, node ports, hairpin, UDP, IPv6, cleanup.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A dual-stack network with `n` backend sandboxes `b0`.. (each serving its name on 8080,
/// TCP and UDP) and one client `cl`.
fn lab(n: usize) -> Lab {
    let mut l = Lab::new(World::new().with_outside(), &["10.60.0.0/24", "fd60::/64"]);
    for i in 0..n {
        let name = format!("b{i}");
        let s = l.attach(&name, &[]);
        l.serve(echo_server(&s, "0.0.0.0:8080", &name));
        l.serve(echo_server(&s, "[::]:8081", &name));
        l.serve(udp_server(&s, "0.0.0.0:8053", &name));
    }
    l.attach("cl", &[]);
    l
}

/// Who answered (the first word of the greeting).
fn who(ns: &str, addr: &str) -> String {
    let (_s, greeting) = tcp_open(ns, addr);
    greeting.split_whitespace().next().unwrap_or("").to_string()
}

fn spread(ns: &str, addr: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(who(ns, addr)).or_insert(0) += 1;
    }
    seen
}

#[test]
fn connections_spread_evenly_over_three_backends() {
    let l = lab(3);
    let mut args = vec!["service", "create", "web", "--vip", "10.96.0.10:80"];
    let specs: Vec<String> = l
        .numbered("b")
        .iter()
        .map(|b| format!("{b}:8080"))
        .collect();
    for s in &specs {
        args.extend(["--backend", s.as_str()]);
    }
    l.w.ok(&args);
    let seen = spread(&l["cl"], "10.96.0.10:80", 300);
    assert_eq!(seen.len(), 3, "{seen:?}");
    // Uniform: expected 100 each, standard deviation ~8.2; 60..140 is ~5 sigma.
    for (b, n) in &seen {
        assert!(
            (60..=140).contains(n),
            "backend {b} got {n} of 300: {seen:?}"
        );
    }
    // The node itself reaches the VIP too (output hook).
    assert!(who(&l.w.node, "10.96.0.10:80").starts_with('b'));
}

#[test]
fn backend_changes_affect_only_new_connections() {
    let l = lab(3);
    let names = ["b0", "b1", "b2"];
    let specs: Vec<String> = l
        .numbered("b")
        .iter()
        .map(|b| format!("{b}:8080"))
        .collect();
    l.w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.0.10:80",
        "--backend",
        &specs[0],
        "--backend",
        &specs[1],
        "--backend",
        &specs[2],
    ]);
    // A long-lived connection, then its backend leaves the rotation.
    let (mut conn, greeting) = tcp_open(&l["cl"], "10.96.0.10:80");
    let first = greeting.split_whitespace().next().unwrap().to_string();
    let idx = names.iter().position(|n| *n == first).unwrap();
    l.w.ok(&["service", "backend", "rm", "web", &specs[idx]]);
    let seen = spread(&l["cl"], "10.96.0.10:80", 40);
    assert!(!seen.contains_key(&first), "{first} still chosen: {seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(tcp_echo(&mut conn, "still there").unwrap(), "still there");
    // Detaching a backend's sandbox takes it out of the rotation.
    let other = (idx + 1) % 3;
    l.w.ok(&["detach", "n", &l.numbered("b")[other]]);
    let seen = spread(&l["cl"], "10.96.0.10:80", 20);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen.contains_key(names[other]), "{seen:?}");
    // Re-attached, it is back (with whatever address it got).
    l.w.ok(&[
        "attach",
        "n",
        &l.numbered("b")[other],
        "--ip",
        "10.60.0.200",
    ]);
    let v = l.w.json(&["service", "inspect", "web"]);
    let eps = v["endpoints"].to_string();
    assert!(eps.contains("10.60.0.200:8080"), "{eps}");
    let seen = spread(&l["cl"], "10.96.0.10:80", 30);
    assert!(seen.contains_key(names[other]), "{seen:?}");
    // Adding the first backend back: all three again.
    l.w.ok(&["service", "backend", "add", "web", &specs[idx]]);
    let seen = spread(&l["cl"], "10.96.0.10:80", 60);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(tcp_echo(&mut conn, "and still").unwrap(), "and still");
}

#[test]
fn client_ip_affinity_keeps_one_backend() {
    let l = lab(3);
    let specs: Vec<String> = l
        .numbered("b")
        .iter()
        .map(|b| format!("{b}:8080"))
        .collect();
    l.w.ok(&[
        "service",
        "create",
        "sticky",
        "--vip",
        "10.96.0.11:80",
        "--affinity",
        "client-ip=60",
        "--backend",
        &specs[0],
        "--backend",
        &specs[1],
        "--backend",
        &specs[2],
    ]);
    let seen = spread(&l["cl"], "10.96.0.11:80", 30);
    assert_eq!(seen.len(), 1, "affinity broken: {seen:?}");
    // Another client is placed independently but also stays put.
    let seen = spread(&l.w.node, "10.96.0.11:80", 15);
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn service_without_backends_refuses_at_once() {
    let l = lab(1);
    l.w.ok(&[
        "service",
        "create",
        "empty",
        "--vip",
        "10.96.0.12:80",
        "--node-port",
        "30090",
    ]);
    for ns in [&l["cl"], l.w.node.as_str()] {
        let t = Instant::now();
        let e = tcp_get(ns, "10.96.0.12:80").unwrap_err();
        assert!(e.contains("refused"), "{ns}: {e}");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // Something listens on the node port, so only knit's reject can refuse it.
    let _node_listener = tcp_server(&l.w.node, "0.0.0.0:30090", "node");
    let e = tcp_get(l.w.outside(), &format!("{NODE_UPLINK4}:30090")).unwrap_err();
    assert!(e.contains("refused"), "{e}");
    // UDP: ICMP port unreachable, which a connected socket sees as "connection refused".
    l.w.ok(&[
        "service",
        "create",
        "empty-udp",
        "--vip",
        "10.96.0.12:53/udp",
    ]);
    let r = in_ns(&l["cl"], || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("10.96.0.12:53").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.send(b"hi").unwrap();
        let mut buf = [0u8; 64];
        s.recv(&mut buf).map_err(|e| e.kind())
    });
    assert_eq!(r, Err(std::io::ErrorKind::ConnectionRefused));
    // With a backend it answers; without again it refuses.
    let b = format!("{}:8080", &l["b0"]);
    l.w.ok(&["service", "backend", "add", "empty", &b]);
    assert_eq!(who(&l["cl"], "10.96.0.12:80"), "b0");
    l.w.ok(&["service", "backend", "rm", "empty", &b]);
    assert!(
        tcp_get(&l["cl"], "10.96.0.12:80")
            .unwrap_err()
            .contains("refused")
    );
}

#[test]
fn node_port_hairpin_udp_and_ipv6() {
    let l = lab(2);
    let (b0, b1) = (&l["b0"], &l["b1"]);
    l.w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.0.13:80",
        "--node-port",
        "30080",
        "--backend",
        &format!("{b0}:8080"),
        "--backend",
        &format!("{b1}:8080"),
    ]);
    // NodePort from an outside host, on the node's own address.
    let got = who(l.w.outside(), &format!("{NODE_UPLINK4}:30080"));
    assert!(got == "b0" || got == "b1", "{got}");
    // The VIP from outside, routed via the node.
    sh_ok(&[
        "ip",
        "-n",
        l.w.outside(),
        "route",
        "add",
        "10.96.0.0/16",
        "via",
        NODE_UPLINK4,
    ]);
    assert!(who(l.w.outside(), "10.96.0.13:80").starts_with('b'));
    // Hairpin: a backend reaching its own service, including when it picks itself.
    let seen = spread(b0, "10.96.0.13:80", 30);
    assert!(seen.contains_key("b0"), "b0 never reached itself: {seen:?}");
    assert!(seen.keys().all(|k| k == "b0" || k == "b1"), "{seen:?}");
    // UDP.
    l.w.ok(&[
        "service",
        "create",
        "dns",
        "--vip",
        "10.96.0.53:53/udp",
        "--backend",
        &format!("{b0}:8053"),
        "--backend",
        &format!("{b1}:8053"),
    ]);
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let a = udp_get(&l["cl"], "10.96.0.53:53").unwrap();
        assert!(a.contains(" saw 10.60.0."), "{a}");
        answered.insert(a.split_whitespace().next().unwrap_or("").to_string());
    }
    assert_eq!(
        answered.len(),
        2,
        "UDP spread over both backends: {answered:?}"
    );
    // IPv6 service with sandbox backends (their IPv6 addresses).
    l.w.ok(&[
        "service",
        "create",
        "web6",
        "--vip",
        "[fd96::10]:80",
        "--backend",
        &format!("{b0}:8081"),
        "--backend",
        &format!("{b1}:8081"),
    ]);
    let seen = spread(&l["cl"], "[fd96::10]:80", 30);
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn service_rm_leaves_the_table_as_before() {
    let l = lab(2);
    let before = l.w.nft_table();
    assert!(before.contains("table inet knit"), "{before}");
    let (b0, b1) = (&l["b0"], &l["b1"]);
    l.w.ok(&[
        "service",
        "create",
        "a",
        "--vip",
        "10.96.0.20:80",
        "--node-port",
        "30081",
        "--affinity",
        "client-ip",
        "--backend",
        &format!("{b0}:8080"),
        "--backend",
        &format!("{b1}:8080"),
    ]);
    l.w.ok(&[
        "service",
        "create",
        "b",
        "--vip",
        "[fd96::20]:80",
        "--backend",
        "[fd60::99]:80",
    ]);
    l.w.ok(&["service", "create", "c", "--vip", "10.96.0.21:80"]);
    assert!(who(&l["cl"], "10.96.0.20:80").starts_with('b'));
    // Create is idempotent; a different spec under the same name is refused.
    l.w.ok(&["service", "create", "c", "--vip", "10.96.0.21:80"]);
    let e =
        l.w.fail(&["service", "create", "c", "--vip", "10.96.0.22:80"]);
    assert!(e.contains("already exists"), "{e}");
    for s in ["a", "b", "c"] {
        l.w.ok(&["service", "rm", s]);
    }
    assert_eq!(l.w.nft_table(), before);
    assert!(tcp_get(&l["cl"], "10.96.0.20:80").is_err());
    assert!(l.w.fail(&["service", "rm", "a"]).contains("not found"));
}

#[test]
fn bad_service_input_is_refused_and_leaves_nothing() {
    let l = lab(1);
    let before = l.w.nft_table();
    assert!(before.contains("table inet knit"), "{before}");
    let b0 = format!("{}:8080", &l["b0"]);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--vip", "10.96.0.30"], "--vip"),
        (vec!["--vip", "10.96.0.30:99999"], "--vip"),
        (vec!["--vip", "10.96.0.30:80/icmp"], "--vip"),
        (vec!["--vip", "10.60.0.50:80"], "inside subnet"),
        (
            vec!["--vip", "10.96.0.30:80", "--backend", "nosuch:80"],
            "nosuch",
        ),
        (
            vec!["--vip", "10.96.0.30:80", "--backend", "[fd00::1]:80"],
            "family",
        ),
        (
            vec!["--vip", "10.96.0.30:80", "--affinity", "cookie"],
            "--affinity",
        ),
        (
            vec!["--vip", "10.96.0.30:80", "--node-port", "0"],
            "--node-port",
        ),
        (
            vec![
                "--vip",
                "10.96.0.30:80",
                "--backend",
                &b0,
                "--backend",
                "bad name:1",
            ],
            "--backend",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["service", "create", "x"];
        args.extend(extra.iter().copied());
        let e = l.w.fail(&args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    l.w.ok(&[
        "service",
        "create",
        "ok",
        "--vip",
        "10.96.0.31:80",
        "--node-port",
        "30100",
    ]);
    let e =
        l.w.fail(&["service", "create", "y", "--vip", "10.96.0.31:80"]);
    assert!(e.contains("already the address"), "{e}");
    let e = l.w.fail(&[
        "service",
        "create",
        "y",
        "--vip",
        "10.96.0.32:80",
        "--node-port",
        "30100",
    ]);
    assert!(e.contains("node port"), "{e}");
    let e = l.w.fail(&["service", "backend", "add", "nosuch", &b0]);
    assert!(e.contains("not found"), "{e}");
    l.w.ok(&["service", "rm", "ok"]);
    assert_eq!(l.w.nft_table(), before);
    assert_eq!(
        l.w.ok(&["service", "ls"]).lines().count(),
        1,
        "only the header"
    );
}

#[test]
fn services_survive_reconcile_after_the_table_is_wiped() {
    let l = lab(2);
    let (b0, b1) = (&l["b0"], &l["b1"]);
    l.w.ok(&[
        "service",
        "create",
        "web",
        "--vip",
        "10.96.0.40:80",
        "--backend",
        &format!("{b0}:8080"),
        "--backend",
        &format!("{b1}:8080"),
    ]);
    sh_ok(&[
        "ip", "netns", "exec", &l.w.node, "nft", "delete", "table", "inet", "knit",
    ]);
    assert!(tcp_get(&l["cl"], "10.96.0.40:80").is_err());
    l.w.ok(&["reconcile"]);
    assert!(who(&l["cl"], "10.96.0.40:80").starts_with('b'));
}

#[test]
fn first_ipv6_connection_through_the_node_is_not_delayed() {
    // Regression: the bridge's link-local address was in duplicate-address detection
    // right after the first port joined, so the node could not solicit the backend and
    // the first connection waited for a SYN retry (1 s).
    let mut w = World::new();
    w.ok(&["network", "create", "n", "--subnet", "fd62::/64"]);
    let b = w.sandbox("b");
    w.ok(&["attach", "n", &b]);
    let _s = echo_server(&b, "[::]:8081", "b");
    let c = w.sandbox("c");
    w.ok(&["attach", "n", &c]);
    w.ok(&[
        "service",
        "create",
        "v6",
        "--vip",
        "[fd96::62]:80",
        "--backend",
        &format!("{b}:8081"),
    ]);
    let t = Instant::now();
    assert_eq!(who(&c, "[fd96::62]:80"), "b");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn a_service_with_many_backends_uses_them_all() {
    // More backends than the maps-only layout holds: the service gets its own chain.
    let l = lab(1);
    let b0 = &l["b0"];
    let _servers: Vec<Server> = (0..17)
        .map(|i| echo_server(b0, &format!("0.0.0.0:{}", 9000 + i), &format!("p{i}")))
        .collect();
    let mut args = vec![
        "service".to_string(),
        "create".into(),
        "wide".into(),
        "--vip".into(),
        "10.96.0.70:80".into(),
    ];
    for i in 0..17 {
        args.push("--backend".into());
        args.push(format!("{b0}:{}", 9000 + i));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    l.w.ok(&args);
    assert!(
        l.w.nft_table().contains("chain svc1 {"),
        "expected a per-service chain"
    );
    let seen = spread(&l["cl"], "10.96.0.70:80", 340);
    assert_eq!(seen.len(), 17, "{seen:?}");
    // Down to two backends: back to the maps-only layout, no chain left.
    for i in 2..17 {
        l.w.ok(&[
            "service",
            "backend",
            "rm",
            "wide",
            &format!("{b0}:{}", 9000 + i),
        ]);
    }
    assert!(!l.w.nft_table().contains("chain svc1 {"));
    let seen = spread(&l["cl"], "10.96.0.70:80", 40);
    assert_eq!(seen.len(), 2, "{seen:?}");
}
