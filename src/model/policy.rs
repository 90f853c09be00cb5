//! Policy input, validated: selectors (`SANDBOX`, `key=value` labels, CIDRs), ports and
//! attachment labels.

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
    Sandbox(String),
    Label { key: String, value: String },
    Cidr(IpNet),
}

impl Selector {
    /// `to_side`: `--to` accepts sandboxes and labels only (a destination must be a
    /// sandbox of the network the policy belongs to).
    pub fn parse(field: &'static str, s: &str, to_side: bool) -> Result<Self> {
        let cidr = IpNet::from_str(s)
            .ok()
            .or_else(|| IpAddr::from_str(s).ok().map(IpNet::from));
        if let Some(net) = cidr {
            if to_side {
                return Err(Error::invalid(
                    field,
                    s,
                    "--to names a sandbox or a label (key=value), not an address",
                ));
            }
            return Ok(Selector::Cidr(net.trunc()));
        }
        if s.contains('=') {
            let (key, value) = parse_label(field, s)?;
            return Ok(Selector::Label { key, value });
        }
        if !s.starts_with("cni:") {
            validate_name(field, s).map_err(|_| {
                Error::invalid(
                    field,
                    s,
                    "expected a sandbox name, a label key=value or a CIDR",
                )
            })?;
        }
        Ok(Selector::Sandbox(s.to_string()))
    }

    /// Whether an attachment of `sandbox` with `labels` is selected.
    pub fn matches(&self, sandbox: &str, labels: &Labels) -> bool {
        match self {
            Selector::Sandbox(s) => s == sandbox,
            Selector::Label { key, value } => labels.get(key) == Some(value),
            Selector::Cidr(_) => false,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Sandbox(s) => f.write_str(s),
            Selector::Label { key, value } => write!(f, "{key}={value}"),
            Selector::Cidr(n) => write!(f, "{n}"),
        }
    }
}

/// `--port N[/proto]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port: u16,
    pub proto: Proto,
}

impl PortSpec {
    pub fn parse(s: &str) -> Result<Self> {
        const F: &str = "--port";
        let (p, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, Proto::parse(F, proto)?),
            None => (s, Proto::Tcp),
        };
        Ok(PortSpec {
            port: parse_port(F, s, p)?,
            proto,
        })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// Default verdict for traffic to a network's sandboxes.
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
            _ => Err(Error::invalid("DEFAULT", s, "must be allow or deny")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Default::Allow => "allow",
            Default::Deny => "deny",
        }
    }
}

/// One allow rule of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: i64,
    pub network_id: i64,
    pub network: String,
    pub from: Selector,
    pub to: Selector,
    pub port: Option<PortSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            Selector::parse("--from", "10.1.2.3/16", false).unwrap(),
            Selector::Cidr("10.1.0.0/16".parse().unwrap())
        );
        assert_eq!(
            Selector::parse("--from", "198.51.100.2", false).unwrap(),
            Selector::Cidr("198.51.100.2/32".parse().unwrap())
        );
        assert_eq!(
            Selector::parse("--to", "app=web", true).unwrap(),
            Selector::Label {
                key: "app".into(),
                value: "web".into()
            }
        );
        assert_eq!(
            Selector::parse("--to", "web1", true).unwrap(),
            Selector::Sandbox("web1".into())
        );
        assert!(Selector::parse("--to", "10.0.0.0/8", true).is_err());
        assert!(Selector::parse("--from", "a b", false).is_err());
        assert!(Selector::parse("--from", "=x", false).is_err());
        let l: Labels = parse_labels("--label", &["app=web".into()]).unwrap();
        assert!(
            Selector::parse("--to", "app=web", true)
                .unwrap()
                .matches("x", &l)
        );
        assert!(
            !Selector::parse("--to", "app=db", true)
                .unwrap()
                .matches("x", &l)
        );
        assert!(parse_label("--label", "novalue").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(
            PortSpec::parse("53/udp").unwrap(),
            PortSpec {
                port: 53,
                proto: Proto::Udp
            }
        );
        assert_eq!(PortSpec::parse("80").unwrap().proto, Proto::Tcp);
        assert!(PortSpec::parse("0").is_err());
        assert!(PortSpec::parse("80/icmp").is_err());
        assert!(Default::parse("maybe").is_err());
    }
}
