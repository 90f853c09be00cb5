//! The parsed file checked with the same validators the CLI's flags go through (names,
//! CIDRs, addresses, published ports, labels, selectors, VIPs, backends), so a file is
//! refused exactly where the equivalent command line would be. Every error names the
//! file, line and column, the key path and the value.

use super::file::{RawAttach, RawNetwork, RawPolicy, RawSelector, RawService, RawTopology};
use super::locate::{Path, locate};
use super::{AttDecl, NetDecl, RuleDecl, Topology};
use crate::error::{Error, Result};
use crate::model::policy::{Action, Default, Direction, Labels, PortRange, RuleSpec, Selector};
use crate::model::service::{BackendSpec, ServiceSpec, Target, Vip, check_family, parse_affinity};
use crate::model::{
    Driver, Mac, NetworkRequest, NetworkSpec, PublishSpec, check_one_per_family, parse_ip,
    parse_subnet, validate_dns_name, validate_ifname, validate_name,
};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The file being validated: its name (for messages) and text (for positions).
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

/// What the store has that a file may refer to without declaring it.
#[derive(Debug, Clone, std::default::Default)]
pub struct Known {
    pub networks: BTreeSet<String>,
    pub sandboxes: BTreeSet<String>,
}

impl Source<'_> {
    /// An error at `path` (at `value` on its line when it is there).
    fn err(&self, path: &Path, value: Option<&str>, reason: impl std::fmt::Display) -> Error {
        let at = match locate(self.text, path, value) {
            Some((l, c)) => format!("{}:{l}:{c}", self.file),
            None => self.file.to_string(),
        };
        Error::InFile {
            at,
            reason: format!("{path}: {reason}"),
        }
    }

    /// A model validator's error re-filed at `path` (its own field name is the CLI's flag).
    fn model(&self, path: &Path, value: &str, e: Error) -> Error {
        match e {
            Error::Invalid {
                value: v, reason, ..
            } => self.err(path, Some(value), format!("{v:?}: {reason}")),
            other => self.err(path, Some(value), other),
        }
    }
}

/// Checks a parsed file. `known`: see [`super::load`].
pub fn validate(src: &Source, raw: &RawTopology, known: Option<&Known>) -> Result<Topology> {
    let root = Path::root();
    validate_name("name", &raw.name).map_err(|e| src.model(&root.key("name"), &raw.name, e))?;
    let mut topo = Topology::empty(&raw.name);
    let declared_nets: BTreeSet<&str> = raw.networks.0.iter().map(|(n, _)| n.as_str()).collect();
    let declared_sbx: BTreeSet<&str> = raw.sandboxes.0.iter().map(|(n, _)| n.as_str()).collect();
    let net_known =
        |n: &str| declared_nets.contains(n) || known.is_none_or(|k| k.networks.contains(n));
    let sbx_known =
        |s: &str| declared_sbx.contains(s) || known.is_none_or(|k| k.sandboxes.contains(s));
    for (name, n) in &raw.networks.0 {
        topo.networks
            .push(network(src, &root.key("networks").key(name), name, n)?);
    }
    for (name, s) in &raw.sandboxes.0 {
        let p = root.key("sandboxes").key(name);
        validate_name("sandbox", name).map_err(|e| src.model(&p, name, e))?;
        topo.sandboxes.push(name.clone());
        for (net, a) in &s.networks.0 {
            let ap = p.key("networks").key(net);
            if !net_known(net) {
                return Err(src.err(
                    &ap,
                    None,
                    format!(
                        "network {net:?} is neither declared under `networks:` nor known to knit"
                    ),
                ));
            }
            topo.attachments.push(attachment(src, &ap, net, name, a)?);
        }
    }
    for (name, s) in &raw.services.0 {
        let p = root.key("services").key(name);
        topo.services.push(service(src, &p, name, s, &sbx_known)?);
    }
    for (i, r) in raw.policies.iter().enumerate() {
        let p = root.key("policies").index(i);
        if !net_known(&r.network) {
            return Err(src.err(
                &p.key("network"),
                Some(&r.network),
                format!(
                    "network {:?} is neither declared under `networks:` nor known to knit",
                    r.network
                ),
            ));
        }
        let rule = policy(src, &p, r, &sbx_known)?;
        if !topo.rules.contains(&rule) {
            topo.rules.push(rule);
        }
    }
    Ok(topo)
}

