//! The topology file's shape as serde reads it. Every struct refuses unknown fields (a
//! typo must not be silently ignored), maps keep the file's order (a sandbox's first
//! network gets eth0) and refuse a key given twice, and YAML's errors come back as
//! `FILE:LINE:COLUMN: message`.
//!
//! ```yaml
//! name: lab
//! networks:
//!   lab: {subnet: 10.170.0.0/24, ingress: deny}
//! sandboxes:
//!   web:
//!     networks:
//!       lab: {ports: ["8080:80"], labels: {app: web}}
//!   client:
//!     networks: [lab]
//! services:
//!   web: {vip: "10.179.0.10:80", backends: ["web:80"]}
//! policies:
//!   - {network: lab, from: client, to: {app: web}, port: 80}
//! ```

use crate::error::{Error, Result};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopology {
    pub name: String,
    #[serde(default)]
    pub networks: Named<RawNetwork>,
    #[serde(default)]
    pub sandboxes: Named<RawSandbox>,
    #[serde(default)]
    pub services: Named<RawService>,
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub driver: Option<String>,
    pub subnet: Option<String>,
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    pub bridge: Option<String>,
    #[serde(default)]
    pub internal: bool,
    pub masquerade: Option<bool>,
    pub mtu: Option<u32>,
    pub dns: Option<bool>,
    pub dns_domain: Option<String>,
    /// Default for new connections to the network's sandboxes: allow or deny.
    pub ingress: Option<String>,
    /// Default for new connections from them.
    pub egress: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// Its attachments: a list of network names, or a map of network to settings.
    #[serde(default)]
    pub networks: Named<RawAttach>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttach {
    #[serde(default)]
    pub ips: Vec<String>,
    pub mac: Option<String>,
    pub ifname: Option<String>,
    /// `[HOSTIP:]HOSTPORT[-END]:CPORT[-END][/proto]`, as `--publish`.
    #[serde(default)]
    pub ports: Vec<Text>,
    #[serde(default)]
    pub labels: Named<Text>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub vip: String,
    #[serde(default)]
    pub backends: Vec<Text>,
    pub affinity: Option<String>,
    pub node_port: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub network: String,
    /// ingress (the default) or egress.
    pub direction: Option<String>,
    pub from: RawSelector,
    pub to: RawSelector,
    #[serde(default)]
    pub except: Vec<String>,
    pub port: Option<Text>,
}

/// A map from names to settings, in the file's order. A key given twice is an error
/// (YAML would otherwise keep the last one silently); a key with no value gets the
/// defaults; a list of names is the same as a map of names with no values.
#[derive(Debug)]
pub struct Named<T>(pub Vec<(String, T)>);

impl<T> std::default::Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + std::default::Default> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + std::default::Default> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names (or a list of names)")
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Named::default())
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some(k) = m.next_key::<Text>()? {
                    if out.iter().any(|(n, _)| *n == k.0) {
                        return Err(de::Error::custom(format!("{:?} is given twice", k.0)));
                    }
                    let v: Option<T> = m.next_value()?;
                    out.push((k.0, v.unwrap_or_default()));
                }
                Ok(Named(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out: Vec<(String, T)> = Vec::new();
                while let Some(k) = s.next_element::<Text>()? {
                    if out.iter().any(|(n, _)| *n == k.0) {
                        return Err(de::Error::custom(format!("{:?} is given twice", k.0)));
                    }
                    out.push((k.0, T::default()));
                }
                Ok(Named(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A scalar read as text: `port: 80` and `port: "80"` mean the same.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A policy side: text as `--from`/`--to` take it (a sandbox, `k=v[,k=v]` labels, a
/// CIDR) or a map of labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSelector {
    Text(String),
    Labels(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for RawSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSelector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sandbox name, labels (key=value or a map) or a CIDR")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawSelector, E> {
                Ok(RawSelector::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<RawSelector, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<Text, Text>()? {
                    if out.iter().any(|(n, _)| *n == k.0) {
                        return Err(de::Error::custom(format!("label {:?} is given twice", k.0)));
                    }
                    out.push((k.0, v.0));
                }
                Ok(RawSelector::Labels(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the text of a topology file; `file` is how errors name it.
pub fn parse(file: &str, text: &str) -> Result<RawTopology> {
    if text.trim().is_empty() {
        return Err(Error::InFile {
            at: file.to_string(),
            reason: "the file is empty (a topology needs at least `name:`)".into(),
        });
    }
    serde_yaml::from_str(text).map_err(|e| yaml_error(file, &e))
}

/// A YAML error as `FILE:LINE:COLUMN: message` (the message without serde_yaml's own
/// " at line L column C" suffix, which would say the place twice).
fn yaml_error(file: &str, e: &serde_yaml::Error) -> Error {
    let reason = strip_marks(&e.to_string());
    let at = match e.location() {
        Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
        None => file.to_string(),
    };
    Error::InFile { at, reason }
}

/// The message without its " at line L column C" places (libyaml's messages carry two:
/// the problem's and its context's).
fn strip_marks(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &rest[i + " at line ".len()..];
        let n = digits(after);
        match after[n..].strip_prefix(" column ") {
            Some(col) if n > 0 => rest = &col[digits(col)..],
            // Not a place after all: keep the text.
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("t.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_form() {
        let t = parse(
            "t.yaml",
            "name: x\nnetworks:\n  a: {subnet: 10.1.0.0/24}\n  b:\nsandboxes:\n  s1:\n    networks: [a, b]\n  s2:\n    networks:\n      a: {ports: [\"80:80\"], labels: {tier: 1}}\npolicies:\n  - {network: a, from: s1, to: {app: web}, port: 80}\n",
        )
        .unwrap();
        let names: Vec<&str> = t.networks.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(t.sandboxes.0[0].1.networks.0.len(), 2);
        let s2 = &t.sandboxes.0[1].1.networks.0[0].1;
        assert_eq!(s2.ports, [Text("80:80".into())]);
        assert_eq!(s2.labels.0, [("tier".to_string(), Text("1".into()))]);
        assert_eq!(t.policies[0].port, Some(Text("80".into())));
        assert_eq!(
            t.policies[0].to,
            RawSelector::Labels(vec![("app".into(), "web".into())])
        );
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = err("name: x\nnetworks:\n  a:\n    subnett: 10.1.0.0/24\n");
        assert!(
            e.starts_with("t.yaml:4:5: networks.a: unknown field `subnett`"),
            "{e}"
        );
        let e = err("name: x\nsandboxes:\n  s:\n  s:\n");
        assert!(e.starts_with("t.yaml:3:3: sandboxes: "), "{e}");
        assert!(e.contains("\"s\" is given twice"), "{e}");
        assert_eq!(
            strip_marks("did not find ',' at line 3 column 1, while parsing at line 2 column 11"),
            "did not find ',', while parsing"
        );
        let e = err("name: x\nnetworks: [a\n");
        assert!(e.starts_with("t.yaml:"), "{e}");
        assert!(!e.contains(" at line "), "{e}");
        assert!(err("nme: x\n").starts_with("t.yaml:1:1: unknown field `nme`"));
        assert!(err("\n  \n").contains("empty"));
        let e = err("name: x\npolicies:\n  - {network: a, from: [1], to: b}\n");
        assert!(e.starts_with("t.yaml:3:"), "{e}");
    }
}
