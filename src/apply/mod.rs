//! Declarative topologies: `knit apply FILE` and `knit destroy FILE`.
//!
//! A topology file (YAML, the format containerlab topologies and compose files use) names
//! networks, sandboxes with their attachments (ports, labels, aliases, addresses),
//! services and policy rules. The pieces, pure first:
//! - `file`: the file's shape (serde, unknown fields refused) and parse errors with
//!   `FILE:LINE:COLUMN`;
//! - `locate`: the line and column of a key path in the text, for errors found after
//!   parsing (a bad CIDR, an unknown network);
//! - `validate`: the parsed file checked with the model's own validators into a
//!   [`Topology`];
//! - `plan`: the diff between a [`Topology`] and what the store holds (and what the
//!   topology created before), as ordered steps; `compare` says how two objects differ,
//!   `show` prints steps (lines, JSON);
//! - `exec`: the store snapshot the plan is made against, and the steps run through the
//!   same `Node` operations the CLI uses, recording ownership and undoing a failed run.

pub mod compare;
pub mod exec;
pub mod file;
pub mod locate;
pub mod plan;
pub mod show;
pub mod validate;

use crate::model::policy::{Default, Labels, RuleSpec};
use crate::model::service::ServiceSpec;
use crate::model::{Mac, NetworkSpec, PublishSpec};
use std::net::IpAddr;

/// A topology file, validated: what should exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The file's `name:`: what the ownership record is kept under.
    pub name: String,
    pub networks: Vec<NetDecl>,
    pub sandboxes: Vec<String>,
    pub attachments: Vec<AttDecl>,
    pub services: Vec<ServiceSpec>,
    pub rules: Vec<RuleDecl>,
}

impl Topology {
    /// The topology with nothing in it: what `destroy` plans towards.
    pub fn empty(name: &str) -> Topology {
        Topology {
            name: name.to_string(),
            networks: vec![],
            sandboxes: vec![],
            attachments: vec![],
            services: vec![],
            rules: vec![],
        }
    }
}

/// A network with its policy defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDecl {
    pub spec: NetworkSpec,
    pub ingress: Default,
    pub egress: Default,
}

/// A sandbox on a network. Optional fields (addresses, MAC, interface name) are compared
/// only when the file sets them; taken from the store they hold what the attachment has,
/// so undoing a detach attaches it back as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttDecl {
    pub network: String,
    pub sandbox: String,
    pub ips: Vec<IpAddr>,
    pub mac: Option<Mac>,
    pub ifname: Option<String>,
    pub ports: Vec<PublishSpec>,
    pub labels: Labels,
    pub aliases: Vec<String>,
}

impl AttDecl {
    /// The ownership key (`NETWORK/SANDBOX`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.network, self.sandbox)
    }
}

/// A policy rule of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDecl {
    pub network: String,
    pub spec: RuleSpec,
}

impl RuleDecl {
    /// The ownership key: network and spec as JSON (stable: fields in declaration order,
    /// labels in a BTreeMap, CIDR exceptions sorted).
    pub fn key(&self) -> String {
        serde_json::to_string(&(&self.network, &self.spec)).unwrap_or_default()
    }
}

/// What kind of object an ownership record is about (its `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Network,
    Sandbox,
    Attachment,
    Service,
    Rule,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Sandbox => "sandbox",
            Kind::Attachment => "attachment",
            Kind::Service => "service",
            Kind::Rule => "rule",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Network,
            Kind::Sandbox,
            Kind::Attachment,
            Kind::Service,
            Kind::Rule,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Reads and validates a topology file. `known`: the networks and sandboxes the store
/// has, which the file may refer to without declaring them (None: no such check, for
/// `destroy`, which must work after a referenced network is gone).
pub fn load(
    path: &std::path::Path,
    known: Option<&validate::Known>,
) -> crate::error::Result<Topology> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::Error::InFile {
        at: shown.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    let raw = file::parse(&shown, &text)?;
    validate::validate(
        &validate::Source {
            file: &shown,
            text: &text,
        },
        &raw,
        known,
    )
}
