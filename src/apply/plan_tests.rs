//! Plans against hand-made store snapshots, compared line by line with what `knit apply
//! --dry-run` prints.

use super::*;
use crate::apply::validate::{Source, validate};
use crate::apply::{Topology, file};

const LAB: &str = "\
name: lab
networks:
  lab:
    subnet: 10.170.0.0/24
    ingress: deny
sandboxes:
  web:
    networks:
      lab: {ports: [\"8080:80\"], labels: {app: web}}
  client:
    networks: [lab]
services:
  web: {vip: \"10.179.0.10:80\", backends: [\"web:80\"]}
policies:
  - {network: lab, from: client, to: {app: web}, port: 80}
";

fn topo(text: &str) -> Topology {
    let raw = file::parse("t.yaml", text).unwrap();
    validate(
        &Source {
            file: "t.yaml",
            text,
        },
        &raw,
        None,
    )
    .unwrap()
}

/// The store after `t` was applied (everything owned by it when `owned`).
fn applied(t: &Topology, owned: bool) -> Current {
    let mut c = Current {
        networks: t.networks.clone(),
        sandboxes: t.sandboxes.iter().cloned().collect(),
        attachments: t.attachments.clone(),
        services: t.services.clone(),
        rules: t.rules.clone(),
        owned: BTreeSet::new(),
        remade: vec![],
    };
    for (i, a) in c.attachments.iter_mut().enumerate() {
        if a.ips.is_empty() {
            a.ips = vec![format!("10.170.0.{}", i + 2).parse().unwrap()];
        }
        a.ifname = Some("eth0".into());
    }
    if owned {
        let mut own = |k: Kind, key: String| c.owned.insert((k, key));
        for n in &t.networks {
            own(Kind::Network, n.spec.name.clone());
        }
        for s in &t.sandboxes {
            own(Kind::Sandbox, s.clone());
        }
        for a in &t.attachments {
            own(Kind::Attachment, a.key());
        }
        for s in &t.services {
            own(Kind::Service, s.name.clone());
        }
        for r in &t.rules {
            own(Kind::Rule, r.key());
        }
    }
    c
}

fn lines(want: &Topology, have: &Current) -> Vec<String> {
    plan(want, have).unwrap().lines()
}

#[test]
fn a_fresh_topology_is_created_in_dependency_order() {
    assert_eq!(
        lines(&topo(LAB), &Current::default()),
        [
            "+ network lab: bridge 10.170.0.0/24",
            "~ default lab: ingress allow → deny",
            "+ sandbox web",
            "+ sandbox client",
            "+ attachment web on lab: ports 8080:80/tcp; labels app=web",
            "+ attachment client on lab",
            "+ service web: 10.179.0.10:80/tcp → web:80",
            "+ rule lab: lab ingress allows client → app=web port 80/tcp",
        ]
    );
}

#[test]
fn applying_what_is_there_does_nothing() {
    let t = topo(LAB);
    let p = plan(&t, &applied(&t, true)).unwrap();
    assert!(p.steps.is_empty(), "{:?}", p.lines());
    assert_eq!(p.lines(), ["topology lab: nothing to do"]);
    assert!(p.notes.is_empty());
}

#[test]
fn a_changed_port_reattaches_only_that_sandbox_keeping_its_address() {
    let t = topo(LAB);
    let have = applied(&t, true);
    let changed = topo(&LAB.replace("[\"8080:80\"]", "[\"8080:80\", \"8443:443\"]"));
    assert_eq!(
        lines(&changed, &have),
        [
            "- attachment web on lab: ports 8080:80/tcp; labels app=web; ips 10.170.0.2 (ports 8080:80/tcp → 8080:80/tcp, 8443:443/tcp: attached again below)",
            "+ attachment web on lab: ports 8080:80/tcp, 8443:443/tcp; labels app=web; ips 10.170.0.2 (ports 8080:80/tcp → 8080:80/tcp, 8443:443/tcp)",
        ]
    );
    // Written differently, the same ports: nothing to do.
    let same = topo(&LAB.replace("[\"8080:80\"]", "[\"8080:80/tcp\"]"));
    assert!(plan(&same, &have).unwrap().steps.is_empty());
}

#[test]
fn labels_backends_defaults_and_rules_change_in_place() {
    let t = topo(LAB);
    let have = applied(&t, true);
    let changed = topo(
        &LAB.replace("backends: [\"web:80\"]", "backends: [\"client:80\"]")
            .replace("ingress: deny", "ingress: allow\n    egress: deny")
            .replace("port: 80}", "port: 8080}"),
    );
    assert_eq!(
        lines(&changed, &have),
        [
            "- rule lab: lab ingress allows client → app=web port 80/tcp",
            "- backend web:80: of service web",
            "~ default lab: ingress deny → allow",
            "~ default lab: egress allow → deny",
            "+ backend client:80: of service web",
            "+ rule lab: lab ingress allows client → app=web port 8080/tcp",
        ]
    );
    let relabelled = topo(&LAB.replace("{app: web}}", "{app: www}}"));
    let l = lines(&relabelled, &have);
    assert_eq!(l.len(), 2, "{l:?}");
    assert!(l[0].contains("labels app=web → app=www"), "{l:?}");
}

#[test]
fn a_new_vip_replaces_the_service() {
    let t = topo(LAB);
    let changed = topo(&LAB.replace("10.179.0.10:80", "10.179.0.11:80"));
    assert_eq!(
        lines(&changed, &applied(&t, true)),
        [
            "- service web: 10.179.0.10:80/tcp → web:80 (vip 10.179.0.10:80/tcp → 10.179.0.11:80/tcp)",
            "+ service web: 10.179.0.11:80/tcp → web:80 (vip 10.179.0.10:80/tcp → 10.179.0.11:80/tcp)",
        ]
    );
}

#[test]
fn what_the_file_no_longer_declares_is_removed() {
    let t = topo(LAB);
    let smaller = topo(
        "name: lab\nnetworks:\n  lab:\n    subnet: 10.170.0.0/24\n    ingress: deny\nsandboxes:\n  web:\n    networks:\n      lab: {ports: [\"8080:80\"], labels: {app: web}}\n",
    );
    assert_eq!(
        lines(&smaller, &applied(&t, true)),
        [
            "- rule lab: lab ingress allows client → app=web port 80/tcp",
            "- service web: 10.179.0.10:80/tcp → web:80",
            "- attachment client on lab: ips 10.170.0.3",
            "- sandbox client",
        ]
    );
}

#[test]
fn a_changed_subnet_replaces_the_network_and_what_is_on_it() {
    let t = topo(LAB);
    let changed = topo(&LAB.replace("10.170.0.0/24", "10.170.1.0/24"));
    let l = lines(&changed, &applied(&t, true));
    let why = "subnets 10.170.1.0/24 gw 10.170.1.1 in the file, 10.170.0.0/24 gw 10.170.0.1 here";
    assert_eq!(
        l,
        [
            "- rule lab: lab ingress allows client → app=web port 80/tcp".to_string(),
            "- attachment web on lab: ports 8080:80/tcp; labels app=web; ips 10.170.0.2 (its network is replaced: attached again below)".into(),
            "- attachment client on lab: ips 10.170.0.3 (its network is replaced: attached again below)".into(),
            format!("- network lab: bridge 10.170.0.0/24 ({why})"),
            format!("+ network lab: bridge 10.170.1.0/24 ({why})"),
            "~ default lab: ingress allow → deny".into(),
            "+ attachment web on lab: ports 8080:80/tcp; labels app=web (its network is replaced)".into(),
            "+ attachment client on lab (its network is replaced)".into(),
            "+ rule lab: lab ingress allows client → app=web port 80/tcp".into(),
        ]
    );
}

#[test]
fn destroy_removes_only_what_the_topology_created_in_reverse_order() {
    let t = topo(LAB);
    let mut have = applied(&t, true);
    // Made outside the topology: a sandbox of its own on another network, and a rule.
    let other = topo(
        "name: other\nnetworks:\n  side: {subnet: 10.170.9.0/24}\nsandboxes:\n  stray:\n    networks: [side]\npolicies:\n  - {network: side, from: stray, to: stray}\n",
    );
    let o = applied(&other, false);
    have.networks.extend(o.networks);
    have.sandboxes.extend(o.sandboxes);
    have.attachments.extend(o.attachments);
    have.rules.extend(o.rules);
    assert_eq!(
        lines(&Topology::empty("lab"), &have),
        [
            "- rule lab: lab ingress allows client → app=web port 80/tcp",
            "- service web: 10.179.0.10:80/tcp → web:80",
            "- attachment web on lab: ports 8080:80/tcp; labels app=web; ips 10.170.0.2",
            "- attachment client on lab: ips 10.170.0.3",
            "- sandbox client",
            "- sandbox web",
            "- network lab: bridge 10.170.0.0/24",
        ]
    );
    // Destroyed: nothing left to do.
    let mut after = have.clone();
    after.owned.clear();
    assert!(
        plan(&Topology::empty("lab"), &after)
            .unwrap()
            .steps
            .is_empty()
    );
}

#[test]
fn objects_of_others_are_used_as_they_are_or_refused() {
    let t = topo(LAB);
    // All of it exists, made by hand: used, nothing changed, noted.
    let p = plan(&t, &applied(&t, false)).unwrap();
    assert!(p.steps.is_empty());
    assert_eq!(p.notes.len(), 7, "{:?}", p.notes);
    assert!(p.notes[0].starts_with("network lab exists and is used as it is"));
    // ...but never changed: a different one is a conflict.
    let changed = topo(&LAB.replace("[\"8080:80\"]", "[\"9090:80\"]"));
    let e = plan(&changed, &applied(&t, false)).unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e}");
    assert!(
        e.to_string()
            .contains("attachment \"lab/web\" exists but was not created by topology \"lab\""),
        "{e}"
    );
    let e = plan(
        &topo(&LAB.replace("ingress: deny", "ingress: allow")),
        &applied(&t, false),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("ingress default allow in the file, deny here"),
        "{e}"
    );
    // An owned network with a sandbox attached by hand is not removed under it.
    let mut have = applied(&t, true);
    have.owned
        .remove(&(Kind::Attachment, "lab/client".to_string()));
    let e = plan(&Topology::empty("lab"), &have).unwrap_err();
    assert!(
        e.to_string()
            .contains("sandbox \"client\" was attached to it outside the topology"),
        "{e}"
    );
}

#[test]
fn inverses_pair_up() {
    let steps = plan(&topo(LAB), &Current::default()).unwrap().steps;
    for s in &steps {
        let back = s.inverse().inverse();
        assert_eq!(back.view().kind, s.view().kind);
        assert_eq!(back.view().op, s.view().op);
        assert_eq!(back.ownership(), s.ownership());
        if let Some((_, _, creates)) = s.inverse().ownership() {
            assert!(!creates, "{s}");
        }
    }
    let d = Step::SetDefault {
        network: "n".into(),
        dir: Direction::Ingress,
        from: Default::Allow,
        to: Default::Deny,
    };
    assert_eq!(d.inverse().inverse(), d);
}

#[test]
fn what_was_added_by_hand_to_owned_objects_blocks_their_removal() {
    let t = topo(
        "name: t\nnetworks:\n  n:\n    subnet: 10.170.0.0/24\nsandboxes:\n  s:\n    networks: [n]\n",
    );
    let mut c = applied(&t, true);
    // The topology's sandbox, attached by hand to another network.
    c.attachments.push(AttDecl {
        network: "elsewhere".into(),
        ..c.attachments[0].clone()
    });
    let e = plan(&Topology::empty("t"), &c).unwrap_err().to_string();
    assert!(
        e.contains("attached to network \"elsewhere\" outside the topology"),
        "{e}"
    );
    // A rule added by hand to the topology's network.
    let mut c = applied(&t, true);
    let hand: Topology = topo(
        "name: h\nnetworks:\n  n:\n    subnet: 10.170.0.0/24\npolicies:\n  - network: n\n    from: 10.0.0.0/8\n    to: s\n",
    );
    c.rules = hand.rules.clone();
    let e = plan(&Topology::empty("t"), &c).unwrap_err().to_string();
    assert!(
        e.contains("policy rule on it was added outside the topology"),
        "{e}"
    );
}
