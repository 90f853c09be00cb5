use super::*;

fn labels(pairs: &[(&str, &str)]) -> Selector {
    Selector::Labels(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn cidr(net: &str, except: &[&str]) -> Selector {
    Selector::Cidr {
        net: net.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

fn rule(
    action: Action,
    dir: Direction,
    from: Selector,
    to: Selector,
    port: Option<PortRange>,
    origin: &str,
) -> RuleSpec {
    RuleSpec {
        action,
        dir,
        from,
        to,
        port,
        origin: Some(origin.into()),
    }
}

fn pr(proto: Proto, lo: u16, hi: u16) -> Option<PortRange> {
    Some(PortRange::new(proto, lo, hi).unwrap())
}

/// Parses input that must hold exactly one policy, with --network n1.
fn one(text: &str) -> PolicyDoc {
    let mut docs = parse_documents(text, Some("n1")).unwrap();
    assert_eq!(docs.len(), 1, "{docs:?}");
    for r in &docs[0].rules {
        r.validate().unwrap();
    }
    docs.remove(0)
}

/// The rendered error for input that must fail.
fn fail(text: &str, network: Option<&str>) -> String {
    let e = parse_documents(text, network).unwrap_err();
    assert!(matches!(e, Error::Invalid { field: F, .. }), "{e:?}");
    e.to_string()
}

/// A policy whose spec is `spec` (YAML flow or block text indented by 2).
fn with_spec(spec: &str) -> String {
    format!("kind: NetworkPolicy\nmetadata: {{name: web}}\nspec:\n{spec}\n")
}

const WEB: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: n1
  labels: {team: a}
  annotations: {note: x}
  resourceVersion: '12'
  uid: 0f0e
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from:
        - podSelector: {matchLabels: {role: client}}
        - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
      ports:
        - {protocol: TCP, port: 80, endPort: 90}
  egress:
    - to: [{podSelector: {matchLabels: {app: db}}}]
      ports: [{protocol: udp, port: 53}]
status: {}
";

#[test]
fn yaml_single_document() {
    let d = parse_documents(WEB, None).unwrap().remove(0);
    assert_eq!((d.name.as_str(), d.network.as_str()), ("n1/web", "n1"));
    let web = labels(&[("app", "web")]);
    let (i, e, o) = (Direction::Ingress, Direction::Egress, "n1/web");
    let want = vec![
        rule(Action::Isolate, i, web.clone(), web.clone(), None, o),
        rule(Action::Isolate, e, web.clone(), web.clone(), None, o),
        rule(
            Action::Allow,
            i,
            labels(&[("role", "client")]),
            web.clone(),
            pr(Proto::Tcp, 80, 90),
            o,
        ),
        rule(
            Action::Allow,
            i,
            cidr("10.0.0.0/8", &["10.1.0.0/16"]),
            web.clone(),
            pr(Proto::Tcp, 80, 90),
            o,
        ),
        rule(
            Action::Allow,
            e,
            web.clone(),
            labels(&[("app", "db")]),
            pr(Proto::Udp, 53, 53),
            o,
        ),
    ];
    assert_eq!(d.rules, want);
}

#[test]
fn yaml_multi_document_stream() {
    let text = format!(
        "---\n{WEB}---\n# nothing here\n---\n{}",
        with_spec("  podSelector: {}").replace("name: web", "name: api, namespace: n1")
    );
    let docs = parse_documents(&text, None).unwrap();
    let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["n1/web", "n1/api"]);
    assert_eq!(docs[1].rules.len(), 1, "{:?}", docs[1].rules);
    // An error names the document by its place in the stream and its name.
    let bad = format!("{WEB}---\n{}", with_spec("  podSelector: {x: 1}"));
    let e = fail(&bad, Some("n1"));
    assert!(
        e.contains("document[1] (web): spec.podSelector.x") && e.contains("unknown field"),
        "{e}"
    );
}

#[test]
fn json_array() {
    let text = r#"[
      {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
       "metadata": {"name": "a"}, "spec": {"podSelector": {}}},
      {"metadata": {"name": "b"},
       "spec": {"podSelector": {"matchLabels": {"app": "b"}},
                "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.7/24"}}]}]}}
    ]"#;
    let docs = parse_documents(text, Some("n2")).unwrap();
    assert_eq!(docs.len(), 2);
    assert!(docs.iter().all(|d| d.network == "n2"));
    let b = &docs[1];
    assert_eq!(b.name, "b");
    let last = b.rules.last().unwrap();
    assert_eq!(
        (last.dir, &last.to),
        (Direction::Egress, &cidr("192.0.2.0/24", &[]))
    );
    assert_eq!(b.rules.len(), 3, "isolate ingress + egress, one allow");
    // A JSON syntax error is reported as JSON, and a bad element by its index.
    assert!(fail("[{\"metadata\": {]", None).contains("not valid JSON"));
    let e = fail(
        r#"[{"metadata": {"name": "a"}, "spec": {}}, 7]"#,
        Some("n1"),
    );
    assert!(
        e.contains("\"[1]: document\"") && e.contains("expected an object"),
        "{e}"
    );
}

