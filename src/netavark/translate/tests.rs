use super::*;
use serde_json::json;

fn net(v: serde_json::Value) -> Network {
    serde_json::from_value(v).unwrap()
}

const ID: &str = "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9";

#[test]
fn create_fills_subnet_gateway_and_bridge_and_keeps_unknown_fields() {
    let raw = json!({"name": "web", "id": ID, "driver": "knit", "ipv6_enabled": false,
        "internal": false, "dns_enabled": true, "created": "2026-11-30T00:00:00Z",
        "labels": {"team": "a"}});
    let taken: Vec<IpNet> = vec!["10.90.0.0/24".parse().unwrap()];
    let out = complete(raw, &taken).unwrap();
    assert_eq!(
        out["subnets"],
        json!([{"subnet": "10.90.1.0/24", "gateway": "10.90.1.1"}])
    );
    assert_eq!(out["network_interface"], "knnv2f259bab93a");
    assert_eq!(out["created"], "2026-11-30T00:00:00Z");
    assert_eq!(out["labels"], json!({"team": "a"}));
    assert_eq!(out["id"], ID);
    assert_eq!(out["driver"], "knit");
}

#[test]
fn create_keeps_given_subnets_and_adds_a_ula_for_ipv6() {
    let raw = json!({"name": "web", "id": ID, "driver": "knit", "ipv6_enabled": true,
        "subnets": [{"subnet": "10.7.0.0/16", "gateway": "10.7.0.254",
                     "lease_range": {"start_ip": "10.7.1.1", "end_ip": "10.7.1.9"}}],
        "network_interface": "pm0"});
    let out = complete(raw, &[]).unwrap();
    let s = out["subnets"].as_array().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0]["gateway"], "10.7.0.254");
    assert_eq!(s[0]["lease_range"]["end_ip"], "10.7.1.9");
    let v6: IpNet = s[1]["subnet"].as_str().unwrap().parse().unwrap();
    assert_eq!(v6.prefix_len(), 64);
    assert_eq!(v6.addr().to_string().get(..2), Some("fd"));
    assert_eq!(out["network_interface"], "pm0");
}

