//! knit as a netavark plugin, driven by a real netavark 2.1 (podman 5's network backend;
//! `scripts/test.sh` installs it from crates.io into a cache): `netavark create` with a
//! `knit` driver, `setup`/`teardown` with podman's JSON, in the test's node namespace.

mod common;
use common::dns_client::*;
use common::*;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};

const NETWORK_ID: &str = "3f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9";

fn netavark_bin() -> String {
    let p = std::env::var("KNIT_NETAVARK")
        .unwrap_or_else(|_| "/var/cache/knit-test/netavark-2.1.0/bin/netavark".into());
    assert!(
        std::path::Path::new(&p).exists(),
        "netavark 2.1 is not installed at {p} (scripts/test.sh installs it)"
    );
    p
}

struct Netavark {
    bin: String,
    dir: PathBuf,
}

impl Netavark {
    fn new(w: &World) -> Netavark {
        let dir = std::env::temp_dir().join(format!("{}-netavark", w.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        // As a package installs it: a `knit` in netavark's plugin directory.
        std::os::unix::fs::symlink(KNIT, dir.join("plugins/knit")).unwrap();
        Netavark {
            bin: netavark_bin(),
            dir,
        }
    }

    fn call(&self, w: &World, args: &[&str], input: &Value) -> Output {
        let mut c = command_in(&w.node, &self.bin);
        c.arg("--config")
            .arg(self.dir.join("config"))
            .arg("--plugin-directory")
            .arg(self.dir.join("plugins"))
            .args(args)
            .env("KNIT_STATE_DIR", &w.state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, w: &World, args: &[&str], input: &Value) -> Value {
        let o = self.call(w, args, input);
        assert!(
            o.status.success(),
            "netavark {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// `netavark create`, as `podman network create -d knit` runs it.
    fn create(&self, w: &World, network: Value) -> Value {
        let input = json!({
            "network": network,
            "used": {"interfaces": [], "names": {}, "subnets": []},
            "options": {"subnet_pools": [], "default_interface_name": "podman",
                        "check_used_subnets": false},
        });
        self.ok(w, &["create"], &input)
    }
}

impl Drop for Netavark {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// podman's setup/teardown input for one container on `net`.
fn options(id: &str, name: &str, net: &Value, per_net: Value, ports: Value) -> Value {
    let netname = net["name"].as_str().unwrap().to_string();
    json!({
        "container_id": id,
        "container_name": name,
        "networks": {netname.clone(): per_net},
        "network_info": {netname: net},
        "port_mappings": ports,
    })
}

fn addr_of(status: &Value, net: &str, v4: bool) -> String {
    status[net]["interfaces"]["eth0"]["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["ipnet"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .find(|a| a.contains('.') == v4)
        .unwrap_or_else(|| panic!("no address of that family in {status}"))
}

#[test]
fn podman_network_through_real_netavark() {
    let mut w = World::new().with_outside();
    let nv = Netavark::new(&w);
    // `podman network create -d knit --ipv6`: knit picks the subnets and the bridge.
    let net = nv.create(
        &w,
        json!({"name": "web", "id": NETWORK_ID, "driver": "knit", "ipv6_enabled": true,
               "internal": false, "dns_enabled": true, "subnets": []}),
    );
    let subnets = net["subnets"].as_array().unwrap();
    assert_eq!(subnets.len(), 2, "{net}");
    assert_eq!(net["network_interface"], "knnv3f259bab93a");
    // create touches nothing in the kernel.
    assert!(!w.node_ip(&["link"]).contains("knnv"));

    let c1 = format!("{}-c1", w.prefix);
    let c2 = format!("{}-c2", w.prefix);
    for c in [&c1, &c2] {
        sh_ok(&["ip", "netns", "add", c]);
        w.track(c);
    }
    let setup = |ns: &str, id: &str, name: &str, per_net: Value, ports: Value| {
        let input = options(id, name, &net, per_net, ports);
        nv.ok(&w, &["setup", &format!("/run/netns/{ns}")], &input)
    };
    let s1 = setup(
        &c1,
        "c1aaaa",
        "web1",
        json!({"interface_name": "eth0", "aliases": ["www"],
               "options": {"label.app": "web"}}),
        json!([{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp", "range": 1}]),
    );
    let s2 = setup(
        &c2,
        "c2bbbb",
        "client",
        json!({"interface_name": "eth0", "options": {"label.app": "client"},
               "static_ips": ["10.90.0.77"]}),
        json!(null),
    );
    let ip1 = addr_of(&s1, "web", true);
    let ip1v6 = addr_of(&s1, "web", false);
    assert_eq!(addr_of(&s2, "web", true), "10.90.0.77");
    let gw = s1["web"]["dns_server_ips"][0].as_str().unwrap().to_string();
    assert_eq!(s1["web"]["dns_search_domains"], json!(["dns.podman"]));
    assert!(sh_ok(&["ip", "-n", &c1, "addr", "show", "eth0"]).contains(&ip1));

    // Container to container, both families.
    assert!(ping(&c2, &ip1), "c2 -> c1 {ip1}");
    assert!(ping(&c2, &ip1v6), "c2 -> c1 {ip1v6}");

    // Names: the container's name and its alias, bare and under dns.podman.
    let mut daemon = start_daemon(&w, "/dev/null", None);
    eventually("daemon answering", || {
        ask(&c2, &gw, "knit-ready-probe.", RecordType::A).is_ok()
    });
    for name in ["web1.", "www.", "www.dns.podman."] {
        let m = ask(&c2, &gw, name, RecordType::A).unwrap();
        assert_eq!(addrs(&m), vec![ip1.clone()], "{name}");
    }
    daemon.0.kill().unwrap();
    let _ = daemon.0.wait();

    // The published port, from outside the node.
    let _srv = tcp_server(&c1, "0.0.0.0:80", "web1");
    let got = tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).unwrap();
    assert!(got.starts_with("web1 saw"), "{got}");

    // Labels from podman's per-network options select in knit policy.
    w.ok(&["policy", "default", "web", "deny"]);
    assert!(
        tcp_get(&c2, &format!("{ip1}:80")).is_err(),
        "deny by default"
    );
    w.ok(&[
        "policy",
        "allow",
        "web",
        "--from",
        "app=client",
        "--to",
        "app=web",
        "--port",
        "80",
    ]);
    let got = tcp_get(&c2, &format!("{ip1}:80")).unwrap();
    assert_eq!(got, "web1 saw 10.90.0.77");

    // Bad input: netavark shows knit's error naming the field; nothing is left behind.
    let links_before = w.knit_links();
    let bad = options(
        "c3cccc",
        "bad",
        &net,
        json!({"interface_name": "eth0", "static_ips": ["10.99.0.5"]}),
        json!(null),
    );
    let c3 = format!("{}-c3", w.prefix);
    sh_ok(&["ip", "netns", "add", &c3]);
    w.track(&c3);
    let o = nv.call(&w, &["setup", &format!("/run/netns/{c3}")], &bad);
    assert!(!o.status.success());
    // netavark passes the plugin's error on (as JSON on stdout).
    let err = String::from_utf8_lossy(&o.stdout);
    assert!(
        err.contains("static_ips") && err.contains("10.99.0.5"),
        "{err}"
    );
    assert_eq!(w.knit_links(), links_before);
    let v = w.json(&["network", "inspect", "web"]);
    assert_eq!(v["attachments"].as_array().unwrap().len(), 2);

    // Teardown, twice (idempotent), leaves the container without its interface.
    for _ in 0..2 {
        let input = options(
            "c1aaaa",
            "web1",
            &net,
            json!({"interface_name": "eth0"}),
            json!(null),
        );
        nv.ok(&w, &["teardown", &format!("/run/netns/{c1}")], &input);
    }
    assert!(!sh_ok(&["ip", "-n", &c1, "link"]).contains("eth0"));
    let v = w.json(&["network", "inspect", "web"]);
    assert_eq!(v["attachments"].as_array().unwrap().len(), 1);
    assert!(tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8080")).is_err());
}

#[test]
fn ptp_mode_and_create_errors() {
    let mut w = World::new().with_outside();
    let nv = Netavark::new(&w);
    let net = nv.create(
        &w,
        json!({"name": "iso", "id": NETWORK_ID, "driver": "knit", "ipv6_enabled": false,
               "internal": false, "dns_enabled": false,
               "subnets": [{"subnet": "10.91.0.0/24"}], "options": {"mode": "ptp"}}),
    );
    assert!(net.get("network_interface").is_none(), "{net}");
    let c1 = format!("{}-p1", w.prefix);
    sh_ok(&["ip", "netns", "add", &c1]);
    w.track(&c1);
    let input = options(
        "p1aaaa",
        "p1",
        &net,
        json!({"interface_name": "eth0"}),
        json!(null),
    );
    let s = nv.ok(&w, &["setup", &format!("/run/netns/{c1}")], &input);
    let ip = addr_of(&s, "iso", true);
    assert!(ip.starts_with("10.91.0."), "{s}");
    assert_eq!(s["iso"]["dns_server_ips"], json!([]));
    // The node reaches it; internal: it does not reach outside.
    // The node reaches it over the routed link; it reaches outside, masqueraded.
    assert!(ping(&w.node, &ip));
    assert!(ping(&c1, OUTSIDE4));
    let v = w.json(&["network", "inspect", "iso"]);
    assert_eq!(v["network"]["driver"], "ptp");
    assert_eq!(v["network"]["origin"], "netavark");

    // create refuses bad options, naming them, as podman network create shows it.
    for (opts, want) in [
        (json!({"mode": "vlan"}), "options.mode"),
        (json!({"colour": "blue"}), "colour"),
        (json!({"mtu": "x"}), "options.mtu"),
    ] {
        let input = json!({
            "network": {"name": "bad", "id": NETWORK_ID, "driver": "knit", "options": opts,
                        "ipv6_enabled": false, "internal": false, "dns_enabled": false},
            "used": {"interfaces": [], "names": {}, "subnets": []},
            "options": {"subnet_pools": [], "check_used_subnets": false},
        });
        let o = nv.call(&w, &["create"], &input);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stdout);
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(w.fail(&["network", "inspect", "bad"]).contains("not found"));
}
