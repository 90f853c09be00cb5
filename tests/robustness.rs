//! Reconcile after a wipe, concurrent attaches, kill -9 mid-attach, bad input.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::Duration;

#[test]
fn reconcile_restores_connectivity_after_links_and_table_are_wiped() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "rc", "--subnet", "10.51.0.0/24"]);
    w.ok(&[
        "network",
        "create",
        "rp",
        "--subnet",
        "10.51.1.0/24",
        "--driver",
        "ptp",
    ]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    let p = w.sandbox("p");
    w.ok(&["attach", "rc", &a, "-p", "8080:80"]);
    w.ok(&["attach", "rc", &b]);
    w.ok(&["attach", "rp", &p]);
    let a_ip = w.ip_of("rc", &a, 4);
    let p_ip = w.ip_of("rp", &p, 4);
    // Wipe: every knit link in the node and knit's nft table.
    for l in w.knit_links() {
        sh_ok(&["ip", "-n", &w.node, "link", "del", &l]);
    }
    sh_ok(&[
        "ip", "netns", "exec", &w.node, "nft", "delete", "table", "inet", "knit",
    ]);
    assert!(!ping(&b, &a_ip));
    let out = w.ok(&["reconcile"]);
    assert!(out.contains("3 attachment(s) in place"), "{out}");
    assert!(ping(&b, &a_ip));
    assert!(ping(&w.node, &p_ip));
    let _s = tcp_server(&a, "0.0.0.0:80", "web");
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).unwrap(),
        format!("web saw {OUTSIDE4}")
    );
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    assert_eq!(
        tcp_get(&p, &format!("{OUTSIDE4}:7000")).unwrap(),
        format!("outside saw {NODE_UPLINK4}")
    );
    // A sandbox that vanished is dropped; a second reconcile changes nothing.
    sh_ok(&["ip", "netns", "del", &b]);
    let out = w.json(&["reconcile"]);
    assert_eq!(out["gone_removed"].as_array().unwrap().len(), 1, "{out}");
    let out = w.json(&["reconcile"]);
    assert_eq!(out["attachments_ok"].as_array().unwrap().len(), 2, "{out}");
    assert!(out["gone_removed"].as_array().unwrap().is_empty());
}

#[test]
fn concurrent_attaches_get_distinct_addresses() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "cc",
        "--subnet",
        "10.52.0.0/24",
        "--subnet",
        "fd52::/64",
    ]);
    let names: Vec<String> = (0..20).map(|i| w.sandbox(&format!("c{i}"))).collect();
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            w.cmd(&["attach", "cc", n])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut seen4 = HashSet::new();
    let mut seen6 = HashSet::new();
    for n in &names {
        assert!(seen4.insert(w.ip_of("cc", n, 4)));
        assert!(seen6.insert(w.ip_of("cc", n, 6)));
        // The address is really configured inside the sandbox.
        assert!(sh_ok(&["ip", "-n", n, "addr"]).contains(&w.ip_of("cc", n, 4)));
    }
    assert_eq!(seen4.len(), 20);
    assert_eq!(w.knit_links().len(), 21);
    let first = w.ip_of("cc", &names[0], 4);
    assert!(ping(&names[19], &first));
}

