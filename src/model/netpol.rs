//! `knit policy import`: Kubernetes NetworkPolicy documents (YAML or JSON) read into knit
//! rules. Strict: every field is understood or is an error naming its path
//! (`spec.ingress[0].from[1].namespaceSelector`); only metadata bookkeeping and `status`
//! are accepted and ignored.

use crate::error::{Error, Result};
use crate::model::Proto;
use crate::model::policy::{Action, Direction, Labels, PortRange, RuleSpec, Selector, label};
use crate::model::validate_name;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The field every import error is filed under; its value is the path in the input.
const F: &str = "import";

const API_VERSION: &str = "networking.k8s.io/v1";
const NO_NAMESPACES: &str = "not supported (knit has no namespaces; a peer podSelector \
     selects sandboxes of the policy's own network)";
const NO_EXPRESSIONS: &str = "not supported (knit selects by matchLabels only)";
const METADATA_IGNORED: &[&str] = &[
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
];

/// One imported document: its name (`namespace/name`, or `name`) and the knit network it
/// applies to, with the rules it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDoc {
    pub name: String,
    pub network: String,
    pub rules: Vec<RuleSpec>,
}

/// Reads NetworkPolicy objects from `text` (YAML or JSON): one object, a YAML stream of
/// documents (`---`), a JSON array of objects, or a `List`/`NetworkPolicyList` with
/// `items`. `network` (the CLI's `--network`) is the knit network of every document; a
/// document's `metadata.namespace`, if given, must then name the same network, and without
/// `network` it is required. Document names are unique. An empty list or array gives no
/// documents; input with no document at all is an error.
///
/// Errors are `Error::Invalid` with field `"import"` and the path as value, prefixed with
/// the document's place (`items[2] (n1/web): spec.ingress[0].ports[0].port`) when the input
/// holds several; see [`with_source`] to prefix the file name too.
pub fn parse_documents(text: &str, network: Option<&str>) -> Result<Vec<PolicyDoc>> {
    if let Some(n) = network {
        validate_name("--network", n)?;
    }
    let docs = read_documents(text)?;
    if docs.is_empty() {
        return Err(err(
            "input",
            "holds no document (expected NetworkPolicy YAML or JSON)",
        ));
    }
    let objects = expand(&docs)?;
    let mut out: Vec<PolicyDoc> = Vec::with_capacity(objects.len());
    let mut places: Vec<String> = Vec::with_capacity(objects.len());
    for (place, v) in objects {
        let name = v.pointer("/metadata/name").and_then(Value::as_str);
        let prefix = match (place.is_empty(), name) {
            (true, _) => String::new(),
            (false, Some(n)) => format!("{place} ({n}): "),
            (false, None) => format!("{place}: "),
        };
        let doc = policy(v, network).map_err(|e| prefixed(e, &prefix))?;
        if let Some(i) = out.iter().position(|d| d.name == doc.name) {
            let reason = format!("{:?} is also the name of {}", doc.name, places[i]);
            return Err(prefixed(err("metadata.name", reason), &prefix));
        }
        out.push(doc);
        places.push(place);
    }
    Ok(out)
}

/// Prefixes the path of an import error with where the text came from (`policies.yaml`),
/// for the CLI: `invalid import "policies.yaml: spec.ingress[0]...": ...`.
pub fn with_source(e: Error, source: &str) -> Error {
    prefixed(e, &format!("{source}: "))
}

fn err(path: &str, reason: impl ToString) -> Error {
    Error::invalid(F, path, reason)
}

/// Re-files an error of a model check (label, CIDR, port, name) under the input path.
fn at(path: &str, e: Error) -> Error {
    match e {
        Error::Invalid { value, reason, .. } => err(path, format!("{value:?}: {reason}")),
        other => other,
    }
}

fn prefixed(e: Error, prefix: &str) -> Error {
    match e {
        Error::Invalid {
            field: F,
            value,
            reason,
        } => Error::invalid(F, format!("{prefix}{value}"), reason),
        other => other,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The documents of the input, with their stream index (empty YAML documents skipped).
/// Both formats are read into `serde_yaml::Value` first, whose mappings refuse duplicate
/// keys (serde_json's `Value` would keep the last one silently and hide half a policy).
fn read_documents(text: &str) -> Result<Vec<(usize, Value)>> {
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        match serde_json::from_str::<serde_yaml::Value>(text) {
            Ok(v) => return Ok(vec![(0, to_json(v, "input")?)]),
            // YAML flow style also starts so; if it is not YAML either, JSON's word is clearer.
            Err(je) => {
                return read_yaml(text).map_err(|_| err("input", format!("not valid JSON: {je}")));
            }
        }
    }
    read_yaml(text)
}

fn read_yaml(text: &str) -> Result<Vec<(usize, Value)>> {
    let mut out = vec![];
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let place = format!("document[{i}]");
        let v = serde_yaml::Value::deserialize(d)
            .map_err(|e| err(&place, format!("not valid YAML: {e}")))?;
        if !v.is_null() {
            out.push((i, to_json(v, &place)?));
        }
    }
    Ok(out)
}