#[test]
fn list_with_items() {
    for kind in ["List", "NetworkPolicyList"] {
        let text = format!(
            "apiVersion: v1\nkind: {kind}\nmetadata: {{resourceVersion: '1'}}\nitems:\n\
             - metadata: {{name: a, namespace: n1}}\n  spec: {{}}\n\
             - metadata: {{name: b, namespace: n2}}\n  spec: {{}}\n"
        );
        let docs = parse_documents(&text, None).unwrap();
        let got: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| (d.name.as_str(), d.network.as_str()))
            .collect();
        assert_eq!(got, [("n1/a", "n1"), ("n2/b", "n2")]);
    }
    let e = fail("kind: List\nitems: []\nextra: 1\n", None);
    assert!(
        e.contains("\"extra\"") && e.contains("unknown field"),
        "{e}"
    );
    let e = fail(
        "kind: List\nitems:\n- metadata: {name: a}\n  spec: {bogus: 1}\n",
        Some("n"),
    );
    assert!(e.contains("items[0] (a): spec.bogus"), "{e}");
    assert!(
        parse_documents("kind: List\nitems: []\n", None)
            .unwrap()
            .is_empty()
    );
    assert!(fail("", None).contains("no document"));
    assert!(fail("---\n# only a comment\n", None).contains("no document"));
}

#[test]
fn default_policy_types() {
    let isolated = |spec: &str| -> Vec<Direction> {
        one(&with_spec(spec))
            .rules
            .iter()
            .filter(|r| r.action == Action::Isolate)
            .map(|r| r.dir)
            .collect()
    };
    use Direction::{Egress, Ingress};
    assert_eq!(isolated("  podSelector: {}"), [Ingress]);
    assert_eq!(isolated("  egress: [{}]"), [Ingress, Egress]);
    // As in Kubernetes: only a non-empty egress list adds Egress by default.
    assert_eq!(isolated("  egress: []"), [Ingress]);
    assert_eq!(isolated("  policyTypes: [Egress]"), [Egress]);
    assert_eq!(
        isolated("  policyTypes: [Egress, Ingress, Egress]"),
        [Egress, Ingress]
    );
    let e = fail(
        &with_spec("  policyTypes: [Egress]\n  ingress: [{}]"),
        Some("n1"),
    );
    assert!(
        e.contains("\"spec.ingress\"") && e.contains("leaves out Ingress"),
        "{e}"
    );
    let e = fail(&with_spec("  policyTypes: [ingress]"), Some("n1"));
    assert!(e.contains("spec.policyTypes[0]"), "{e}");
}

