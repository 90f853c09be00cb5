//! `knit graph`: the node's topology as data — networks with their bridges and subnets,
//! sandboxes with their interfaces, addresses and published ports, services with their
//! backends, policy rules, cluster peers. Read from the store; `cli::graph` draws it.

use crate::error::Result;
use crate::model::policy::Action;
use crate::node::Node;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Graph {
    pub networks: Vec<GraphNetwork>,
    pub sandboxes: Vec<GraphSandbox>,
    pub services: Vec<GraphService>,
    pub rules: Vec<GraphRule>,
    /// Other nodes of the cluster (empty off a cluster).
    pub peers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GraphNetwork {
    pub name: String,
    pub driver: String,
    pub origin: String,
    pub bridge: Option<String>,
    /// `CIDR gw GATEWAY`.
    pub subnets: Vec<String>,
    pub internal: bool,
    pub masquerade: bool,
    /// Default ingress and egress policy.
    pub ingress: String,
    pub egress: String,
}

#[derive(Debug, Serialize)]
pub struct GraphSandbox {
    pub name: String,
    pub interfaces: Vec<GraphInterface>,
}

#[derive(Debug, Serialize)]
pub struct GraphInterface {
    pub network: String,
    pub ifname: String,
    /// The veth end on the node.
    pub host_ifname: String,
    /// That end as the kernel has it now: up, down or missing (read in the node
    /// namespace, so the picture shows a link someone took down).
    pub link: String,
    pub mac: String,
    pub addresses: Vec<String>,
    /// `[HOSTIP:]HOSTPORT -> PORT/PROTO`.
    pub published: Vec<String>,
    pub labels: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GraphService {
    pub name: String,
    pub vip: String,
    pub node_port: Option<u16>,
    pub backends: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GraphRule {
    pub id: i64,
    pub network: String,
    pub direction: String,
    pub from: String,
    pub to: String,
    pub port: String,
}

impl Node {
    pub fn graph(&self) -> Result<Graph> {
        let nets = self.store.networks()?;
        let networks = nets
            .iter()
            .map(|n| GraphNetwork {
                name: n.name.clone(),
                driver: n.driver.as_str().into(),
                origin: n.origin.clone(),
                bridge: n.bridge.clone(),
                subnets: n
                    .subnets
                    .iter()
                    .map(|s| format!("{} gw {}", s.subnet, s.gateway))
                    .collect(),
                internal: n.internal,
                masquerade: n.masquerade,
                ingress: n.policy.as_str().into(),
                egress: n.egress.as_str().into(),
            })
            .collect();
        let mut sandboxes: Vec<GraphSandbox> = vec![];
        // One dump of the node's links, looked up by name (not a request per attachment).
        let links: std::collections::HashMap<String, bool> = crate::netlink::Netlink::open()?
            .links()?
            .into_iter()
            .map(|l| (l.name, l.up))
            .collect();
        for a in self.store.all_attachments()? {
            let Some(net) = nets.iter().find(|n| n.id == a.network_id) else {
                continue;
            };
            let a = crate::node::inspect::as_configured(net, a);
            let iface = GraphInterface {
                network: a.network.clone(),
                ifname: a.ifname.clone(),
                host_ifname: a.host_ifname.clone(),
                link: match links.get(&a.host_ifname) {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "missing",
                }
                .into(),
                mac: a.mac.clone(),
                addresses: a.ips.iter().map(|i| i.to_string()).collect(),
                published: a
                    .ports
                    .iter()
                    .map(|p| {
                        let host = p.host_ip.map(|h| format!("{h}:")).unwrap_or_default();
                        format!("{host}{} -> {}/{}", p.host_port, p.container_port, p.proto)
                    })
                    .collect(),
                labels: a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            };
            match sandboxes.iter_mut().find(|s| s.name == a.sandbox) {
                Some(s) => s.interfaces.push(iface),
                None => sandboxes.push(GraphSandbox {
                    name: a.sandbox.clone(),
                    interfaces: vec![iface],
                }),
            }
        }
        for s in self.store.sandboxes()? {
            if !sandboxes.iter().any(|x| x.name == s) {
                sandboxes.push(GraphSandbox {
                    name: s,
                    interfaces: vec![],
                });
            }
        }
        let services = self
            .store
            .services()?
            .into_iter()
            .map(|s| GraphService {
                name: s.name.clone(),
                vip: s.vip.to_string(),
                node_port: s.node_port,
                backends: s.backends.iter().map(|b| b.spec.to_string()).collect(),
            })
            .collect();
        let rules = self
            .store
            .rules()?
            .into_iter()
            .map(|r| GraphRule {
                id: r.id,
                network: r.network.clone(),
                direction: r.spec.dir.as_str().into(),
                from: if r.spec.action == Action::Isolate {
                    "(isolates)".into()
                } else {
                    r.spec.from.to_string()
                },
                to: r.spec.to.to_string(),
                port: r.spec.port.map_or("any".into(), |p| p.to_string()),
            })
            .collect();
        let me = self.store.membership()?.map(|m| m.name);
        let peers = match &me {
            Some(me) => self
                .store
                .remote_endpoints()?
                .into_iter()
                .map(|r| r.rec.node)
                .filter(|n| n != me)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => vec![],
        };
        Ok(Graph {
            networks,
            sandboxes,
            services,
            rules,
            peers,
        })
    }
}
