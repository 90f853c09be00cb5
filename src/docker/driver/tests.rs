use super::*;
use crate::model::Proto;

const NID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn create(v: Value) -> CreateNetwork {
    serde_json::from_value(v).unwrap()
}

#[test]
fn network_spec_from_docker_create() {
    let req = create(json!({
        "NetworkID": NID,
        "Options": {"com.docker.network.enable_ipv6": true,
                    "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.30.30.0/24", "Gateway": "10.30.30.1/24"}],
        "IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": "fd00:30::/64", "Gateway": "fd00:30::1/64"}]
    }));
    let s = network_spec(&req).unwrap();
    assert_eq!(s.name, "docker-0123456789ab");
    assert_eq!(s.mtu, Some(1400));
    assert_eq!(s.subnets.len(), 2);
    assert_eq!(s.subnets[0].gateway.to_string(), "10.30.30.1");
    assert_eq!(s.subnets[1].gateway.to_string(), "fd00:30::1");
    assert!(s.masquerade && !s.internal && s.dns);

    let req = create(json!({
        "NetworkID": NID,
        "Options": {"com.docker.network.internal": true,
                    "com.docker.network.generic": {"knit.name": "web"}},
        "IPv4Data": [{"Pool": "10.31.0.0/24", "Gateway": "10.31.0.1/24"}], "IPv6Data": []
    }));
    let s = network_spec(&req).unwrap();
    assert_eq!(s.name, "web");
    assert!(s.internal && !s.masquerade);
}

#[test]
fn bad_options_are_refused_by_name() {
    let with = |generic: Value| {
        let req = create(json!({"NetworkID": NID,
            "Options": {"com.docker.network.generic": generic},
            "IPv4Data": [{"Pool": "10.30.30.0/24", "Gateway": "10.30.30.1/24"}]}));
        network_spec(&req).unwrap_err().to_string()
    };
    let e = with(json!({"vlan": "4"}));
    assert!(e.contains("vlan") && e.contains("unknown option"), "{e}");
    let e = with(json!({"com.docker.network.driver.mtu": "big"}));
    assert!(e.contains("mtu") && e.contains("big"), "{e}");
    let e = with(json!({"knit.name": "-x"}));
    assert!(e.contains("-x"), "{e}");
    let req = create(json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.30.30.0/33"}]}));
    assert!(
        network_spec(&req)
            .unwrap_err()
            .to_string()
            .contains("10.30.30.0/33")
    );
}

#[test]
fn port_bindings_become_publish_specs() {
    let b = |proto, port, host_port| PortBinding {
        proto,
        ip: String::new(),
        port,
        host_ip: String::new(),
        host_port,
        host_port_end: host_port,
    };
    let p = publish_of(&[b(6, 80, 8080), b(17, 53, 5353)]).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].host_ports, (8080, 8080));
    assert_eq!(p[1].proto, Proto::Udp);
    let e = publish_of(&[b(6, 80, 0)]).unwrap_err().to_string();
    assert!(
        e.contains("explicit host port") && e.contains("80/tcp"),
        "{e}"
    );
    assert!(publish_of(&[b(1, 80, 80)]).is_err());
}

#[test]
fn handoff_names_fit_and_ids_are_checked() {
    assert_eq!(handoff_name(NID), "kd0123456789");
    assert!(handoff_name(NID).len() <= 15);
    assert!(state::check_id("EndpointID", "../../etc").is_err());
    assert!(state::check_id("EndpointID", "").is_err());
    assert!(state::check_id("EndpointID", NID).is_ok());
}

#[test]
fn plugin_calls_answer_in_dockers_shapes() {
    let dir = std::env::temp_dir().join(format!("knit-docker-unit-{}", std::process::id()));
    let (code, v) = super::super::answer(&dir, Path::new("/nonexistent"), "/Plugin.Activate", b"");
    assert_eq!(
        (code, v),
        (200, json!({"Implements": ["NetworkDriver", "IpamDriver"]}))
    );
    let (code, v) = super::super::answer(
        &dir,
        Path::new("/nonexistent"),
        "/NetworkDriver.GetCapabilities",
        b"",
    );
    assert_eq!(code, 200);
    assert_eq!(v["Scope"], "local");
    let (code, v) = super::super::answer(
        &dir,
        Path::new("/nonexistent"),
        "/NetworkDriver.Bogus",
        b"{}",
    );
    assert_eq!(code, 404);
    assert!(v["Err"].as_str().unwrap().contains("Bogus"));
    // Unknown endpoints and networks: deleting them is no error (Docker cleans up after
    // restarts with IDs the driver may not know).
    let ids = json!({"NetworkID": NID, "EndpointID": NID}).to_string();
    assert_eq!(
        super::super::answer(
            &dir,
            Path::new("/nonexistent"),
            "/NetworkDriver.DeleteEndpoint",
            ids.as_bytes()
        )
        .0,
        200
    );
    assert_eq!(
        super::super::answer(
            &dir,
            Path::new("/nonexistent"),
            "/NetworkDriver.DeleteNetwork",
            ids.as_bytes()
        )
        .0,
        200
    );
    // A join for an endpoint never created is an error naming it.
    let (code, v) = super::super::answer(
        &dir,
        Path::new("/nonexistent"),
        "/NetworkDriver.Join",
        ids.as_bytes(),
    );
    assert_eq!(code, 500);
    assert!(v["Err"].as_str().unwrap().contains(NID), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn macs_follow_the_ipv4_address() {
    let ip: IpAddr = "10.93.0.2".parse().unwrap();
    assert_eq!(mac_for(&[ip]).to_string(), "0a:58:0a:5d:00:02");
    let v6: IpAddr = "fd00::2".parse().unwrap();
    assert_eq!(mac_for(&[v6, ip]), mac_for(&[ip]));
    let a = mac_for(&[v6]);
    assert_eq!(a.0[0] & 0x03, 0x02, "locally administered unicast");
}