#[test]
fn empty_from_is_everywhere() {
    for spec in [
        "  ingress: [{}]",
        "  ingress: [{from: []}]",
        "  ingress:\n  - from:",
    ] {
        let d = one(&with_spec(spec));
        let allows: Vec<&RuleSpec> = d
            .rules
            .iter()
            .filter(|r| r.action == Action::Allow)
            .collect();
        assert_eq!(allows.len(), 2, "{spec}: {allows:?}");
        assert_eq!(allows[0].from, cidr("0.0.0.0/0", &[]));
        assert_eq!(allows[1].from, cidr("::/0", &[]));
        assert!(
            allows
                .iter()
                .all(|r| r.port.is_none() && r.to == labels(&[]))
        );
    }
    // The same for egress `to`, on the other side.
    let d = one(&with_spec("  egress: [{ports: [{port: 443}]}]"));
    let allows: Vec<&RuleSpec> = d
        .rules
        .iter()
        .filter(|r| r.action == Action::Allow)
        .collect();
    assert_eq!(allows.len(), 2);
    assert_eq!(allows[1].to, cidr("::/0", &[]));
    assert_eq!(allows[1].port, pr(Proto::Tcp, 443, 443));
}

#[test]
fn port_ranges_and_protocol_only_ports() {
    let d = one(&with_spec(
        "  ingress:\n  - from: [{podSelector: {}}, {ipBlock: {cidr: 198.51.100.0/24}}]\n    \
         ports: [{port: 8000, endPort: 8100}, {protocol: udp}, {protocol: SCTP, port: 9}, {}]",
    ));
    let allows: Vec<&RuleSpec> = d
        .rules
        .iter()
        .filter(|r| r.action == Action::Allow)
        .collect();
    assert_eq!(allows.len(), 8, "two peers x four ports");
    let ports: Vec<Option<PortRange>> = allows[..4].iter().map(|r| r.port).collect();
    let want = [
        pr(Proto::Tcp, 8000, 8100),
        pr(Proto::Udp, 1, 65535),
        pr(Proto::Sctp, 9, 9),
        pr(Proto::Tcp, 1, 65535),
    ];
    assert_eq!(ports, want);
    let bad = |ports: &str| {
        fail(
            &with_spec(&format!("  ingress: [{{ports: [{ports}]}}]")),
            Some("n1"),
        )
    };
    let e = bad("{port: 90, endPort: 80}");
    assert!(
        e.contains("spec.ingress[0].ports[0].endPort") && e.contains("below port 90"),
        "{e}"
    );
    let e = bad("{endPort: 80}");
    assert!(
        e.contains("ports[0].endPort") && e.contains("needs port"),
        "{e}"
    );
    for p in ["{port: 0}", "{port: 70000}", "{port: 8.5}", "{port: -1}"] {
        assert!(
            bad(p).contains("ports[0].port\": ") && bad(p).contains("1-65535"),
            "{p}"
        );
    }
    let e = bad("{}, {protocol: icmp}");
    assert!(
        e.contains("ports[1].protocol") && e.contains("tcp, udp or sctp"),
        "{e}"
    );
}

#[test]
fn ip_block_except() {
    let d = one(&with_spec(
        "  egress:\n  - to:\n    - ipBlock: {cidr: 10.9.8.7/8, except: [10.1.0.0/16, 10.2.0.0/16]}",
    ));
    let allow = d.rules.last().unwrap();
    assert_eq!(
        allow.to,
        cidr("10.0.0.0/8", &["10.1.0.0/16", "10.2.0.0/16"])
    );
    let bad = |b: &str| {
        fail(
            &with_spec(&format!("  egress: [{{to: [{{ipBlock: {b}}}]}}]")),
            Some("n1"),
        )
    };
    let e = bad("{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 11.0.0.0/16]}");
    assert!(
        e.contains("spec.egress[0].to[0].ipBlock.except[1]") && e.contains("not inside"),
        "{e}"
    );
    let e = bad("{cidr: 10.0.0.0/8, except: [10.1.0.1]}");
    assert!(
        e.contains("except[0]") && e.contains("expected a CIDR"),
        "{e}"
    );
    let e = bad("{cidr: nowhere}");
    assert!(
        e.contains("ipBlock.cidr") && e.contains("expected a CIDR"),
        "{e}"
    );
    let e = bad("{except: [10.0.0.0/8]}");
    assert!(e.contains("ipBlock.cidr\": required"), "{e}");
}

