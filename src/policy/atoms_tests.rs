use super::*;
use crate::model::Proto;
use crate::model::policy::{Direction, Labels, PortRange, Rule, RuleSpec, Selector};
use crate::store::{AttachState, Attachment};

fn att(id: i64, net: i64, sandbox: &str, labels: &[(&str, &str)], ips: &[&str]) -> Attachment {
    Attachment {
        id,
        network_id: net,
        network: format!("n{net}"),
        sandbox: sandbox.into(),
        netns_path: String::new(),
        netns_id: None,
        ifname: "eth0".into(),
        host_ifname: format!("veth{id}"),
        mac: String::new(),
        host_mac: String::new(),
        state: AttachState::Ready,
        container_id: None,
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        ports: vec![],
        routes: None,
        aliases: vec![],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Labels>(),
        owner: None,
    }
}

fn labels(s: &str) -> Selector {
    Selector::parse("to", s, false, &[]).unwrap()
}

fn rule(id: i64, dir: Direction, from: Selector, to: Selector, port: Option<&str>) -> Rule {
    Rule {
        id,
        network_id: 1,
        network: "n1".into(),
        spec: RuleSpec {
            action: Action::Allow,
            dir,
            from,
            to,
            port: port.map(|p| PortRange::parse(p).unwrap()),
            origin: None,
        },
    }
}

#[test]
fn port_ranges_become_disjoint_pieces() {
    let a = |id, lo, hi| Atom {
        rule_id: id,
        set: PolSet {
            net_id: 1,
            dir: Direction::Ingress,
            v4: true,
            shape: Shape::Range,
            plen: 32,
        },
        own_att: 1,
        far_att: Some(2),
        own: "10.0.0.2".parse().unwrap(),
        far: "10.0.0.3".parse().unwrap(),
        l4: Some((6, lo, hi)),
    };
    let (x, y, z) = (a(1, 80, 90), a(2, 85, 95), a(3, 100, 100));
    let pieces: Vec<_> = group_elements(&[&x, &y, &z])
        .into_iter()
        .map(|e| e.map(|(_, lo, hi)| (lo, hi)).unwrap())
        .collect();
    assert_eq!(pieces, vec![(80, 84), (85, 90), (91, 95), (100, 100)]);
    // Removing one rule re-cuts only what it touched; the kernel diff says so.
    let (removed, added) = diff(&[x.clone(), y.clone()], std::slice::from_ref(&x));
    let text = |v: &[(String, Elem)]| v.iter().map(|(_, e)| e.text()).collect::<Vec<_>>();
    assert_eq!(
        text(&removed),
        vec![
            "10.0.0.3 . 10.0.0.2 . tcp . 80-84",
            "10.0.0.3 . 10.0.0.2 . tcp . 85-90",
            "10.0.0.3 . 10.0.0.2 . tcp . 91-95"
        ]
    );
    assert_eq!(text(&added), vec!["10.0.0.3 . 10.0.0.2 . tcp . 80-90"]);
    // Identical atoms of two rules are one element, which stays while either exists.
    let twin = Atom {
        rule_id: 9,
        ..x.clone()
    };
    let (removed, added) = diff(&[x.clone(), twin.clone()], std::slice::from_ref(&twin));
    assert!(removed.is_empty() && added.is_empty());
    let _ = z;
}