/// The YAML key a model validator's field (a CLI flag) corresponds to.
fn key_of(field: &str, n: &RawNetwork) -> Option<&'static str> {
    Some(match field {
        "--subnet" if n.subnet.is_some() => "subnet",
        "--subnet" => "subnets",
        "--gateway" => "gateways",
        "--mtu" => "mtu",
        "--bridge" => "bridge",
        "--dns-domain" => "dns_domain",
        _ => return None,
    })
}

fn network(src: &Source, p: &Path, name: &str, n: &RawNetwork) -> Result<NetDecl> {
    validate_name("network", name).map_err(|e| src.model(p, name, e))?;
    let driver_text = n.driver.as_deref().unwrap_or("bridge");
    let driver =
        Driver::parse(driver_text).map_err(|e| src.model(&p.key("driver"), driver_text, e))?;
    let subnets: Vec<(Path, &String)> = match (&n.subnet, n.subnets.is_empty()) {
        (Some(s), true) => vec![(p.key("subnet"), s)],
        (None, false) => n
            .subnets
            .iter()
            .enumerate()
            .map(|(i, s)| (p.key("subnets").index(i), s))
            .collect(),
        (None, true) => return Err(src.err(p, None, "a network needs `subnet:` or `subnets:`")),
        (Some(_), false) => {
            return Err(src.err(
                &p.key("subnet"),
                None,
                "give `subnet:` or `subnets:`, not both",
            ));
        }
    };
    for (sp, s) in &subnets {
        parse_subnet("subnet", s).map_err(|e| src.model(sp, s, e))?;
    }
    for (i, g) in n.gateways.iter().enumerate() {
        parse_ip("gateway", g).map_err(|e| src.model(&p.key("gateways").index(i), g, e))?;
    }
    let subnet_texts: Vec<String> = subnets.iter().map(|(_, s)| s.to_string()).collect();
    let refile = |e: Error| match &e {
        Error::Invalid { field, value, .. } => match key_of(field, n) {
            Some(k) => src.model(&p.key(k), &value.clone(), e),
            None => src.model(p, "", e),
        },
        _ => src.model(p, "", e),
    };
    let mut spec = NetworkSpec::new(&NetworkRequest {
        name,
        driver,
        bridge: n.bridge.as_deref(),
        subnets: &subnet_texts,
        gateways: &n.gateways,
        internal: n.internal,
        masquerade: n.masquerade.unwrap_or(true),
        mtu: n.mtu,
    })
    .map_err(refile)?;
    spec.with_dns(n.dns.unwrap_or(true), n.dns_domain.as_deref())
        .map_err(refile)?;
    let default = |key: &str, v: &Option<String>| -> Result<Default> {
        let v = v.as_deref().unwrap_or("allow");
        Default::parse(v).map_err(|e| src.model(&p.key(key), v, e))
    };
    Ok(NetDecl {
        spec,
        ingress: default("ingress", &n.ingress)?,
        egress: default("egress", &n.egress)?,
    })
}

fn attachment(src: &Source, p: &Path, net: &str, sbx: &str, a: &RawAttach) -> Result<AttDecl> {
    let mut ips: Vec<IpAddr> = vec![];
    for (i, s) in a.ips.iter().enumerate() {
        ips.push(parse_ip("ip", s).map_err(|e| src.model(&p.key("ips").index(i), s, e))?);
    }
    check_one_per_family("ips", &ips).map_err(|e| src.model(&p.key("ips"), "", e))?;
    let mac = match &a.mac {
        Some(m) => Some(Mac::parse("mac", m).map_err(|e| src.model(&p.key("mac"), m, e))?),
        None => None,
    };
    if let Some(i) = &a.ifname {
        validate_ifname("ifname", i).map_err(|e| src.model(&p.key("ifname"), i, e))?;
    }
    let mut ports = vec![];
    for (i, t) in a.ports.iter().enumerate() {
        let pp = p.key("ports").index(i);
        ports.push(PublishSpec::parse(&t.0).map_err(|e| src.model(&pp, &t.0, e))?);
    }
    let mut labels = Labels::new();
    for (k, v) in &a.labels.0 {
        let (k, v) = crate::model::policy::label("label", k, &v.0)
            .map_err(|e| src.model(&p.key("labels").key(k), &v.0, e))?;
        labels.insert(k, v);
    }
    for (i, al) in a.aliases.iter().enumerate() {
        validate_dns_name("alias", al).map_err(|e| src.model(&p.key("aliases").index(i), al, e))?;
    }
    Ok(AttDecl {
        network: net.to_string(),
        sandbox: sbx.to_string(),
        ips,
        mac,
        ifname: a.ifname.clone(),
        ports,
        labels,
        aliases: a.aliases.clone(),
    })
}

