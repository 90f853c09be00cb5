//! ptp driver, IPv6, isolation between networks, internal networks.

mod common;
use common::*;

#[test]
fn ptp_network_routes_through_the_node() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "p",
        "--driver",
        "ptp",
        "--subnet",
        "10.41.0.0/24",
        "--subnet",
        "fd41::/64",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "p", &a, "-p", "8081:80"]);
    w.ok(&["attach", "p", &b]);
    let a4 = w.ip_of("p", &a, 4);
    let b4 = w.ip_of("p", &b, 4);
    let b6 = w.ip_of("p", &b, 6);
    // A /32 in the sandbox, a default route via the link-local gateway.
    let addrs = sh_ok(&["ip", "-n", &a, "-4", "addr", "show", "eth0"]);
    assert!(addrs.contains(&format!("{a4}/32")), "{addrs}");
    let routes = sh_ok(&["ip", "-n", &a, "route"]);
    assert!(routes.contains("default via 169.254.1.1"), "{routes}");
    // Host routes on the node; no bridge exists.
    assert!(w.node_ip(&["route"]).contains(&format!("{a4} dev kv")));
    assert!(!w.node_ip(&["link"]).contains("knbr"));
    assert!(ping(&a, &b4));
    assert!(ping(&a, &b6));
    assert!(ping(&w.node, &a4));
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    assert_eq!(
        tcp_get(&a, &format!("{OUTSIDE4}:7000")).unwrap(),
        format!("outside saw {NODE_UPLINK4}")
    );
    let _s = tcp_server(&a, "0.0.0.0:80", "ptp-web");
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8081")).unwrap(),
        format!("ptp-web saw {OUTSIDE4}")
    );
    assert!(
        tcp_get(&b, &format!("{NODE_UPLINK4}:8081"))
            .unwrap()
            .starts_with("ptp-web saw")
    );
    w.ok(&["detach", "p", &a]);
    assert!(!w.node_ip(&["route"]).contains(&a4));
    assert!(!ping(&b, &a4));
}

#[test]
fn ipv6_addresses_routes_nat_and_published_ports() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "v6",
        "--subnet",
        "10.42.0.0/24",
        "--subnet",
        "fd42::/64",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&[
        "attach",
        "v6",
        &a,
        "-p",
        "8080:80",
        "-p",
        "[2001:db8:1::1]:8443:443",
    ]);
    w.ok(&["attach", "v6", &b]);
    let a6 = w.ip_of("v6", &a, 6);
    assert!(sh_ok(&["ip", "-n", &a, "-6", "route"]).contains("default via fd42::1"));
    assert!(ping(&b, &a6));
    let _o = tcp_server(w.outside(), "[::]:7000", "outside6");
    assert_eq!(
        tcp_get(&b, &format!("[{OUTSIDE6}]:7000")).unwrap(),
        format!("outside6 saw {NODE_UPLINK6}")
    );
    let _s = tcp_server(&a, "[::]:80", "web6");
    let _t = tcp_server(&a, "[::]:443", "tls6");
    assert_eq!(
        tcp_get(w.outside(), &format!("[{NODE_UPLINK6}]:8080")).unwrap(),
        format!("web6 saw {OUTSIDE6}")
    );
    assert_eq!(
        tcp_get(w.outside(), &format!("[{NODE_UPLINK6}]:8443")).unwrap(),
        format!("tls6 saw {OUTSIDE6}")
    );
    // The dual-stack publish also answers on IPv4 (the v6-only server binds both families).
    assert!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080"))
            .unwrap()
            .starts_with("web6 saw")
    );
    // Hairpin over IPv6 and node-local access.
    assert!(
        tcp_get(&b, &format!("[{NODE_UPLINK6}]:8080"))
            .unwrap()
            .starts_with("web6 saw")
    );
    assert!(
        tcp_get(&w.node, &format!("[{NODE_UPLINK6}]:8080"))
            .unwrap()
            .starts_with("web6 saw")
    );
}

