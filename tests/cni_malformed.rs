//! A table of malformed configurations and environments: each must fail with the spec's
//! error code, as JSON on stdout with a non-zero exit, and leave nothing behind.

mod common;
use common::*;
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "mal", "type": "knit", "bridge": "cni-mal0",
        "isGateway": true, "ipMasq": true,
        "capabilities": {"portMappings": true},
        "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.70.0.0/24"}]]}
    })
}

/// Applies `path = value` to a copy of the base config (`None` removes the key).
fn with(path: &str, value: Option<Value>) -> Vec<u8> {
    let mut c = base();
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = &mut c;
    for p in parts {
        cur = if let Ok(i) = p.parse::<usize>() {
            &mut cur[i]
        } else {
            &mut cur[p]
        };
    }
    match value {
        Some(v) => {
            if let Ok(i) = last.parse::<usize>() {
                cur[i] = v;
            } else {
                cur[last] = v;
            }
        }
        None => {
            cur.as_object_mut().unwrap().remove(last);
        }
    }
    c.to_string().into_bytes()
}

/// (kind, stdin, environment, expected code)
type Case = (&'static str, Vec<u8>, Vec<(String, String)>, u64);

#[test]
fn malformed_configs_and_environments() {
    let mut w = World::new();
    let good = format!("{}-good", w.prefix);
    let victim = format!("{}-victim", w.prefix);
    for n in [&good, &victim] {
        sh_ok(&["ip", "netns", "add", n]);
        w.track(n);
    }
    let good_ns = format!("/run/netns/{good}");
    let ns = format!("/run/netns/{victim}");
    // One valid attachment first (it holds 10.70.0.2 and host port 8080).
    let mut ok = base();
    ok["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let o = w.cni_exec(
        "knit",
        &ok,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "good"),
            ("CNI_NETNS", &good_ns),
            ("CNI_IFNAME", "eth0"),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    let links_before = w.knit_links();
    let table_before = w.nft_table();
    let atts_before = w.json(&["network", "inspect", "mal"])["attachments"]
        .as_array()
        .unwrap()
        .len();

    let add = |extra: &[(&'static str, &'static str)]| -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = vec![
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), "victim".into()),
            ("CNI_NETNS".into(), ns.clone()),
            ("CNI_IFNAME".into(), "eth0".into()),
        ];
        for (k, v) in extra {
            e.retain(|(kk, _)| kk != k);
            if !v.is_empty() || matches!(*k, "CNI_CONTAINERID" | "CNI_IFNAME" | "CNI_COMMAND") {
                e.push((k.to_string(), v.to_string()));
            }
        }
        e
    };
    let mut cases: Vec<Case> = vec![];
    let default_env = add(&[]);
    // Decoding failures (6).
    for raw in [
        "",
        "{",
        "[]",
        "null",
        "42",
        "\"x\"",
        "{\"cniVersion\":",
        "{\"cniVersion\": \"1.0.0\"",
        "\u{0}\u{1}",
    ] {
        cases.push(("decode", raw.as_bytes().to_vec(), default_env.clone(), 6));
    }
    cases.push(("non-utf8", vec![0xff, 0xfe, b'{'], default_env.clone(), 6));
    for (path, v) in [
        ("cniVersion", Some(json!(1))),
        ("cniVersion", None),
        ("name", None),
        ("name", Some(json!(5))),
        ("type", None),
        ("mtu", Some(json!("big"))),
        ("mtu", Some(json!(-1))),
        ("isGateway", Some(json!("yes"))),
        ("ipMasq", Some(json!(1))),
        ("ipam", Some(json!("host-local"))),
        ("ipam.ranges", Some(json!("10.0.0.0/24"))),
        ("ipam.ranges", Some(json!([["10.0.0.0/24"]]))),
        ("ipam.routes", Some(json!({"dst": "0.0.0.0/0"}))),
        ("ipam.routes", Some(json!([{"gw": "10.70.0.1"}]))),
        ("runtimeConfig", Some(json!([]))),
        (
            "runtimeConfig",
            Some(json!({"portMappings": [{"hostPort": "80", "containerPort": 80}]})),
        ),
        (
            "runtimeConfig",
            Some(json!({"portMappings": [{"containerPort": 80}]})),
        ),
        ("runtimeConfig", Some(json!({"portMappings": {}}))),
        ("runtimeConfig", Some(json!({"ips": "10.70.0.9"}))),
        ("runtimeConfig", Some(json!({"mac": 7}))),
        ("bridge", Some(json!(["cni0"]))),
        ("vlan", Some(json!("5"))),
        ("hairpinMode", Some(json!("on"))),
        ("stateDir", Some(json!(1))),
    ] {
        cases.push(("decode", with(path, v), default_env.clone(), 6));
    }
    // Incompatible versions (1).
    for v in ["0.0.1", "2.0.0", "", "1.0", "latest", "1.1.1", "0.5.0"] {
        cases.push((
            "version",
            with("cniVersion", Some(json!(v))),
            default_env.clone(),
            1,
        ));
    }
    // Invalid configuration (7).
    for (path, v) in [
        ("name", Some(json!(""))),
        ("name", Some(json!("bad name"))),
        ("name", Some(json!("-dash"))),
        ("name", Some(json!("x".repeat(80)))),
        ("name", Some(json!("a/b"))),
        ("ipam", None),
        ("ipam", Some(json!({}))),
        ("ipam", Some(json!({"type": "host-local"}))),
        ("ipam.ranges", Some(json!([]))),
        ("ipam.ranges", Some(json!([[]]))),
        ("ipam.ranges.0.0.subnet", Some(json!("nonsense"))),
        ("ipam.ranges.0.0.subnet", Some(json!("10.70.0.1/24"))),
        ("ipam.ranges.0.0.subnet", Some(json!("10.70.0.0/31"))),
        ("ipam.ranges.0.0.subnet", Some(json!("10.70.0.0/33"))),
        ("ipam.ranges.0.0.subnet", Some(json!("127.0.0.0/8"))),
        ("ipam.ranges.0.0.subnet", Some(json!("224.0.0.0/24"))),
        ("ipam.ranges.0.0.gateway", Some(json!("10.71.0.1"))),
        ("ipam.ranges.0.0.gateway", Some(json!("gateway"))),
        ("ipam.ranges.0.0.gateway", Some(json!("10.70.0.0"))),
        ("ipam.ranges.0.0.gateway", Some(json!("10.70.0.255"))),
        ("ipam.ranges.0.0.rangeStart", Some(json!("10.71.0.10"))),
        ("ipam.ranges.0.0.rangeStart", Some(json!("start"))),
        ("ipam.ranges.0.0.rangeEnd", Some(json!("10.70.1.10"))),
        (
            "ipam.ranges",
            Some(json!([[{"subnet": "10.70.0.0/24"}], [{"subnet": "10.70.0.0/25"}]])),
        ),
        ("ipam.routes", Some(json!([{"dst": "nowhere"}]))),
        (
            "ipam.routes",
            Some(json!([{"dst": "0.0.0.0/0", "gw": "gw"}])),
        ),
        ("mtu", Some(json!(10))),
        ("mtu", Some(json!(70000))),
        ("bridge", Some(json!("averyveryverylongbridge"))),
        ("bridge", Some(json!("a/b"))),
        ("bridge", Some(json!("a b"))),
        ("driver", Some(json!("vxlan"))),
        ("runtimeConfig", Some(json!({"ips": ["banana"]}))),
        ("runtimeConfig", Some(json!({"ips": ["10.99.0.5/24"]}))),
        ("runtimeConfig", Some(json!({"ips": ["10.70.0.1"]}))),
        ("runtimeConfig", Some(json!({"mac": "zz:zz"}))),
        ("runtimeConfig", Some(json!({"mac": "01:00:5e:00:00:01"}))),
        (
            "runtimeConfig",
            Some(json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]})),
        ),
        (
            "runtimeConfig",
            Some(json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]})),
        ),
        (
            "runtimeConfig",
            Some(json!({"portMappings": [{"hostPort": 80, "containerPort": -1}]})),
        ),
        (
            "runtimeConfig",
            Some(
                json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]}),
            ),
        ),
        (
            "runtimeConfig",
            Some(
                json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "nohost"}]}),
            ),
        ),
        ("args", Some(json!({"cni": {"ips": ["x.y"]}}))),
        ("args", Some(json!({"cni": {"mac": "bad"}}))),
    ] {
        cases.push(("invalid", with(path, v), default_env.clone(), 7));
    }
    // Unsupported fields (2).
    for (path, v) in [
        ("ipam.type", Some(json!("dhcp"))),
        ("ipam.type", Some(json!("static"))),
        ("vlan", Some(json!(5))),
        (
            "ipam.ranges",
            Some(json!([[{"subnet": "10.70.0.0/25"}, {"subnet": "10.70.0.128/25"}]])),
        ),
        (
            "prevResult",
            Some(json!({"cniVersion": "1.0.0", "interfaces": []})),
        ),
    ] {
        cases.push(("unsupported", with(path, v), default_env.clone(), 2));
    }
    cases.push((
        "unsupported",
        base().to_string().into_bytes(),
        add(&[("CNI_ARGS", "FOO=bar")]),
        2,
    ));
    // Bad environment (4).
    for extra in [
        vec![("CNI_COMMAND", "add")],
        vec![("CNI_COMMAND", "FROB")],
        vec![("CNI_COMMAND", "")],
        vec![("CNI_CONTAINERID", "")],
        vec![("CNI_CONTAINERID", "-abc")],
        vec![("CNI_CONTAINERID", "a b")],
        vec![("CNI_CONTAINERID", "a/b")],
        vec![("CNI_CONTAINERID", "a;b")],
        vec![("CNI_IFNAME", "")],
        vec![("CNI_IFNAME", "a/b")],
        vec![("CNI_IFNAME", "a:b")],
        vec![("CNI_IFNAME", "a b")],
        vec![("CNI_IFNAME", ".")],
        vec![("CNI_IFNAME", "..")],
        vec![("CNI_IFNAME", "abcdefghijklmnop")],
        vec![("CNI_NETNS", "")],
        vec![("CNI_NETNS", "/nonexistent/ns")],
        vec![("CNI_NETNS", "/etc/passwd")],
        vec![("CNI_ARGS", "garbage")],
        vec![("CNI_ARGS", "IP")],
    ] {
        cases.push(("env", base().to_string().into_bytes(), add(&extra), 4));
    }
    // Version-gated commands (1).
    for (cmd, v) in [
        ("CHECK", "0.3.1"),
        ("CHECK", "0.2.0"),
        ("GC", "1.0.0"),
        ("STATUS", "0.4.0"),
    ] {
        let mut c = base();
        c["cniVersion"] = json!(v);
        c["prevResult"] = json!({"ips": []});
        let e = vec![
            ("CNI_COMMAND".to_string(), cmd.to_string()),
            ("CNI_CONTAINERID".into(), "good".into()),
            ("CNI_NETNS".into(), good_ns.clone()),
            ("CNI_IFNAME".into(), "eth0".into()),
        ];
        cases.push(("gated", c.to_string().into_bytes(), e, 1));
    }
    // Conflicts with the valid attachment (100).
    for rc in [
        json!({"ips": ["10.70.0.2"]}),
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 81}]}),
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 81, "hostIP": "127.0.0.1"}]}),
    ] {
        let mut c = base();
        c["runtimeConfig"] = rc;
        cases.push((
            "conflict",
            c.to_string().into_bytes(),
            default_env.clone(),
            100,
        ));
    }
    // A different subnet for an existing network name (7).
    cases.push((
        "invalid",
        with("ipam.ranges.0.0.subnet", Some(json!("10.72.0.0/24"))),
        default_env.clone(),
        7,
    ));
    cases.push((
        "invalid",
        with("bridge", Some(json!("cni-other0"))),
        default_env.clone(),
        7,
    ));

    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for (kind, stdin, env, code) in &cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let o = w.cni_exec_raw("knit", stdin, &env);
        let shown = String::from_utf8_lossy(stdin);
        assert_ne!(o.code, 0, "{kind}: {shown} {env:?} succeeded");
        let v: Value = serde_json::from_str(&o.stdout)
            .unwrap_or_else(|_| panic!("{kind}: not JSON on stdout: {:?}", o.stdout));
        assert_eq!(
            v["code"].as_u64(),
            Some(*code),
            "{kind}: {shown} {env:?} -> {}",
            o.stdout
        );
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["cniVersion"].is_string());
    }
    // Nothing was left behind by any of them.
    assert_eq!(w.knit_links(), links_before);
    assert_eq!(w.nft_table(), table_before);
    assert_eq!(
        w.json(&["network", "inspect", "mal"])["attachments"]
            .as_array()
            .unwrap()
            .len(),
        atts_before
    );
    assert_eq!(w.json(&["network", "ls"]).as_array().unwrap().len(), 1);
    assert!(!sh_ok(&["ip", "-n", &victim, "link"]).contains("eth0"));
    println!("{} malformed cases checked", cases.len());
}
