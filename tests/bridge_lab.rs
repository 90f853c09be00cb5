//! Seed labs end to end on a bridge network: 002 §1–§4 (netns↔netns through a bridge,
//! reaching the node), 001 bridge + NAT + DNAT, 003 single host. Real packets only.

mod common;
use common::*;

#[test]
fn bridge_network_nat_and_published_ports() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "lab", "--subnet", "10.31.0.0/24"]);
    let web = w.sandbox("web");
    let client = w.sandbox("client");
    let out = w.ok(&[
        "attach",
        "lab",
        &web,
        "--publish",
        "8080:80",
        "--publish",
        "5353:53/udp",
        "--publish",
        "127.0.0.1:9090:80",
    ]);
    assert!(out.contains("8080->"), "{out}");
    w.ok(&["attach", "lab", &client]);
    let web_ip = w.ip_of("lab", &web, 4);
    let client_ip = w.ip_of("lab", &client, 4);

    // Sandbox to sandbox across the bridge, both ways, and to the gateway.
    assert!(ping(&client, &web_ip));
    assert!(ping(&web, &client_ip));
    assert!(ping(&client, "10.31.0.1"));

    // Outbound through NAT: the outside host sees the node's uplink address.
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    assert_eq!(
        tcp_get(&client, &format!("{OUTSIDE4}:7000")).unwrap(),
        format!("outside saw {NODE_UPLINK4}")
    );
    assert!(ping(&client, OUTSIDE4));

    // A web server in a sandbox, published on the node.
    let _t = tcp_server(&web, "0.0.0.0:80", "web");
    let _u = udp_server(&web, "0.0.0.0:53", "dns");
    // From outside: the server sees the real client address (no SNAT on the way in).
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).unwrap(),
        format!("web saw {OUTSIDE4}")
    );
    assert_eq!(
        udp_get(w.outside(), &format!("{NODE_UPLINK4}:5353")).unwrap(),
        format!("dns saw {OUTSIDE4}")
    );
    // From the node itself (output chain), on its uplink address and on loopback.
    assert!(
        tcp_get(&w.node, &format!("{NODE_UPLINK4}:8080"))
            .unwrap()
            .starts_with("web saw")
    );
    assert!(
        tcp_get(&w.node, "127.0.0.1:9090")
            .unwrap()
            .starts_with("web saw")
    );
    assert!(
        tcp_get(&w.node, "127.0.0.1:8080")
            .unwrap()
            .starts_with("web saw")
    );
    // 127.0.0.1:9090 is bound to loopback only: not reachable on the uplink address.
    assert!(tcp_get(w.outside(), &format!("{NODE_UPLINK4}:9090")).is_err());
    // Hairpin: a sandbox reaching its own network's published port via the node address,
    // including the sandbox that serves it.
    assert!(
        tcp_get(&client, &format!("{NODE_UPLINK4}:8080"))
            .unwrap()
            .starts_with("web saw")
    );
    assert!(
        tcp_get(&web, &format!("{NODE_UPLINK4}:8080"))
            .unwrap()
            .starts_with("web saw")
    );
    assert!(
        tcp_get(&client, "10.31.0.1:8080")
            .unwrap()
            .starts_with("web saw")
    );
    // Sandbox-to-sandbox traffic inside the network is not masqueraded.
    let _d = tcp_server(&web, "0.0.0.0:81", "direct");
    assert_eq!(
        tcp_get(&client, &format!("{web_ip}:81")).unwrap(),
        format!("direct saw {client_ip}")
    );

    // The inspect view shows the whole stack of the sandbox.
    let v = w.json(&["inspect", &web]);
    // Structured: each route's fields, not a rendered line.
    let routes = v["inside"]["routes"].as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["gateway"] == "10.31.0.1" && r["dev"] == "eth0"),
        "{routes:?}"
    );
    let text = w.ok(&["inspect", &web]);
    assert!(text.contains("default via 10.31.0.1 dev eth0"), "{text}");
    assert!(
        v["nft_rules"].to_string().contains("8080"),
        "{}",
        v["nft_rules"]
    );
    assert_eq!(v["node_sysctls"]["net.ipv4.ip_forward"], "1");
}

#[test]
fn publish_ranges_and_sctp_spec() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "r", "--subnet", "10.32.0.0/24"]);
    let a = w.sandbox("a");
    w.ok(&[
        "attach",
        "r",
        &a,
        "-p",
        "8000-8002:9000-9002",
        "-p",
        "7000:7000/sctp",
    ]);
    let _s = tcp_server(&a, "0.0.0.0:9002", "nine");
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8002")).unwrap(),
        format!("nine saw {OUTSIDE4}")
    );
    let table = w.nft_table();
    assert!(
        table.contains("tcp . 8000 :") && table.contains("sctp . 7000 :"),
        "{table}"
    );
    // A second sandbox cannot take a published port.
    let b = w.sandbox("b");
    let e = w.fail(&["attach", "r", &b, "-p", "8001:80"]);
    assert!(e.contains("8001"), "{e}");
    assert!(
        w.json(&["network", "inspect", "r"])["attachments"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );
}

