//! Guardrails of the CNI plugin and of input validation (issue 10, items 1, 7, 10, 11):
//! what libcni runtimes really send is accepted, DEL cannot be blocked by the ADD-only parts
//! of a configuration, STATUS only looks, networks a runtime removed give way, and bad input
//! is refused with one line naming the field (the configuration's, for CNI).

mod common;
use common::*;
use serde_json::{Value, json};

/// A bare container namespace (what a runtime creates before calling ADD).
fn container(w: &mut World, short: &str) -> String {
    let name = format!("{}-{short}", w.prefix);
    sh_ok(&["ip", "netns", "add", &name]);
    w.track(&name);
    name
}

/// A single-plugin configuration for network `name` on `bridge` with one IPv4 range.
fn conf(name: &str, bridge: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "knit", "bridge": bridge,
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": subnet}]]}
    })
}

fn run(w: &World, cmd: &str, c: &Value, cid: &str, netns: &str) -> common::cni::Outcome {
    w.cni_exec(
        "knit",
        c,
        &[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
        ],
    )
}

fn network_names(w: &World) -> Vec<String> {
    w.json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// containerd (go-cni) sends capability structs with Go's field names; the namespace lives
/// under /var/run/netns. ADD publishes the port, `sandbox ls` sees the namespace, and DEL
/// succeeds even when runtimeConfig and the other ADD-only parts cannot be decoded.
#[test]
fn go_cni_capabilities_del_and_sandbox_ls() {
    let mut w = World::new().with_outside();
    let c = container(&mut w, "pod");
    let netns = format!("/var/run/netns/{c}");
    let mut add = conf("k8s", "cni-k8s0", "10.91.0.0/24");
    add["runtimeConfig"] = json!({
        "portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
        "ipRanges": [[{"Subnet": "10.91.0.0/24", "RangeStart": "", "RangeEnd": "", "Gateway": ""}]],
        "bandwidth": {"IngressRate": 0, "IngressBurst": 0, "EgressRate": 0, "EgressBurst": 0}
    });
    let o = run(&w, "ADD", &add, "pod1", &netns);
    assert_eq!(o.code, 0, "ADD with go-cni keys: {}", o.stdout);
    let ip = o.json()["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.91.0."), "{ip}");
    assert_eq!(o.json()["ips"][0]["gateway"], "10.91.0.1");
    let _s = tcp_server(&c, "0.0.0.0:80", "pod");
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).unwrap(),
        format!("pod saw {OUTSIDE4}"),
        "HostIP \"\" publishes on every node address"
    );
    // sandbox ls finds the namespace where the runtime put it.
    let rows = w.json(&["sandbox", "ls"]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sandbox"] == "cni:pod1/eth0")
        .unwrap_or_else(|| panic!("no CNI row: {rows}"));
    assert_eq!(row["exists"], true, "{row}");
    let table = w.ok(&["sandbox", "ls"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("cni:pod1/eth0"))
        .unwrap();
    assert!(line.contains("true"), "{line}");

    // DEL with a runtimeConfig (and ipam, dns, args) knit could never decode.
    let mut del = add.clone();
    del["runtimeConfig"] = json!({"portMappings": [{"HostPort": "eighty"}], "ips": 7, "mac": []});
    del["ipam"] = json!("garbage");
    del["dns"] = json!(5);
    del["args"] = json!([1]);
    del["prevResult"] = json!("nonsense");
    let o = run(&w, "DEL", &del, "pod1", &netns);
    assert_eq!(
        o.code, 0,
        "DEL must not fail on ADD-only parts: {}",
        o.stdout
    );
    assert!(w.knit_links().is_empty(), "{:?}", w.knit_links());
    assert!(!w.nft_table().contains("8080"), "port element removed");
    assert!(
        w.json(&["network", "inspect", "k8s"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Repeated, it still succeeds.
    assert_eq!(run(&w, "DEL", &del, "pod1", &netns).code, 0);
}

/// CNI STATUS with a stateDir that does not exist fails with 50 and creates nothing.
#[test]
fn status_with_a_missing_state_dir_creates_nothing() {
    let w = World::new();
    let top = std::env::temp_dir().join(format!("{}-nostate", w.prefix));
    let _ = std::fs::remove_dir_all(&top);
    let dir = top.join("a/b");
    let mut c = conf("st", "cni-st9", "10.92.0.0/24");
    c["cniVersion"] = json!("1.1.0");
    c["stateDir"] = json!(dir.to_str().unwrap());
    let o = w.cni_exec("knit", &c, &[("CNI_COMMAND", "STATUS")]);
    let exists = top.exists();
    let _ = std::fs::remove_dir_all(&top);
    assert_eq!(o.err_code(), 50, "{}", o.stdout);
    assert!(
        o.json()["msg"].as_str().unwrap().contains("does not exist"),
        "{}",
        o.stdout
    );
    assert!(!exists, "STATUS created {}", top.display());
}

/// `podman network rm` leaves the knit network its first ADD created: a new CNI network
/// with that subnet (or bridge, or name) takes it over once nothing is attached to it. A
/// network with attachments, or made with the CLI, is never removed, and the error names
/// the configuration's field, not a CLI flag.
#[test]
fn unused_cni_networks_give_way_to_new_ones() {
    let mut w = World::new();
    let c1 = container(&mut w, "c1");
    let n1 = format!("/run/netns/{c1}");
    let old = conf("pmnet", "cni-pm0", "10.89.5.0/24");
    assert_eq!(run(&w, "ADD", &old, "a1", &n1).code, 0);
    assert_eq!(run(&w, "DEL", &old, "a1", &n1).code, 0);
    // The runtime forgot "pmnet"; a new network reuses its subnet.
    let new = conf("pmnet2", "cni-pm1", "10.89.5.0/24");
    let o = run(&w, "ADD", &new, "a2", &n1);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(network_names(&w), ["pmnet2"]);
    assert!(
        !w.node_ip(&["link", "show"]).contains("cni-pm0"),
        "the old bridge went with its network"
    );
    // pmnet2 has an attachment: it blocks, and the error names the config field.
    let c2 = container(&mut w, "c2");
    let n2 = format!("/run/netns/{c2}");
    let third = conf("pmnet3", "cni-pm3", "10.89.5.0/24");
    let o = run(&w, "ADD", &third, "a3", &n2);
    assert_eq!(o.err_code(), 7, "{}", o.stdout);
    let msg = o.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("ipam.ranges[0][0].subnet") && msg.contains("pmnet2") && !msg.contains("--"),
        "{msg}"
    );
    assert_eq!(network_names(&w), ["pmnet2"]);
    assert_eq!(
        w.json(&["network", "inspect", "pmnet2"])["attachments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A CLI network is never taken over, even without attachments.
    w.ok(&["network", "create", "clinet", "--subnet", "10.89.6.0/24"]);
    let o = run(
        &w,
        "ADD",
        &conf("pmnet4", "cni-pm4", "10.89.6.0/24"),
        "a4",
        &n2,
    );
    assert_eq!(o.err_code(), 7, "{}", o.stdout);
    assert!(network_names(&w).contains(&"clinet".to_string()));
    // Same name, new subnet, once its last container is gone: re-created.
    assert_eq!(run(&w, "DEL", &new, "a2", &n1).code, 0);
    let renewed = conf("pmnet2", "cni-pm1", "10.89.7.0/24");
    let o = run(&w, "ADD", &renewed, "a5", &n1);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(result_has(&o.json(), "10.89.7."), "{}", o.stdout);
    // Nothing was left of any failed ADD.
    let veths: Vec<String> = w
        .knit_links()
        .into_iter()
        .filter(|l| l.starts_with("kv"))
        .collect();
    assert_eq!(veths.len(), 1, "{veths:?}");
    assert!(!sh_ok(&["ip", "-n", &c2, "link"]).contains("eth0"));
}

fn result_has(r: &Value, prefix: &str) -> bool {
    r["ips"][0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with(prefix))
}

/// rangeStart after rangeEnd is refused (code 7, naming the field) before anything is built.
#[test]
fn reversed_range_is_refused() {
    let mut w = World::new();
    let c = container(&mut w, "c");
    let mut bad = conf("rr", "cni-rr0", "10.93.0.0/24");
    bad["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.93.0.200");
    bad["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.93.0.100");
    let o = run(&w, "ADD", &bad, "r1", &format!("/run/netns/{c}"));
    assert_eq!(o.err_code(), 7, "{}", o.stdout);
    let msg = o.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("ipam.ranges[0][0].rangeStart") && msg.contains("10.93.0.200"),
        "{msg}"
    );
    assert!(network_names(&w).is_empty());
    assert!(w.knit_links().is_empty());
}

/// CHECK's differences read as text, not Rust debug output.
#[test]
fn check_messages_are_human() {
    let mut w = World::new();
    let c = container(&mut w, "c");
    let netns = format!("/run/netns/{c}");
    let mut cf = conf("hc", "cni-hc0", "10.94.0.0/24");
    cf["cniVersion"] = json!("1.1.0");
    let o = run(&w, "ADD", &cf, "h1", &netns);
    assert_eq!(o.code, 0, "{}", o.stdout);
    cf["prevResult"] = o.json();
    sh_ok(&["ip", "-n", &c, "route", "del", "default"]);
    let o = run(&w, "CHECK", &cf, "h1", &netns);
    assert_eq!(o.err_code(), 101, "{}", o.stdout);
    let details = o.json()["details"].as_str().unwrap().to_string();
    assert!(
        details.contains("route 0.0.0.0/0 via 10.94.0.1 is missing"),
        "{details}"
    );
    assert!(!details.contains("Some("), "{details}");
}

/// The CLI refuses what model.rs now validates, with one line naming the flag, and
/// leaves nothing behind.
#[test]
fn cli_refuses_ambiguous_and_reserved_input() {
    let mut w = World::new();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "x", "--subnet", "010.1.0.0/24"],
            "leading zero",
        ),
        (
            vec!["network", "create", "x", "--subnet", "169.254.0.0/16"],
            "link-local",
        ),
        (
            vec!["network", "create", "x", "--subnet", "fe80::/64"],
            "link-local",
        ),
        (
            vec!["network", "create", "x", "--subnet", "::ffff:10.0.0.0/120"],
            "IPv4-mapped",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.1.0.0/24",
                "--subnet",
                "fd01::/64",
                "--mtu",
                "1000",
            ],
            "--mtu",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.1.0.0/24",
                "--bridge",
                "br\"x",
            ],
            "--bridge",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.1.0.0/24",
                "--bridge",
                "kv0123456789",
            ],
            "knit generates",
        ),
    ];
    for (args, needle) in &cases {
        let e = w.fail(args);
        assert!(e.contains(needle), "{args:?}: {e}");
        assert!(!e.contains("os error"), "{args:?}: raw errno: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
    }
    assert!(network_names(&w).is_empty());
    assert!(w.knit_links().is_empty());
    // Two addresses of one family: refused, not one silently dropped.
    w.ok(&["network", "create", "ok", "--subnet", "10.95.0.0/24"]);
    let s = w.sandbox("s");
    let e = w.fail(&["attach", "ok", &s, "--ip", "10.95.0.5", "--ip", "10.95.0.6"]);
    assert!(e.contains("--ip") && e.contains("10.95.0.6"), "{e}");
    assert!(
        w.json(&["network", "inspect", "ok"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let e = w.fail(&["attach", "ok", &s, "--ip", "10.95.0.010"]);
    assert!(e.contains("leading zero"), "{e}");
}