fn service(
    src: &Source,
    p: &Path,
    name: &str,
    s: &RawService,
    sbx_known: &dyn Fn(&str) -> bool,
) -> Result<ServiceSpec> {
    validate_name("service", name).map_err(|e| src.model(p, name, e))?;
    let vip = Vip::parse(&s.vip).map_err(|e| src.model(&p.key("vip"), &s.vip, e))?;
    let mut backends = vec![];
    for (i, b) in s.backends.iter().enumerate() {
        let bp = p.key("backends").index(i);
        let spec = BackendSpec::parse(&b.0).map_err(|e| src.model(&bp, &b.0, e))?;
        check_family(&vip, &spec).map_err(|e| src.model(&bp, &b.0, e))?;
        if let Target::Sandbox(sb) = &spec.target
            && !sbx_known(sb)
        {
            return Err(src.err(
                &bp,
                Some(&b.0),
                format!("sandbox {sb:?} is neither declared under `sandboxes:` nor known to knit"),
            ));
        }
        backends.push(b.0.clone());
    }
    if let Some(a) = &s.affinity {
        parse_affinity(a).map_err(|e| src.model(&p.key("affinity"), a, e))?;
    }
    ServiceSpec::new(name, &s.vip, &backends, s.affinity.as_deref(), s.node_port).map_err(|e| {
        let v = s.node_port.map(|n| n.to_string()).unwrap_or_default();
        src.model(&p.key("node_port"), &v, e)
    })
}

fn selector(
    src: &Source,
    p: &Path,
    raw: &RawSelector,
    cidr_ok: bool,
    except: &[String],
) -> Result<Selector> {
    match raw {
        RawSelector::Text(t) => {
            Selector::parse("selector", t, cidr_ok, except).map_err(|e| src.model(p, t, e))
        }
        RawSelector::Labels(map) => {
            if !except.is_empty() {
                return Err(src.err(p, None, "`except` applies to a CIDR, not to labels"));
            }
            let mut labels = Labels::new();
            for (k, v) in map {
                let (k, v) = crate::model::policy::label("label", k, v)
                    .map_err(|e| src.model(&p.key(k), v, e))?;
                labels.insert(k, v);
            }
            if labels.is_empty() {
                return Err(src.err(p, None, "no labels: a rule selects by at least one"));
            }
            Ok(Selector::Labels(labels))
        }
    }
}

fn policy(
    src: &Source,
    p: &Path,
    r: &RawPolicy,
    sbx_known: &dyn Fn(&str) -> bool,
) -> Result<RuleDecl> {
    let dir_text = r.direction.as_deref().unwrap_or("ingress");
    let dir =
        Direction::parse(dir_text).map_err(|e| src.model(&p.key("direction"), dir_text, e))?;
    let ingress = dir == Direction::Ingress;
    let (from_ex, to_ex): (&[String], &[String]) = if ingress {
        (&r.except, &[])
    } else {
        (&[], &r.except)
    };
    let from = selector(src, &p.key("from"), &r.from, ingress, from_ex)?;
    let to = selector(src, &p.key("to"), &r.to, !ingress, to_ex)?;
    for (side, sel) in [("from", &from), ("to", &to)] {
        if let Selector::Sandbox(s) = sel
            && !sbx_known(s)
        {
            return Err(src.err(
                &p.key(side),
                Some(s),
                format!("sandbox {s:?} is neither declared under `sandboxes:` nor known to knit"),
            ));
        }
    }
    let port = match &r.port {
        Some(t) => Some(PortRange::parse(&t.0).map_err(|e| src.model(&p.key("port"), &t.0, e))?),
        None => None,
    };
    let spec = RuleSpec {
        action: Action::Allow,
        dir,
        from,
        to,
        port,
        origin: None,
    };
    spec.validate().map_err(|e| src.model(p, "", e))?;
    validate_name("network", &r.network)
        .map_err(|e| src.model(&p.key("network"), &r.network, e))?;
    Ok(RuleDecl {
        network: r.network.clone(),
        spec,
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
