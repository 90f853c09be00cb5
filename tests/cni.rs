//! knit as a CNI plugin, driven the way libcni drives plugins: lifecycle per spec version,
//! connectivity, DEL/CHECK/GC/STATUS edge cases, CNI_ARGS and capabilities, chaining.

mod common;
use common::cni::*;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A bare container namespace (what a runtime creates before calling ADD).
fn container(w: &mut World, short: &str) -> String {
    let name = format!("{}-{short}", w.prefix);
    sh_ok(&["ip", "netns", "add", &name]);
    w.track(&name);
    name
}

fn ports(host: u16, cont: u16) -> Value {
    json!({"portMappings": [{"hostPort": host, "containerPort": cont, "protocol": "tcp", "hostIP": ""}]})
}

#[test]
fn lifecycle_and_result_shape_for_every_version() {
    let mut w = World::new();
    for (i, v) in VERSIONS.iter().enumerate() {
        let c = container(&mut w, &format!("v{i}"));
        let netns = format!("/run/netns/{c}");
        let mut list = Conflist::new("lc", v, knit_plugins("cni-lc0", "10.61.0.0/24"));
        let cid = format!("cid{i}");
        let r = list
            .add(&w, &cid, &netns, "eth0", &ports(9000 + i as u16, 80))
            .unwrap_or_else(|o| panic!("{v}: {}", o.stdout));
        assert_eq!(r["cniVersion"], *v);
        match *v {
            "0.1.0" | "0.2.0" => {
                assert!(
                    r["ip4"]["ip"].as_str().unwrap().starts_with("10.61.0."),
                    "{r}"
                );
                assert_eq!(r["ip4"]["gateway"], "10.61.0.1");
                assert!(r.get("interfaces").is_none());
            }
            _ => {
                let ifs = r["interfaces"].as_array().unwrap();
                assert_eq!(ifs.len(), 3, "{r}");
                assert_eq!(ifs[0]["name"], "cni-lc0");
                assert_eq!(ifs[2]["name"], "eth0");
                assert_eq!(ifs[2]["sandbox"], netns.as_str());
                assert_eq!(r["ips"][0]["interface"], 2);
                assert_eq!(r["ips"][0]["gateway"], "10.61.0.1");
                assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
                let has_version = r["ips"][0].get("version").is_some();
                assert_eq!(has_version, v.starts_with("0."), "{v}: {r}");
            }
        }
        if !matches!(*v, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1") {
            list.check(&w, &cid, &netns, "eth0", &json!({}))
                .unwrap_or_else(|o| panic!("CHECK {v}: {}", o.stdout));
        }
        list.del(&w, &cid, &netns, "eth0", &json!({})).unwrap();
    }
    assert!(
        w.knit_links().is_empty(),
        "no host veths left: {:?}",
        w.knit_links()
    );
    assert!(
        !w.nft_table().contains(" : 10.61.0."),
        "no port elements left"
    );
}