#[test]
fn create_refuses_what_setup_would_refuse_naming_the_field() {
    let base = json!({"name": "web", "id": ID, "driver": "knit"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        complete(b, &[]).unwrap_err().to_string()
    };
    let e = with("options", json!({"vlan": "5"}));
    assert!(e.contains("options") && e.contains("vlan"), "{e}");
    let e = with("options", json!({"mode": "macvlan"}));
    assert!(e.contains("options.mode") && e.contains("macvlan"), "{e}");
    let e = with("options", json!({"mtu": "big"}));
    assert!(e.contains("options.mtu") && e.contains("big"), "{e}");
    let e = with("ipam_options", json!({"driver": "dhcp"}));
    assert!(
        e.contains("ipam_options.driver") && e.contains("dhcp"),
        "{e}"
    );
    let e = with("subnets", json!([{"subnet": "10.1.0.0/33"}]));
    assert!(
        e.contains("subnets[].subnet") && e.contains("10.1.0.0/33"),
        "{e}"
    );
    let e = with(
        "subnets",
        json!([{"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}]),
    );
    assert!(
        e.contains("subnets[].gateway") && e.contains("10.2.0.1"),
        "{e}"
    );
    let e = with("subnets", json!([{"subnet": "fd00:1::/64"}]));
    assert!(e.contains("ipv6_enabled"), "{e}");
    let e = with("network_dns_servers", json!(["1.1.1.1"]));
    assert!(e.contains("network_dns_servers"), "{e}");
    let e = with("name", json!("-bad"));
    assert!(e.contains("name") && e.contains("-bad"), "{e}");
}

#[test]
fn free_v4_skips_overlaps_and_runs_out() {
    let taken: Vec<IpNet> = vec![
        "10.90.0.0/23".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    assert!(
        crate::model::free_subnet(&taken).is_err(),
        "10.0.0.0/8 covers the whole pool"
    );
    let taken: Vec<IpNet> = vec!["10.90.0.0/23".parse().unwrap()];
    assert_eq!(
        crate::model::free_subnet(&taken).unwrap().to_string(),
        "10.90.2.0/24"
    );
}

#[test]
fn spec_carries_dns_masquerade_and_mode() {
    let n = net(
        json!({"name": "web", "id": ID, "driver": "knit", "dns_enabled": true,
        "internal": true, "subnets": [{"subnet": "10.7.0.0/24"}],
        "network_interface": "pm0", "options": {"mtu": "1400"}}),
    );
    let s = network_spec(&n).unwrap();
    assert!(s.dns && s.internal && !s.masquerade);
    assert_eq!(s.dns_domain.as_deref(), Some(PODMAN_DOMAIN));
    assert_eq!(s.mtu, Some(1400));
    assert_eq!(s.bridge.as_deref(), Some("pm0"));
    let n = net(
        json!({"name": "p", "driver": "knit", "subnets": [{"subnet": "10.8.0.0/24"}],
        "network_interface": "ignored", "options": {"mode": "ptp", "masquerade": "false",
        "dns_domain": "corp.example"}}),
    );
    let s = network_spec(&n).unwrap();
    assert_eq!(s.driver, Driver::Ptp);
    assert_eq!(s.bridge, None);
    assert!(!s.masquerade && !s.dns);
    assert_eq!(s.dns_domain.as_deref(), Some("corp.example"));
}

fn exec(opts: serde_json::Value, ports: serde_json::Value) -> PluginExec {
    serde_json::from_value(json!({
        "container_id": "abc123", "container_name": "web_1",
        "port_mappings": ports,
        "network": {"name": "web", "id": ID, "driver": "knit",
                    "subnets": [{"subnet": "10.7.0.0/24", "gateway": "10.7.0.1"}]},
        "network_options": opts,
    }))
    .unwrap()
}

#[test]
fn attach_parts_expand_port_ranges_and_collect_names_and_labels() {
    let e = exec(
        json!({"interface_name": "eth0", "aliases": ["web", "www"],
               "static_ips": ["10.7.0.50"], "static_mac": "aa:bb:cc:dd:ee:01",
               "options": {"label.app": "web", "label.tier": "front"}}),
        json!([{"container_port": 80, "host_ip": "", "host_port": 8080, "protocol": "tcp", "range": 3},
               {"container_port": 53, "host_ip": "127.0.0.1", "host_port": 5353, "protocol": "udp", "range": 0}]),
    );
    let p = attach_parts(&e).unwrap();
    assert_eq!(p.static_ips, vec!["10.7.0.50".parse::<IpAddr>().unwrap()]);
    assert_eq!(p.mac.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
    let shown: Vec<String> = p.publish.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(p.publish.len(), 4, "{shown:?}");
    // The container's name first, then its aliases.
    assert_eq!(
        p.names,
        vec!["web_1".to_string(), "web".to_string(), "www".to_string()]
    );
    assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(p.labels.len(), 2);
    assert!(p.routes.is_none());
}

#[test]
fn attach_parts_refuse_bad_input_naming_the_field() {
    let bad = |opts: serde_json::Value, ports: serde_json::Value| {
        attach_parts(&exec(opts, ports))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = bad(
        json!({"interface_name": "eth0", "static_ips": ["10.7.0.x"]}),
        json!(null),
    );
    assert!(e.contains("static_ips") && e.contains("10.7.0.x"), "{e}");
    let e = bad(
        json!({"interface_name": "eth0", "static_mac": "zz"}),
        json!(null),
    );
    assert!(e.contains("static_mac"), "{e}");
    let e = bad(
        json!({"interface_name": "eth0", "aliases": ["bad name"]}),
        json!(null),
    );
    assert!(e.contains("aliases"), "{e}");
    let e = bad(
        json!({"interface_name": "eth0", "options": {"isolate": "true"}}),
        json!(null),
    );
    assert!(
        e.contains("network_options.options") && e.contains("isolate"),
        "{e}"
    );
    let e = bad(
        json!({"interface_name": "eth0"}),
        json!([{"container_port": 80, "host_ip": "", "host_port": 0, "protocol": "tcp", "range": 1}]),
    );
    assert!(e.contains("port_mappings"), "{e}");
    let e = bad(
        json!({"interface_name": "eth0"}),
        json!([{"container_port": 80, "host_ip": "", "host_port": 80, "protocol": "icmp", "range": 1}]),
    );
    assert!(e.contains("port_mappings") && e.contains("icmp"), "{e}");
}

#[test]
fn bridge_names_fit_the_kernel_limit() {
    assert_eq!(bridge_name(ID).len(), 15);
    assert_eq!(bridge_name("ab"), "knnvab");
}
