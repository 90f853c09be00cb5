//! `knit apply` / `knit destroy` with the files in examples/: each seed lab applied,
//! proven with real packets, applied again (nothing to do), destroyed (nothing left in the
//! store or the kernel) and destroyed again (nothing to do). Also: a changed file changes
//! only what changed, a failure half-way is undone, what the topology did not create is
//! left alone, and bad files are refused with their line and column.

mod common;
use common::*;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Sandbox names of a file with the world's prefix (namespaces are global and tests run
/// in parallel).
struct Names(BTreeMap<String, String>);

impl std::ops::Index<&str> for Names {
    type Output = String;
    fn index(&self, short: &str) -> &String {
        &self.0[short]
    }
}

/// Renames the sandboxes of a topology (keys under `sandboxes:`, service backends
/// `NAME:PORT`, policy sides naming a sandbox) and has the world track them for cleanup.
fn prefixed(w: &mut World, mut v: Value) -> (Value, Names) {
    let mut names = BTreeMap::new();
    if let Some(m) = v.get_mut("sandboxes").and_then(Value::as_mapping_mut) {
        let old = std::mem::take(m);
        for (k, val) in old {
            let short = k.as_str().unwrap().to_string();
            let full = format!("{}-{short}", w.prefix);
            w.track(&full);
            names.insert(short, full.clone());
            m.insert(Value::String(full), val);
        }
    }
    let rename = |s: &mut Value, names: &BTreeMap<String, String>| {
        if let Some(t) = s.as_str() {
            let (name, rest) = t.split_once(':').map_or((t, None), |(a, b)| (a, Some(b)));
            if let Some(full) = names.get(name) {
                *s = Value::String(match rest {
                    Some(r) => format!("{full}:{r}"),
                    None => full.clone(),
                });
            }
        }
    };
    if let Some(m) = v.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, svc) in m.iter_mut() {
            if let Some(bs) = svc.get_mut("backends").and_then(Value::as_sequence_mut) {
                bs.iter_mut().for_each(|b| rename(b, &names));
            }
        }
    }
    if let Some(ps) = v.get_mut("policies").and_then(Value::as_sequence_mut) {
        for p in ps {
            for side in ["from", "to"] {
                if let Some(s) = p.get_mut(side) {
                    rename(s, &names);
                }
            }
        }
    }
    (v, Names(names))
}