#[test]
fn containers_talk_reach_outside_and_serve_published_ports() {
    let mut w = World::new().with_outside();
    let a = container(&mut w, "a");
    let b = container(&mut w, "b");
    let mut list = Conflist::new(
        "podman",
        "0.4.0",
        knit_plugins("cni-podman0", "10.62.0.0/24"),
    );
    let ra = list
        .add(
            &w,
            "ctr-a",
            &format!("/run/netns/{a}"),
            "eth0",
            &ports(8080, 80),
        )
        .unwrap();
    let rb = list
        .add(&w, "ctr-b", &format!("/run/netns/{b}"), "eth0", &json!({}))
        .unwrap();
    let a_ip = result_ip(&ra);
    let b_ip = result_ip(&rb);
    assert_ne!(a_ip, b_ip);
    assert!(ping(&a, &b_ip) && ping(&b, &a_ip));
    let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
    assert_eq!(
        tcp_get(&b, &format!("{OUTSIDE4}:7000")).unwrap(),
        format!("outside saw {NODE_UPLINK4}")
    );
    let _s = tcp_server(&a, "0.0.0.0:80", "httpd");
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).unwrap(),
        format!("httpd saw {OUTSIDE4}")
    );
    assert!(
        tcp_get(&b, &format!("{NODE_UPLINK4}:8080"))
            .unwrap()
            .starts_with("httpd saw")
    );
    // The CLI sees CNI attachments: same store.
    let nets = w.json(&["network", "ls"]);
    assert_eq!(nets[0]["name"], "podman");
    let v = w.json(&["inspect", "cni:ctr-a/eth0"]);
    assert!(v["inside"]["addresses"].to_string().contains(&a_ip), "{v}");
    list.del(
        &w,
        "ctr-a",
        &format!("/run/netns/{a}"),
        "eth0",
        &ports(8080, 80),
    )
    .unwrap();
    list.del(&w, "ctr-b", &format!("/run/netns/{b}"), "eth0", &json!({}))
        .unwrap();
    assert_eq!(
        w.knit_links().len(),
        0,
        "only the bridge (cni-podman0) remains"
    );
    assert!(!w.nft_table().contains("8080"));
    assert!(
        w.json(&["network", "inspect", "podman"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn del_succeeds_in_every_degraded_situation() {
    let w = World::new();
    let conf = |prev: Option<Value>| {
        let mut c = knit_plugins("cni-d0", "10.63.0.0/24")[0].clone();
        c["name"] = json!("d");
        c["cniVersion"] = json!("1.0.0");
        if let Some(p) = prev {
            c["prevResult"] = p;
        }
        c
    };
    let env = |cmd: &'static str, cid: &'static str, netns: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", cmd.into()),
            ("CNI_CONTAINERID", cid.into()),
            ("CNI_NETNS", netns.into()),
            ("CNI_IFNAME", "eth0".into()),
        ]
    };
    let run = |cmd: &'static str, cid: &'static str, netns: &str, c: &Value| {
        let e = env(cmd, cid, netns);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.cni_exec("knit", c, &e)
    };
    // Never added, unknown network: fine.
    assert_eq!(run("DEL", "ghost", "", &conf(None)).code, 0);
    let c1 = format!("{}-c1", w.prefix);
    sh_ok(&["ip", "netns", "add", &c1]);
    let add = run("ADD", "c1", &format!("/run/netns/{c1}"), &conf(None));
    assert_eq!(add.code, 0, "{}", add.stdout);
    let result = add.json();
    // Namespace gone before DEL, empty CNI_NETNS, no prevResult, then repeated.
    sh_ok(&["ip", "netns", "del", &c1]);
    assert_eq!(run("DEL", "c1", "", &conf(None)).code, 0);
    assert_eq!(run("DEL", "c1", "", &conf(Some(result.clone()))).code, 0);
    assert_eq!(
        run("DEL", "c1", &format!("/run/netns/{c1}"), &conf(None)).code,
        0
    );
    assert!(w.knit_links().is_empty());
    assert!(
        w.json(&["network", "inspect", "d"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn check_reports_drift_and_spec_errors() {
    let mut w = World::new();
    let c = container(&mut w, "c");
    let netns = format!("/run/netns/{c}");
    let mut list = Conflist::new("ck", "1.1.0", knit_plugins("cni-ck0", "10.64.0.0/24"));
    let r = list
        .add(&w, "ck1", &netns, "eth0", &ports(8181, 80))
        .unwrap();
    list.check(&w, "ck1", &netns, "eth0", &json!({})).unwrap();
    let ip = r["ips"][0]["address"].as_str().unwrap().to_string();
    sh_ok(&["ip", "-n", &c, "addr", "del", &ip, "dev", "eth0"]);
    let e = list
        .check(&w, "ck1", &netns, "eth0", &json!({}))
        .unwrap_err();
    assert_eq!(e.err_code(), 101);
    assert!(
        e.json()["details"].as_str().unwrap().contains("missing"),
        "{}",
        e.stdout
    );
    // Missing published port is drift too.
    sh_ok(&[
        "ip", "netns", "exec", &w.node, "nft", "flush", "map", "inet", "knit", "pub4any",
    ]);
    let e = list
        .check(&w, "ck1", &netns, "eth0", &json!({}))
        .unwrap_err();
    assert!(
        e.json()["details"].as_str().unwrap().contains("8181"),
        "{}",
        e.stdout
    );
    // Without prevResult, for an unknown container, and for a pre-0.4.0 config.
    let mut conf = knit_plugins("cni-ck0", "10.64.0.0/24")[0].clone();
    conf["name"] = json!("ck");
    conf["cniVersion"] = json!("1.1.0");
    let env = [
        ("CNI_COMMAND", "CHECK"),
        ("CNI_CONTAINERID", "ck1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(w.cni_exec("knit", &conf, &env).err_code(), 7);
    conf["prevResult"] = r.clone();
    let env2 = [
        ("CNI_COMMAND", "CHECK"),
        ("CNI_CONTAINERID", "other"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(w.cni_exec("knit", &conf, &env2).err_code(), 3);
    conf["cniVersion"] = json!("0.3.1");
    assert_eq!(w.cni_exec("knit", &conf, &env).err_code(), 1);
}

#[test]
fn gc_removes_every_unlisted_attachment() {
    let mut w = World::new();
    // A pool of four addresses (.2 to .5): once full, new attachments can only get
    // addresses that were freed.
    let mut plugins = knit_plugins("cni-gc0", "10.65.0.0/24");
    plugins[0]["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.65.0.2");
    plugins[0]["ipam"]["ranges"][0][0]["rangeEnd"] = json!("10.65.0.5");
    let mut list = Conflist::new("gc", "1.1.0", plugins);
    let mut nss = vec![];
    for i in 0..4 {
        let c = container(&mut w, &format!("g{i}"));
        list.add(
            &w,
            &format!("gc{i}"),
            &format!("/run/netns/{c}"),
            "eth0",
            &ports(8300 + i, 80),
        )
        .unwrap();
        nss.push(c);
    }
    let mut conf = knit_plugins("cni-gc0", "10.65.0.0/24")[0].clone();
    conf["name"] = json!("gc");
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] =
        json!([{"containerID": "gc0", "ifname": "eth0"}, {"containerID": "gc1", "ifname": "eth0"}]);
    let o = w.cni_exec("knit", &conf, &[("CNI_COMMAND", "GC")]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(o.stdout, "");
    let atts = w.json(&["network", "inspect", "gc"])["attachments"]
        .as_array()
        .unwrap()
        .clone();
    let ids: Vec<&str> = atts
        .iter()
        .map(|a| a["container_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gc0", "gc1"]);
    assert_eq!(w.knit_links().len(), 2, "two host veths left");
    assert!(!w.nft_table().contains("8302") && !w.nft_table().contains("8303"));
    // The older key name works too; an empty list removes everything.
    conf.as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    conf["cni.dev/attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    assert_eq!(w.cni_exec("knit", &conf, &[("CNI_COMMAND", "GC")]).code, 0);
    assert_eq!(
        w.json(&["network", "inspect", "gc"])["attachments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Freed addresses are handed out again without collision: the three new containers
    // get exactly the three freed addresses, and every attachment its own MAC and host
    // veth, in the store and in the kernel.
    for (i, c) in [&nss[0], &nss[2], &nss[3]].into_iter().enumerate() {
        list.add(
            &w,
            &format!("gc9{i}"),
            &format!("/run/netns/{c}"),
            "eth0",
            &json!({}),
        )
        .unwrap_or_else(|o| panic!("ADD gc9{i}: {}", o.stdout));
    }
    let atts = w.json(&["network", "inspect", "gc"])["attachments"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(atts.len(), 4, "{atts:?}");
    let field = |a: &Value, f: &str| a[f].as_str().unwrap().to_string();
    let ip4 = |a: &Value| {
        a["ips"][0]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let ips: BTreeSet<String> = atts.iter().map(ip4).collect();
    let want: BTreeSet<String> = (2..=5).map(|i| format!("10.65.0.{i}")).collect();
    assert_eq!(ips, want, "one address each, the whole pool: {atts:?}");
    for f in ["mac", "host_ifname", "netns_path"] {
        let distinct: BTreeSet<String> = atts.iter().map(|a| field(a, f)).collect();
        assert_eq!(distinct.len(), 4, "{f} repeated: {atts:?}");
    }
    assert_eq!(w.knit_links().len(), 4, "{:?}", w.knit_links());
    let survivor = atts.iter().find(|a| a["container_id"] == "gc1").unwrap();
    for a in &atts {
        let ns = field(a, "netns_path")
            .trim_start_matches("/run/netns/")
            .to_string();
        let link = sh_ok(&["ip", "-n", &ns, "-o", "link", "show", "eth0"]);
        assert!(link.contains(&field(a, "mac")), "{ns}: {link}");
        let addrs = sh_ok(&["ip", "-n", &ns, "-o", "-4", "addr", "show", "eth0"]);
        assert!(addrs.contains(&format!("{}/24", ip4(a))), "{ns}: {addrs}");
        if a != survivor {
            assert!(ping(&ns, &ip4(survivor)), "{ns} reaches gc1");
        }
    }
    // The pool is full: one more is refused.
    let extra = container(&mut w, "g9");
    let o = list
        .add(
            &w,
            "gc99",
            &format!("/run/netns/{extra}"),
            "eth0",
            &json!({}),
        )
        .expect_err("a fifth container in a pool of four");
    assert_ne!(o.code, 0, "{}", o.stdout);
}

#[test]
fn status_and_version() {
    let mut w = World::new();
    let mut conf = knit_plugins("cni-st0", "10.66.0.0/24")[0].clone();
    conf["name"] = json!("st");
    conf["cniVersion"] = json!("1.1.0");
    // No state directory yet: STATUS reports it and does not create it.
    assert_eq!(
        w.cni_exec("knit", &conf, &[("CNI_COMMAND", "STATUS")])
            .err_code(),
        50
    );
    assert!(!w.state.exists());
    std::fs::create_dir_all(&w.state).unwrap();
    assert_eq!(
        w.cni_exec("knit", &conf, &[("CNI_COMMAND", "STATUS")]).code,
        0
    );
    let v = w
        .cni_exec(
            "knit",
            &json!({"cniVersion": "1.1.0"}),
            &[("CNI_COMMAND", "VERSION")],
        )
        .json();
    assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    let c = container(&mut w, "c");
    let mut list = Conflist::new("st", "1.1.0", knit_plugins("cni-st0", "10.66.0.0/24"));
    list.add(&w, "st1", &format!("/run/netns/{c}"), "eth0", &json!({}))
        .unwrap();
    sh_ok(&["ip", "-n", &w.node, "link", "del", "cni-st0"]);
    assert_eq!(
        w.cni_exec("knit", &conf, &[("CNI_COMMAND", "STATUS")])
            .err_code(),
        51
    );
    w.ok(&["reconcile"]);
    assert_eq!(
        w.cni_exec("knit", &conf, &[("CNI_COMMAND", "STATUS")]).code,
        0
    );
    conf["cniVersion"] = json!("1.0.0");
    assert_eq!(
        w.cni_exec("knit", &conf, &[("CNI_COMMAND", "STATUS")])
            .err_code(),
        1
    );
}

#[test]
fn cni_args_and_capabilities_choose_addresses_and_macs() {
    let mut w = World::new();
    let mut conf = knit_plugins("cni-ar0", "10.67.0.0/24")[0].clone();
    conf["name"] = json!("ar");
    conf["cniVersion"] = json!("1.0.0");
    let c1 = container(&mut w, "c1");
    let n1 = format!("/run/netns/{c1}");
    let o = w.cni_exec(
        "knit",
        &conf,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a1"),
            ("CNI_NETNS", &n1),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.67.0.50;MAC=02:11:22:33:44:55;FOO=bar",
            ),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(o.json()["ips"][0]["address"], "10.67.0.50/24");
    assert!(sh_ok(&["ip", "-n", &c1, "link", "show", "eth0"]).contains("02:11:22:33:44:55"));
    let c2 = container(&mut w, "c2");
    let n2 = format!("/run/netns/{c2}");
    let mut conf2 = conf.clone();
    conf2["runtimeConfig"] = json!({"ips": ["10.67.0.60/24"], "mac": "02:aa:bb:cc:dd:ee"});
    let o = w.cni_exec(
        "knit",
        &conf2,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a2"),
            ("CNI_NETNS", &n2),
            ("CNI_IFNAME", "net1"),
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert_eq!(o.json()["ips"][0]["address"], "10.67.0.60/24");
    assert_eq!(o.json()["interfaces"][2]["name"], "net1");
    // Unknown CNI_ARGS without IgnoreUnknown is refused; an address in use conflicts.
    let c3 = container(&mut w, "c3");
    let n3 = format!("/run/netns/{c3}");
    let o = w.cni_exec(
        "knit",
        &conf,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a3"),
            ("CNI_NETNS", &n3),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "FOO=bar"),
        ],
    );
    assert_eq!(o.err_code(), 2);
    let o = w.cni_exec(
        "knit",
        &conf,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a3"),
            ("CNI_NETNS", &n3),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IP=10.67.0.50"),
        ],
    );
    assert_eq!(o.err_code(), 100);
    assert!(!sh_ok(&["ip", "-n", &c3, "link"]).contains("eth0"));
}

#[test]
fn chains_with_reference_plugins_after_it() {
    let mut w = World::new();
    let c = container(&mut w, "c");
    let netns = format!("/run/netns/{c}");
    let mut plugins = knit_plugins("cni-ch0", "10.68.0.0/24");
    plugins.push(json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}}));
    let mut list = Conflist::new("ch", "0.4.0", plugins);
    let r = list
        .add(&w, "ch1", &netns, "eth0", &json!({}))
        .unwrap_or_else(|o| panic!("{}", o.stdout));
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.68.0.")
    );
    let v = sh_ok(&[
        "ip",
        "netns",
        "exec",
        &c,
        "cat",
        "/proc/sys/net/ipv4/conf/eth0/arp_ignore",
    ]);
    assert_eq!(v.trim(), "1");
    list.check(&w, "ch1", &netns, "eth0", &json!({}))
        .unwrap_or_else(|o| panic!("{}", o.stdout));
    list.del(&w, "ch1", &netns, "eth0", &json!({})).unwrap();
    assert!(w.knit_links().is_empty());
    // knit after another interface-creating plugin: refused clearly.
    let mut conf = knit_plugins("cni-ch0", "10.68.0.0/24")[0].clone();
    conf["name"] = json!("ch");
    conf["cniVersion"] = json!("1.0.0");
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [], "ips": []});
    let o = w.cni_exec(
        "knit",
        &conf,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
        ],
    );
    assert_eq!(o.err_code(), 2);
}

#[test]
fn same_connectivity_and_result_shape_as_the_reference_plugins() {
    // The same conflist shape, once with knit and once with bridge + host-local + portmap,
    // each in its own node.
    let mut shapes = vec![];
    for reference in [false, true] {
        let mut w = World::new().with_outside();
        let data = format!("{}/host-local", w.state.display());
        let plugins = if reference {
            reference_plugins("cni-df0", "10.69.0.0/24", &data)
        } else {
            knit_plugins("cni-df0", "10.69.0.0/24")
        };
        let mut list = Conflist::new("df", "0.4.0", plugins);
        let a = container(&mut w, "a");
        let b = container(&mut w, "b");
        let ra = list
            .add(
                &w,
                "dfa",
                &format!("/run/netns/{a}"),
                "eth0",
                &ports(8080, 80),
            )
            .unwrap_or_else(|o| panic!("{}", o.stdout));
        let rb = list
            .add(&w, "dfb", &format!("/run/netns/{b}"), "eth0", &json!({}))
            .unwrap_or_else(|o| panic!("{}", o.stdout));
        let a_ip = result_ip(&ra);
        let b_ip = result_ip(&rb);
        let _s = tcp_server(&a, "0.0.0.0:80", "web");
        let _o = tcp_server(w.outside(), "0.0.0.0:7000", "outside");
        let facts = (
            ping(&b, &a_ip),
            tcp_get(&b, &format!("{OUTSIDE4}:7000")).map(|s| s.replace(NODE_UPLINK4, "NODE")),
            tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080"))
                .map(|s| s.replace(OUTSIDE4, "OUT")),
            a_ip.ends_with(".2") && b_ip.ends_with(".3"),
        );
        assert!(facts.0, "reference={reference}");
        assert_eq!(
            facts.1.clone().unwrap(),
            "outside saw NODE",
            "reference={reference}"
        );
        assert_eq!(
            facts.2.clone().unwrap(),
            "web saw OUT",
            "reference={reference}"
        );
        assert!(facts.3, "first addresses .2 and .3");
        // Shape: keys of the result, interface roles, ip fields.
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        shapes.push((
            keys(&ra),
            ra["interfaces"].as_array().unwrap().len(),
            keys(&ra["ips"][0]),
            ra["ips"][0]["interface"].clone(),
            ra["interfaces"][0]["name"].clone(),
            ra["interfaces"][2]["name"].clone(),
        ));
        list.del(
            &w,
            "dfa",
            &format!("/run/netns/{a}"),
            "eth0",
            &ports(8080, 80),
        )
        .unwrap();
        list.del(&w, "dfb", &format!("/run/netns/{b}"), "eth0", &json!({}))
            .unwrap();
    }
    let mut knit_keys = shapes[0].clone();
    let mut ref_keys = shapes[1].clone();
    knit_keys.0.retain(|k| k != "dns");
    ref_keys.0.retain(|k| k != "dns");
    assert_eq!(knit_keys, ref_keys, "knit vs reference result shape");
}

#[test]
fn labels_from_cni_args_are_what_policies_select() {
    // The CNI `args` convention (`args.cni.labels`) gives a container the labels
    // `knit attach --label` gives a sandbox; a deny network's allow rule selects them.
    let mut w = World::new();
    let with_labels = |labels: Value| {
        let mut plugins = knit_plugins("knlbl0", "10.64.0.0/24");
        plugins[0]["args"] = json!({"cni": {"labels": labels}});
        Conflist::new("lbl", "1.0.0", plugins)
    };
    let mut added = vec![];
    let mut ip_of = |w: &mut World, short: &str, labels: Value| {
        let ns = container(w, short);
        let mut list = with_labels(labels);
        let r = list
            .add(w, short, &format!("/run/netns/{ns}"), "eth0", &json!({}))
            .unwrap();
        added.push((list, short.to_string(), ns.clone()));
        (ns, result_ip(&r))
    };
    let (web, web_ip) = ip_of(
        &mut w,
        "web",
        json!([{"key": "app", "value": "web"}, {"key": "tier", "value": ""}]),
    );
    let (client, client_ip) = ip_of(
        &mut w,
        "client",
        json!([{"key": "role", "value": "client"}]),
    );
    let (other, _) = ip_of(&mut w, "other", json!([]));
    let _s = tcp_server(&web, "0.0.0.0:8080", "web");
    let target = format!("{web_ip}:8080");
    assert!(tcp_get(&other, &target).is_ok(), "default allow");
    w.ok(&["policy", "default", "lbl", "deny"]);
    w.ok(&[
        "policy",
        "allow",
        "lbl",
        "--from",
        "role=client",
        "--to",
        "app=web",
        "--port",
        "8080",
    ]);
    assert_eq!(
        tcp_get(&client, &target).unwrap(),
        format!("web saw {client_ip}")
    );
    assert!(
        tcp_get(&other, &target).is_err(),
        "unlabelled container denied"
    );
    for (list, cid, ns) in &mut added {
        list.del(&w, cid, &format!("/run/netns/{ns}"), "eth0", &json!({}))
            .unwrap();
    }
}