fn to_json(v: serde_yaml::Value, place: &str) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| err(place, format!("not a JSON-shaped document: {e}")))
}

/// The policy objects of the documents with their places: arrays and lists are opened.
fn expand(docs: &[(usize, Value)]) -> Result<Vec<(String, &Value)>> {
    let mut out = vec![];
    for (i, doc) in docs {
        let base = if docs.len() > 1 {
            format!("document[{i}]")
        } else {
            String::new()
        };
        match doc {
            Value::Array(items) => {
                out.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(j, v)| (format!("{base}[{j}]"), v)),
                );
            }
            Value::Object(m)
                if matches!(
                    m.get("kind").and_then(Value::as_str),
                    Some("List" | "NetworkPolicyList")
                ) =>
            {
                check_keys(
                    m,
                    &base,
                    &["apiVersion", "kind", "items"],
                    &["metadata"],
                    &[],
                )?;
                let items = list(m, "items", &base)?;
                let p = join(&base, "items");
                out.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(j, v)| (format!("{p}[{j}]"), v)),
                );
            }
            v => out.push((base, v)),
        }
    }
    Ok(out)
}

/// Checks that every key of `m` is one of `keys` or `ignored`; `unsupported` keys are
/// errors with their own reason, anything else an unknown field.
fn check_keys(
    m: &Map<String, Value>,
    path: &str,
    keys: &[&str],
    ignored: &[&str],
    unsupported: &[(&str, &str)],
) -> Result<()> {
    for k in m.keys() {
        if keys.contains(&k.as_str()) || ignored.contains(&k.as_str()) {
            continue;
        }
        let reason = match unsupported.iter().find(|(u, _)| u == k) {
            Some((_, why)) => (*why).to_string(),
            None => format!("unknown field (expected {})", keys.join(", ")),
        };
        return Err(err(&join(path, k), reason));
    }
    Ok(())
}

/// A field's value; an explicit null counts as absent (as Kubernetes reads it).
fn get<'v>(m: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn obj<'v>(v: &'v Value, path: &str) -> Result<&'v Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected an object, found {}", kind_of(v))))
}

fn string<'v>(v: &'v Value, path: &str) -> Result<&'v str> {
    v.as_str()
        .ok_or_else(|| err(path, format!("expected a string, found {}", kind_of(v))))
}