#[test]
fn attachments_pair_with_the_far_side_both_ways() {
    let web = att(
        1,
        1,
        "web",
        &[("app", "web")],
        &["10.0.0.2/24", "fd00::2/64"],
    );
    let client = att(
        2,
        1,
        "client",
        &[("role", "c"), ("tier", "x")],
        &["10.0.0.3/24"],
    );
    let other_net = att(
        3,
        2,
        "elsewhere",
        &[("role", "c"), ("tier", "x")],
        &["10.9.0.3/24"],
    );
    let r = rule(
        5,
        Direction::Ingress,
        labels("role=c,tier=x"),
        labels("app=web"),
        Some("8080"),
    );
    let all = vec![web.clone(), client.clone(), other_net.clone()];
    let by_rule = atoms_of_rule(&r, &all);
    // Both clients (any network) to web's IPv4 address; no IPv6 pair (clients have none).
    let pairs: Vec<(String, String)> = by_rule
        .iter()
        .map(|a| (a.far.to_string(), a.own.to_string()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("10.0.0.3".to_string(), "10.0.0.2".to_string()),
            ("10.9.0.3".to_string(), "10.0.0.2".to_string())
        ]
    );
    assert!(
        by_rule
            .iter()
            .all(|a| a.set.shape == Shape::Port && a.l4 == Some((6, 8080, 8080)))
    );
    // The same atoms arrive whichever attaches last.
    let mut by_att = atoms_of_attachment(std::slice::from_ref(&r), &web, &all[1..]);
    by_att.extend(atoms_of_attachment(
        std::slice::from_ref(&r),
        &client,
        &[web.clone(), other_net.clone()],
    ));
    let mut by_att_pairs: Vec<_> = by_att.iter().map(|a| (a.far, a.own)).collect();
    by_att_pairs.sort();
    by_att_pairs.dedup();
    let mut want: Vec<_> = by_rule.iter().map(|a| (a.far, a.own)).collect();
    want.sort();
    assert_eq!(by_att_pairs, want);
    // A client missing one of the two labels is not selected (AND).
    let half = att(4, 1, "half", &[("role", "c")], &["10.0.0.4/24"]);
    assert!(atoms_of_attachment(std::slice::from_ref(&r), &half, &all).is_empty());
}

#[test]
fn egress_to_a_cidr_with_an_exception() {
    let app = att(1, 1, "app", &[("app", "a")], &["10.0.0.2/24"]);
    let r = rule(
        7,
        Direction::Egress,
        labels("app=a"),
        Selector::parse("to", "192.168.0.0/24", true, &["192.168.0.128/25".into()]).unwrap(),
        Some("443"),
    );
    let atoms = atoms_of_rule(&r, std::slice::from_ref(&app));
    assert_eq!(atoms.len(), 1);
    let e = elements(&atoms);
    assert_eq!(e[0].0, "pol1_eg4_p25");
    assert_eq!(e[0].1.text(), "10.0.0.2 . 192.168.0.0 . tcp . 443");
    let sets: Vec<String> = sets_of_rule(1, &r.spec).iter().map(PolSet::name).collect();
    assert_eq!(sets, vec!["pol1_eg4_p25"]);
    // Sandboxes on either side use host prefixes of both families.
    let s = rule(8, Direction::Ingress, labels("a=b"), labels("c=d"), None);
    let sets: Vec<String> = sets_of_rule(1, &s.spec).iter().map(PolSet::name).collect();
    assert_eq!(sets, vec!["pol1_in6_a128", "pol1_in4_a32"]);
    let _ = Proto::Tcp;
}

#[test]
fn one_pair_on_two_ports_is_two_elements() {
    let web = att(1, 1, "web", &[("app", "web")], &["10.0.0.2/24"]);
    let cli = att(2, 1, "cli", &[("role", "c")], &["10.0.0.3/24"]);
    let r80 = rule(
        1,
        Direction::Ingress,
        labels("role=c"),
        labels("app=web"),
        Some("80"),
    );
    let r443 = rule(
        2,
        Direction::Ingress,
        labels("role=c"),
        labels("app=web"),
        Some("443"),
    );
    let all = vec![web, cli];
    let mut atoms = atoms_of_rule(&r80, &all);
    atoms.extend(atoms_of_rule(&r443, &all));
    let text: Vec<String> = elements(&atoms).iter().map(|(_, e)| e.text()).collect();
    assert_eq!(
        text,
        vec![
            "10.0.0.3 . 10.0.0.2 . tcp . 80",
            "10.0.0.3 . 10.0.0.2 . tcp . 443"
        ]
    );
    // Removing one rule removes only its port.
    let (removed, added) = diff(&atoms, &atoms_of_rule(&r80, &all));
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].1.text(), "10.0.0.3 . 10.0.0.2 . tcp . 443");
    assert!(added.is_empty());
}