fn example(name: &str) -> Value {
    let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Writes a topology where the world's state lives (removed with it).
fn write(w: &World, file: &str, v: &Value) -> String {
    write_text(w, file, &serde_yaml::to_string(v).unwrap())
}

fn write_text(w: &World, file: &str, text: &str) -> String {
    std::fs::create_dir_all(&w.state).unwrap();
    let p: PathBuf = w.state.join(file);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Applies, and checks a second apply has nothing to do (also as JSON, dry run).
fn apply_twice(w: &World, file: &str) -> String {
    let out = w.ok(&["apply", file]);
    assert!(out.contains("applied"), "{out}");
    let again = w.ok(&["apply", file]);
    assert!(
        again.contains("nothing to do"),
        "second apply changed something: {again}"
    );
    let plan = w.json(&["apply", "--dry-run", file]);
    assert_eq!(plan["steps"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["changed"], false);
    out
}

/// Destroys, checks nothing is left (store and kernel), destroys again (nothing to do).
fn destroy_all(w: &World, file: &str, names: &Names) {
    let out = w.ok(&["destroy", file]);
    assert!(out.contains("step(s) removed"), "{out}");
    for full in names.0.values() {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{full}")).exists(),
            "namespace {full} left behind"
        );
    }
    assert_eq!(w.knit_links(), Vec::<String>::new(), "links left behind");
    assert_eq!(w.json(&["network", "ls"]), serde_json::json!([]));
    assert_eq!(w.json(&["sandbox", "ls"]), serde_json::json!([]));
    assert_eq!(w.json(&["service", "ls"]), serde_json::json!([]));
    assert_eq!(w.json(&["policy", "ls"])["rules"], serde_json::json!([]));
    let again = w.ok(&["destroy", file]);
    assert!(again.contains("nothing to do"), "{again}");
}

/// The index of `ifname` inside a sandbox (a new veth gets a new one).
fn ifindex(sandbox: &str, ifname: &str) -> String {
    let out = sh_ok(&["ip", "-n", sandbox, "-o", "link", "show", ifname]);
    out.split(':').next().unwrap().to_string()
}

#[test]
fn single_host_lab() {
    let mut w = World::new().with_outside();
    let (v, n) = prefixed(&mut w, example("single-host.yaml"));
    let f = write(&w, "single-host.yaml", &v);
    apply_twice(&w, &f);
    let client = w.ip_of("lab", &n["client"], 4);
    assert!(ping(&n["web"], &client), "web cannot reach client");
    assert!(ping(&n["client"], "10.171.0.10"), "client cannot reach web");
    let _srv = tcp_server(&n["web"], "0.0.0.0:80", "web");
    let got = tcp_get(&n["client"], "10.171.0.10:80").unwrap();
    assert_eq!(got, format!("web saw {client}"));
    // Outside, masqueraded behind the node's uplink.
    assert!(
        ping(&n["client"], OUTSIDE4),
        "client cannot reach the outside"
    );
    destroy_all(&w, &f, &n);
}

#[test]
fn port_publishing() {
    let mut w = World::new().with_outside();
    let (v, n) = prefixed(&mut w, example("port-publishing.yaml"));
    let f = write(&w, "port-publishing.yaml", &v);
    apply_twice(&w, &f);
    let _a = tcp_server(&n["app1"], "0.0.0.0:8080", "app1");
    let _b = tcp_server(&n["app2"], "0.0.0.0:8080", "app2");
    let out = w.outside().to_string();
    let one = tcp_get(&out, &format!("{NODE_UPLINK4}:6000")).unwrap();
    let two = tcp_get(&out, &format!("{NODE_UPLINK4}:6001")).unwrap();
    assert!(one.starts_with("app1 saw"), "{one}");
    assert!(two.starts_with("app2 saw"), "{two}");
    destroy_all(&w, &f, &n);
    assert!(tcp_get(&out, &format!("{NODE_UPLINK4}:6000")).is_err());
}

#[test]
fn two_networks_isolated() {
    let mut w = World::new();
    let (v, n) = prefixed(&mut w, example("two-networks.yaml"));
    let f = write(&w, "two-networks.yaml", &v);
    apply_twice(&w, &f);
    let red2 = w.ip_of("red", &n["red2"], 4);
    let red1 = w.ip_of("red", &n["red1"], 4);
    let blue1 = w.ip_of("blue", &n["blue1"], 4);
    assert!(ping(&n["red1"], &red2), "red1 cannot reach red2");
    assert!(
        !ping(&n["red1"], &blue1),
        "red1 reached blue1 across networks"
    );
    assert!(
        !ping(&n["blue1"], &red1),
        "blue1 reached red1 across networks"
    );
    let _srv = tcp_server(&n["blue1"], "0.0.0.0:80", "blue1");
    assert!(tcp_get(&n["red1"], &format!("{blue1}:80")).is_err());
    destroy_all(&w, &f, &n);
}

#[test]
fn load_balancer() {
    // The uplink gives the node a route towards the VIP (it reaches it too).
    let mut w = World::new().with_outside();
    let (v, n) = prefixed(&mut w, example("load-balancer.yaml"));
    let f = write(&w, "load-balancer.yaml", &v);
    apply_twice(&w, &f);
    let _servers: Vec<Server> = ["backend1", "backend2", "backend3"]
        .iter()
        .map(|b| tcp_server(&n[b], "0.0.0.0:8080", b))
        .collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        let got = tcp_get(&n["client"], "10.179.0.10:80").unwrap();
        let who = got.split_whitespace().next().unwrap().to_string();
        *seen.entry(who).or_default() += 1;
    }
    // Uniform over three: a backend missing from 30 connections has odds of 2e-6.
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The node reaches the VIP too (output hook); after destroy nothing answers there.
    assert!(tcp_get(&w.node, "10.179.0.10:80").is_ok());
    destroy_all(&w, &f, &n);
    assert!(tcp_get(&w.node, "10.179.0.10:80").is_err());
}

#[test]
fn default_deny() {
    let mut w = World::new();
    let (v, n) = prefixed(&mut w, example("default-deny.yaml"));
    let f = write(&w, "default-deny.yaml", &v);
    apply_twice(&w, &f);
    let web = w.ip_of("secure", &n["web"], 4);
    let _srv = tcp_server(&n["web"], "0.0.0.0:8080", "web");
    let _other = tcp_server(&n["web"], "0.0.0.0:9090", "web");
    assert!(
        tcp_get(&n["client"], &format!("{web}:8080")).is_ok(),
        "the allow rule does not allow"
    );
    assert!(
        tcp_get(&n["intruder"], &format!("{web}:8080")).is_err(),
        "default deny lets the intruder in"
    );
    assert!(
        tcp_get(&n["client"], &format!("{web}:9090")).is_err(),
        "a port the rule does not name"
    );
    assert!(!ping(&n["client"], &web), "ICMP is not allowed");
    destroy_all(&w, &f, &n);
}

#[test]
fn a_changed_file_changes_only_what_changed() {
    let mut w = World::new().with_outside();
    let (v, n) = prefixed(&mut w, example("single-host.yaml"));
    let f = write(&w, "lab.yaml", &v);
    apply_twice(&w, &f);
    let (web0, client0) = (ifindex(&n["web"], "eth0"), ifindex(&n["client"], "eth0"));
    let client_ip = w.ip_of("lab", &n["client"], 4);

    // A published port on web: web is attached again, client untouched.
    let mut v2 = v.clone();
    v2["sandboxes"][n["web"].as_str()]["networks"]["lab"]["ports"] =
        serde_yaml::from_str("[\"8080:80\"]").unwrap();
    let f2 = write(&w, "lab.yaml", &v2);
    let out = apply_twice(&w, &f2);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with(['+', '-', '~']))
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains(&format!("- attachment {} on lab", n["web"])),
        "{out}"
    );
    assert!(
        out.contains(&format!("+ attachment {} on lab", n["web"])),
        "{out}"
    );
    assert!(!out.contains(&n["client"]), "{out}");
    assert_ne!(
        ifindex(&n["web"], "eth0"),
        web0,
        "web was not attached again"
    );
    assert_eq!(
        ifindex(&n["client"], "eth0"),
        client0,
        "client's attachment was touched"
    );
    assert_eq!(w.ip_of("lab", &n["client"], 4), client_ip);
    let _srv = tcp_server(&n["web"], "0.0.0.0:80", "web");
    let got = tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).unwrap();
    assert!(got.starts_with("web saw"), "{got}");

    // client gone from the file: removed (an orphan of this topology); web untouched.
    let web1 = ifindex(&n["web"], "eth0");
    let mut v3 = v2.clone();
    v3["sandboxes"]
        .as_mapping_mut()
        .unwrap()
        .remove(n["client"].as_str());
    let f3 = write(&w, "lab.yaml", &v3);
    let out = apply_twice(&w, &f3);
    assert!(out.contains(&format!("- sandbox {}", n["client"])), "{out}");
    assert!(!std::path::Path::new(&format!("/run/netns/{}", n["client"])).exists());
    assert_eq!(ifindex(&n["web"], "eth0"), web1, "web was touched");
    destroy_all(&w, &f3, &n);
}

