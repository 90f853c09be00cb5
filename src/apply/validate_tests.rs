//! Validation: what a file means, and where its errors are.

use super::*;
use crate::apply::file;

fn check(text: &str, known: Option<&Known>) -> Result<Topology> {
    let raw = file::parse("t.yaml", text)?;
    validate(
        &Source {
            file: "t.yaml",
            text,
        },
        &raw,
        known,
    )
}

fn err(text: &str) -> String {
    check(text, Some(&Known::default()))
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_and_short_forms() {
    let t = check(
        "name: x\nnetworks:\n  n: {subnet: 10.170.0.0/24}\nsandboxes:\n  a:\n    networks: [n]\n  b:\npolicies:\n  - {network: n, from: a, to: a}\n  - {network: n, from: a, to: a}\n  - {network: n, direction: egress, from: {app: x}, to: 0.0.0.0/0, except: [10.0.0.0/8]}\n",
        Some(&Known::default()),
    )
    .unwrap();
    let n = &t.networks[0];
    assert_eq!((n.ingress, n.egress), (Default::Allow, Default::Allow));
    assert!(n.spec.dns && n.spec.masquerade && !n.spec.internal);
    assert_eq!(n.spec.subnets[0].gateway.to_string(), "10.170.0.1");
    assert_eq!(t.sandboxes, ["a", "b"]);
    assert_eq!(t.attachments.len(), 1);
    assert!(t.attachments[0].ports.is_empty() && t.attachments[0].labels.is_empty());
    // The same rule twice is one rule.
    assert_eq!(t.rules.len(), 2);
    assert_eq!(t.rules[1].spec.dir, Direction::Egress);
    assert_eq!(
        t.rules[1].spec.to.to_string(),
        "0.0.0.0/0 except 10.0.0.0/8"
    );
}

#[test]
fn refers_to_what_the_store_knows() {
    let text = "name: x\nsandboxes:\n  a:\n    networks: [shared]\nservices:\n  s: {vip: \"10.179.0.1:80\", backends: [\"b:80\"]}\n";
    let mut k = Known::default();
    assert!(err(text).starts_with("t.yaml:4:"), "{}", err(text));
    k.networks.insert("shared".into());
    let e = check(text, Some(&k)).unwrap_err().to_string();
    assert!(
        e.starts_with("t.yaml:6:41: services.s.backends[0]: sandbox \"b\""),
        "{e}"
    );
    k.sandboxes.insert("b".into());
    assert!(check(text, Some(&k)).is_ok());
    // destroy checks nothing against the store.
    assert!(check(text, None).is_ok());
}

#[test]
fn errors_name_line_column_path_and_value() {
    for (text, want) in [
        (
            "name: x\nnetworks:\n  n:\n    subnets:\n      - 10.170.0.0/24\n      - 10.170.1.0/33\n",
            "t.yaml:6:9: networks.n.subnets[1]: \"10.170.1.0/33\"",
        ),
        (
            "name: x\nnetworks:\n  n: {}\n",
            "t.yaml:3:3: networks.n: a network needs `subnet:`",
        ),
        (
            "name: x\nnetworks:\n  n: {subnet: 10.170.0.0/24, ingress: maybe}\n",
            "t.yaml:3:39: networks.n.ingress: \"maybe\": must be allow or deny",
        ),
        (
            "name: x\nnetworks:\n  n:\n    subnet: 10.170.0.0/24\n    gateways: [10.9.0.1]\n",
            "t.yaml:5:16: networks.n.gateways: \"10.9.0.1\": is not inside",
        ),
        (
            "name: x\nnetworks:\n  n: {subnet: 10.170.0.0/24}\nsandboxes:\n  a:\n    networks:\n      n:\n        ips: [10.170.0.5, 10.170.0.6]\n",
            "t.yaml:8:9: sandboxes.a.networks.n.ips:",
        ),
        (
            "name: x\nnetworks:\n  n: {subnet: 10.170.0.0/24}\nsandboxes:\n  a:\n    networks:\n      n:\n        labels:\n          app: \"no spaces\"\n",
            "t.yaml:9:17: sandboxes.a.networks.n.labels.app:",
        ),
        (
            "name: x\nservices:\n  s:\n    vip: 127.0.0.1:80\n",
            "t.yaml:4:10: services.s.vip: \"127.0.0.1:80\"",
        ),
        (
            "name: x\nnetworks:\n  n: {subnet: 10.170.0.0/24}\npolicies:\n  - network: n\n    from: a\n    to: b\n    port: 0\n",
            "t.yaml:6:11: policies[0].from: sandbox \"a\"",
        ),
        ("name: bad name\n", "t.yaml:1:7: name: \"bad name\""),
        (
            "name: x\nnetworks:\n  n: {subnet: 10.170.0.0/24}\npolicies:\n  - network: n\n    from: 10.0.0.0/8\n    to: {}\n",
            "t.yaml:7:5: policies[0].to: no labels",
        ),
    ] {
        let e = err(text);
        assert!(e.starts_with(want), "{text}\n got: {e}\nwant: {want}");
    }
}
