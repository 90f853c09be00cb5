//! Store unit tests (temporary databases, no kernel).

use super::wal::{WAL_FOLD_FRAMES, WAL_KEEP_BYTES};
use super::*;
use crate::model::NetworkSpec;

fn tmp() -> std::path::PathBuf {
    let b = crate::model::random_bytes::<6>();
    let d =
        std::env::temp_dir().join(format!("knit-store-{:x?}", b).replace([',', ' ', '[', ']'], ""));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(name: &str, cidr: &str) -> NetworkSpec {
    NetworkSpec::new(&crate::model::NetworkRequest {
        name,
        driver: Driver::Bridge,
        bridge: None,
        subnets: &[cidr.to_string()],
        gateways: &[],
        internal: false,
        masquerade: true,
        mtu: None,
    })
    .unwrap()
}

fn req<'a>(
    net: &'a str,
    sb: &'a str,
    ips: &'a [IpAddr],
    publish: &'a [crate::model::PublishSpec],
) -> AttachRequest<'a> {
    AttachRequest {
        network: net,
        // Leaked: a test's requests live as long as the test.
        sandbox: Box::leak(Box::new(crate::model::SandboxRef::Named(sb.to_string()))),
        ifname: None,
        static_ips: ips,
        mac: None,
        publish,
        container_id: None,
        routes: None,
        aliases: &[],
        labels: &NO_LABELS,
    }
}

static NO_LABELS: Labels = Labels::new();

