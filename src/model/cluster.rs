//! Cluster input and records: how a node joins (validated), and what nodes, cluster
//! networks and blocks look like in etcd.

use crate::error::{Error, Result};
use crate::model::{Mac, validate_name};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// How a node reaches its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Vxlan,
    Routed,
    /// Routed to peers on the same L2 segment, VXLAN to the others (flannel's
    /// DirectRouting).
    Auto,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "routed" => Ok(Backend::Routed),
            "auto" => Ok(Backend::Auto),
            _ => Err(Error::invalid(
                "backend",
                s,
                "must be vxlan, routed or auto",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::Routed => "routed",
            Backend::Auto => "auto",
        }
    }
}

/// TLS to etcd: the CA that signed etcd's certificate, and this node's client
/// certificate and key (etcd's `--client-cert-auth`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// From `--etcd-ca/--etcd-cert/--etcd-key`: a certificate needs its key (and the
    /// other way round), and both need the CA; every file must be readable.
    pub fn new(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> Result<Option<Self>> {
        let Some(ca) = ca else {
            if let Some(c) = cert.or(key) {
                return Err(Error::invalid("etcd-cert", c, "TLS needs --etcd-ca too"));
            }
            return Ok(None);
        };
        if cert.is_some() != key.is_some() {
            return Err(Error::invalid(
                if cert.is_some() {
                    "etcd-cert"
                } else {
                    "etcd-key"
                },
                cert.or(key).unwrap_or(""),
                "a client certificate needs its key (--etcd-cert with --etcd-key)",
            ));
        }
        for (field, f) in [
            ("etcd-ca", Some(ca)),
            ("etcd-cert", cert),
            ("etcd-key", key),
        ] {
            if let Some(f) = f
                && std::fs::metadata(f).is_err()
            {
                return Err(Error::invalid(field, f, "cannot read this file"));
            }
        }
        let abs = |f: &str| std::fs::canonicalize(f).unwrap_or_else(|_| f.into());
        Ok(Some(TlsFiles {
            ca: abs(ca),
            cert: cert.map(abs),
            key: key.map(abs),
        }))
    }
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdAccess {
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
}

/// `knit node join`, validated.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    pub etcd: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub name: String,
    /// An address or an interface name (None: the interface of the default route).
    pub underlay: Option<String>,
    pub backend: Backend,
    pub vni: u32,
    pub vxlan_port: u16,
    pub lease_ttl: i64,
}

impl JoinSpec {
    pub fn access(&self) -> EtcdAccess {
        EtcdAccess {
            endpoints: self.etcd.clone(),
            tls: self.tls.clone(),
        }
    }

    pub fn new(
        etcd: &str,
        name: &str,
        underlay: Option<&str>,
        backend: &str,
        vni: u32,
        vxlan_port: u16,
        lease_ttl: i64,
    ) -> Result<Self> {
        let mut eps = vec![];
        for e in etcd.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .ok_or_else(|| Error::invalid("etcd", e, "expected http(s)://HOST:PORT"))?;
            if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
                return Err(Error::invalid("etcd", e, "expected http://HOST:PORT"));
            }
            eps.push(e.trim_end_matches('/').to_string());
        }
        if eps.is_empty() {
            return Err(Error::invalid("etcd", etcd, "no endpoint given"));
        }
        validate_name("name", name)?;
        if !(1..=16_777_215).contains(&vni) {
            return Err(Error::invalid("vni", vni, "must be 1-16777215"));
        }
        if vxlan_port == 0 {
            return Err(Error::invalid("vxlan-port", vxlan_port, "must be 1-65535"));
        }
        if !(5..=3600).contains(&lease_ttl) {
            return Err(Error::invalid(
                "lease-ttl",
                lease_ttl,
                "must be 5-3600 seconds",
            ));
        }
        Ok(JoinSpec {
            etcd: eps,
            tls: None,
            name: name.to_string(),
            underlay: underlay.map(str::to_string),
            backend: Backend::parse(backend)?,
            vni,
            vxlan_port,
            lease_ttl,
        })
    }
}

/// A node as etcd holds it (`/knit/nodes/NAME`, under the node's lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// The underlay address peers send to, with its on-link prefix (same segment test).
    pub underlay: IpNet,
    pub backend: Backend,
    pub vni: u32,
    pub vxlan_port: u16,
    /// MTU of the underlay link.
    pub mtu: u32,
}

impl NodeRecord {
    /// Whether `other` is on this node's L2 segment (same on-link prefix).
    pub fn same_segment(&self, other: &NodeRecord) -> bool {
        self.underlay.contains(&other.underlay.addr())
            && other.underlay.contains(&self.underlay.addr())
    }

    /// How this node reaches `peer`: routed only when both allow it and they share a
    /// segment.
    pub fn path_to(&self, peer: &NodeRecord) -> Backend {
        let routed_ok = |b: Backend| b != Backend::Vxlan;
        match (self.backend, peer.backend) {
            (Backend::Routed, _) | (_, Backend::Routed) => Backend::Routed,
            (a, b) if routed_ok(a) && routed_ok(b) && self.same_segment(peer) => Backend::Routed,
            _ => Backend::Vxlan,
        }
    }
}

