//! `knit doctor`: breaks the lab one way at a time and checks that doctor names the step
//! and the fix; on healthy paths every step is ✓ (no false alarms).

mod common;
use common::dns_client::{Daemon, start_daemon};
use common::*;

pub struct Lab {
    pub w: World,
    pub a: String,
    pub b: String,
    _dns: Daemon,
}

/// a and b on one network with knit's DNS (a daemon running), and an outside host.
pub fn lab() -> Lab {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "dn", "--subnet", "10.63.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "dn", &a]);
    w.ok(&["attach", "dn", &b]);
    let resolv = w.state.with_extension("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {OUTSIDE4}\n")).unwrap();
    let dns = start_daemon(&w, resolv.to_str().unwrap(), None);
    let l = Lab { w, a, b, _dns: dns };
    eventually("knit DNS answers", || doctor(&l, &l.b).0 == 0);
    l
}

/// (exit status, the JSON diagnosis).
fn doctor(l: &Lab, dst: &str) -> (i32, serde_json::Value) {
    l.w.json_status(&["doctor", &l.a, dst])
}

fn broken_step(v: &serde_json::Value) -> (String, String, String) {
    let s = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ok"] == false)
        .unwrap_or_else(|| panic!("no broken step: {v}"));
    (
        s["step"].as_str().unwrap().into(),
        s["detail"].as_str().unwrap().into(),
        s["fix"].as_str().unwrap_or_default().into(),
    )
}

/// Runs doctor, expects exit 2 with `step` the first broken one; gives its detail and fix.
fn expect_broken(l: &Lab, dst: &str, step: &str) -> (String, String) {
    let (code, v) = doctor(l, dst);
    assert_eq!(code, 2, "{v}");
    let (got, detail, fix) = broken_step(&v);
    assert_eq!(got, step, "{v}");
    (detail, fix)
}

#[test]
fn healthy_paths_are_all_green() {
    let l = lab();
    let _srv = tcp_server(&l.b, "0.0.0.0:80", "b");
    let (code, v) = doctor(&l, &format!("{}:80", l.b));
    assert_eq!(code, 0, "{v}");
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true)
    );
    assert!(v["steps"].to_string().contains("listener"));
    assert!(
        v["steps"]
            .to_string()
            .contains(&format!("resolves {}", l.b)),
        "the dns step: {v}"
    );
    assert!(tcp_get(&l.a, &format!("{}:80", l.w.ip_of("dn", &l.b, 4))).is_ok());
    let (code, v) = doctor(&l, OUTSIDE4);
    assert_eq!(code, 0, "{v}");
    assert!(v["steps"].to_string().contains("node forwarding"));
    assert!(ping(&l.a, OUTSIDE4));
    // The text form: a ✓ line per step.
    let text = l.w.ok(&["doctor", &l.a, OUTSIDE4]);
    assert!(text.lines().all(|t| t.starts_with('✓')), "{text}");
}