fn host_name() -> String {
    let b = crate::model::random_bytes::<5>();
    format!(
        "kv{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

fn knbr(id: i64) -> Option<String> {
    Some(format!("knbr{id}"))
}

fn new_att(r: Reserved) -> Attachment {
    assert!(!r.existed, "expected new");
    r.attachment
}

#[test]
fn a_big_wal_is_folded_and_started_over() {
    let d = tmp();
    let mut st = Store::open(&d).unwrap();
    let spec =
        crate::model::service::ServiceSpec::new("s0", "10.96.0.1:80", &[], None, None).unwrap();
    for i in 0..400 {
        let mut s = spec.clone();
        s.name = format!("s{i}");
        s.vip = crate::model::service::Vip::parse(&format!("10.96.{}.{}:80", i / 200, i % 200 + 1))
            .unwrap();
        st.create_service(&s).unwrap();
    }
    assert!(st.wal_is_big());
    st.folding = true; // the fold runs below; current_exe() is this test binary
    drop(st);
    // What `knit store-maintenance` does, on its own connection.
    let mut m = Store::open(&d).unwrap();
    assert!(m.checkpoint("PASSIVE").unwrap() > WAL_FOLD_FRAMES);
    assert!(m.fold_wal().unwrap() <= 2, "the log starts over");
    drop(m);
    let wal = d.join("knit.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() <= WAL_KEEP_BYTES);
    // Everything is still there for the next process, which finds a short log.
    let next = Store::open(&d).unwrap();
    assert_eq!(next.services().unwrap().len(), 400);
    assert!(next.checkpoint("PASSIVE").unwrap() <= 2);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn macs_are_unique_on_a_network() {
    let dir = tmp();
    let mut s = Store::open(&dir).unwrap();
    let net = s
        .create_network(&spec("n", "10.0.0.0/24"), "cli", &knbr)
        .unwrap();
    s.create_network(&spec("m", "10.1.0.0/24"), "cli", &knbr)
        .unwrap();
    let mac = Mac([2, 0, 0, 0, 0, 0x42]);
    let with_mac = |sb: &'static str, net: &'static str, mac: Mac| AttachRequest {
        mac: Some(mac),
        ..req(net, sb, &[], &[])
    };
    let a = new_att(
        s.reserve(&with_mac("a", "n", mac), "eth0", &host_name)
            .unwrap(),
    );
    assert_eq!(a.mac, "02:00:00:00:00:42");
    let e = s
        .reserve(&with_mac("b", "n", mac), "eth0", &host_name)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        "mac 02:00:00:00:00:42 is already used on network \"n\" by sandbox \"a\""
    );
    let host = Mac::parse("host_mac", &a.host_mac).unwrap();
    let e = s
        .reserve(&with_mac("b", "n", host), "eth0", &host_name)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("by the host veth of sandbox \"a\""), "{e}");
    let e = s
        .reserve(&with_mac("b", "n", net.bridge_mac), "eth0", &host_name)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Conflict(_)));
    assert!(e.to_string().contains("its bridge"), "{e}");
    // Nothing of the refused attempts remains; another network may use the same MAC.
    assert_eq!(s.all_attachments().unwrap().len(), 1);
    new_att(
        s.reserve(&with_mac("b", "m", mac), "eth0", &host_name)
            .unwrap(),
    );
    // Released, the MAC is free again.
    s.release(a.id).unwrap();
    new_att(
        s.reserve(&with_mac("c", "n", mac), "eth0", &host_name)
            .unwrap(),
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn allocation_exhaustion_and_reuse() {
    let dir = tmp();
    let mut s = Store::open(&dir).unwrap();
    s.create_network(&spec("n", "10.0.0.0/29"), "cli", &knbr)
        .unwrap();
    let mut got = vec![];
    for i in 0..5 {
        let a = new_att(
            s.reserve(&req("n", &format!("s{i}"), &[], &[]), "eth0", &host_name)
                .unwrap(),
        );
        got.push(a.ips[0].to_string());
    }
    assert_eq!(
        got,
        [
            "10.0.0.2/29",
            "10.0.0.3/29",
            "10.0.0.4/29",
            "10.0.0.5/29",
            "10.0.0.6/29"
        ]
    );
    let e = s
        .reserve(&req("n", "s9", &[], &[]), "eth0", &host_name)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Exhausted { .. }), "{e}");
    // Nothing of the failed attempt remains.
    assert_eq!(s.all_attachments().unwrap().len(), 5);
    let a = s.attachment(1, "s1").unwrap().unwrap();
    s.release(a.id).unwrap();
    let b = new_att(
        s.reserve(&req("n", "s9", &[], &[]), "eth0", &host_name)
            .unwrap(),
    );
    assert_eq!(b.ips[0].to_string(), "10.0.0.3/29");
    // Same sandbox again: idempotent.
    assert!(
        s.reserve(&req("n", "s9", &[], &[]), "eth0", &host_name)
            .unwrap()
            .existed
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn static_ips_and_ports_conflict() {
    let dir = tmp();
    let mut s = Store::open(&dir).unwrap();
    s.create_network(&spec("n", "10.1.0.0/24"), "cli", &knbr)
        .unwrap();
    let ip: IpAddr = "10.1.0.50".parse().unwrap();
    let p = [crate::model::PublishSpec::parse("8080:80").unwrap()];
    new_att(
        s.reserve(&req("n", "a", &[ip], &p), "eth0", &host_name)
            .unwrap(),
    );
    let e = s
        .reserve(&req("n", "b", &[ip], &[]), "eth0", &host_name)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("10.1.0.50") && e.contains("in use"), "{e}");
    let p2 = [crate::model::PublishSpec::parse("127.0.0.1:8080:80").unwrap()];
    let e = s
        .reserve(&req("n", "c", &[], &p2), "eth0", &host_name)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("8080"), "{e}");
    let out: IpAddr = "10.2.0.5".parse().unwrap();
    let e = s
        .reserve(&req("n", "d", &[out], &[]), "eth0", &host_name)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("ip") && e.contains("10.2.0.5"), "{e}");
    let gw: IpAddr = "10.1.0.1".parse().unwrap();
    assert!(
        s.reserve(&req("n", "e", &[gw], &[]), "eth0", &host_name)
            .is_err()
    );
    assert_eq!(s.all_attachments().unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn overlapping_networks_rejected() {
    let dir = tmp();
    let mut s = Store::open(&dir).unwrap();
    s.create_network(&spec("a", "10.5.0.0/16"), "cli", &knbr)
        .unwrap();
    let e = s
        .create_network(&spec("b", "10.5.3.0/24"), "cli", &knbr)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("overlaps") && e.contains("10.5.3.0/24"), "{e}");
    let e = s
        .create_network(&spec("a", "10.6.0.0/24"), "cli", &knbr)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Rules written by schema 5 (one `label`, a bare `cidr`) read back in today's form, and
/// wait for the node to index them.
#[test]
fn policy_rules_of_schema_5_are_read_and_rewritten() {
    let dir = tmp();
    let mut s = Store::open(&dir).unwrap();
    let net = s
        .create_network(&spec("n", "10.0.0.0/24"), "cli", &knbr)
        .unwrap();
    s.conn
        .execute(
            "INSERT INTO policies (network_id, from_sel, to_sel, port, proto) VALUES (?1, ?2, ?3, 80, 'tcp')",
            rusqlite::params![
                net.id,
                r#"{"kind":"cidr","value":"10.9.0.0/16"}"#,
                r#"{"kind":"label","value":{"key":"app","value":"web"}}"#
            ],
        )
        .unwrap();
    super::policies::rewrite_legacy_rules(&s.conn).unwrap();
    let legacy = s.legacy_rules().unwrap();
    assert_eq!(legacy.len(), 1);
    let r = &legacy[0].spec;
    assert_eq!(r.from.to_string(), "10.9.0.0/16");
    assert_eq!(r.to.to_string(), "app=web");
    assert_eq!(r.port.unwrap().to_string(), "80/tcp");
    let stored: String = s
        .conn
        .query_row("SELECT to_sel FROM policies", [], |r| r.get(0))
        .unwrap();
    assert!(stored.contains("labels"), "{stored}");
    s.index_legacy_rule(&legacy[0], &[], &[]).unwrap();
    assert!(s.legacy_rules().unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