#[test]
fn what_the_topology_did_not_create_is_left_alone() {
    let mut w = World::new();
    w.ok(&["network", "create", "shared", "--subnet", "10.176.0.0/24"]);
    let keep = w.sandbox("keep");
    w.ok(&["attach", "shared", &keep]);
    let text = "name: guest\nsandboxes:\n  guest:\n    networks: [shared]\n  keep:\n    networks: [shared]\n";
    let (v, n) = prefixed(&mut w, serde_yaml::from_str(text).unwrap());
    let f = write(&w, "guest.yaml", &v);
    let out = apply_twice(&w, &f);
    assert!(
        out.contains("is attached to shared already and used as it is"),
        "{out}"
    );
    assert_eq!(w.attachments("shared"), 2);
    let out = w.ok(&["destroy", &f]);
    assert!(out.contains(&format!("- sandbox {}", n["guest"])), "{out}");
    assert!(!out.contains(&keep), "{out}");
    // The network and the sandbox made by hand are still there, still attached.
    assert_eq!(w.attachments("shared"), 1);
    assert!(std::path::Path::new(&format!("/run/netns/{keep}")).exists());
    assert!(w.ok(&["destroy", &f]).contains("nothing to do"));
}

/// Objects of the topology that were touched by hand since: a sandbox attached to another
/// network, a rule added to its network, a network removed and made again under its name.
/// destroy refuses (conflict, nothing changed) or leaves the hand-made object alone.
#[test]
fn what_was_changed_by_hand_since_is_not_taken_away() {
    let mut w = World::new();
    w.ok(&[
        "network",
        "create",
        "other",
        "--subnet",
        "10.177.1.0/24",
        "--no-dns",
    ]);
    let text = "name: handled\nnetworks:\n  hn:\n    subnet: 10.177.0.0/24\nsandboxes:\n  s:\n    networks: [hn]\n";
    let (v, n) = prefixed(&mut w, serde_yaml::from_str(text).unwrap());
    let f = write(&w, "handled.yaml", &v);
    apply_twice(&w, &f);
    let s = n["s"].clone();

    // The topology's sandbox, attached by hand to another network: destroy must not
    // detach that.
    w.ok(&["attach", "other", &s]);
    let o = w.run(&["destroy", &f]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("outside the topology"));
    assert_eq!(w.attachments("hn"), 1, "nothing changed");
    w.ok(&["detach", "other", &s]);

    // A rule added by hand to the topology's network.
    let rule = w.json(&["policy", "allow", "hn", "--from", "10.0.0.0/8", "--to", &s]);
    let id = rule["id"]
        .as_i64()
        .or(rule["rule"]["id"].as_i64())
        .unwrap_or_else(|| panic!("{rule}"));
    let o = w.run(&["destroy", &f]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("policy rule"));
    w.ok(&["policy", "rm", &id.to_string()]);

    // The network removed and made again by hand, under the same name: not the
    // topology's any more.
    w.ok(&["detach", "hn", &s]);
    w.ok(&["network", "rm", "hn"]);
    w.ok(&["network", "create", "hn", "--subnet", "10.177.2.0/24"]);
    w.ok(&["destroy", &f]);
    let nets = w.ok(&["network", "ls"]);
    assert!(nets.contains("hn"), "the hand-made network stays: {nets}");
}

