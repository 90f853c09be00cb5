//! Policy input, validated: selectors (`SANDBOX`, `k1=v1,k2=v2` labels, CIDRs with
//! exceptions), port ranges, directions, and attachment labels.

use crate::error::{Error, Result};
use crate::model::{Proto, parse_port, validate_name};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Labels of one attachment (`--label k=v`).
pub type Labels = BTreeMap<String, String>;

fn validate_label_part(field: &'static str, whole: &str, part: &str) -> Result<()> {
    let ok = !part.is_empty()
        && part.len() <= 63
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            whole,
            "label keys and values are 1-63 characters of [A-Za-z0-9._/-]",
        ))
    }
}

/// Parses one `key=value` label.
pub fn parse_label(field: &'static str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid(field, s, "expected key=value"))?;
    label(field, k, v)
}

/// A label given as key and value (CNI's `{"key", "value"}` form), checked as
/// `parse_label` checks `key=value`.
pub fn label(field: &'static str, key: &str, value: &str) -> Result<(String, String)> {
    let whole = format!("{key}={value}");
    validate_label_part(field, &whole, key)?;
    validate_label_part(field, &whole, value)?;
    Ok((key.to_string(), value.to_string()))
}

pub fn parse_labels(field: &'static str, items: &[String]) -> Result<Labels> {
    let mut out = Labels::new();
    for s in items {
        let (k, v) = parse_label(field, s)?;
        out.insert(k, v);
    }
    Ok(out)
}

/// Which endpoints a rule talks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Selector {
    /// One sandbox, by name (or `cni:` key).
    Sandbox(String),
    /// Attachments carrying every one of these labels (`k1=v1,k2=v2` is AND).
    Labels(Labels),
    /// Addresses in `net` but in none of `except` (NetworkPolicy's ipBlock).
    Cidr { net: IpNet, except: Vec<IpNet> },
}

impl Selector {
    /// `cidr_ok`: whether this side may name addresses (the side away from the network's
    /// own sandboxes). `except` applies to a CIDR only.
    pub fn parse(field: &'static str, s: &str, cidr_ok: bool, except: &[String]) -> Result<Self> {
        let s = s.trim();
        if let Some(net) = parse_net(s) {
            if !cidr_ok {
                return Err(Error::invalid(
                    field,
                    s,
                    "this side names a sandbox or labels (key=value) of the network, not an address",
                ));
            }
            return Self::cidr(field, net, except);
        }
        if !except.is_empty() {
            return Err(Error::invalid(
                "--except",
                except.join(","),
                format!("exceptions apply to a CIDR, and {field} {s:?} is not one"),
            ));
        }
        if s.contains('=') {
            let mut labels = Labels::new();
            for part in s.split(',') {
                let (k, v) = parse_label(field, part.trim())?;
                if labels.insert(k.clone(), v).is_some() {
                    return Err(Error::invalid(field, s, format!("label key {k:?} twice")));
                }
            }
            return Ok(Selector::Labels(labels));
        }
        if !s.starts_with("cni:") {
            validate_name(field, s).map_err(|_| {
                Error::invalid(
                    field,
                    s,
                    "expected a sandbox name, labels key=value[,key=value] or a CIDR",
                )
            })?;
        }
        Ok(Selector::Sandbox(s.to_string()))
    }

    /// A CIDR with exceptions; each exception must lie inside it and be of its family.
    pub fn cidr(field: &'static str, net: IpNet, except: &[String]) -> Result<Self> {
        let mut ex = vec![];
        for e in except {
            let x = parse_net(e.trim())
                .ok_or_else(|| Error::invalid("except", e, "expected a CIDR"))?;
            if !net.contains(&x) {
                return Err(Error::invalid(
                    "except",
                    e,
                    format!("not inside {field} {net}"),
                ));
            }
            ex.push(x);
        }
        ex.sort();
        ex.dedup();
        Ok(Selector::Cidr { net, except: ex })
    }

    /// Whether an attachment of `sandbox` with `labels` is selected.
    pub fn matches(&self, sandbox: &str, labels: &Labels) -> bool {
        match self {
            Selector::Sandbox(s) => s == sandbox,
            Selector::Labels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
            Selector::Cidr { .. } => false,
        }
    }