#[test]
fn each_breakage_is_named_with_its_fix() {
    let mut l = lab();
    let _srv = tcp_server(&l.b, "0.0.0.0:80", "b");

    // Nothing listening on the asked port.
    let (detail, _) = expect_broken(&l, &format!("{}:81", l.b), "listener");
    assert!(detail.contains("81/tcp"), "{detail}");

    // A smaller MTU on the way: full-size DF packets are dropped.
    sh_ok(&["ip", "-n", &l.b, "link", "set", "eth0", "mtu", "1400"]);
    let (detail, _) = expect_broken(&l, &format!("{}:80", l.b), "path MTU");
    assert!(
        detail.contains(&format!("eth0 in {}", l.b)) && detail.contains("1400"),
        "{detail}"
    );
    let b_ip = l.w.ip_of("dn", &l.b, 4);
    let big = sh(&[
        "ip", "netns", "exec", &l.a, "ping", "-c1", "-W1", "-M", "do", "-s", "1472", &b_ip,
    ]);
    assert!(
        !big.status.success(),
        "a 1500-byte DF ping really is dropped"
    );
    sh_ok(&["ip", "-n", &l.b, "link", "set", "eth0", "mtu", "1500"]);

    // A foreign table dropping forwarded packets (iptables-nft's FORWARD policy drop).
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &l.w.node,
        "nft",
        "add table ip filter",
    ]);
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &l.w.node,
        "nft",
        "add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
    ]);
    let (detail, fix) = expect_broken(&l, OUTSIDE4, "firewall (forward)");
    assert!(
        detail.contains("table ip filter, chain FORWARD"),
        "{detail}"
    );
    assert!(fix.contains("policy to accept"), "{fix}");
    assert!(!ping(&l.a, OUTSIDE4), "the lab really is broken");
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &l.w.node,
        "nft",
        "delete table ip filter",
    ]);

    // Forwarding off on the node.
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &l.w.node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=0",
    ]);
    let (_, fix) = expect_broken(&l, OUTSIDE4, "node forwarding");
    assert!(fix.contains("net.ipv4.ip_forward=1"), "{fix}");
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &l.w.node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);

    // The node end of the source's veth down.
    let host = l.w.json(&["network", "inspect", "dn"])["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    l.w.node_ip(&["link", "set", &host, "down"]);
    let (detail, fix) = expect_broken(&l, &format!("{}:80", l.b), "source interface");
    assert!(
        detail.contains(&host) && fix.contains(&host),
        "{detail} / {fix}"
    );
    l.w.node_ip(&["link", "set", &host, "up"]);

    // The other end: the destination's interface down.
    sh_ok(&["ip", "-n", &l.b, "link", "set", "eth0", "down"]);
    let (detail, fix) = expect_broken(&l, &format!("{b_ip}:80"), "destination interface");
    assert!(detail.contains(&format!("eth0 in {}", l.b)), "{detail}");
    assert_eq!(fix, format!("ip -n {} link set eth0 up", l.b));
    assert!(tcp_get(&l.a, &format!("{b_ip}:80")).is_err());
    sh_ok(&["ip", "-n", &l.b, "link", "set", "eth0", "up"]);
    sh_ok(&[
        "ip",
        "-n",
        &l.b,
        "route",
        "add",
        "default",
        "via",
        "10.63.0.1",
    ]);

    // No default route in the source.
    sh_ok(&["ip", "-n", &l.a, "route", "del", "default"]);
    let (detail, fix) = expect_broken(&l, OUTSIDE4, "route in source");
    assert!(detail.contains("unreachable"), "{detail}");
    assert!(fix.contains("default route"), "{fix}");

    // A sandbox on another knit network: isolation, not a green path.
    sh_ok(&[
        "ip",
        "-n",
        &l.a,
        "route",
        "add",
        "default",
        "via",
        "10.63.0.1",
    ]);
    l.w.ok(&["network", "create", "other", "--subnet", "10.64.0.0/24"]);
    let c = l.w.sandbox("c");
    l.w.ok(&["attach", "other", &c]);
    let c_ip = l.w.ip_of("other", &c, 4);
    let (_, fix) = expect_broken(&l, &c_ip, "isolation");
    assert!(fix.contains("knit attach other"), "{fix}");
    // By name, the source would not even resolve it: knit DNS shows a sandbox only the
    // names on its own networks.
    let (detail, fix) = expect_broken(&l, &c, "dns");
    assert!(detail.contains("shares none"), "{detail}");
    assert_eq!(fix, format!("knit attach other {}", l.a));
    assert!(!ping(&l.a, &l.w.ip_of("other", &c, 4)), "isolated indeed");
    l.w.ok(&["sandbox", "rm", &c]);

    // Bad input is exit 1, not a diagnosis.
    assert_eq!(doctor(&l, &format!("{}:99999", l.b)).0, 1);
    assert_eq!(doctor(&l, "nosuchsandbox").0, 1);
    let o = l.w.run(&["doctor", "nosuchsandbox", &l.b]);
    assert_eq!(o.status.code(), Some(1), "an unknown source is bad input");
}

/// A knit policy deny is named with the network and the rule that would allow the flow;
/// once that rule exists the path is green again, and packets agree.
#[test]
fn a_policy_deny_names_the_missing_rule() {
    let mut w = World::new();
    w.ok(&["network", "create", "pn", "--subnet", "10.65.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "pn", &a, "--label", "app=client"]);
    w.ok(&["attach", "pn", &b, "--label", "app=db"]);
    let _srv = tcp_server(&b, "0.0.0.0:5432", "db");
    let b_ip = w.ip_of("pn", &b, 4);
    w.ok(&["policy", "default", "pn", "deny"]);
    let o = w.run(&["--json", "doctor", &a, &format!("{b_ip}:5432")]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["ok"] == false)
        .unwrap();
    assert_eq!(s["step"], "policy");
    assert!(
        s["detail"].as_str().unwrap().contains("network pn denies"),
        "{s}"
    );
    assert_eq!(
        s["fix"],
        format!("knit policy allow pn --from {a} --to {b} --port 5432/tcp")
    );
    assert!(
        tcp_get(&a, &format!("{b_ip}:5432")).is_err(),
        "denied indeed"
    );
    // A rule for another port does not count; the right one does.
    let allow = |port: &str| {
        w.ok(&[
            "policy",
            "allow",
            "pn",
            "--from",
            "app=client",
            "--to",
            "app=db",
            "--port",
            port,
        ])
    };
    allow("80");
    assert_eq!(
        w.run(&["doctor", &a, &format!("{b_ip}:5432")])
            .status
            .code(),
        Some(2)
    );
    allow("5432");
    let o = w.run(&["doctor", &a, &format!("{b_ip}:5432")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(tcp_get(&a, &format!("{b_ip}:5432")).is_ok());
}