/// A list field; absent or null is the empty list.
fn list<'v>(m: &'v Map<String, Value>, key: &str, path: &str) -> Result<&'v [Value]> {
    match get(m, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(err(
            &join(path, key),
            format!("expected a list, found {}", kind_of(v)),
        )),
    }
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn policy(v: &Value, network: Option<&str>) -> Result<PolicyDoc> {
    let m = obj(v, "document")?;
    check_keys(
        m,
        "",
        &["apiVersion", "kind", "metadata", "spec"],
        &["status"],
        &[],
    )?;
    for (key, want) in [("apiVersion", API_VERSION), ("kind", "NetworkPolicy")] {
        if let Some(v) = get(m, key)
            && string(v, key)? != want
        {
            return Err(err(key, format!("{v}: expected {want}")));
        }
    }

    let meta = obj(
        get(m, "metadata").ok_or_else(|| err("metadata", "required"))?,
        "metadata",
    )?;
    check_keys(
        meta,
        "metadata",
        &["name", "namespace"],
        METADATA_IGNORED,
        &[],
    )?;
    let name = get(meta, "name").ok_or_else(|| err("metadata.name", "required"))?;
    let name = string(name, "metadata.name")?;
    validate_name("metadata.name", name).map_err(|e| at("metadata.name", e))?;
    let namespace = match get(meta, "namespace") {
        Some(ns) => {
            let ns = string(ns, "metadata.namespace")?;
            validate_name("metadata.namespace", ns).map_err(|e| at("metadata.namespace", e))?;
            Some(ns)
        }
        None => None,
    };
    let network = match (network, namespace) {
        (Some(n), Some(ns)) if n != ns => {
            let why = format!("{ns:?} is the knit network, but --network says {n:?}");
            return Err(err("metadata.namespace", why));
        }
        (Some(n), _) => n,
        (None, Some(ns)) => ns,
        (None, None) => {
            let why = "absent: name the knit network with --network or metadata.namespace";
            return Err(err("metadata.namespace", why));
        }
    };
    let doc_name = match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };

    let spec = obj(
        get(m, "spec").ok_or_else(|| err("spec", "required"))?,
        "spec",
    )?;
    check_keys(
        spec,
        "spec",
        &["podSelector", "policyTypes", "ingress", "egress"],
        &[],
        &[],
    )?;
    let own = label_selector(get(spec, "podSelector"), "spec.podSelector")?;
    let ingress = list(spec, "ingress", "spec")?;
    let egress = list(spec, "egress", "spec")?;
    let mut types = vec![];
    for (i, t) in list(spec, "policyTypes", "spec")?.iter().enumerate() {
        let p = format!("spec.policyTypes[{i}]");
        let dir = match string(t, &p)? {
            "Ingress" => Direction::Ingress,
            "Egress" => Direction::Egress,
            _ => return Err(err(&p, format!("{t}: expected Ingress or Egress"))),
        };
        if !types.contains(&dir) {
            types.push(dir);
        }
    }
    // Kubernetes' default: Ingress, and Egress when there are egress rules (a non-empty
    // spec.egress; `egress: []` alone does not isolate egress there either).
    if types.is_empty() {
        types.push(Direction::Ingress);
        if !egress.is_empty() {
            types.push(Direction::Egress);
        }
    }

    let origin = Some(doc_name.clone());
    let mut rules: Vec<RuleSpec> = types
        .iter()
        .map(|&dir| RuleSpec {
            action: Action::Isolate,
            dir,
            from: own.clone(),
            to: own.clone(),
            port: None,
            origin: origin.clone(),
        })
        .collect();
    let sections = [
        (Direction::Ingress, "ingress", "from", ingress),
        (Direction::Egress, "egress", "to", egress),
    ];
    for (dir, key, peer_key, items) in sections {
        if !items.is_empty() && !types.contains(&dir) {
            let why = format!(
                "spec.policyTypes leaves out {}, so these rules would do nothing",
                if dir == Direction::Ingress {
                    "Ingress"
                } else {
                    "Egress"
                }
            );
            return Err(err(&format!("spec.{key}"), why));
        }
        for (i, item) in items.iter().enumerate() {
            let p = format!("spec.{key}[{i}]");
            let im = obj(item, &p)?;
            check_keys(im, &p, &[peer_key, "ports"], &[], &[])?;
            let mut peers = vec![];
            for (j, v) in list(im, peer_key, &p)?.iter().enumerate() {
                peers.push(peer(v, &format!("{p}.{peer_key}[{j}]"))?);
            }
            if peers.is_empty() {
                peers = everywhere();
            }
            let mut ports = vec![];
            for (j, v) in list(im, "ports", &p)?.iter().enumerate() {
                ports.push(Some(port(v, &format!("{p}.ports[{j}]"))?));
            }
            if ports.is_empty() {
                ports.push(None);
            }
            for other in &peers {
                for &port in &ports {
                    let (from, to) = match dir {
                        Direction::Ingress => (other.clone(), own.clone()),
                        Direction::Egress => (own.clone(), other.clone()),
                    };
                    rules.push(RuleSpec {
                        action: Action::Allow,
                        dir,
                        from,
                        to,
                        port,
                        origin: origin.clone(),
                    });
                }
            }
        }
    }
    Ok(PolicyDoc {
        name: doc_name,
        network: network.to_string(),
        rules,
    })
}

/// An absent or empty peer list: every address of both families.
fn everywhere() -> Vec<Selector> {
    ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|s| s.parse::<IpNet>().ok())
        .map(|net| Selector::Cidr {
            net,
            except: vec![],
        })
        .collect()
}