#[test]
fn kill_9_mid_attach_is_repaired_by_reconcile_and_detach() {
    let mut w = World::new();
    w.ok(&["network", "create", "k", "--subnet", "10.53.0.0/24"]);
    let victims: Vec<String> = (0..12).map(|i| w.sandbox(&format!("v{i}"))).collect();
    for (i, v) in victims.iter().enumerate() {
        let p = format!("{}:80", 8000 + i);
        let mut child = w
            .cmd(&["attach", "k", v, "-p", &p])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kill over the whole attach (store, links, nft): 0 to ~11 ms.
        std::thread::sleep(Duration::from_micros(900 * i as u64));
        let _ = child.kill();
        let _ = child.wait();
    }
    // The test is only meaningful if kills landed before attaches finished.
    let before = w.json(&["network", "inspect", "k"]);
    let ready = before["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "ready")
        .count();
    assert!(ready < victims.len(), "no attach was interrupted");
    // Half are repaired by detach, the rest by reconcile.
    for v in victims.iter().step_by(2) {
        w.ok(&["detach", "k", v]);
    }
    w.ok(&["reconcile"]);
    let atts = w.json(&["network", "inspect", "k"]);
    for a in atts["attachments"].as_array().unwrap() {
        assert_eq!(
            a["state"], "ready",
            "reconcile leaves no pending attachment: {a}"
        );
    }
    // Every knit link on the node belongs to a recorded attachment (or is the bridge).
    let recorded: HashSet<String> = atts["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host_ifname"].as_str().unwrap().to_string())
        .collect();
    for l in w.knit_links() {
        assert!(l == "knbr1" || recorded.contains(&l), "leaked link {l}");
    }
    // Ports of dead attempts are free again, all nft elements match the store.
    let table = w.nft_table();
    let published = table.matches(" : 10.53.0.").count();
    let ports: usize = atts["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ports"].as_array().unwrap().len())
        .sum();
    assert_eq!(published, ports, "{table}");
    // Attaching everything now works and never hands out an address twice.
    // (With the same --publish as before: a completed attach keeps its ports.)
    for (i, v) in victims.iter().enumerate() {
        w.ok(&["attach", "k", v, "-p", &format!("{}:80", 8000 + i)]);
    }
    let mut seen = HashSet::new();
    for v in &victims {
        assert!(seen.insert(w.ip_of("k", v, 4)));
        assert!(sh_ok(&["ip", "-n", v, "addr"]).contains(&w.ip_of("k", v, 4)));
    }
    let first = w.ip_of("k", &victims[0], 4);
    assert!(ping(&victims[11], &first));
}

#[test]
fn bad_input_is_rejected_clearly_and_leaves_nothing() {
    let mut w = World::new();
    w.ok(&["network", "create", "ok", "--subnet", "10.54.0.0/24"]);
    w.ok(&["network", "create", "tiny", "--subnet", "10.54.9.0/30"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    w.ok(&["attach", "tiny", &a]);
    let links_before = w.knit_links();
    let table_before = w.nft_table();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "x", "--subnet", "10.0.0.300/24"],
            "10.0.0.300/24",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.54.0.5/24"],
            "host bits",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.54.0.0/16"],
            "overlaps",
        ),
        (
            vec!["network", "create", "ok", "--subnet", "10.99.0.0/24"],
            "already exists",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.99.0.0/24",
                "--gateway",
                "10.98.0.1",
            ],
            "10.98.0.1",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.99.0.0/24",
                "--driver",
                "vxlan",
            ],
            "vxlan",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.99.0.0/24",
                "--mtu",
                "20",
            ],
            "--mtu",
        ),
        (
            vec!["network", "create", "bad name", "--subnet", "10.99.0.0/24"],
            "bad name",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.99.0.0/24",
                "--bridge",
                "waytoolongbridgename",
            ],
            "--bridge",
        ),
        (vec!["attach", "nope", &b], "network \"nope\" not found"),
        (vec!["attach", "ok", "ghost-sandbox"], "ghost-sandbox"),
        (vec!["attach", "ok", &b, "--ip", "10.55.0.9"], "10.55.0.9"),
        (vec!["attach", "ok", &b, "--ip", "banana"], "banana"),
        (vec!["attach", "ok", &b, "-p", "70000:80"], "70000"),
        (vec!["attach", "ok", &b, "-p", "0:80"], "out of range"),
        (vec!["attach", "ok", &b, "-p", "80:80/icmp"], "icmp"),
        (vec!["attach", "ok", &b, "--mac", "zz:zz"], "zz:zz"),
        (vec!["attach", "ok", &b, "--ifname", "a/b"], "a/b"),
        (vec!["attach", "tiny", &b], "no free address"),
        (vec!["detach", "nope", &b], "not found"),
        (vec!["network", "rm", "nope"], "not found"),
        (vec!["network", "rm", "tiny"], "attachment"),
        (vec!["sandbox", "rm", "ghost-sandbox"], "not found"),
        (vec!["inspect", "ghost-sandbox"], "not found"),
    ];
    for (args, needle) in &cases {
        let e = w.fail(args);
        assert!(
            e.contains(needle),
            "{args:?}: stderr {e:?} does not mention {needle:?}"
        );
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    }
    // Nothing was left behind by any of them.
    assert_eq!(w.knit_links(), links_before);
    assert_eq!(w.nft_table(), table_before);
    let nets = w.json(&["network", "ls"]);
    assert_eq!(nets.as_array().unwrap().len(), 2);
    assert!(
        w.json(&["network", "inspect", "ok"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!sh_ok(&["ip", "-n", &b, "link"]).contains("eth0"));
}
