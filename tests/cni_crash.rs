//! kill -9 of the plugin at random points during ADD, then DEL or GC: no leaked links,
//! nft elements or reservations, and no address handed out twice.

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

fn conf(port: u16) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": "crash", "type": "knit", "bridge": "cni-crash0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.75.0.0/24"}]]},
        "runtimeConfig": {"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]}
    })
}

#[test]
fn kill_9_during_add_then_del_or_gc_leaves_nothing() {
    let mut w = World::new();
    let trials = 30;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut handed_out: Vec<String> = vec![];
    let mut names = vec![];
    // The kills land anywhere in an ADD: the first ADD runs whole and its length (this
    // machine's, this build's) sets the window the others are killed in.
    let mut window_us = 14_000u64;
    for i in 0..trials {
        let c = format!("{}-c{i}", w.prefix);
        sh_ok(&["ip", "netns", "add", &c]);
        w.track(&c);
        let netns = format!("/run/netns/{c}");
        let mut cmd = command_in(&w.node, KNIT);
        cmd.env_clear()
            .env("KNIT_STATE_DIR", &w.state)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("k{i}"))
            .env("CNI_NETNS", &netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let started = std::time::Instant::now();
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf(9000 + i).to_string().as_bytes())
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if i > 0 {
            std::thread::sleep(Duration::from_micros(rng % window_us));
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        if i == 0 {
            assert!(out.status.success(), "the first, whole ADD failed");
            window_us = (started.elapsed().as_micros() as u64 * 6 / 5).max(2_000);
        }
        if out.status.success() {
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            handed_out.push(r["ips"][0]["address"].as_str().unwrap().to_string());
        }
        names.push((format!("k{i}"), netns));
    }
    let unique: HashSet<&String> = handed_out.iter().collect();
    assert_eq!(
        unique.len(),
        handed_out.len(),
        "an address was handed out twice: {handed_out:?}"
    );
    assert!(handed_out.len() < trials as usize, "no ADD was interrupted");
    // Even containers get DEL, odd ones are collected by GC (not in the valid list).
    for (cid, netns) in names.iter().step_by(2) {
        let o = w.cni_exec(
            "knit",
            &conf(1),
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
            ],
        );
        assert_eq!(o.code, 0, "{}", o.stdout);
    }
    let mut gc = conf(1);
    gc["cni.dev/valid-attachments"] = json!([]);
    let o = w.cni_exec("knit", &gc, &[("CNI_COMMAND", "GC")]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(
        w.knit_links().is_empty(),
        "leaked links: {:?}",
        w.knit_links()
    );
    // Every ADD may have been killed before the network's first nft transaction: then
    // knit's table was never created and holds nothing. Otherwise it must hold no port
    // element of a removed container.
    if w.nft_table_absent() {
        assert!(
            handed_out.is_empty(),
            "ADDs succeeded ({handed_out:?}) but knit's table is gone"
        );
    } else {
        let table = w.nft_table();
        assert!(
            !table.contains(" : 10.75.0."),
            "leaked port elements: {table}"
        );
    }
    assert!(
        w.json(&["network", "inspect", "crash"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for (_, netns) in &names {
        let ns = netns.trim_start_matches("/run/netns/");
        assert!(
            !sh_ok(&["ip", "-n", ns, "link"]).contains("eth0"),
            "interface left in {ns}"
        );
    }
    // Everything can be attached again, each with its own address and port.
    let mut seen = HashSet::new();
    for (i, (cid, netns)) in names.iter().enumerate() {
        let o = w.cni_exec(
            "knit",
            &conf(9000 + i as u16),
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
            ],
        );
        assert_eq!(o.code, 0, "{}", o.stdout);
        assert!(seen.insert(o.json()["ips"][0]["address"].as_str().unwrap().to_string()));
    }
}

#[test]
fn an_interrupted_network_creation_is_finished_by_the_next_add() {
    let mut w = World::new();
    let add = |w: &World, cid: &str, ns: &str| {
        let netns = format!("/run/netns/{ns}");
        w.cni_exec(
            "knit",
            &conf(7000),
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", cid),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
            ],
        )
    };
    let (a, b) = (format!("{}-a", w.prefix), format!("{}-b", w.prefix));
    for n in [&a, &b] {
        sh_ok(&["ip", "netns", "add", n]);
        w.track(n);
    }
    assert_eq!(add(&w, "first", &a).code, 0);
    let o = w.cni_exec(
        "knit",
        &conf(7000),
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "first"),
            ("CNI_IFNAME", "eth0"),
        ],
    );
    assert_eq!(o.code, 0);
    // The state a kill -9 between "record created" and "kernel side built" leaves behind.
    sh_ok(&[
        "ip", "netns", "exec", &w.node, "nft", "delete", "table", "inet", "knit",
    ]);
    let db = rusqlite::Connection::open(w.state.join("knit.db")).unwrap();
    db.execute("UPDATE networks SET ready = 0", []).unwrap();
    drop(db);
    let o = add(&w, "second", &b);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(w.nft_table().contains("tcp . 7000 :"), "{}", w.nft_table());
    assert!(ping(&b, "10.75.0.1"));
}