#[test]
fn match_labels_are_anded() {
    let d = one(&with_spec(
        "  podSelector: {matchLabels: {app: web, tier: front}}",
    ));
    let own = &d.rules[0].to;
    assert_eq!(own, &labels(&[("app", "web"), ("tier", "front")]));
    let mut l = Labels::new();
    l.insert("app".into(), "web".into());
    assert!(!own.matches("x", &l), "one label of two is not enough");
    l.insert("tier".into(), "front".into());
    assert!(own.matches("x", &l));
    // Empty matchExpressions says nothing and is accepted; label values are checked.
    one(&with_spec("  podSelector: {matchExpressions: []}"));
    let e = fail(
        &with_spec("  podSelector: {matchLabels: {app: 'a b'}}"),
        Some("n1"),
    );
    assert!(
        e.contains("spec.podSelector.matchLabels.app") && e.contains("1-63"),
        "{e}"
    );
    let e = fail(
        &with_spec("  podSelector: {matchLabels: {v: 1}}"),
        Some("n1"),
    );
    assert!(e.contains("matchLabels.v") && e.contains("quote"), "{e}");
}

#[test]
fn unsupported_fields_are_named() {
    let cases = [
        (
            "  ingress:\n  - from:\n    - podSelector: {}\n    - namespaceSelector: {}",
            "spec.ingress[0].from[1].namespaceSelector",
            "knit has no namespaces",
        ),
        (
            "  egress: [{to: [{podSelector: {}, namespaceSelector: {matchLabels: {a: b}}}]}]",
            "spec.egress[0].to[0].namespaceSelector",
            "not supported",
        ),
        (
            "  podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}]}",
            "spec.podSelector.matchExpressions",
            "matchLabels only",
        ),
        (
            "  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Exists}]}}]}]",
            "spec.ingress[0].from[0].podSelector.matchExpressions",
            "not supported",
        ),
        (
            "  ingress: [{ports: [{port: 80}, {port: http}]}]",
            "spec.ingress[0].ports[1].port",
            "named ports are not supported",
        ),
        (
            "  ingress: [{ports: [{port: '80'}]}]",
            "spec.ingress[0].ports[0].port",
            "named ports",
        ),
        (
            "  ingress: [{from: [{podSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}]}]",
            "spec.ingress[0].from[0]",
            "podSelector and ipBlock in one peer",
        ),
        (
            "  ingress: [{from: [{}]}]",
            "spec.ingress[0].from[0]",
            "expected podSelector or ipBlock",
        ),
        (
            "  ingress: [{to: []}]",
            "spec.ingress[0].to",
            "unknown field (expected from, ports)",
        ),
        (
            "  podSelector: {}\n  colour: red",
            "spec.colour",
            "unknown field",
        ),
        (
            "  egress: [{to: [{ipBlock: {cidr: '::/0', exclude: []}}]}]",
            "spec.egress[0].to[0].ipBlock.exclude",
            "unknown field",
        ),
        (
            "  ingress: [{ports: [{port: 1, name: x}]}]",
            "spec.ingress[0].ports[0].name",
            "unknown field",
        ),
        ("  ingress: {from: []}", "spec.ingress", "expected a list"),
    ];
    for (spec, path, reason) in cases {
        let e = fail(&with_spec(spec), Some("n1"));
        assert!(
            e.contains(&format!("\"{path}\": ")) && e.contains(reason),
            "{spec}: {e}"
        );
    }
    let top = [
        (
            "metadata: {name: a}\nspec: {}\nextra: 1\n",
            "extra",
            "unknown field",
        ),
        (
            "metadata: {name: a, generateName: b}\nspec: {}\n",
            "metadata.generateName",
            "unknown",
        ),
        ("metadata: {name: a}\n", "spec", "required"),
        ("spec: {}\n", "metadata", "required"),
        (
            "metadata: {namespace: n1}\nspec: {}\n",
            "metadata.name",
            "required",
        ),
        (
            "metadata: {name: 'a b'}\nspec: {}\n",
            "metadata.name",
            "must match",
        ),
        (
            "kind: Service\nmetadata: {name: a}\nspec: {}\n",
            "kind",
            "expected NetworkPolicy",
        ),
        (
            "apiVersion: extensions/v1beta1\nmetadata: {name: a}\nspec: {}\n",
            "apiVersion",
            "networking.k8s.io/v1",
        ),
        (
            "metadata: {name: a}\nspec: {}\nspec: {}\n",
            "document[0]",
            "duplicate entry with key \"spec\"",
        ),
        (
            "{\"metadata\": {\"name\": \"a\", \"name\": \"b\"}, \"spec\": {}}",
            "input",
            "duplicate entry with key \"name\" at line 1",
        ),
    ];
    for (text, path, reason) in top {
        let e = fail(text, Some("n1"));
        assert!(
            e.contains(&format!("\"{path}\": ")) && e.contains(reason),
            "{text}: {e}"
        );
    }
}