/// A LabelSelector (`{matchLabels: {...}}`); absent or `{}` selects every sandbox.
fn label_selector(v: Option<&Value>, path: &str) -> Result<Selector> {
    let mut labels = Labels::new();
    let Some(v) = v else {
        return Ok(Selector::Labels(labels));
    };
    let m = obj(v, path)?;
    // An empty matchExpressions list says nothing, so it is accepted.
    let no_expressions =
        get(m, "matchExpressions").is_none_or(|x| x.as_array().is_some_and(Vec::is_empty));
    let unsupported: &[(&str, &str)] = if no_expressions {
        &[]
    } else {
        &[("matchExpressions", NO_EXPRESSIONS)]
    };
    let ignored: &[&str] = if no_expressions {
        &["matchExpressions"]
    } else {
        &[]
    };
    check_keys(m, path, &["matchLabels"], ignored, unsupported)?;
    if let Some(ml) = get(m, "matchLabels") {
        let mp = join(path, "matchLabels");
        for (k, val) in obj(ml, &mp)? {
            let kp = join(&mp, k);
            let val = val.as_str().ok_or_else(|| {
                err(
                    &kp,
                    format!("expected a string, found {} (quote it)", kind_of(val)),
                )
            })?;
            let (k, val) = label("podSelector", k, val).map_err(|e| at(&kp, e))?;
            labels.insert(k, val);
        }
    }
    Ok(Selector::Labels(labels))
}

/// A `from`/`to` peer: a podSelector (sandboxes of the network) or an ipBlock.
fn peer(v: &Value, path: &str) -> Result<Selector> {
    let m = obj(v, path)?;
    let unsupported = [("namespaceSelector", NO_NAMESPACES)];
    check_keys(m, path, &["podSelector", "ipBlock"], &[], &unsupported)?;
    match (get(m, "podSelector"), get(m, "ipBlock")) {
        (Some(s), None) => label_selector(Some(s), &join(path, "podSelector")),
        (None, Some(b)) => ip_block(b, &join(path, "ipBlock")),
        (Some(_), Some(_)) => Err(err(
            path,
            "podSelector and ipBlock in one peer (Kubernetes forbids it too; give two peers)",
        )),
        (None, None) => Err(err(path, "expected podSelector or ipBlock")),
    }
}

fn ip_block(v: &Value, path: &str) -> Result<Selector> {
    let m = obj(v, path)?;
    check_keys(m, path, &["cidr", "except"], &[], &[])?;
    let cp = join(path, "cidr");
    let c = string(get(m, "cidr").ok_or_else(|| err(&cp, "required"))?, &cp)?;
    let net = c
        .trim()
        .parse::<IpNet>()
        .map_err(|_| err(&cp, format!("{c:?}: expected a CIDR like 10.0.0.0/8")))?
        .trunc();
    let mut except = vec![];
    for (i, e) in list(m, "except", path)?.iter().enumerate() {
        let ep = format!("{path}.except[{i}]");
        let e = string(e, &ep)?;
        if e.trim().parse::<IpNet>().is_err() {
            return Err(err(&ep, format!("{e:?}: expected a CIDR like 10.1.0.0/16")));
        }
        Selector::cidr("ipBlock.cidr", net, &[e.to_string()]).map_err(|x| at(&ep, x))?;
        except.push(e.to_string());
    }
    Selector::cidr("ipBlock.cidr", net, &except).map_err(|e| at(path, e))
}

/// A NetworkPolicyPort: protocol (default TCP), port, endPort; no port is every port.
fn port(v: &Value, path: &str) -> Result<PortRange> {
    let m = obj(v, path)?;
    check_keys(m, path, &["protocol", "port", "endPort"], &[], &[])?;
    let proto = match get(m, "protocol") {
        None => Proto::Tcp,
        Some(p) => {
            let pp = join(path, "protocol");
            Proto::parse("protocol", string(p, &pp)?).map_err(|e| at(&pp, e))?
        }
    };
    let pp = join(path, "port");
    let ep = join(path, "endPort");
    let lo = match get(m, "port") {
        None => None,
        Some(Value::String(s)) => {
            let why = format!("{s:?}: named ports are not supported (give the number)");
            return Err(err(&pp, why));
        }
        Some(n) => Some(port_number(n, &pp)?),
    };
    let hi = get(m, "endPort").map(|n| port_number(n, &ep)).transpose()?;
    match (lo, hi) {
        (None, None) => PortRange::new(proto, 1, 65535),
        (Some(lo), None) => PortRange::new(proto, lo, lo),
        (Some(lo), Some(hi)) => {
            PortRange::new(proto, lo, hi).map_err(|_| err(&ep, format!("{hi} is below port {lo}")))
        }
        (None, Some(_)) => Err(err(&ep, "needs port, the start of the range")),
    }
}

fn port_number(v: &Value, path: &str) -> Result<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or_else(|| {
            err(
                path,
                format!("{}: expected a port number 1-65535", kind_of(v)),
            )
        })
}

#[cfg(test)]
#[path = "netpol_tests.rs"]
mod tests;