#[test]
fn a_failure_half_way_is_undone() {
    let mut w = World::new();
    // Host port 7000 is taken by a sandbox outside the topology.
    w.ok(&["network", "create", "side", "--subnet", "10.177.9.0/24"]);
    let taken = w.sandbox("taken");
    w.ok(&["attach", "side", &taken, "-p", "7000:80"]);
    let text = "name: clash\nnetworks:\n  lab: {subnet: 10.177.0.0/24, ingress: deny}\nsandboxes:\n  a:\n    networks: [lab]\n  b:\n    networks:\n      lab: {ports: [\"7000:80\"]}\n";
    let (v, n) = prefixed(&mut w, serde_yaml::from_str(text).unwrap());
    let f = write(&w, "clash.yaml", &v);
    let o = w.run(&["apply", &f]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("step 6/6"), "{err}");
    assert!(
        err.contains("the 5 step(s) done before it were undone"),
        "{err}"
    );
    // Nothing of it is left; what was there before is untouched.
    let nets: Vec<String> = w
        .json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nets, ["side"]);
    for s in [&n["a"], &n["b"]] {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{s}")).exists(),
            "{s} left behind"
        );
    }
    assert_eq!(w.attachments("side"), 1);
    assert!(w.ok(&["destroy", &f]).contains("nothing to do"));
    // Fixed, the file applies.
    let yaml = serde_yaml::to_string(&v).unwrap();
    let fixed = write_text(&w, "clash.yaml", &yaml.replace("7000:80", "7001:80"));
    apply_twice(&w, &fixed);
    let before = w.json(&["network", "inspect", "lab"])["attachments"].clone();

    // Undoing removals: a is relabelled and b gets the taken port too, so both are
    // detached, a attached again, and b's attach fails: b is attached back as it was
    // (its old port, address and MAC) and a with its old labels.
    let mut v2: Value = serde_yaml::from_str(&yaml.replace("7000:80", "7001:80")).unwrap();
    v2["sandboxes"][n["a"].as_str()]["networks"] =
        serde_yaml::from_str("{lab: {labels: {tier: front}}}").unwrap();
    v2["sandboxes"][n["b"].as_str()]["networks"]["lab"]["ports"] =
        serde_yaml::from_str("[\"7001:80\", \"7000:80\"]").unwrap();
    let f2 = write(&w, "clash2.yaml", &v2);
    let err = w.fail(&["apply", &f2]);
    assert!(err.contains("step 4/4"), "{err}");
    assert!(
        err.contains("the 3 step(s) done before it were undone"),
        "{err}"
    );
    let after = w.json(&["network", "inspect", "lab"])["attachments"].clone();
    let key = |a: &serde_json::Value| {
        ["sandbox", "ips", "mac", "ifname", "ports", "labels"]
            .iter()
            .map(|k| a[k].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut b: Vec<String> = before.as_array().unwrap().iter().map(key).collect();
    let mut a: Vec<String> = after.as_array().unwrap().iter().map(key).collect();
    b.sort();
    a.sort();
    assert_eq!(a, b, "the undone apply did not restore the attachments");
    assert!(w.ok(&["apply", &fixed]).contains("nothing to do"));
    w.ok(&["destroy", &fixed]);
}

#[test]
fn bad_files_are_refused_with_line_and_column() {
    let w = World::new();
    for (text, want) in [
        (
            "name: x\nnetworks:\n  lab:\n    subnet: 10.178.0.0/24\n    colour: red\n",
            ":5:5: networks.lab: unknown field `colour`",
        ),
        (
            "name: x\nnetworks:\n  lab:\n    subnet: 10.178.0.0/33\n",
            ":4:13: networks.lab.subnet: \"10.178.0.0/33\"",
        ),
        (
            "name: x\nsandboxes:\n  a:\n    networks: [nosuch]\n",
            ":4:5: sandboxes.a.networks.nosuch: network \"nosuch\" is neither declared",
        ),
        (
            "name: x\nnetworks:\n  lab: {subnet: 10.178.0.0/24}\nsandboxes:\n  a:\n    networks:\n      lab: {ports: [\"80:70000\"]}\n",
            ":7:22: sandboxes.a.networks.lab.ports[0]: \"80:70000\"",
        ),
        (
            "name: x\nnetworks: {lab: {subnet: 10.178.0.0/24}\n",
            ":3:1: did not find expected ',' or '}'",
        ),
    ] {
        let f = write_text(&w, "bad.yaml", text);
        for cmd in ["apply", "destroy"] {
            let o = w.run(&[cmd, &f]);
            let err = String::from_utf8_lossy(&o.stderr);
            // destroy reads only the name: a file refers to the store's objects freely.
            if cmd == "destroy" && want.contains("neither declared") {
                assert!(o.status.success(), "{err}");
                continue;
            }
            assert_eq!(o.status.code(), Some(1), "{cmd} {text}: {err}");
            assert!(
                err.contains(&format!("{f}{want}")),
                "{cmd} {text}\n got: {err}\nwant: {f}{want}"
            );
        }
    }
    // A good file with --dry-run creates nothing either.
    let f = write_text(
        &w,
        "ok.yaml",
        "name: x\nnetworks:\n  lab: {subnet: 10.178.0.0/24}\n",
    );
    assert!(w.ok(&["apply", "--dry-run", &f]).contains("+ network lab"));
    assert_eq!(w.json(&["network", "ls"]), serde_json::json!([]));
    assert_eq!(w.knit_links(), Vec::<String>::new());
}
