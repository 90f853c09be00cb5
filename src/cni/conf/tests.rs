//! Unit tests of `cni/conf`.

use super::*;

const PODMAN: &str = r#"{
  "cniVersion": "0.4.0", "name": "podman", "type": "knit", "bridge": "cni-podman0",
  "isGateway": true, "ipMasq": true, "hairpinMode": true, "someFutureKey": {"x": 1},
  "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
           "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]},
  "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
}"#;

#[test]
fn podman_config() {
    let c = parse(PODMAN.as_bytes()).unwrap();
    let spec = c.network_spec().unwrap();
    assert_eq!(spec.bridge.as_deref(), Some("cni-podman0"));
    assert!(spec.masquerade && spec.bridge_gateway);
    assert_eq!(spec.subnets[0].gateway.to_string(), "10.88.0.1");
    let routes = c.routes(&spec).unwrap();
    assert_eq!(
        routes,
        vec![RouteSpec {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: None
        }]
    );
    assert_eq!(c.publish().unwrap()[0].pairs(), vec![(8080, 80)]);
}

#[test]
fn labels_from_args_convention() {
    let with = |args: &str| {
        let mut v: Value = serde_json::from_str(PODMAN).unwrap();
        v["args"] = serde_json::from_str(args).unwrap();
        parse(v.to_string().as_bytes()).unwrap().labels()
    };
    assert!(
        parse(PODMAN.as_bytes())
            .unwrap()
            .labels()
            .unwrap()
            .is_empty()
    );
    let l = with(
        r#"{"cni": {"labels": [{"key": "app", "value": "web"},
            {"key": "app.kubernetes.io/tier", "value": "db"},
            {"key": "empty", "value": ""}, {"key": "bad key", "value": "x"}]},
            "other": 1}"#,
    )
    .unwrap();
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        [
            ("app".to_string(), "web".to_string()),
            ("app.kubernetes.io/tier".to_string(), "db".to_string())
        ]
    );
    assert!(with(r#"{"cni": {}}"#).unwrap().is_empty());
    let e = with(r#"{"cni": {"labels": {"app": "web"}}}"#).unwrap_err();
    assert!(e.msg.contains("args.cni.labels"), "{}", e.msg);
}

#[test]
fn legacy_flat_ipam_and_ranges() {
    let c = parse(br#"{"cniVersion":"0.3.1","name":"n","type":"knit","isDefaultGateway":true,
        "ipam":{"type":"host-local","subnet":"10.1.0.0/24","rangeStart":"10.1.0.100","rangeEnd":"10.1.0.110"}}"#)
    .unwrap();
    let spec = c.network_spec().unwrap();
    assert_eq!(
        spec.subnets[0].range_start.unwrap().to_string(),
        "10.1.0.100"
    );
    assert_eq!(
        c.routes(&spec).unwrap()[0].gw.unwrap().to_string(),
        "10.1.0.1"
    );
    assert!(
        !spec.masquerade,
        "ipMasq defaults to false, as in the reference plugin"
    );
}

#[test]
fn errors_have_spec_codes() {
    assert_eq!(parse(b"{").unwrap_err().code, DECODE);
    assert_eq!(parse(b"[]").unwrap_err().code, DECODE);
    assert_eq!(
        parse(br#"{"cniVersion":"9.9.9","name":"n","type":"knit"}"#)
            .unwrap_err()
            .code,
        INCOMPATIBLE_VERSION
    );
    let c = parse(br#"{"cniVersion":"1.0.0","name":"n","type":"knit","ipam":{"type":"dhcp"}}"#)
        .unwrap();
    assert_eq!(c.network_spec().unwrap_err().code, UNSUPPORTED_FIELD);
    let c = parse(br#"{"cniVersion":"1.0.0","name":"bad name","type":"knit","ipam":{"subnet":"10.0.0.0/24"}}"#).unwrap();
    assert_eq!(c.network_spec().unwrap_err().code, INVALID_CONFIG);
}

#[test]
fn go_cni_keys_are_matched_ignoring_case() {
    let mut v: Value = serde_json::from_str(PODMAN).unwrap();
    v["runtimeConfig"] = serde_json::json!({
        "PortMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""},
                         {"HostPort": 5353, "ContainerPort": 53, "Protocol": "", "HostIP": "127.0.0.1"}],
        "IPRanges": [[{"Subnet": "10.88.0.0/16", "RangeStart": "", "RangeEnd": "", "Gateway": ""}]],
        "DNS": {"Servers": ["10.0.0.53"], "Searches": ["svc.local"], "Options": ["ndots:5"]},
        "Bandwidth": {"IngressRate": 1, "IngressBurst": 2, "EgressRate": 3, "EgressBurst": 4},
        "IPs": ["10.88.0.9"],
        "MAC": "02:00:00:00:00:09"
    });
    let c = parse(v.to_string().as_bytes()).unwrap();
    let p = c.publish().unwrap();
    assert_eq!(p[0].pairs(), vec![(8080, 80)]);
    assert_eq!(p[0].host_ip, None, "empty HostIP means any");
    assert_eq!(p[1].proto.as_str(), "tcp", "empty Protocol means tcp");
    assert_eq!(p[1].host_ip.unwrap().to_string(), "127.0.0.1");
    let spec = c.network_spec().unwrap();
    assert_eq!(spec.subnets[0].cidr.to_string(), "10.88.0.0/16");
    assert_eq!(spec.subnets[0].range_start, None);
    assert_eq!(spec.subnets[0].gateway.to_string(), "10.88.0.1");
    assert_eq!(c.static_ips(&[]).unwrap()[0].to_string(), "10.88.0.9");
    assert_eq!(
        c.mac(None).unwrap().unwrap().to_string(),
        "02:00:00:00:00:09"
    );
    let dns = c.dns().unwrap();
    assert_eq!(dns["nameservers"][0], "10.0.0.53");
    assert_eq!(dns["search"][0], "svc.local");
    assert_eq!(dns["options"][0], "ndots:5");
    // The exact spelling wins when both are present.
    let mut v: Value = serde_json::from_str(PODMAN).unwrap();
    v["runtimeConfig"] = serde_json::json!({"portMappings": [
        {"hostPort": 81, "HostPort": 82, "containerPort": 80}]});
    let c = parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(c.publish().unwrap()[0].pairs(), vec![(81, 80)]);
}

#[test]
fn del_reads_only_what_it_needs() {
    let id = parse_identity(
        br#"{"cniVersion":"1.0.0","name":"n","type":"knit",
             "runtimeConfig":{"portMappings":[{"containerPort":"x"}]},"ipam":"junk"}"#,
    )
    .unwrap();
    assert_eq!(id.name, "n");
    assert_eq!(parse_identity(b"{").unwrap_err().code, DECODE);
    assert_eq!(
        parse_identity(br#"{"cniVersion":"9.9.9","name":"n"}"#)
            .unwrap_err()
            .code,
        INCOMPATIBLE_VERSION
    );
}

#[test]
fn ranges_are_ordered_and_errors_name_config_fields() {
    let c = parse(br#"{"cniVersion":"1.0.0","name":"n","type":"knit",
        "ipam":{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.200","rangeEnd":"10.1.0.100"}]]}}"#)
    .unwrap();
    let e = c.network_spec().unwrap_err();
    assert_eq!(e.code, INVALID_CONFIG);
    assert!(
        e.msg.contains("ipam.ranges[0][0].rangeStart") && e.msg.contains("10.1.0.200"),
        "{}",
        e.msg
    );
    for (conf, field) in [
        (
            r#"{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"010.2.0.0/24"}]]}"#,
            "ipam.ranges[1][0].subnet",
        ),
        (r#"{"subnet":"169.254.0.0/16"}"#, "ipam.subnet"),
        (
            r#"{"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.2.0.1"}]]}"#,
            "ipam.ranges[0][0].gateway",
        ),
    ] {
        let c = parse(
            format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"knit","ipam":{conf}}}"#)
                .as_bytes(),
        )
        .unwrap();
        let e = c.network_spec().unwrap_err();
        assert!(
            e.msg.contains(field) && !e.msg.contains("--"),
            "{field}: {}",
            e.msg
        );
    }
    let c = parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"knit","mtu":1000,
        "ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd01::/64"}]]}}"#,
    )
    .unwrap();
    let e = c.network_spec().unwrap_err();
    assert!(
        e.msg.starts_with("invalid mtu ") && e.msg.contains("1280"),
        "{}",
        e.msg
    );
    let c = parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"knit","bridge":"br\"x",
        "ipam":{"subnet":"10.1.0.0/24"}}"#,
    )
    .unwrap();
    let e = c.network_spec().unwrap_err();
    assert!(e.msg.starts_with("invalid bridge "), "{}", e.msg);
    let c = parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"knit","ipam":{"subnet":"10.1.0.0/24"},
        "runtimeConfig":{"ips":["10.1.0.5","10.1.0.6"]}}"#,
    )
    .unwrap();
    assert_eq!(c.static_ips(&[]).unwrap_err().code, INVALID_CONFIG);
}

#[test]
fn versions() {
    assert!(version_at_least("1.1.0", "0.4.0"));
    assert!(!version_at_least("0.3.1", "0.4.0"));
    assert!(version_at_least("0.4.0", "0.4.0"));
}