    /// Index terms by which attachments find the rules that may select them: the
    /// sandbox, or each label (a rule is a candidate if any term matches, then checked
    /// with `matches`). None for CIDRs, which no attachment changes.
    pub fn terms(&self) -> Vec<(&'static str, String)> {
        match self {
            Selector::Sandbox(s) => vec![("sandbox", s.clone())],
            Selector::Labels(l) => l
                .iter()
                .map(|(k, v)| ("label", format!("{k}={v}")))
                .collect(),
            Selector::Cidr { .. } => vec![],
        }
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    IpNet::from_str(s)
        .ok()
        .or_else(|| IpAddr::from_str(s).ok().map(IpNet::from))
        .map(|n| n.trunc())
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Sandbox(s) => f.write_str(s),
            Selector::Labels(l) => {
                let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                f.write_str(&parts.join(","))
            }
            Selector::Cidr { net, except } => {
                write!(f, "{net}")?;
                for e in except {
                    write!(f, " except {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// `--port N[-M][/proto]`: a destination port or range (NetworkPolicy's `port`/`endPort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub proto: Proto,
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Result<Self> {
        const F: &str = "port";
        let (p, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, Proto::parse(F, proto)?),
            None => (s, Proto::Tcp),
        };
        let (lo, hi) = match p.split_once('-') {
            Some((a, b)) => (parse_port(F, s, a)?, parse_port(F, s, b)?),
            None => {
                let n = parse_port(F, s, p)?;
                (n, n)
            }
        };
        Self::new(proto, lo, hi)
            .map_err(|_| Error::invalid(F, s, "the range ends before it starts"))
    }

    pub fn new(proto: Proto, lo: u16, hi: u16) -> Result<Self> {
        if lo == 0 || hi < lo {
            return Err(Error::invalid(
                "port",
                format!("{lo}-{hi}"),
                "expected 1 <= N <= M",
            ));
        }
        Ok(PortRange { proto, lo, hi })
    }

    pub fn is_single(&self) -> bool {
        self.lo == self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}/{}", self.lo, self.proto)
        } else {
            write!(f, "{}-{}/{}", self.lo, self.hi, self.proto)
        }
    }
}

/// Which way a rule or default looks: traffic to a network's sandboxes, or from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ingress" => Ok(Direction::Ingress),
            "egress" => Ok(Direction::Egress),
            _ => Err(Error::invalid("direction", s, "must be ingress or egress")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Default verdict for one direction of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Default {
    Allow,
    Deny,
}

impl Default {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "allow" => Ok(Default::Allow),
            "deny" => Ok(Default::Deny),
            _ => Err(Error::invalid("default", s, "must be allow or deny")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Default::Allow => "allow",
            Default::Deny => "deny",
        }
    }
}

/// What a rule does. `Isolate` is NetworkPolicy's "a policy selects this pod": its
/// sandboxes become default-deny in the rule's direction even on a default-allow network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Isolate,
}

/// A rule as asked for (CLI or import), before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    pub action: Action,
    pub dir: Direction,
    pub from: Selector,
    pub to: Selector,
    pub port: Option<PortRange>,
    /// The imported document the rule came from (`knit policy import`), if any.
    pub origin: Option<String>,
}

impl RuleSpec {
    /// The side on the network's own sandboxes (ingress: `to`; egress: `from`) and the
    /// other side.
    pub fn sides(&self) -> (&Selector, &Selector) {
        match self.dir {
            Direction::Ingress => (&self.to, &self.from),
            Direction::Egress => (&self.from, &self.to),
        }
    }

    /// Checks the shape: the network's side is never a CIDR.
    pub fn validate(&self) -> Result<()> {
        let (own, _) = self.sides();
        if matches!(own, Selector::Cidr { .. }) {
            let field = match self.dir {
                Direction::Ingress => "to",
                Direction::Egress => "from",
            };
            return Err(Error::invalid(
                field,
                own,
                "names a sandbox or labels of the network, not an address",
            ));
        }
        Ok(())
    }
}

/// One recorded rule of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: i64,
    pub network_id: i64,
    pub network: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let cidr = |s: &str| Selector::Cidr {
            net: s.parse().unwrap(),
            except: vec![],
        };
        assert_eq!(
            Selector::parse("from", "10.1.2.3/16", true, &[]).unwrap(),
            cidr("10.1.0.0/16")
        );
        assert_eq!(
            Selector::parse("from", "198.51.100.2", true, &[]).unwrap(),
            cidr("198.51.100.2/32")
        );
        let both = Selector::parse("to", "app=web,tier=front", false, &[]).unwrap();
        let mut l: Labels = parse_labels("label", &["app=web".into()]).unwrap();
        assert!(!both.matches("x", &l), "AND: one label is not enough");
        l.insert("tier".into(), "front".into());
        assert!(both.matches("x", &l));
        assert_eq!(both.to_string(), "app=web,tier=front");
        assert_eq!(
            Selector::parse("to", "web1", false, &[]).unwrap(),
            Selector::Sandbox("web1".into())
        );
        assert!(Selector::parse("to", "10.0.0.0/8", false, &[]).is_err());
        assert!(Selector::parse("from", "a b", true, &[]).is_err());
        assert!(Selector::parse("from", "=x", true, &[]).is_err());
        assert!(Selector::parse("from", "app=a,app=b", true, &[]).is_err());
        assert!(parse_label("label", "novalue").is_err());
    }

    #[test]
    fn cidr_exceptions() {
        let s = Selector::parse("from", "10.0.0.0/8", true, &["10.1.0.0/16".into()]).unwrap();
        assert_eq!(s.to_string(), "10.0.0.0/8 except 10.1.0.0/16");
        let e = Selector::parse("from", "10.0.0.0/8", true, &["11.0.0.0/16".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("11.0.0.0/16") && e.contains("not inside"), "{e}");
        assert!(Selector::parse("from", "web", true, &["10.0.0.0/8".into()]).is_err());
    }

    #[test]
    fn ports() {
        let p = PortRange::parse("53/udp").unwrap();
        assert_eq!((p.proto, p.lo, p.hi), (Proto::Udp, 53, 53));
        let r = PortRange::parse("8000-8100").unwrap();
        assert_eq!((r.proto, r.lo, r.hi), (Proto::Tcp, 8000, 8100));
        assert_eq!(r.to_string(), "8000-8100/tcp");
        assert!(PortRange::parse("0").is_err());
        assert!(PortRange::parse("90-80").is_err());
        assert!(PortRange::parse("80/icmp").is_err());
        assert!(Default::parse("maybe").is_err());
    }

    #[test]
    fn the_network_side_is_never_an_address() {
        let spec = RuleSpec {
            action: Action::Allow,
            dir: Direction::Egress,
            from: Selector::Cidr {
                net: "10.0.0.0/8".parse().unwrap(),
                except: vec![],
            },
            to: Selector::Sandbox("x".into()),
            port: None,
            origin: None,
        };
        assert!(spec.validate().is_err());
    }
}