#[test]
fn networks_are_isolated_but_both_reach_outside() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "red", "--subnet", "10.43.1.0/24"]);
    w.ok(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.43.2.0/24",
        "--driver",
        "ptp",
    ]);
    w.ok(&["network", "create", "green", "--subnet", "10.43.3.0/24"]);
    let r = w.sandbox("r");
    let b = w.sandbox("b");
    let g = w.sandbox("g");
    let r2 = w.sandbox("r2");
    w.ok(&["attach", "red", &r]);
    w.ok(&["attach", "red", &r2]);
    w.ok(&["attach", "blue", &b, "-p", "9000:80"]);
    w.ok(&["attach", "green", &g]);
    let r_ip = w.ip_of("red", &r, 4);
    let b_ip = w.ip_of("blue", &b, 4);
    let g_ip = w.ip_of("green", &g, 4);
    let _sr = tcp_server(&r, "0.0.0.0:80", "red");
    let _sb = tcp_server(&b, "0.0.0.0:80", "blue");
    let _sg = tcp_server(&g, "0.0.0.0:80", "green");
    // Same network: allowed.
    assert!(tcp_get(&r2, &format!("{r_ip}:80")).is_ok());
    // Across networks, every direction and both drivers: dropped.
    for (from, to) in [
        (&r, &b_ip),
        (&b, &r_ip),
        (&r, &g_ip),
        (&g, &r_ip),
        (&g, &b_ip),
        (&b, &g_ip),
    ] {
        assert!(
            tcp_get(from, &format!("{to}:80")).is_err(),
            "{from} reached {to}"
        );
        assert!(!ping(from, to), "{from} pinged {to}");
    }
    // Everyone reaches the outside.
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    for s in [&r, &b, &g] {
        assert_eq!(
            tcp_get(s, &format!("{OUTSIDE4}:7000")).unwrap(),
            format!("outside saw {NODE_UPLINK4}")
        );
    }
    // A published port is reachable from other networks, like from outside.
    assert!(
        tcp_get(&r, &format!("{NODE_UPLINK4}:9000"))
            .unwrap()
            .starts_with("blue saw")
    );
}

#[test]
fn internal_network_has_no_egress() {
    let mut w = World::new().with_outside();
    w.ok(&[
        "network",
        "create",
        "int",
        "--subnet",
        "10.44.0.0/24",
        "--internal",
    ]);
    w.ok(&["network", "create", "ext", "--subnet", "10.44.1.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    let e = w.sandbox("e");
    w.ok(&["attach", "int", &a]);
    w.ok(&["attach", "int", &b]);
    w.ok(&["attach", "ext", &e]);
    let b_ip = w.ip_of("int", &b, 4);
    assert!(ping(&a, &b_ip), "inside the internal network");
    assert!(
        !sh_ok(&["ip", "-n", &a, "route"]).contains("default"),
        "no default route"
    );
    assert!(!ping(&a, OUTSIDE4));
    // Even with a route added by hand inside the sandbox, the node drops its egress.
    sh_ok(&[
        "ip",
        "-n",
        &a,
        "route",
        "add",
        "default",
        "via",
        "10.44.0.1",
    ]);
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    assert!(tcp_get(&a, &format!("{OUTSIDE4}:7000")).is_err());
    // And nothing from outside or other networks gets in.
    sh_ok(&[
        "ip",
        "-n",
        w.outside(),
        "route",
        "add",
        "10.44.0.0/24",
        "via",
        NODE_UPLINK4,
    ]);
    let _s = tcp_server(&b, "0.0.0.0:80", "internal");
    assert!(tcp_get(w.outside(), &format!("{b_ip}:80")).is_err());
    assert!(tcp_get(&e, &format!("{b_ip}:80")).is_err());
    assert!(tcp_get(&a, &format!("{b_ip}:80")).is_ok());
    // Publishing on an internal network is refused.
    let c = w.sandbox("c");
    let err = w.fail(&["attach", "int", &c, "-p", "8080:80"]);
    assert!(err.contains("internal"), "{err}");
}

/// A sandbox with IPv6 disabled by sysctl (as Docker leaves containers started without
/// IPv6) cannot take an IPv6 address: the error names the sysctl, and nothing is left.
#[test]
fn ipv6_disabled_in_the_sandbox_is_named() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "ds",
        "--subnet",
        "10.46.0.0/24",
        "--subnet",
        "fd00:46::/64",
    ]);
    let a = w.sandbox("a");
    set_ipv6_disabled(&a, true);
    let links = w.knit_links();
    let err = w.fail(&["attach", "ds", &a]);
    assert!(err.contains("disable_ipv6"), "{err}");
    assert!(!err.contains("Permission denied"), "{err}");
    assert_eq!(w.knit_links(), links);
    assert!(!sh_ok(&["ip", "-n", &a, "link"]).contains("eth0"));
    let v = w.json(&["network", "inspect", "ds"]);
    assert!(v["attachments"].as_array().unwrap().is_empty());
    // Turned back on, the same attach works.
    set_ipv6_disabled(&a, false);
    w.ok(&["attach", "ds", &a]);
}

/// `net.ipv6.conf.{all,default}.disable_ipv6` inside a sandbox, as Docker sets them.
fn set_ipv6_disabled(ns: &str, disabled: bool) {
    for key in ["all", "default"] {
        let v = format!("net.ipv6.conf.{key}.disable_ipv6={}", u8::from(disabled));
        sh_ok(&["ip", "netns", "exec", ns, "sysctl", "-qw", &v]);
    }
}