/// A cluster network (`/knit/networks/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetwork {
    pub name: String,
    pub subnets: Vec<IpNet>,
    /// Block sizes: each node leases one block per family.
    pub node_prefix4: u8,
    pub node_prefix6: u8,
    /// Its VXLAN segment.
    pub vni: u32,
}

impl ClusterNetwork {
    pub fn node_prefix(&self, net: &IpNet) -> u8 {
        if net.addr().is_ipv4() {
            self.node_prefix4
        } else {
            self.node_prefix6
        }
    }

    /// Checks a new cluster network: each subnet holds at least two blocks of its size.
    pub fn validate(&self) -> Result<()> {
        validate_name("name", &self.name)?;
        if self.subnets.is_empty() {
            return Err(Error::invalid(
                "subnet",
                "",
                "a cluster network needs a subnet",
            ));
        }
        for s in &self.subnets {
            let p = self.node_prefix(s);
            let max = if s.addr().is_ipv4() { 30 } else { 126 };
            if p <= s.prefix_len() || p > max {
                return Err(Error::invalid(
                    "node-prefix",
                    p,
                    format!(
                        "blocks of {s} must be longer than /{} and at most /{max}",
                        s.prefix_len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A node's block of a cluster network (`/knit/blocks/NET/BLOCK`, under the node's lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub network: String,
    pub block: IpNet,
    pub node: String,
    /// The MAC of the node's VXLAN device for this network.
    pub vtep_mac: Mac,
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse("mac", &s).map_err(serde::de::Error::custom)
    }
}

/// A sandbox attached to a cluster network on some node
/// (`/knit/endpoints/NETWORK/NODE/SANDBOX`, under that node's lease): what other nodes
/// need for names, policy and service backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub node: String,
    pub sandbox: String,
    pub ips: Vec<IpNet>,
    #[serde(default)]
    pub labels: crate::model::policy::Labels,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A cluster service (`/knit/services/NAME`): every node programs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// `IP:PORT/PROTO`.
    pub vip: String,
    /// `SANDBOX:PORT` or `IP:PORT`.
    pub backends: Vec<String>,
    pub affinity: Option<u32>,
    pub node_port: Option<u16>,
}

impl ServiceRecord {
    pub fn of(spec: &crate::model::service::ServiceSpec) -> ServiceRecord {
        ServiceRecord {
            name: spec.name.clone(),
            vip: spec.vip.to_string(),
            backends: spec.backends.iter().map(|b| b.to_string()).collect(),
            affinity: spec.affinity,
            node_port: spec.node_port,
        }
    }

    pub fn spec(&self) -> Result<crate::model::service::ServiceSpec> {
        crate::model::service::ServiceSpec::new(
            &self.name,
            &self.vip,
            &self.backends,
            self.affinity.map(|s| format!("client-ip={s}")).as_deref(),
            self.node_port.map(u32::from),
        )
    }
}

/// The block's VTEP address: its first address (the network address, as flannel uses), on
/// the VXLAN device.
pub fn vtep_addr(block: &IpNet) -> IpAddr {
    block.network()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, b: Backend) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            underlay: ip.parse().unwrap(),
            backend: b,
            vni: 1,
            vxlan_port: 4789,
            mtu: 1500,
        }
    }

    #[test]
    fn path_choice() {
        let a = node("a", "192.168.10.2/24", Backend::Auto);
        let b = node("b", "192.168.10.3/24", Backend::Auto);
        let c = node("c", "192.168.20.2/24", Backend::Auto);
        assert_eq!(a.path_to(&b), Backend::Routed);
        assert_eq!(a.path_to(&c), Backend::Vxlan);
        let v = node("v", "192.168.10.4/24", Backend::Vxlan);
        assert_eq!(a.path_to(&v), Backend::Vxlan);
        assert_eq!(v.path_to(&a), Backend::Vxlan);
    }

    #[test]
    fn join_input() {
        assert!(JoinSpec::new("http://10.0.0.1:2379", "n1", None, "auto", 1, 4789, 15).is_ok());
        assert!(JoinSpec::new("10.0.0.1:2379", "n1", None, "auto", 1, 4789, 15).is_err());
        assert!(JoinSpec::new("http://x:1", "n 1", None, "auto", 1, 4789, 15).is_err());
        assert!(JoinSpec::new("http://x:1", "n1", None, "gre", 1, 4789, 15).is_err());
        assert!(JoinSpec::new("http://x:1", "n1", None, "auto", 0, 4789, 15).is_err());
        assert!(JoinSpec::new("http://x:1", "n1", None, "auto", 1, 4789, 1).is_err());
        let n = ClusterNetwork {
            name: "c".into(),
            subnets: vec!["10.244.0.0/16".parse().unwrap()],
            node_prefix4: 16,
            node_prefix6: 64,
            vni: 1,
        };
        assert!(n.validate().is_err(), "a block as large as the network");
    }
}