#[test]
fn network_from_namespace_or_flag() {
    let text = "metadata: {name: web, namespace: n1}\nspec: {}\n";
    let d = parse_documents(text, None).unwrap().remove(0);
    assert_eq!((d.name.as_str(), d.network.as_str()), ("n1/web", "n1"));
    let d = parse_documents(text, Some("n1")).unwrap().remove(0);
    assert_eq!((d.name.as_str(), d.network.as_str()), ("n1/web", "n1"));
    let e = fail(text, Some("n2"));
    assert!(
        e.contains("\"metadata.namespace\": ") && e.contains("--network says \"n2\""),
        "{e}"
    );
    let bare = "metadata: {name: web}\nspec: {}\n";
    let d = parse_documents(bare, Some("n2")).unwrap().remove(0);
    assert_eq!((d.name.as_str(), d.network.as_str()), ("web", "n2"));
    assert!(d.rules.iter().all(|r| r.origin.as_deref() == Some("web")));
    let e = fail(bare, None);
    assert!(
        e.contains("\"metadata.namespace\": absent") && e.contains("--network"),
        "{e}"
    );
    let e = parse_documents(bare, Some("bad name"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("invalid --network"), "{e}");
}

#[test]
fn duplicate_names() {
    let text = "[{\"metadata\": {\"name\": \"a\", \"namespace\": \"n1\"}, \"spec\": {}},\
                 {\"metadata\": {\"name\": \"a\", \"namespace\": \"n2\"}, \"spec\": {}},\
                 {\"metadata\": {\"name\": \"a\", \"namespace\": \"n1\"}, \"spec\": {}}]";
    let e = fail(text, None);
    assert!(
        e.contains("\"[2] (a): metadata.name\": ") && e.contains("also the name of [0]"),
        "{e}"
    );
    // Same name, other namespace: two documents.
    let two = text.rsplit_once(",{").unwrap().0.to_string() + "]";
    assert_eq!(parse_documents(&two, None).unwrap().len(), 2);
}

#[test]
fn source_prefix_renders_as_the_cli_shows_it() {
    let e = parse_documents(
        &with_spec("  ingress: [{from: [{podSelector: {}}, {namespaceSelector: {}}]}]"),
        Some("n1"),
    )
    .unwrap_err();
    let e = with_source(e, "policies.yaml").to_string();
    assert!(
        e.starts_with(
            "invalid import \"policies.yaml: spec.ingress[0].from[1].namespaceSelector\": \
             not supported (knit has no namespaces"
        ),
        "{e}"
    );
}