#[test]
fn detach_removes_everything() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "d",
        "--subnet",
        "10.33.0.0/24",
        "--subnet",
        "fd33::/64",
    ]);
    let a = w.sandbox("a");
    w.ok(&["attach", "d", &a, "-p", "8080:80"]);
    let ip = w.ip_of("d", &a, 4);
    assert_eq!(w.knit_links().len(), 2, "bridge + host veth");
    assert!(w.nft_table().contains(&ip));
    w.ok(&["detach", "d", &a]);
    assert_eq!(w.knit_links(), vec!["knbr1".to_string()]);
    assert!(!w.nft_table().contains(&ip), "{}", w.nft_table());
    assert!(!w.nft_table().contains("8080"));
    let inside = sh_ok(&["ip", "-n", &a, "-o", "link"]);
    assert!(!inside.contains("eth0"), "{inside}");
    assert!(
        w.json(&["network", "inspect", "d"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Detach again is a no-op; attach again reuses nothing stale.
    assert!(w.ok(&["detach", "d", &a]).contains("was not attached"));
    w.ok(&["attach", "d", &a]);
    // Removing the sandbox detaches it; removing the network removes bridge and chain.
    w.ok(&["sandbox", "rm", &a]);
    w.ok(&["network", "rm", "d"]);
    assert!(w.knit_links().is_empty());
    let t = w.nft_table();
    assert!(!t.contains("n1_out") && !t.contains("10.33.0.0"), "{t}");
}

#[test]
fn attach_is_idempotent_and_static_addresses_work() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "s",
        "--subnet",
        "10.34.0.0/24",
        "--gateway",
        "10.34.0.254",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&[
        "attach",
        "s",
        &a,
        "--ip",
        "10.34.0.77",
        "--mac",
        "02:00:00:aa:bb:cc",
        "--ifname",
        "knit0",
    ]);
    assert!(w.ok(&["attach", "s", &a]).contains("already attached"));
    w.ok(&["attach", "s", &b]);
    assert_eq!(w.ip_of("s", &a, 4), "10.34.0.77");
    assert_eq!(
        w.ip_of("s", &b, 4),
        "10.34.0.1",
        "first free; the gateway is .254"
    );
    let link = sh_ok(&["ip", "-n", &a, "link", "show", "knit0"]);
    assert!(link.contains("02:00:00:aa:bb:cc"), "{link}");
    assert!(ping(&b, "10.34.0.77"));
    assert!(ping(&a, "10.34.0.254"));
}

#[test]
fn mtu_is_applied() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "m",
        "--subnet",
        "10.35.0.0/24",
        "--mtu",
        "1400",
        "--bridge",
        "kmtu0",
    ]);
    let a = w.sandbox("a");
    w.ok(&["attach", "m", &a]);
    assert!(sh_ok(&["ip", "-n", &a, "link", "show", "eth0"]).contains("mtu 1400"));
    assert!(w.node_ip(&["link", "show", "kmtu0"]).contains("mtu 1400"));
}

#[test]
fn adopt_a_running_process_namespace_by_pid() {
    let mut w = World::new();
    w.ok(&["network", "create", "pid", "--subnet", "10.36.0.0/24"]);
    let peer = w.sandbox("peer");
    w.ok(&["attach", "pid", &peer]);
    // A "container": a process in its own network namespace, like Docker's.
    let mut child = std::process::Command::new("unshare")
        .args(["-n", "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let target = format!("pid:{pid}");
    // unshare execs sleep after entering the namespace: wait until it is not ours.
    eventually("child namespace", || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
            != std::fs::read_link("/proc/self/ns/net").ok()
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "sleep")
                .unwrap_or(false)
    });
    w.ok(&["attach", "pid", &target]);
    let ip = w.ip_of("pid", &target, 4);
    assert!(ping(&peer, &ip));
    let o = sh(&["nsenter", "-t", &pid.to_string(), "-n", "ip", "-4", "addr"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(&ip));
    // When the process is gone, reconcile drops the attachment and frees its address.
    child.kill().unwrap();
    child.wait().unwrap();
    let r = w.json(&["reconcile"]);
    assert_eq!(r["gone_removed"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(w.knit_links().len(), 2);
}

#[test]
fn sandbox_exec_uses_etc_netns_files() {
    let mut w = World::new();
    let a = w.sandbox("a");
    let dir = format!("/etc/netns/{a}");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(format!("{dir}/resolv.conf"), "nameserver 10.37.0.1\n").unwrap();
    let out = w.run(&["sandbox", "exec", &a, "--", "cat", "/etc/resolv.conf"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nameserver 10.37.0.1"));
    let out = w.ok(&["sandbox", "exec", &a, "--", "ip", "-o", "link"]);
    assert!(
        out.contains("lo") && !out.contains("eth0") && !out.contains("uplink"),
        "{out}"
    );
    let ls = w.json(&["sandbox", "ls"]);
    assert!(ls.to_string().contains(&a));
}
