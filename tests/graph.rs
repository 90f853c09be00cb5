//! `knit graph`: the JSON model matches the store, DOT names every object, and the SVG
//! knit draws itself is well-formed XML that names every network, sandbox and service,
//! also with 50 sandboxes.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

/// Parses the SVG with Python's XML parser and returns every text element's content.
fn svg_texts(svg: &str) -> Vec<String> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\nr = E.fromstring(sys.stdin.read())\nassert r.tag.endswith('svg'), r.tag\nfor t in r.iter('{http://www.w3.org/2000/svg}text'): print(t.text)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(svg.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "not well-formed SVG: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn graph_model_dot_and_svg() {
    let mut w = World::new();
    w.ok(&["network", "create", "front", "--subnet", "10.58.0.0/24"]);
    w.ok(&[
        "network",
        "create",
        "back",
        "--subnet",
        "10.59.0.0/24",
        "--driver",
        "ptp",
    ]);
    let web = w.sandbox("web");
    let db = w.sandbox("db");
    w.ok(&[
        "attach", "front", &web, "-p", "8080:80", "--label", "app=web",
    ]);
    w.ok(&["attach", "back", &web]);
    w.ok(&["attach", "back", &db, "--label", "app=db"]);
    w.ok(&[
        "service",
        "create",
        "api",
        "--vip",
        "10.96.0.58:80",
        "--backend",
        &format!("{web}:80"),
    ]);
    w.ok(&["policy", "default", "back", "deny"]);
    w.ok(&[
        "policy", "allow", "back", "--from", "app=web", "--to", "app=db", "--port", "5432",
    ]);

    let g = w.json(&["graph", "--format", "json"]);
    let nets: Vec<&str> = g["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(nets, ["front", "back"]);
    assert_eq!(g["networks"][1]["ingress"], "deny");
    let sb = g["sandboxes"].as_array().unwrap();
    let w_sb = sb.iter().find(|s| s["name"] == web.as_str()).unwrap();
    assert_eq!(w_sb["interfaces"].as_array().unwrap().len(), 2);
    let front_ip = w.ip_of("front", &web, 4);
    assert!(
        w_sb["interfaces"][0]["addresses"][0]
            .as_str()
            .unwrap()
            .starts_with(&front_ip)
    );
    assert_eq!(w_sb["interfaces"][0]["published"][0], "8080 -> 80/tcp");
    assert!(
        w_sb["interfaces"][1]["addresses"][0]
            .as_str()
            .unwrap()
            .ends_with("/32"),
        "ptp"
    );
    assert_eq!(g["services"][0]["backends"][0], format!("{web}:80"));
    assert_eq!(g["rules"][0]["port"], "5432/tcp");

    let dot = w.ok(&["graph", "--format", "dot"]);
    assert!(dot.starts_with("digraph knit {"));
    for obj in [
        "net:front",
        "net:back",
        &format!("sb:{web}"),
        &format!("sb:{db}"),
        "svc:api",
    ] {
        assert!(
            dot.contains(&format!("\"{obj}\"")),
            "{obj} missing from:\n{dot}"
        );
    }
    assert!(dot.contains(&format!("\"svc:api\" -> \"sb:{web}\"")));

    let texts = svg_texts(&w.ok(&["graph"]));
    let all = texts.join("\n");
    for name in [
        "network front (bridge)",
        "network back (ptp)",
        web.as_str(),
        db.as_str(),
        "service api",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(name)),
            "{name} missing from the SVG:\n{all}"
        );
    }
    assert!(
        all.contains("publish 8080 -> 80/tcp") && all.contains(":5432"),
        "{all}"
    );
    assert!(w.fail(&["graph", "--format", "png"]).contains("--format"));
}

#[test]
fn fifty_sandboxes_are_all_drawn() {
    let mut w = World::new();
    w.ok(&["network", "create", "many", "--subnet", "10.60.0.0/24"]);
    let mut names = vec![];
    for i in 0..50 {
        let s = w.sandbox(&format!("s{i}"));
        w.ok(&["attach", "many", &s]);
        names.push(s);
    }
    let svg = w.ok(&["graph", "--format", "svg"]);
    let texts = svg_texts(&svg);
    for n in &names {
        assert!(texts.iter().any(|t| t == n), "{n} not drawn");
    }
    // One column, one box each: the drawing grows with the sandboxes, never overlaps.
    let height: i32 = svg
        .split("height=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(height > 50 * 40, "{height}");
}

/// The kernel side of the picture: a node end taken down shows as such, and `--node-ns`
/// reads a lab's node namespace from outside it (the same model as from inside).
#[test]
fn link_state_and_node_ns() {
    let mut w = World::new();
    w.ok(&["network", "create", "gl", "--subnet", "10.60.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "gl", &s]);
    let host = w.json(&["network", "inspect", "gl"])["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    let link = |g: &serde_json::Value| g["sandboxes"][0]["interfaces"][0]["link"].clone();
    assert_eq!(link(&w.json(&["graph", "--format", "json"])), "up");
    w.node_ip(&["link", "set", &host, "down"]);
    let inside = w.json(&["graph", "--format", "json"]);
    assert_eq!(link(&inside), "down");
    assert!(
        w.ok(&["graph", "--format", "svg"])
            .contains("[node end down]")
    );
    // From this test's own namespace, which has no such link: --node-ns reads the node's.
    let node_ns = format!("/run/netns/{}", w.node);
    let o = std::process::Command::new(KNIT)
        .arg("--state-dir")
        .arg(&w.state)
        .args(["--json", "graph", "--format", "json", "--node-ns", &node_ns])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let outside: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(outside, inside);
}
