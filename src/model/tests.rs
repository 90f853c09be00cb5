//! Unit tests of `model`.

use super::*;

#[test]
fn publish_specs() {
    let p = PublishSpec::parse("8080:80").unwrap();
    assert_eq!(p.host_ip, None);
    assert_eq!(p.pairs(), vec![(8080, 80)]);
    assert_eq!(p.proto, Proto::Tcp);
    let p = PublishSpec::parse("127.0.0.1:53:5353/udp").unwrap();
    assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(p.proto, Proto::Udp);
    let p = PublishSpec::parse("[fd00::1]:8000-8002:9000-9002/sctp").unwrap();
    assert_eq!(p.pairs(), vec![(8000, 9000), (8001, 9001), (8002, 9002)]);
    let p = PublishSpec::parse("0.0.0.0:7000-7001:80").unwrap();
    assert_eq!(p.host_ip, None);
    assert_eq!(p.pairs(), vec![(7000, 80), (7001, 80)]);
}

#[test]
fn publish_errors_name_the_value() {
    for bad in [
        "0:80",
        "65536:80",
        "80",
        "a:b",
        "80:90/icmp",
        "9-8:80",
        "8000-8002:80-81",
        "1.2.3:80:80",
        "[::1:80:80",
        "1:2:3:4",
    ] {
        let e = PublishSpec::parse(bad).unwrap_err().to_string();
        assert!(e.contains("--publish") && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn names_and_ifnames() {
    assert!(validate_name("n", "web-1.x_y").is_ok());
    assert!(validate_name("n", "-x").is_err());
    assert!(validate_name("n", "a b").is_err());
    assert!(validate_name("n", "").is_err());
    assert!(validate_ifname("i", "eth0").is_ok());
    assert!(validate_ifname("i", "0123456789abcdef").is_err());
    assert!(validate_ifname("i", "a/b").is_err());
    assert!(validate_ifname("i", "..").is_err());
}

#[test]
fn subnets_are_checked() {
    assert!(parse_subnet("s", "10.0.0.0/24").is_ok());
    assert!(
        parse_subnet("s", "10.0.0.1/24")
            .unwrap_err()
            .to_string()
            .contains("10.0.0.0/24")
    );
    assert!(parse_subnet("s", "10.0.0.0/31").is_err());
    assert!(parse_subnet("s", "nonsense").is_err());
    assert!(parse_subnet("s", "fd00::/64").is_ok());
    let subnets = ["10.1.0.0/24".to_string(), "fd01::/64".to_string()];
    let gws = ["fd01::fe".to_string()];
    let req = |subnets, gateways| NetworkRequest {
        name: "n",
        driver: Driver::Bridge,
        bridge: None,
        subnets,
        gateways,
        internal: false,
        masquerade: true,
        mtu: None,
    };
    let spec = NetworkSpec::new(&req(&subnets, &gws)).unwrap();
    assert_eq!(spec.subnets[0].gateway.to_string(), "10.1.0.1");
    assert_eq!(spec.subnets[1].gateway.to_string(), "fd01::fe");
    let outside_gw = ["10.2.0.1".to_string()];
    let e = NetworkSpec::new(&req(&subnets[..1], &outside_gw));
    assert!(e.unwrap_err().to_string().contains("10.2.0.1"));
    let overlapping = ["10.1.0.0/16".to_string(), "10.1.2.0/24".to_string()];
    let e = NetworkSpec::new(&req(&overlapping, &[]));
    assert!(e.unwrap_err().to_string().contains("overlaps"));
}

#[test]
fn leading_zeros_are_refused() {
    for bad in [
        "010.1.0.0/24",
        "10.01.0.0/24",
        "10.1.0.0/024",
        "::ffff:010.0.0.0/120",
    ] {
        let e = parse_subnet("--subnet", bad).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    assert!(
        parse_subnet("--subnet", "010.1.0.0/24")
            .unwrap_err()
            .to_string()
            .contains("leading zero")
    );
    assert!(parse_subnet("--subnet", "10.0.0.0/24").is_ok());
    assert!(parse_subnet("--subnet", "10.100.0.0/16").is_ok());
    let e = parse_ip("--ip", "010.1.0.5").unwrap_err().to_string();
    assert!(e.contains("--ip") && e.contains("leading zero"), "{e}");
    assert!(parse_ip("--ip", "10.1.0.5").is_ok());
    assert!(parse_ip("--ip", "0.0.0.0").is_ok());
    let e = PublishSpec::parse("010.0.0.1:80:80")
        .unwrap_err()
        .to_string();
    assert!(e.contains("leading zero"), "{e}");
    let subnets = ["10.1.0.0/24".to_string()];
    let gws = ["10.1.0.01".to_string()];
    let e = NetworkSpec::new(&NetworkRequest {
        name: "n",
        driver: Driver::Bridge,
        bridge: None,
        subnets: &subnets,
        gateways: &gws,
        internal: false,
        masquerade: true,
        mtu: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--gateway") && e.contains("leading zero"), "{e}");
}

#[test]
fn one_address_per_family() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(check_one_per_family("--ip", &[ip("10.0.0.5"), ip("fd00::5")]).is_ok());
    assert!(check_one_per_family("--ip", &[ip("10.0.0.5"), ip("10.0.0.5")]).is_ok());
    let e = check_one_per_family("--ip", &[ip("10.0.0.5"), ip("10.0.0.6")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--ip") && e.contains("10.0.0.6") && e.contains("10.0.0.5"),
        "{e}"
    );
    assert!(check_one_per_family("--ip", &[ip("fd00::5"), ip("fd00::6")]).is_err());
}

#[test]
fn reserved_subnets_are_refused() {
    for bad in [
        "169.254.0.0/16",
        "169.254.3.0/24",
        "169.0.0.0/8",
        "127.0.0.0/8",
        "0.0.0.0/8",
        "0.0.0.0/0",
        "224.0.0.0/24",
        "fe80::/64",
        "fe80::/10",
        "::ffff:0:0/96",
        "::ffff:10.0.0.0/120",
        "::/64",
        "ff02::/64",
    ] {
        let e = parse_subnet("--subnet", bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("overlaps"), "{bad}: {e}");
    }
    for good in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/24",
        "fd00::/64",
        "2001:db8::/64",
    ] {
        assert!(parse_subnet("--subnet", good).is_ok(), "{good}");
    }
}

#[test]
fn mtu_is_checked_per_family() {
    let dual = ["10.1.0.0/24".to_string(), "fd01::/64".to_string()];
    let spec = |subnets: &[String], mtu: u32| {
        NetworkSpec::new(&NetworkRequest {
            name: "n",
            driver: Driver::Bridge,
            bridge: None,
            subnets,
            gateways: &[],
            internal: false,
            masquerade: true,
            mtu: Some(mtu),
        })
    };
    let e = spec(&dual, 1000).unwrap_err().to_string();
    assert!(
        e.contains("--mtu") && e.contains("1000") && e.contains("1280"),
        "{e}"
    );
    assert!(spec(&dual, 1280).is_ok());
    assert!(spec(&dual[..1], 1000).is_ok());
    let e = spec(&dual[..1], 500).unwrap_err().to_string();
    assert!(e.contains("--mtu") && e.contains("576"), "{e}");
    assert!(spec(&dual[..1], 65536).is_err());
}

#[test]
fn bridge_names_are_safe() {
    assert!(validate_bridge_name("--bridge", "cni-podman0").is_ok());
    assert!(validate_bridge_name("--bridge", "br_x.1").is_ok());
    for bad in ["br\"x", "br'x", "br{x}", "br;x", "br@x", "br#x", "br$x"] {
        let e = validate_bridge_name("--bridge", bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--bridge") && e.contains("letters"),
            "{bad}: {e}"
        );
    }
    for bad in ["kv0123456789", "kvabcdefabcd", "knbr1", "knbr42"] {
        let e = validate_bridge_name("--bridge", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("knit generates"), "{bad}: {e}");
    }
    assert!(validate_bridge_name("--bridge", "kvm0").is_ok());
    assert!(validate_bridge_name("--bridge", "knbrx").is_ok());
    let subnets = ["10.1.0.0/24".to_string()];
    let e = NetworkSpec::new(&NetworkRequest {
        name: "n",
        driver: Driver::Bridge,
        bridge: Some("br\"0"),
        subnets: &subnets,
        gateways: &[],
        internal: false,
        masquerade: true,
        mtu: None,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("--bridge"), "{e}");
}

#[test]
fn macs() {
    assert_eq!(
        Mac::parse("m", "02:42:AC:11:00:02").unwrap().to_string(),
        "02:42:ac:11:00:02"
    );
    assert!(Mac::parse("m", "01:00:00:00:00:01").is_err());
    assert!(Mac::parse("m", "02:42").is_err());
    let r = Mac::random();
    assert_eq!(r.0[0] & 3, 2);
}

#[test]
fn sandbox_refs() {
    assert_eq!(
        SandboxRef::parse("pid:42").unwrap().path(),
        "/proc/42/ns/net"
    );
    assert_eq!(SandboxRef::parse("web").unwrap().path(), "/run/netns/web");
    assert!(SandboxRef::parse("pid:x").is_err());
    assert!(SandboxRef::parse("../etc").is_err());
}
